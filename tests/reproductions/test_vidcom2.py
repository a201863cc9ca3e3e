"""vidcom2: frame budgets from frame uniqueness, their rounding, and the tokens kept per frame."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def embed(directions: list[tuple[float, float]], seed: int = 0) -> torch.Tensor:
    """(1, N, 4) float64 tokens: the 2-D `directions` in channels 0, 1 and large noise in
    channels 2, 3, whose variance is far above theirs, so VidCom2 drops those two channels."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.tensor(directions, dtype=torch.float64)
    noise = 100 * torch.randn(len(directions), 2, generator=g, dtype=torch.float64)
    return torch.cat([signal, noise], dim=1).unsqueeze(0)


E1, E2 = (1.0, 0.0), (0.0, 1.0)


def test_the_unique_frame_gets_the_larger_budget():
    # frames 0 and 1 hold e1 four times, frame 2 holds e2: the video centre is (2/3, 1/3), at
    # squared distance 2/9 from e1 and 8/9 from e2, so frame 2 is the unique one and, with
    # temperature 0.01, takes the whole softmax: w = (0, 0, 1), mean 1/3.
    # budgets: frame 2 round(0.5 * (1 + 1 - 1/3) * 4) = round(3.33) = 3,
    #          frames 0, 1 round(0.5 * (1 + 0 - 1/3) * 4) = round(1.33) = 1.
    x = embed([E1] * 8 + [E2] * 4)
    tokens = Tokens(features=x, layout=(3, 2, 2))
    method = get("vidcom2", retention=0.5)
    assert method.budgets(tokens).tolist() == [[1, 1, 3]]
    out = method(tokens)
    # inside each frame every token ties: the lowest indices, frame by frame
    assert out.positions[0].tolist() == [0, 4, 8, 9, 10]
    assert torch.equal(out.features, x[:, [0, 4, 8, 9, 10]])
    check_compression(out, tokens)
    # retention 1: frame 2's scale 5/3 is clamped to 1 (all 4 tokens), frames 0, 1 keep
    # round((2/3) * 4) = round(2.67) = 3
    assert get("vidcom2", retention=1.0).budgets(tokens).tolist() == [[3, 3, 4]]


def test_a_frame_keeps_its_tokens_least_like_the_video_and_the_frame():
    # one frame (softmax over one frame is 1: the budget is round(r * P)); three tokens at e1
    # and one at 60 degrees: the outlier is farthest from both centres, so it is kept first
    outlier = (math.cos(math.pi / 3), math.sin(math.pi / 3))
    x = embed([E1, E1, outlier, E1])
    tokens = Tokens(features=x, layout=(1, 2, 2))
    assert get("vidcom2", retention=0.25)(tokens).positions[0].tolist() == [2]
    # two tokens: the outlier and, among the tying e1 tokens, the lowest index, in order
    assert get("vidcom2", retention=0.5)(tokens).positions[0].tolist() == [0, 2]


def test_only_the_lowest_variance_half_of_the_channels_is_scored():
    outlier = (math.cos(math.pi / 3), math.sin(math.pi / 3))
    directions = [E1, E2, E1, E1, outlier, E2, E1, E2]
    method = get("vidcom2", retention=0.5)
    kept = [
        method(Tokens(features=embed(directions, seed=s), layout=(2, 2, 2))).positions.tolist()
        for s in range(5)
    ]
    assert all(k == kept[0] for k in kept)  # the noisy channels never matter


def test_budget_rounding_halves_to_even_and_keeps_at_least_one():
    g = torch.Generator().manual_seed(0)
    ten = Tokens(features=torch.randn(1, 10, 6, generator=g), layout=(1, 2, 5))
    assert get("vidcom2", retention=0.25).budgets(ten).tolist() == [[2]]  # 2.5 -> 2
    twelve = Tokens(features=torch.randn(1, 12, 6, generator=g), layout=(1, 3, 4))
    assert get("vidcom2", retention=0.125).budgets(twelve).tolist() == [[2]]  # 1.5 -> 2
    video = Tokens(features=torch.randn(1, 40, 6, generator=g), layout=(4, 2, 5))
    assert get("vidcom2", retention=0.01).budgets(video).tolist() == [[1, 1, 1, 1]]
    assert get("vidcom2", retention=0.3, temperature=math.inf).budgets(video).tolist() == [
        [3, 3, 3, 3]
    ]


