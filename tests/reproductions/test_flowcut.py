"""FlowCut: one layer's score by hand, the running score, the entropy-adaptive count, the layer
schedule, and the whole encoder loop against a plain restatement of the official code."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.image.flowcut import FlowCutLayer
from reproductions.image.flowcut_qwen import (
    FlowCutQwenLLM,
    FlowCutQwenViT,
    FlowCutQwenViTBlock,
    flowcut_llm_scores,
)
from reproductions.interface import check_compression


def hand_tokens(carried=None):
    """[CLS] + 4 patches. Head-mean [CLS] attention 0.2, 0.4, 0.2, 0.1, 0.1, so relation over the
    patches 0.5, 0.25, 0.125, 0.125. A zero [CLS] value in both heads: every v_cls . v_j is 0, the
    softmax uniform, semantic 0.25 per patch. Head-mean values (1, 0), (0, 2), (3, 0), (0, 1):
    L1 norms 1, 2, 3, 1 (patch 4's per-head norms are 5 each: the mean comes first). Scores
    (0.5 + 0.25) * 1, (0.25 + 0.25) * 2, (0.125 + 0.25) * 3, (0.125 + 0.25) * 1
    = 0.75, 1.0, 1.125, 0.375."""
    attention = torch.tensor([[[0.2, 0.6, 0.0, 0.1, 0.1], [0.2, 0.2, 0.4, 0.1, 0.1]]], dtype=torch.float64)
    values = torch.tensor(
        [[[[0, 0], [2, 0], [0, 4], [3, 1], [4, 1]], [[0, 0], [0, 0], [0, 0], [3, -1], [-4, 1]]]],
        dtype=torch.float64,
    )
    features = torch.randn(1, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return Tokens(features=features, special=1, cls_attention=attention, values=values, scores=carried)


def test_the_final_cut_keeps_the_best_scored_patches_in_order():
    tokens = hand_tokens()
    out = get("flowcut", keep=3)(tokens)
    assert out.positions.tolist() == [[0, 2, 3]]  # the [CLS], then patches 2 and 3 (1.0, 1.125)
    assert torch.equal(out.features[0], tokens.features[0, [0, 2, 3]])
    assert torch.allclose(out.scores, torch.tensor([[0.0, 1.0, 1.125]], dtype=torch.float64))
    check_compression(out, tokens)


def test_the_running_score_averages_the_carried_one_half_and_half():
    # carried 2, 0, 0, 1: running 0.5 * carried + 0.5 * (0.75, 1.0, 1.125, 0.375)
    # = 1.375, 0.5, 0.5625, 0.6875: patches 1 and 4 now
    carried = torch.tensor([[0.0, 2.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    out = get("flowcut", keep=3)(hand_tokens(carried))
    assert out.positions.tolist() == [[0, 1, 4]]
    assert torch.allclose(out.scores, torch.tensor([[0.0, 1.375, 0.6875]], dtype=torch.float64))


def test_an_odd_layer_only_scores():
    tokens = hand_tokens()
    out = FlowCutLayer(keep=3, remaining=3)(tokens)
    assert torch.equal(out.features, tokens.features) and out.positions.tolist() == [[0, 1, 2, 3, 4]]
    assert torch.allclose(out.scores, torch.tensor([[0.0, 0.75, 1.0, 1.125, 0.375]], dtype=torch.float64))


def test_a_layer_at_the_target_leaves_everything_as_it_is():
    carried = torch.tensor([[0.0, 2.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    out = FlowCutLayer(keep=5, remaining=0)(hand_tokens(carried))
    assert out.positions.tolist() == [[0, 1, 2, 3, 4]] and torch.equal(out.scores, carried)


@pytest.mark.parametrize("cls_value,kept", [([math.log(3), 0.0], 1), ([0.0, math.log(3)], 2)])
def test_the_semantic_term_follows_the_cls_value(cls_value, kept):
    # equal relation (0.25 each) and equal L1 norms (1): softmax over v_cls . v_j decides
    attention = torch.tensor([[[0.5, 0.25, 0.25]]], dtype=torch.float64)
    values = torch.tensor([[[cls_value, [1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    tokens = Tokens(features=torch.randn(1, 3, 2, dtype=torch.float64), special=1, cls_attention=attention, values=values)
    assert get("flowcut", keep=2)(tokens).positions.tolist() == [[0, kept]]


def adaptive_tokens(rows):
    """[CLS] + 8 patches, uniform semantic (zero [CLS] value), L1 norms 1 except patches 2 and 5
    (0): their scores are 0, the others' positive. Each row's [CLS] attention: 0.5 on itself, the
    rest in proportion to `rows`."""
    p = torch.tensor(rows, dtype=torch.float64)
    p = p / p.sum(-1, keepdim=True)
    attention = torch.cat([torch.full((len(rows), 1), 0.5, dtype=torch.float64), 0.5 * p], -1)[:, None]
    values = torch.zeros(len(rows), 1, 9, 2, dtype=torch.float64)
    values[:, 0, 1:, 0] = torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1])
    features = torch.randn(len(rows), 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return Tokens(features=features, special=1, cls_attention=attention, values=values)


PEAKED = [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 128]


def test_the_adaptive_count_follows_the_attention_entropy():
    """Entropy of PEAKED (in bits): 1/2 + 2/4 + 3/8 + 4/16 + 5/32 + 6/64 + 7/128 + 7/128 = 127/64,
    of 3 at most: ratio 127/192. Two layers before the final cut (R = 4) to T = 3 tokens (2
    patches): round((8 - 2) / sqrt(4) * (1 - (127/192)^2)) = round(3 * 20735/36864 = 1.69) = 2
    removed, the two zero-scored patches; 7 tokens stay (never fewer than T). Uniform attention
    has ratio 1 and removes none."""
    out = FlowCutLayer(keep=3, remaining=4)(adaptive_tokens([PEAKED]))
    assert out.positions.tolist() == [[0, 1, 3, 4, 6, 7, 8]]
    assert FlowCutLayer(keep=3, remaining=4)(adaptive_tokens([[1.0] * 8])).count == 9
    # R = 2: round(6 / sqrt(2) * 0.5625) = round(2.39) = 2; R = 16: round(0.84) = 1
    assert FlowCutLayer(keep=3, remaining=2)(adaptive_tokens([PEAKED])).count == 7
    assert FlowCutLayer(keep=3, remaining=16)(adaptive_tokens([PEAKED])).count == 8
    # the count of a batch is its largest: the uniform row loses its two zero-scored patches too
    both = FlowCutLayer(keep=3, remaining=4)(adaptive_tokens([[1.0] * 8, PEAKED]))
    assert both.positions.tolist() == [[0, 1, 3, 4, 6, 7, 8]] * 2


def test_the_schedule_counts_the_layers_left_before_the_projectors():
    """LLaVA-1.5's CLIP-L (24 layers, the projector reads layer 22): layers 0-21 step with 21-0
    layers left, 22 and 23 run unchanged; the budget is resolved on the encoder's input."""
    method = get("flowcut", keep=0.25)
    steps = [method.encoder_step(i, 577, 22) for i in range(24)]
    assert [s.remaining for s in steps[:22]] == list(range(21, -1, -1))
    assert steps[22:] == [None, None]
    assert {s.keep for s in steps[:22]} == {144}  # floor(0.25 * 577), the [CLS] included


def official_encoder(attentions, values, target):
    """A plain restatement of the official CLIP encoder loop (`CLIPEncoder_forward`,
    `CLIPEncoderLayer_forward`, `compute_score`, `adaptive_prune_ratio`) for 24 layers with
    select_layer 22, on per-layer signals of the original tokens (B, L, heads, N) and (B, L,
    heads, N, d), taken at the tokens still there. Returns the kept original indices."""
    b = attentions.shape[0]
    kept = torch.arange(attentions.shape[-1]).expand(b, -1)
    running = None
    for idx in range(24):
        rpl = 22 - idx - 1
        if kept.shape[1] <= target:
            continue
        rows = torch.arange(b)[:, None]
        attn = attentions[:, idx][rows, :, kept].transpose(1, 2)  # (B, heads, n)
        v = values[:, idx][rows, :, kept].transpose(1, 2)  # (B, heads, n, d)
        cls_attention = attn[:, :, 1:].mean(dim=1)
        semantic_attn = torch.softmax(v[:, :, :1] @ v.transpose(2, 3), dim=-1).squeeze(2).mean(1)
        relation = cls_attention / cls_attention.sum(dim=-1, keepdim=True)
        semantic = semantic_attn[:, 1:] / semantic_attn[:, 1:].sum(dim=-1, keepdim=True)
        scores = (relation + semantic) * torch.norm(v.mean(1)[:, 1:], p=1, dim=-1)
        running = scores if running is None else 0.5 * running + 0.5 * scores
        if rpl % 2 == 0:
            if rpl:
                n = cls_attention.shape[-1]
                prob = cls_attention / cls_attention.sum(dim=-1, keepdim=True)
                ratio = -torch.sum(prob * torch.log(prob), dim=-1) / torch.log(torch.tensor(n))
                r = (n - (target - 1)) / rpl**0.5 * (1 - ratio**2)
                prune = int(r.max(0).values.round()) if b > 1 else int(r.round())
            else:
                prune = kept.shape[1]
            count = max(kept.shape[1] - prune, target)
            top = torch.topk(running, count - 1, dim=1).indices.sort(dim=1).values
            running = running.gather(1, top)
            kept = torch.cat([kept[:, :1], kept[:, 1:].gather(1, top)], dim=1)
    return kept


@pytest.mark.parametrize("target", [65, 129, 193])
def test_the_encoder_loop_equals_the_official_one_at_llava_size(target):
    """Each layer's step on the tokens the earlier steps kept, with the scores they carried,
    keeps the tokens the official loop keeps (random signals per layer, peaked attention so that
    the adaptive counts differ from layer to layer)."""
    g = torch.Generator().manual_seed(target)
    b, heads, n = 2, 4, 577
    attentions = (torch.randn(b, 24, heads, n, generator=g, dtype=torch.float64) * 3).softmax(-1)
    values = torch.randn(b, 24, heads, n, 16, generator=g, dtype=torch.float64) * 0.3
    features = torch.randn(b, n, 8, generator=g, dtype=torch.float64)
    method = get("flowcut", keep=target)
    kept, carried, counts = torch.arange(n).expand(b, -1), None, []
    for index in range(24):
        step = method.encoder_step(index, n, 22)
        if step is None:
            continue
        rows = torch.arange(b)[:, None]
        tokens = Tokens(
            features=features[rows, kept], special=1, scores=carried,
            cls_attention=attentions[:, index][rows, :, kept].transpose(1, 2),
            values=values[:, index][rows, :, kept].transpose(1, 2),
        )
        out = step(tokens)
        check_compression(out, tokens)
        kept, carried = kept.gather(1, out.positions), out.scores
        counts.append(out.count)
    assert torch.equal(kept, official_encoder(attentions, values, target))
    assert len(set(counts)) > 3 and counts[-1] == target  # several adaptive cuts, then T


def cls_free(tokens: Tokens, attention=None) -> Tokens:
    """`tokens` without their [CLS] (the Qwen2-VL port's form: `cls_attention` from a mean query)."""
    attention = tokens.cls_attention[..., 1:] if attention is None else attention
    return Tokens(features=tokens.features[:, 1:], cls_attention=attention, values=tokens.values[:, :, 1:])


def test_the_qwen_vit_part_scores_by_the_relation_times_the_value_norm():
    # head-mean attention 0.4, 0.2, 0.1, 0.1: shares 0.5, 0.25, 0.125, 0.125; L1 norms 1, 2, 3, 1;
    # no semantic term (no v_cls): 0.5, 0.5, 0.375, 0.125 (with it: 0.75, 1.0, 1.125, 0.375);
    # keep K = 1 LLM token: 2K = 2 units stay, the first two
    out = FlowCutQwenViT(keep=1)(cls_free(hand_tokens()))
    assert out.positions.tolist() == [[0, 1]]
    assert torch.allclose(out.scores, torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def test_the_qwen_vit_part_cuts_adaptively_towards_the_whole_2k():
    # attention 0.97, 0.01, 0.01, 0.01: entropy 0.1677, ratio 0.1677 / log 4 = 0.121; at R = 2,
    # 2K = 2 the port removes round((4 - 2) / sqrt 2 * (1 - 0.121^2)) = round(1.39) = 1 (the
    # [CLS] form's target - 1 would remove round(2.09) = 2); 2K = 4 leaves the 4 as they are
    tokens = cls_free(hand_tokens(), torch.tensor([[[0.97, 0.01, 0.01, 0.01]] * 2], dtype=torch.float64))
    assert FlowCutQwenViTBlock(keep=1, remaining=2)(tokens).count == 3
    assert FlowCutQwenViTBlock(keep=2, remaining=2)(tokens).count == 4
    assert FlowCutQwenViTBlock(keep=1, remaining=3)(tokens).count == 4  # odd R: scores only


def llm_tokens() -> Tokens:
    """4 media tokens, 2 heads of size 2, 2 query rows of which the last counts. Its attention to
    the media: head 0 0.1, 0.2, 0.1, 0.1 (the text columns hold the other 0.5), head 1 0.05,
    0.05, 0.1, 0.05: renormalised 0.2, 0.4, 0.2, 0.2 and 0.2, 0.2, 0.4, 0.2, relation 0.2, 0.3,
    0.3, 0.2. Its value: 0 in head 0 (a uniform softmax, 0.25 each), (sqrt 2 ln 3, 0) in head 1,
    whose media values (1, 0), 0, 0, (-2, 0) give v_last . v_j / sqrt 2 = ln 3, 0, 0, -2 ln 3: a
    softmax 27, 9, 9, 1 / 46; semantic (0.25 + that) / 2 = 0.41848, 0.22283, 0.22283, 0.13587.
    Head-mean values (1, 0), (2, 0), (0, -1), (0, 1) from head 0's (1, 0), (4, 0), (0, -2), (2, 2):
    L1 norms 1, 2, 1, 1 (the mean of the heads' norms would give token 3 a 3). Scores 0.61848,
    1.04565, 0.52283, 0.33587. The first row (attention on token 3, a huge value) is not read."""
    attention = torch.tensor(
        [[[[0.0, 0.0, 0.0, 0.9], [0.1, 0.2, 0.1, 0.1]], [[0.0, 0.0, 0.0, 0.9], [0.05, 0.05, 0.1, 0.05]]]],
        dtype=torch.float64,
    )
    values = torch.tensor(
        [[[[1, 0], [4, 0], [0, -2], [2, 2]], [[1, 0], [0, 0], [0, 0], [-2, 0]]]], dtype=torch.float64
    )
    text_values = torch.tensor([[[[0, 0], [0, 0]], [[0, -50], [math.sqrt(2) * math.log(3), 0]]]], dtype=torch.float64)
    features = torch.randn(1, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return Tokens(features=features, attention=attention, values=values, text_values=text_values)


def test_the_qwen_llm_part_scores_the_last_row_by_relation_and_value_similarity():
    tokens = llm_tokens()
    scores = flowcut_llm_scores(tokens.attention, tokens.values, tokens.text_values)
    expected = torch.tensor([[0.618478, 1.045652, 0.522826, 0.335870]], dtype=torch.float64)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    out = FlowCutQwenLLM(keep=2)(tokens)
    assert out.positions.tolist() == [[0, 1]]  # in positional order, as the port's sort
    assert torch.equal(out.features[0], tokens.features[0, [0, 1]])
    assert FlowCutQwenLLM(keep=3)(tokens).positions.tolist() == [[0, 1, 2]]
    check_compression(out, tokens)


def test_the_qwen_llm_part_leaves_fewer_than_k_tokens_in_a_model_and_checks_its_values():
    assert FlowCutQwenLLM(keep=10).step(0, 4).keep == 4  # the port cuts only above K
    assert FlowCutQwenLLM(keep=0.5).step(0, 4).keep == 0.5
    tokens = llm_tokens()
    with pytest.raises(ValueError, match="text_values"):
        FlowCutQwenLLM(keep=2)(Tokens(**{**tokens.__dict__, "text_values": tokens.text_values[:, :1]}))
    with pytest.raises(ValueError, match="acts at the encoder and llm stages"):
        get("flowcut_qwen", keep=2)(tokens)
    assert [type(p) for p in get("flowcut_qwen", keep=3).parts()] == [FlowCutQwenViT, FlowCutQwenLLM]
    assert [p.keep for p in get("flowcut_qwen", keep=3).parts()] == [3, 3]


def test_needs_the_cls_and_both_signals():
    tokens = hand_tokens()
    for wrong in (cls_free(tokens), Tokens(**{**tokens.__dict__, "special": 2})):  # no [CLS]: flowcut_qwen's
        with pytest.raises(ValueError, match="special"):
            get("flowcut", keep=3)(wrong)
    for signal in ("values", "cls_attention"):
        with pytest.raises(ValueError, match=signal):
            get("flowcut", keep=3)(Tokens(**{**tokens.__dict__, signal: None}))
    with pytest.raises(ValueError, match="scores"):
        get("flowcut", keep=3)(Tokens(**{**tokens.__dict__, "scores": torch.zeros(1, 4)}))


@pytest.mark.parametrize("name", ["flowcut", "flowcut_qwen"])
@pytest.mark.parametrize("keep", [0, -3, 0.0, 1.5, True, "64"])
def test_rejects_bad_budgets(name, keep):
    with pytest.raises(ValueError, match="keep"):
        get(name, keep=keep)


def test_rejects_a_negative_layer_count():
    with pytest.raises(ValueError, match="remaining"):
        FlowCutLayer(keep=3, remaining=-1)
