"""FlowCut: (relation + semantic) * L1 norm, hand-built cases and the official score restated."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def official_selection(attn, values, target):
    """A plain restatement of FlowCut's last CLIP pruning step (`CLIPEncoderLayer_forward`
    with rpl = 0, first scored layer): `attn` (B, H, N) the [CLS] row, `values` (B, H, N, d)
    per head; `target` tokens kept with the [CLS]. Returns the kept indices, [CLS] first."""
    cls_attention = attn[:, :, 1:].mean(dim=1)
    semantic_attn = torch.softmax(values[:, :, :1] @ values.transpose(2, 3), dim=-1)  # (B, H, 1, N)
    semantic_attn = semantic_attn.squeeze(2).mean(1)
    v_metric = values.mean(1)
    relation = cls_attention / cls_attention.sum(dim=-1, keepdim=True)
    semantic = semantic_attn[:, 1:] / semantic_attn[:, 1:].sum(dim=-1, keepdim=True)
    scores = (relation + semantic) * torch.norm(v_metric[:, 1:], p=1, dim=-1)
    keep = torch.topk(scores, target - 1, dim=1).indices.sort(dim=1).values + 1
    return torch.cat([torch.zeros(attn.shape[0], 1, dtype=torch.long), keep], dim=1)


def tokens_of(cls_attention, keys, features=None):
    n = keys.shape[1]
    if features is None:
        features = torch.randn(keys.shape[0], n, 3, dtype=keys.dtype)
    return Tokens(features=features, special=1, cls_attention=cls_attention, keys=keys)


def test_the_value_norm_weighs_the_cls_attention():
    # relation over the 4 patches: 0.2, 0.4, 0.2, 0.1, 0.1 -> 0.5, 0.25, 0.125, 0.125
    cls_attention = torch.tensor([[[0.2, 0.4, 0.2, 0.1, 0.1]]], dtype=torch.float64)
    # a zero [CLS] key: every logit is 0, semantic is uniform, 0.25 per patch
    keys = torch.tensor([[[0, 0], [1, 0], [0, 2], [3, 0], [0, 1]]], dtype=torch.float64)
    # scores: 0.75 * 1, 0.5 * 2, 0.375 * 3, 0.375 * 1 = 0.75, 1.0, 1.125, 0.375
    tokens = tokens_of(cls_attention, keys)
    out = get("flowcut", keep=3)(tokens)
    assert out.positions[0].tolist() == [0, 2, 3]  # [CLS], then the two best patches in order
    assert torch.equal(out.features[0], tokens.features[0, [0, 2, 3]])
    check_compression(out, tokens)


@pytest.mark.parametrize("cls_key,kept", [([math.log(3), 0.0], 1), ([0.0, math.log(3)], 2)])
def test_the_semantic_term_follows_the_cls_value(cls_key, kept):
    # equal relation (0.5 each) and equal L1 norms: semantic softmax over k_cls . k_j decides
    cls_attention = torch.tensor([[[0.5, 0.25, 0.25]]], dtype=torch.float64)
    keys = torch.tensor([[cls_key, [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    out = get("flowcut", keep=2)(tokens_of(cls_attention, keys))
    assert out.positions[0].tolist() == [0, kept]


def test_scores_are_the_official_ones():
    from reproductions.image.flowcut import flowcut_scores

    cls_attention = torch.tensor([[[0.2, 0.4, 0.2, 0.1, 0.1]]], dtype=torch.float64)
    keys = torch.tensor([[[0, 0], [1, 0], [0, 2], [3, 0], [0, 1]]], dtype=torch.float64)
    want = torch.tensor([[0.75, 1.0, 1.125, 0.375]], dtype=torch.float64)
    assert torch.allclose(flowcut_scores(cls_attention, keys, 1), want, atol=1e-12)


def test_matches_the_official_selection_at_llava_size():
    # one value head: the keys signal (averaged over heads) then is exactly the official v_metric
    g = torch.Generator().manual_seed(0)
    n = 1 + 24 * 24
    attn = (torch.randn(2, 16, n, generator=g, dtype=torch.float64) * 3).softmax(-1)
    values = torch.randn(2, 1, n, 64, generator=g, dtype=torch.float64) * 0.3
    hidden = torch.randn(2, n, 8, generator=g, dtype=torch.float64)
    tokens = Tokens(
        features=hidden, layout=(24, 24), special=1, cls_attention=attn, keys=values[:, 0]
    )
    for target in (65, 129, 193):
        out = get("flowcut", keep=target)(tokens)
        want = official_selection(attn, values, target)
        assert torch.equal(out.positions, want)
        assert torch.equal(out.features, torch.stack([hidden[b, want[b]] for b in range(2)]))
        check_compression(out, tokens)


def test_budget_counts_the_cls_and_fractions_floor():
    g = torch.Generator().manual_seed(1)
    attn = torch.rand(1, 2, 10, generator=g).softmax(-1)
    keys = torch.randn(1, 10, 4, generator=g)
    tokens = tokens_of(attn, keys)
    assert get("flowcut", keep=1)(tokens).positions.tolist() == [[0]]  # the [CLS] alone
    assert get("flowcut", keep=0.45)(tokens).count == 4  # floor(0.45 * 10)
    every = get("flowcut", keep=10)(tokens)
    assert torch.equal(every.features, tokens.features)
    assert every.positions.tolist() == [list(range(10))]


def test_a_cls_attending_only_to_itself_ranks_by_the_semantic_term():
    cls_attention = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0]]])
    # relation 0 (the official gives NaN, which would rank token 1 first); semantic 1 : e^2 : 1,
    # L1 norms 1, 2, 1
    out = get("flowcut", keep=2)(tokens_of(cls_attention, keys))
    assert out.positions.tolist() == [[0, 2]]


def test_without_a_cls_the_score_is_attention_times_the_norm():
    # LLaVA's projector input: patches only, the [CLS] row over them; no semantic term
    cls_attention = torch.tensor([[[0.4, 0.2, 0.1, 0.3]]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, -3.0], [5.0, 0.0], [0.5, 0.5]]])
    # 0.4 * 1, 0.2 * 3, 0.1 * 5, 0.3 * 1 = 0.4, 0.6, 0.5, 0.3
    x = torch.randn(1, 4, 3)
    tokens = Tokens(features=x, cls_attention=cls_attention, keys=keys)
    out = get("flowcut", keep=2)(tokens)
    assert out.positions.tolist() == [[1, 2]]
    assert torch.equal(out.features[0], x[0, [1, 2]])
    check_compression(out, tokens)
    every = get("flowcut", keep=1.0)(tokens)
    assert torch.equal(every.features, x)


def test_needs_at_most_one_cls_and_both_signals():
    attn = torch.rand(1, 2, 5).softmax(-1)
    keys = torch.randn(1, 5, 4)
    x = torch.randn(1, 5, 3)
    with pytest.raises(ValueError, match="special"):
        get("flowcut", keep=3)(Tokens(features=x, special=2, cls_attention=attn, keys=keys))
    with pytest.raises(ValueError, match="keys"):
        get("flowcut", keep=3)(Tokens(features=x, special=1, cls_attention=attn))
    with pytest.raises(ValueError, match="cls_attention"):
        get("flowcut", keep=3)(Tokens(features=x, special=1, keys=keys))


@pytest.mark.parametrize("keep", [0, -3, 0.0, 1.5, True, "64"])
def test_rejects_bad_budgets(keep):
    with pytest.raises(ValueError, match="keep"):
        get("flowcut", keep=keep)


def test_half_precision_inputs_keep_their_dtype():
    g = torch.Generator().manual_seed(2)
    attn = torch.rand(1, 4, 17, generator=g).softmax(-1).half()
    keys = (torch.randn(1, 17, 8, generator=g) * 4).half()
    x = torch.randn(1, 17, 6, generator=g).half()
    out = get("flowcut", keep=5)(Tokens(features=x, special=1, cls_attention=attn, keys=keys))
    assert out.features.dtype == torch.float16 and out.count == 5