def reference(x: torch.Tensor, grid: tuple[int, int, int], r: float, tau: float) -> list[int]:
    """The kept token indices of one (N, D) video, frame by frame, written loop by loop from
    the released algorithm (`vidcom2_compression`)."""
    t, h, w = grid
    p = h * w
    variance = x.var(dim=0, unbiased=False)
    channels = sorted(range(x.shape[1]), key=lambda c: (variance[c].item(), c))[: x.shape[1] // 2]
    frames = x[:, channels].reshape(t, p, -1)
    frames = torch.nn.functional.normalize(frames, dim=-1)

    def kernel(a, b):
        d2 = ((a - b) ** 2).sum(-1)
        return sum(torch.exp(-d2 / (2 * s)) for s in (2.0**k for k in range(-3, 2)))

    v = kernel(frames, frames.mean(dim=(0, 1)))
    f = torch.stack([kernel(frames[i], frames[i].mean(dim=0)) for i in range(t)])
    u = -v.mean(dim=-1)
    weights = torch.softmax((u - u.max()) / tau, dim=0)
    scales = (r * (1 + weights - weights.mean())).clamp(max=1.0)
    kept = []
    for i in range(t):
        k = max(1, round(scales[i].item() * p))
        score = (v + f)[i].tolist()
        best = sorted(range(p), key=lambda j: (score[j], j))[:k]
        kept += sorted(i * p + j for j in best)
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_released_algorithm(seed):
    g = torch.Generator().manual_seed(seed)
    grid = [(4, 3, 3), (8, 2, 3), (1, 4, 4), (6, 4, 4), (3, 5, 5), (16, 3, 3)][seed]
    n = math.prod(grid)
    # frames that drift over time, so their uniqueness differs as in a real video
    drift = torch.linspace(0, 1, grid[0], dtype=torch.float64).repeat_interleave(n // grid[0])
    x = torch.randn(n, 12, generator=g, dtype=torch.float64) + drift[:, None] * torch.randn(
        12, generator=g, dtype=torch.float64
    )
    for r in (0.15, 0.25, 0.5):
        out = get("vidcom2", retention=r)(Tokens(features=x[None], layout=grid))
        assert out.positions[0].tolist() == reference(x, grid, r, 0.01)


def test_special_tokens_pass_through_and_do_not_change_the_choice():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 36, 8, generator=g, dtype=torch.float64)
    cls = torch.randn(1, 1, 8, generator=g, dtype=torch.float64) * 50
    plain = get("vidcom2")(Tokens(features=x, layout=(4, 3, 3)))
    tokens = Tokens(features=torch.cat([cls, x], dim=1), layout=(4, 3, 3), special=1)
    out = get("vidcom2")(tokens)
    assert out.positions[0].tolist() == [0] + [i + 1 for i in plain.positions[0].tolist()]
    assert torch.equal(out.features[:, 0], cls[:, 0])
    check_compression(out, tokens)


def test_batch_rows_with_different_totals_raise():
    # a video whose frames all tie (w = 1/4 each: budgets round(0.5 * 3) = 2, total 8) and one
    # whose last frame is unique (w = (0, 0, 0, 1): round(1.125) = 1 three times and
    # round(2.625) = 3, total 6)
    same = embed([E1] * 12)
    unique = embed([E1] * 9 + [E2] * 3)
    tokens = Tokens(features=torch.cat([same, unique]), layout=(4, 1, 3))
    method = get("vidcom2", retention=0.5)
    totals = method.budgets(tokens).sum(-1).tolist()
    assert totals[0] != totals[1]
    with pytest.raises(ValueError, match="one video at a time"):
        method(tokens)
    for row in range(2):  # one at a time works
        one = Tokens(features=tokens.features[row : row + 1], layout=(4, 1, 3))
        assert method(one).count == totals[row]


def test_equal_budgets_at_full_retention_return_the_input():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1 + 18, 4, generator=g)
    tokens = Tokens(features=x, layout=(2, 3, 3), special=1)
    out = get("vidcom2", retention=1.0, temperature=math.inf)(tokens)
    assert torch.equal(out.features, x) and out.count == 19
    # full retention with the released temperature still trims the less unique frames
    one = Tokens(features=x[:1], layout=(2, 3, 3), special=1)
    assert get("vidcom2", retention=1.0)(one).count < 19


@pytest.mark.parametrize(
    "params",
    [
        {"retention": 0.0},
        {"retention": 1.5},
        {"retention": True},
        {"retention": math.nan},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": math.nan},
        {"temperature": "0.01"},
    ],
)
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        get("vidcom2", **params)


def test_needs_the_video_grid():
    x = torch.randn(1, 8, 4)
    with pytest.raises(ValueError, match="layout"):
        get("vidcom2")(Tokens(features=x))
    with pytest.raises(ValueError, match="layout"):
        get("vidcom2")(Tokens(features=x, layout=(2, 4)))
