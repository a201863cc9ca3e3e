"""fastvid: DySeg, salient tokens, density-peak anchors and their merge, against the algorithm."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.fastvid import context_counts, merge_into, segment_lengths


def frames_for(lengths: list[int], dim: int = 8, seed: int = 0) -> torch.Tensor:
    """(1, T, dim) frame features: one direction per segment, so cuts fall at its ends."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.eye(dim, dtype=torch.float64)[s] for s, n in enumerate(lengths) for _ in range(n)]
    return (torch.stack(rows) + 0.01 * torch.rand(len(rows), dim, generator=g)).unsqueeze(0)


def test_dyseg_cuts_at_lowest_similarities_and_below_tau():
    frames = frames_for([2, 3, 1])[0]
    assert segment_lengths(frames, segments=1, tau=0.5) == [2, 3, 1]  # tau alone
    assert segment_lengths(frames, segments=1, tau=-1.0) == [6]  # no cut at all
    assert sorted(segment_lengths(frames, segments=3, tau=-1.0)) == [1, 2, 3]  # c - 1 lowest
    assert segment_lengths(frames, segments=50, tau=-1.0) == [1] * 6  # T < c: every gap


def test_anchor_frames_are_counted_back_from_the_segment_end():
    # L = 5, p = 4: ceil(5 / 4) = 2 anchors (frames 4 and 0), each (2 * 5) // 2 = 5 tokens
    assert context_counts([5], context=2, period=4) == [5, 0, 0, 0, 5]
    assert context_counts([1, 3], context=2, period=4) == [2, 0, 0, 6]


def test_merge_weight_is_max_of_one_over_n_plus_one_and_beta():
    members = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=torch.float64)
    unit = members / members.norm(dim=-1, keepdim=True)
    targets = members[[0, 2]]
    merged, assign = merge_into(members, unit, targets, beta=0.6)
    assert assign.tolist() == [0, 0, 1]
    mean0 = members[:2].mean(dim=0)  # n = 2 -> w = max(1/3, 0.6) = 0.6
    assert torch.allclose(merged[0], 0.6 * targets[0] + 0.4 * mean0)
    assert torch.allclose(merged[1], targets[1])  # n = 1: w x + (1 - w) x
    merged, _ = merge_into(members, unit, targets, beta=0.0)
    assert torch.allclose(merged[0], targets[0] / 3 + 2 / 3 * mean0)  # w = 1 / (n + 1)


def reference(x, attention, frames, grid, retention, segments, tau, d, period, beta):
    """FastVID for one video written loop by loop from the paper and the released algorithm."""
    t, h, w = grid
    p = h * w
    unit = frames / frames.norm(dim=-1, keepdim=True)
    similarity = (unit[:-1] * unit[1:]).sum(-1)
    low = torch.topk(similarity, min(segments - 1, t - 1), largest=False).indices.tolist()
    cuts = sorted(set(low) | set((similarity < tau).nonzero().flatten().tolist()))
    bounds = [-1, *cuts, t - 1]
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    retained = int(p * retention)
    context = int(retained * d)
    salient = retained - context
    out: dict[int, torch.Tensor] = {}
    rest, score = [], []
    for f in range(t):
        frame = range(f * p, (f + 1) * p)
        top = torch.topk(attention[f * p : (f + 1) * p], salient).indices.tolist()
        out.update({f * p + i: x[f * p + i] for i in top})
        others = [i for i in frame if i - f * p not in top]
        rest.append(others)
        tokens = x[others]
        dist = torch.cdist(tokens, tokens) / math.sqrt(x.shape[1])
        density = (-(dist.topk(4, largest=False).values ** 2).mean(-1)).exp()
        delta = torch.stack(
            [
                dist[i][density > density[i]].min() if (density > density[i]).any() else dist.max()
                for i in range(len(others))
            ]
        )
        score.append(density * delta)

    def dtm(anchor, count, members):
        picks = torch.topk(score[anchor], count).indices.tolist()
        targets = x[[rest[anchor][i] for i in picks]]
        cos = (
            torch.nn.functional.normalize(x[members], dim=-1)
            @ torch.nn.functional.normalize(targets, dim=-1).T
        )
        assign = cos.argmax(-1)
        for k, i in enumerate(picks):
            group = x[members][assign == k]
            weight = max(1 / (len(group) + 1), beta)
            out[rest[anchor][i]] = weight * targets[k] + (1 - weight) * group.mean(0)

    start = 0
    for length in lengths:
        share = (context * length) // math.ceil(length / period)
        anchors = [start + j for j in range(length) if (length - 1 - j) % period == 0]
        for anchor in anchors if context else []:
            if share == context:
                dtm(anchor, context, rest[anchor])
            else:
                dtm(anchor, share, [i for f in range(start, start + length) for i in rest[f]])
        start += length
    kept = sorted(out)
    return kept, torch.stack([out[i] for i in kept])


