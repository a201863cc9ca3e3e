"""samap: runs of neighbours similar to the whole run merge (attention-weighted), then a
relevance-weighted DPP keeps a budget of the runs."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.audio.samap import attention_scores, merge_runs

# Unit vectors at these angles (degrees). With threshold 0.9 the runs are {0, 1}, {2, 3}, {4},
# {5}: 20 joins 0 (cos 20 = 0.940); 40 is close to its neighbour 20 (0.940) but not to the run
# (mean of cos 40 = 0.766 and cos 20 = 0.940 is 0.853): it starts a run, which 45 joins
# (cos 5 = 0.996); 135 (mean of cos 95 and cos 90 < 0) and 300 (cos 165 < 0) start their own.
ANGLES = [0, 20, 40, 45, 135, 300]
RUNS = [0, 0, 1, 1, 2, 3]
# Each token's attention mass per head (head 0, head 1), spread evenly over its two frames and
# the same in every query row: its merge weight is the larger mass, its relevance the mean.
MASSES = [(0.20, 0.20), (0.02, 0.34), (0.30, 0.14), (0.30, 0.14), (0.14, 0.14), (0.04, 0.04)]


def points(angles: list[float]) -> torch.Tensor:
    rad = torch.tensor(angles, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=-1)


def attention(masses: list[tuple[float, float]]) -> torch.Tensor:
    """(1, 2, F, F) attention, F = 2 N: every query row of head h puts m_h / 2 on each frame of
    each token."""
    per_frame = torch.tensor(masses, dtype=torch.float64).T.repeat_interleave(2, dim=1) / 2  # (2, F)
    f = per_frame.shape[1]
    return per_frame[:, None, :].expand(2, f, f)[None].clone()


def clip(angles=ANGLES, masses=MASSES) -> Tokens:
    return Tokens(features=points(angles)[None], encoder_attention=attention(masses))


def test_a_run_takes_a_token_only_while_the_mean_over_the_run_is_high_enough():
    x = points(ANGLES)
    assert merge_runs((x @ x.T)[None], 0.9)[0].tolist() == RUNS
    # a lower threshold lets 40 in (0.853 >= 0.85); a higher one keeps every token alone
    assert merge_runs((x @ x.T)[None], 0.85)[0].tolist() == [0, 0, 0, 0, 1, 2]
    assert merge_runs((x @ x.T)[None], 0.999)[0].tolist() == [0, 1, 2, 3, 4, 5]


def test_merge_weights_take_the_max_over_heads_and_relevance_the_head_mean_of_the_diagonal():
    # two tokens of two frames each; rows of head 0 and head 1 (columns: frames 0-3)
    head0 = [[0.4, 0.4, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]
    head1 = [[0.1, 0.1, 0.4, 0.4], [0.4, 0.4, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.1, 0.7]]
    a = torch.tensor([[head0, head1]], dtype=torch.float64)
    weights, relevance = attention_scores(a, 2)
    # max over heads per entry: rows (.4 .4 .4 .4), (.4 .4 .4 .4), (.25 .25 .3 .4), (.7 .1 .1 .7);
    # column means .4375 .2875 .3 .475; token sums .725 and .775 (the max over heads of each
    # head's column means would give .575 and .625 instead)
    assert torch.allclose(weights, torch.tensor([[0.725, 0.775]], dtype=torch.float64))
    # head mean of the diagonal blocks: token 0's rows 0-1 give 0.5 each; token 1's rows 2-3
    # give .275 + .325 = .6 and .1 + .4 = .5, mean .55
    assert torch.allclose(relevance, torch.tensor([[0.5, 0.55]], dtype=torch.float64))


def test_runs_merge_by_weight_then_the_dpp_keeps_the_diverse_relevant_runs():
    # N = 6, ratio 0.3: T = max(round(1.8), 2) = 2 of the 4 runs.
    # Run relevances (means of the head means .20 .18 .22 .22 .14 .04): .19, .22, .14, .04.
    # The DPP first takes run 1 (largest r^2); then the gain r^2 (1 - cos^2) to run 1 (at 42.5
    # degrees): run 0 (at 12.6 degrees: .19^2 * (1 - cos^2 29.9) = .0090), run 2 (at 135:
    # .14^2 * (1 - cos^2 92.5) = .0196), run 3 (.0015): run 2, although run 0 is more relevant.
    out = get("samap", ratio=0.3, threshold=0.9)(clip())
    x = points(ANGLES)
    assert out.positions[0].tolist() == [2, 4]
    assert out.source[0].tolist() == [-1, -1, 0, 0, 1, -1]
    assert out.sizes[0].tolist() == [2, 1]
    expected = torch.stack([(0.30 * x[2] + 0.30 * x[3]) / 0.60, x[4]])
    assert torch.allclose(out.features[0], expected, atol=1e-12)


def test_fewer_runs_than_the_budget_keeps_every_run_once():
    # ratio 1: T = 6 > 4 runs; the official loop would pick runs twice. Run 0 is weighted by
    # the max over heads (.20 and .34), not the head mean (.20 and .18).
    out = get("samap", ratio=1.0, threshold=0.9)(clip())
    x = points(ANGLES)
    assert out.positions[0].tolist() == [0, 2, 4, 5]
    assert out.sizes[0].tolist() == [2, 2, 1, 1]
    expected = torch.stack([(0.20 * x[0] + 0.34 * x[1]) / 0.54, (x[2] + x[3]) / 2, x[4], x[5]])
    assert torch.allclose(out.features[0], expected, atol=1e-12)
    assert torch.equal(out.features[0, 2:], x[4:])  # a run of one token is that token


def test_budget_rounds_half_to_even_keeps_two_and_never_exceeds_n():
    assert get("samap", ratio=0.5).budget(7) == 4  # round(3.5) = 4
    assert get("samap", ratio=0.5).budget(5) == 2  # round(2.5) = 2
    assert get("samap", ratio=0.1).budget(6) == 2  # round(0.6) = 1, at least 2
    assert get("samap", ratio=0.1).budget(1) == 1


def test_without_merges_it_is_the_relevance_weighted_dpp_over_the_tokens():
    # threshold above 1: no run merges; T = max(round(0.3 * 6), 2) = 2 tokens by the DPP.
    # Relevances .20 .18 .22 .22 .14 .04: first 2 (tied with 3: lowest index); then the gains
    # r^2 (1 - cos^2) to 40 degrees: 0 (.0400 * .413 = .0165), 1 (.0324 * .117 = .0038),
    # 3 (.0484 * .008 = .0004), 4 (.0196 * .992 = .0195), 5 (.0016 * .970 = .0016): 4.
    out = get("samap", ratio=0.3, threshold=1.5)(clip())
    assert out.positions[0].tolist() == [2, 4] and (out.sizes == 1).all()
    assert torch.equal(out.features[0], points(ANGLES)[[2, 4]])


def test_everything_in_one_run_is_one_token():
    out = get("samap", ratio=0.5, threshold=0.9)(clip(angles=[10, 10, 10, 10], masses=[(0.25, 0.25)] * 4))
    assert out.count == 1 and out.sizes.tolist() == [[4]] and out.positions.tolist() == [[0]]


def test_rows_with_different_run_counts_ask_for_one_clip_at_a_time():
    a, b = clip(), clip(angles=[0, 0, 0, 0, 0, 0])
    both = Tokens(
        features=torch.cat([a.features, b.features]),
        encoder_attention=torch.cat([a.encoder_attention, b.encoder_attention]),
    )
    with pytest.raises(ValueError, match="one clip at a time"):
        get("samap", ratio=1.0, threshold=0.9)(both)


def test_bad_parameters_and_signals_raise():
    for ratio in (0.0, 1.5, math.nan, True):
        with pytest.raises(ValueError, match="ratio"):
            get("samap", ratio=ratio)
    for threshold in (-1.5, math.nan, "0.9"):
        with pytest.raises(ValueError, match="threshold"):
            get("samap", threshold=threshold)
    t = clip()
    for bad in (t.encoder_attention[..., :-1], t.encoder_attention[..., :-1, :-1]):  # F not 2N
        with pytest.raises(ValueError, match="encoder_attention"):
            get("samap")(Tokens(features=t.features, encoder_attention=bad))
