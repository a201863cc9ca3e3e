"""atome: adjacent token merging on non-overlapping pairs (0, 1), (2, 3), ..."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def unit(*angles: float) -> torch.Tensor:
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([a.cos(), a.sin()], dim=-1).unsqueeze(0)


def tokens(keys: torch.Tensor, special: int = 0, **kwargs) -> Tokens:
    n = keys.shape[1]
    x = torch.arange(n, dtype=torch.float64).reshape(1, n, 1)
    return Tokens(features=x, keys=keys, layout=(n - special,), special=special, **kwargs)


def test_merges_the_most_similar_even_pair_never_an_odd_one():
    # pair (1, 2) is identical (similarity 1) but straddles two candidate pairs: never merged;
    # among (0, 1), (2, 3), (4, 5) the pair (4, 5) is the most similar.
    keys = unit(0.0, 1.0, 1.0, 2.2, 3.0, 3.1)
    out = get("atome", r=1)(tokens(keys))
    assert out.source[0].tolist() == [0, 1, 2, 3, 4, 4]
    assert out.features[0, :, 0].tolist() == [0, 1, 2, 3, 4.5]
    assert out.positions[0].tolist() == [0, 1, 2, 3, 4]
    assert out.sizes[0].tolist() == [1, 1, 1, 1, 2]


def test_threshold_merges_every_even_pair_above_it():
    keys = unit(0.0, 0.05, 1.0, 2.2, 3.0, 3.1, 4.0)  # similar pairs: (0, 1), (4, 5); 6 unpaired
    out = get("atome", threshold=0.9)(tokens(keys))
    assert out.source[0].tolist() == [0, 0, 1, 2, 3, 3, 4]


def test_merge_is_size_weighted_and_skips_special_tokens():
    keys = unit(0.0, 0.0, 0.0, 2.0)
    sizes = torch.tensor([[1.0, 3.0, 1.0, 1.0]])
    out = get("atome", r=1)(tokens(keys, special=1, sizes=sizes))
    # [CLS] stays alone although its key equals token 1's; pair (1, 2) merges 3:1
    assert out.source[0].tolist() == [0, 1, 1, 2]
    assert out.features[0, 1, 0].item() == pytest.approx((3 * 1 + 2) / 4)
    assert out.sizes[0].tolist() == [1, 4, 1]


def test_float_r_is_a_fraction_of_the_ordinary_tokens():
    keys = torch.randn(1, 10, 4, dtype=torch.float64)
    assert get("atome", r=0.2)(tokens(keys)).count == 8


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="exactly one"):
        get("atome")
    with pytest.raises(ValueError, match="exactly one"):
        get("atome", r=2, threshold=0.5)
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        get("atome", r=0.7)
    with pytest.raises(ValueError, match="non-overlapping"):
        get("atome", r=4)(tokens(torch.randn(1, 7, 4)))


def test_threshold_with_rows_that_disagree_raises():
    keys = torch.cat([unit(0.0, 0.0, 1.0, 2.5), unit(0.0, 1.5, 1.0, 2.5)])
    x = torch.zeros(2, 4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="rectangular"):
        get("atome", threshold=0.9)(Tokens(features=x, keys=keys, layout=(4,)))


def test_pair_merge_equals_the_generic_weighted_merge():
    from reproductions.audio.atome import merge_pairs
    from reproductions.ops import merge

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 5, generator=g, dtype=torch.float64)
    sizes = torch.rand(2, 9, generator=g, dtype=torch.float64) + 0.5
    joins = torch.zeros(2, 9, dtype=torch.bool)
    joins[:, [2, 6, 8]] = True  # pairs (1, 2), (5, 6), (7, 8)
    t = Tokens(features=x, layout=(9,), sizes=sizes.float())
    fast = merge_pairs(t, joins, 6)
    slow = merge(t, (~joins).long().cumsum(dim=1) - 1, 6)
    assert torch.allclose(fast.features, slow.features)
    assert torch.equal(fast.source, slow.source) and torch.equal(fast.positions, slow.positions)
    assert torch.allclose(fast.sizes, slow.sizes)
