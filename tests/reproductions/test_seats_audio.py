"""seats_audio: SEATS' winDivPrune, attention-weighted max-min diversity inside each window."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def tokens(points: list[tuple[float, float]], attention: list[list[float]]) -> Tokens:
    """2-D features and a per-token attention given as the mean of two heads (x0.5 and x1.5)."""
    x = torch.tensor([points], dtype=torch.float64).expand(len(attention), -1, -1)
    a = torch.tensor(attention, dtype=torch.float64)
    heads = torch.stack([a * 0.5, a * 1.5], dim=1)  # (B, 2, N), head mean = a
    return Tokens(features=x, layout=(x.shape[1],), cls_attention=heads)


# x0 = x1 = east, x2 = north, x3 = west: distances 1 - cos are d01 = 0, d02 = d12 = d23 = 1,
# d03 = d13 = 2; then a second window with x4 = east, x5 = north.
POINTS = [(1, 0), (1, 0), (0, 1), (-1, 0), (1, 0), (0, 1)]


def test_attention_weights_the_columns_of_the_distance():
    # window 4 keeps round(0.5 * 4) = 2, the tail window of 2 keeps round(0.5 * 2) = 1.
    # Row 0, a = (1, 1, 1, 1 | 1, 1): each column's second-smallest entry is 0, 0, 1, 1, so
    #   the first pick is 2 (tie with 3: lowest); its row (1, 1, -, 1) then picks 0; in the tail
    #   both columns hold 1: pick 4.
    # Row 1, a = (1, 1, 1, 3 | 1, 2): column 3 becomes (6, 6, 3, 0), second-smallest 3: pick 3;
    #   row 3 of the weighted distance, (2, 2, 1, -), then picks 0; in the tail column 5 holds
    #   2 > 1: pick 5.
    # Row 2, a = (1, 2, 1, 1 | 1, 1): first pick 2 again, but its row (1, 2, -, 1) now picks the
    #   attended duplicate 1 rather than 0.
    attention = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 3, 1, 2], [1, 2, 1, 1, 1, 1]]
    out = get("seats_audio", ratio=0.5, window=4)(tokens(POINTS, attention))
    assert out.positions.tolist() == [[0, 2, 4], [0, 3, 5], [1, 2, 4]]
    assert out.source[1].tolist() == [0, -1, -1, 1, -1, 2]
    expected = torch.tensor([[1.0, 0], [-1, 0], [0, 1]], dtype=torch.float64)
    assert torch.equal(out.features[1], expected)
    assert out.sizes.tolist() == [[1, 1, 1]] * 3


def test_per_window_counts_round_half_to_even_and_keep_at_least_one():
    n13 = Tokens(features=torch.zeros(1, 13, 2), layout=(13,), cls_attention=torch.ones(1, 1, 13))
    # windows of 5, 5, 3: round(2.5) = 2, round(2.5) = 2, round(1.5) = 2 (Python's round)
    assert get("seats_audio", ratio=0.5, window=5).output_count(n13) == 6
    assert get("seats_audio", ratio=0.0, window=5).output_count(n13) == 3  # one per window
    assert get("seats_audio", ratio=0.5, window=5)(n13).count == 6


def test_a_window_longer_than_the_clip_is_one_window():
    t = tokens(POINTS, [[1, 1, 1, 3, 1, 1]])
    out = get("seats_audio", ratio=0.5, window=50)(t)
    assert out.count == 3 and out.positions[0].tolist() == sorted(out.positions[0].tolist())


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="ratio"):
        get("seats_audio", ratio=1.5)
    with pytest.raises(ValueError, match="window"):
        get("seats_audio", window=0)
    with pytest.raises(ValueError, match="cls_attention"):
        get("seats_audio")(Tokens(features=torch.zeros(1, 4, 2), layout=(4,)))
