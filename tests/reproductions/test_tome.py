"""ToMe: the defining merge, the official algorithm restated, sizes across calls."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.image.tome import bipartite_soft_matching, proportional_attention_bias
from reproductions.interface import check_compression


def official_tome(x, metric, size, r, class_token):
    """A plain restatement of ToMe's bipartite_soft_matching + merge_wavg (returns [unm A, B])."""
    t = metric.shape[1]
    r = min(r, (t - int(class_token)) // 2)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    if class_token:
        scores[..., 0, :] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    if class_token:
        unm_idx = unm_idx.sort(dim=1)[0]

    def merge(v):
        src, dst = v[..., ::2, :], v[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce="sum")
        return torch.cat([unm, dst], dim=1)

    merged_x = merge(x * size)
    merged_size = merge(size)
    return merged_x / merged_size, merged_size, unm_idx[..., 0]


def test_the_most_similar_pair_merges_by_size():
    # token 2 (set A) is a near copy of token 3 (set B); every other pair is orthogonal-ish
    x = torch.eye(6, dtype=torch.float64).unsqueeze(0)
    x[0, 2] = x[0, 3] + 0.01
    sizes = torch.tensor([[1.0, 1.0, 3.0, 1.0, 1.0, 1.0]])
    out = get("tome", r=1)(Tokens(features=x, sizes=sizes))
    assert out.source[0].tolist() == [0, 1, 2, 2, 3, 4]
    assert out.positions[0].tolist() == [0, 1, 3, 4, 5]
    assert out.sizes[0].tolist() == [1, 1, 4, 1, 1]
    assert torch.allclose(out.features[0, 2], (3 * x[0, 2] + x[0, 3]) / 4)


@pytest.mark.parametrize("class_token", [True, False])
def test_matches_the_official_algorithm_up_to_order(class_token):
    g = torch.Generator().manual_seed(0)
    n = 1 + 24 if class_token else 25
    x = torch.randn(2, n, 8, generator=g, dtype=torch.float64)
    keys = torch.randn(2, n, 4, generator=g, dtype=torch.float64)
    size = torch.rand(2, n, generator=g, dtype=torch.float64) + 1
    tokens = Tokens(features=x, keys=keys, special=int(class_token), sizes=size)
    out = get("tome", r=7)(tokens)
    want_x, want_size, unm = official_tome(x, keys.clone(), size[..., None], 7, class_token)
    # official order: unmerged A (by the order it emits), then every B token in index order
    official_positions = torch.cat([2 * unm, torch.arange(1, n, 2).expand(2, -1)], dim=1)
    for row in range(2):
        slots = out.source[row, official_positions[row]]
        assert torch.allclose(out.features[row, slots], want_x[row])
        assert torch.allclose(out.sizes[row, slots].double(), want_size[row, :, 0])
    check_compression(out, tokens)
    assert (out.positions.diff(dim=1) > 0).all()  # positional order


def test_sizes_carry_across_calls_into_proportional_attention():
    x = torch.randn(1, 17, 6, generator=torch.Generator().manual_seed(1))
    first = get("tome", r=4)(Tokens(features=x, special=1))
    second = get("tome", r=4)(Tokens(features=first.features, special=1, sizes=first.sizes))
    assert second.count == 9 and second.sizes.sum() == 17
    bias = proportional_attention_bias(second.sizes)
    assert bias.shape == (1, 1, 1, 9) and torch.allclose(bias.exp()[0, 0, 0], second.sizes[0])


def test_r_is_capped_and_special_tokens_never_merge():
    x = torch.randn(1, 9, 4)
    out = get("tome", r=100)(Tokens(features=x, special=2))
    assert out.count == 9 - (9 - 2) // 2
    assert out.source[0, :2].tolist() == [0, 1]  # nothing merges into or out of them
    assert (out.source[0, 2:] >= 2).all() and out.sizes[0, :2].tolist() == [1, 1]


def test_matching_applies_to_any_aligned_tensor():
    g = torch.Generator().manual_seed(2)
    x, other = torch.randn(2, 12, 5, generator=g), torch.randn(2, 12, 3, 2, generator=g)
    matching = bipartite_soft_matching(x, 3)
    tokens = Tokens(features=x)
    assert torch.allclose(matching.merge(x), get("tome", r=3)(tokens).features)
    merged = matching.merge(other)
    assert merged.shape == (2, 9, 3, 2)
    slot = matching.source[0, 0]
    members = (matching.source[0] == slot).nonzero()[:, 0]
    assert torch.allclose(merged[0, slot], other[0, members].mean(0))
    assert torch.equal(matching.sizes(), get("tome", r=3)(tokens).sizes)


def test_keys_are_the_metric_when_given():
    x = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(3))
    keys = torch.zeros(1, 10, 2)
    keys[..., 0] = 1.0
    keys[0, 4, :] = torch.tensor([1.0, 1.0])  # the only A token not identical to every B key
    out = get("tome", r=4)(Tokens(features=x, keys=keys))
    assert out.source[0, 4] == out.positions[0].tolist().index(4)  # it alone stays unmerged
    with pytest.raises(ValueError, match="keys"):
        get("tome", r=4)(Tokens(features=x, keys=keys[:, :5]))


def test_bad_r_raises():
    for r in (-1, 1.5, True):
        with pytest.raises(ValueError, match="r="):
            get("tome", r=r)
