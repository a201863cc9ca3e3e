"""fastlongspeech: neighbour fusion weighted by a CTC head's non-blank probability, re-scored
after every step."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def method(**params):
    """A 2-D head whose non-blank probability is 3/4 for a frame (u, v) with u > v and 1/4 for
    u < v: LayerNorm without eps maps it to (s, -s), s = sign(u - v); the projector is the
    identity; the blank logit minus the other is -s ln 3, so p_blank = 1 / (1 + 3^s)."""
    m = get("fastlongspeech", dim=2, hidden=2, classes=2, **params)
    m.head.double()
    m.head[0].eps = 0.0
    with torch.no_grad():
        m.head[1].weight.copy_(torch.eye(2))
        m.head[1].bias.zero_()
        ln3 = math.log(3)
        m.head[2].weight.copy_(torch.tensor([[0, 0], [-ln3 / 2, ln3 / 2]], dtype=torch.float64))
    return m


def frames(*points: tuple[float, float]) -> Tokens:
    x = torch.tensor([points], dtype=torch.float64)
    return Tokens(features=x, layout=(x.shape[1],))


def polar(*degrees: float) -> list[tuple[float, float]]:
    return [(math.cos(math.radians(d)), math.sin(math.radians(d))) for d in degrees]


def test_one_step_joins_the_most_similar_neighbours_weighted_by_non_blank_probability():
    # angles 0, 10, 60, 65, 150, 210: neighbour gaps 10, 50, 5, 85, 60 degrees. 6 -> 3 frames
    # joins the 3 most similar pairs (gaps 5, 10, 50): (2, 3), (0, 1), (1, 2), so frames 0-3
    # fuse and 4, 5 stay. Non-blank weights: 3/4 for 0 and 10 degrees (cos > sin), 1/4 else.
    x = polar(0, 10, 60, 65, 150, 210)
    out = method(length=3, schedule="halve")(frames(*x))
    p = torch.tensor(x, dtype=torch.float64)
    fused = (0.75 * p[0] + 0.75 * p[1] + 0.25 * p[2] + 0.25 * p[3]) / (2 + 1e-7)
    assert torch.allclose(out.features[0, 0], fused, rtol=0, atol=1e-12)
    # a frame alone keeps w x / (w + 1e-7)
    assert torch.allclose(out.features[0, 1], p[4] * 0.25 / (0.25 + 1e-7), rtol=0, atol=1e-12)
    assert out.source[0].tolist() == [0, 0, 0, 0, 1, 2]
    assert out.positions[0].tolist() == [0, 4, 5]
    assert out.sizes[0].tolist() == [4, 1, 1]


def test_each_step_rescores_the_fused_frames():
    # 4 -> 2 -> 1 (halve). Gaps: cos(x0, x1) = .96 and cos(x2, x3) = .93 beat cos(x1, x2) = .28,
    # so step 1 fuses {0, 1} (weights 3/4, 1/4) and {2, 3} (1/4, 1/4). The fused frames are
    # scored again: g0 = (3.75, 3.25) has u > v (3/4), g1 = (-2, 1.75) / 0.5 has u < v (1/4).
    # Weights carried over instead (1 and 1/2) would mix them 2:1, not 3:1.
    out = method(length=1, schedule="halve")(frames((4, 3), (3, 4), (-3, 4), (-5, 3)))
    g0 = torch.tensor([3.75, 3.25], dtype=torch.float64) / (1 + 1e-7)
    g1 = torch.tensor([-2.0, 1.75], dtype=torch.float64) / (0.5 + 1e-7)
    expected = (0.75 * g0 + 0.25 * g1) / (1 + 1e-7)
    assert torch.allclose(out.features[0, 0], expected, rtol=0, atol=1e-12)
    assert out.source[0].tolist() == [0, 0, 0, 0] and out.sizes[0].tolist() == [4]


def test_schedules_pass_through_their_counts():
    def steps(n: int, **params) -> list[int]:
        return get("fastlongspeech", dim=2, hidden=2, classes=2, **params).steps(n)

    assert steps(750) == [400]  # Qwen2-Audio's 30 s, the README's length
    assert steps(750, length=100) == [400, 200, 100]
    assert steps(300, length=100) == [200, 100]
    assert steps(750, schedule="halve") == [400]
    assert steps(3000, schedule="halve") == [1500, 750, 400]
    assert steps(750, length=150, schedule="halve") == [375, 187, 150]  # int(375 / 2) = 187
    assert steps(750, length=800) == []


def test_a_length_the_pool_schedule_does_not_reach_raises():
    for length, n in [(150, 750), (500, 750), (6, 12)]:
        m = get("fastlongspeech", length=length, dim=2, hidden=2, classes=2)
        with pytest.raises(ValueError, match="halve"):
            m(Tokens(features=torch.randn(1, n, 2), layout=(n,)))


def test_length_at_least_n_is_the_identity_and_batches_fuse_row_by_row():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 32, generator=g, dtype=torch.float64)
    t = Tokens(features=x, layout=(40,))
    assert torch.equal(get("fastlongspeech", length=40, dim=32)(t).features, x)
    m = get("fastlongspeech", length=9, schedule="halve", dim=32, hidden=16, classes=8)
    out = m(t)
    check_compression(out, t)
    assert out.count == 9 and out.sizes.sum(dim=1).tolist() == [40, 40, 40]
    for b in range(3):
        one = m(Tokens(features=x[b : b + 1], layout=(40,)))
        assert torch.allclose(one.features[0], out.features[b], atol=1e-6)
        assert torch.equal(one.source[0], out.source[b])


def test_keeps_the_dtype_and_leaves_the_input_alone():
    x = torch.randn(2, 24, 32).to(torch.bfloat16)
    before = x.clone()
    out = get("fastlongspeech", length=6, schedule="halve", dim=32, hidden=16, classes=8)(
        Tokens(features=x, layout=(24,))
    )
    assert out.features.dtype == torch.bfloat16 and out.count == 6
    assert torch.equal(x, before)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="schedule"):
        get("fastlongspeech", schedule="thirds")
    with pytest.raises(ValueError, match="decreasing"):
        get("fastlongspeech", pool=(100, 200))
    with pytest.raises(ValueError, match="dim=2"):
        get("fastlongspeech", length=2, dim=4)(Tokens(features=torch.randn(1, 8, 2), layout=(8,)))