@pytest.mark.parametrize(
    ("lengths", "params"),
    [
        ([3, 1, 5, 2], {"retention": 0.5, "segments": 1, "tau": 0.5, "anchor_period": 2}),
        ([3, 1, 5, 2], {"retention": 0.5, "segments": 1, "tau": 0.5, "anchor_period": 4}),
        (
            [4, 4, 3],
            {"retention": 0.2, "segments": 1, "tau": 0.5, "anchor_period": 2},
        ),  # C = 1 quirk
        ([2, 6, 3], {"retention": 0.75, "segments": 3, "tau": -1.0, "anchor_period": 2}),
    ],
)
def test_matches_the_algorithm_loop_by_loop(lengths, params):
    grid = (sum(lengths), 4, 4)
    g = torch.Generator().manual_seed(1)
    n = 1 + grid[0] * 16
    x = torch.randn(1, n, 8, generator=g, dtype=torch.float64)
    cls_attention = torch.rand(1, 3, n, generator=g, dtype=torch.float64)
    frames = frames_for(lengths)
    tokens = Tokens(features=x, layout=grid, special=1, cls_attention=cls_attention, frames=frames)
    out = get("fastvid", salient_ratio=0.4, beta=0.6, **params)(tokens)
    kept, features = reference(
        x[0, 1:],
        cls_attention[0, :, 1:].mean(0),
        frames[0],
        grid,
        params["retention"],
        params["segments"],
        params["tau"],
        0.4,
        params["anchor_period"],
        0.6,
    )
    assert out.positions[0].tolist() == [0] + [i + 1 for i in kept]
    assert torch.allclose(out.features[0, 1:], features, atol=1e-12)
    assert torch.equal(out.features[0, 0], x[0, 0])
    check_compression(out, tokens)


def test_anchor_asking_for_more_than_its_frame_has_takes_them_all():
    # R = 12, C = 4, S = 8: a 6-frame segment with p = 3 has 2 anchors of (4 * 6) // 2 = 12
    # context tokens each, but a frame has only 16 - 8 = 8 non-salient tokens (the released
    # code crashes in topk); each anchor takes its 8
    grid = (6, 4, 4)
    tokens = Tokens(
        features=torch.randn(1, 96, 8, dtype=torch.float64),
        layout=grid,
        cls_attention=torch.rand(1, 2, 96, dtype=torch.float64),
        frames=frames_for([6]),
    )
    out = get("fastvid", retention=0.75, segments=1, tau=0.5, anchor_period=3)(tokens)
    assert out.count == 6 * 8 + 2 * 8
    assert (out.source[0] >= 0).all()  # every non-salient token merged somewhere
    check_compression(out, tokens)


def test_salient_tokens_are_the_most_attended_and_unchanged():
    grid = (2, 3, 3)
    x = torch.randn(1, 18, 4, dtype=torch.float64)
    attention = torch.zeros(1, 1, 18, dtype=torch.float64)
    attention[0, 0, [2, 7, 9, 17]] = 1.0
    frames = frames_for([1, 1], dim=4)
    tokens = Tokens(features=x, layout=grid, cls_attention=attention, frames=frames)
    # R = int(9 * 0.25) = 2, C = int(2 * 0) = 0: salient only
    out = get("fastvid", retention=0.25, salient_ratio=0.0)(tokens)
    assert out.positions[0].tolist() == [2, 7, 9, 17]
    assert torch.equal(out.features, x[:, [2, 7, 9, 17]])
    assert (out.source[0] >= 0).sum() == 4  # nothing else kept: no context tokens


def test_rows_that_segment_differently_raise():
    # P = 16, R = 8, C = 3: one 3-frame segment (p = 2: 2 anchors of 9 // 2 = 4) gives 8
    # context tokens, three 1-frame segments give 9
    frames = torch.cat([frames_for([3], dim=4), frames_for([1, 1, 1], dim=4)]).float()
    tokens = Tokens(
        features=torch.randn(2, 48, 4),
        layout=(3, 4, 4),
        cls_attention=torch.rand(2, 1, 48),
        frames=frames,
    )
    with pytest.raises(ValueError, match="one video at a time"):
        get("fastvid", retention=0.5, segments=1, tau=0.5, anchor_period=2)(tokens)


def test_too_small_retention_raises():
    tokens = Tokens(
        features=torch.randn(1, 8, 4),
        layout=(2, 2, 2),
        cls_attention=torch.rand(1, 1, 8),
        frames=torch.randn(1, 2, 4),
    )
    with pytest.raises(ValueError, match="retention"):
        get("fastvid", retention=0.1)(tokens)
