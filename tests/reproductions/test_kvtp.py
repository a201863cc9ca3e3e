"""kvtp: soft per-frame budgets from query relevance, then ToMe or random pruning in each frame."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.kvtp import frame_counts, tome_frame, tome_frames

LOG3 = math.log(3)


def clip(
    frames: torch.Tensor,
    text: torch.Tensor | None = None,
    per_frame: tuple[int, int] = (2, 2),
    special: int = 0,
    features: torch.Tensor | None = None,
) -> Tokens:
    """A one-video clip of T frames whose relevance comes from `frames` against `text`."""
    t = frames.shape[1]
    n = special + t * per_frame[0] * per_frame[1]
    if features is None:
        features = torch.randn(1, n, 3, generator=torch.Generator().manual_seed(0))
    if text is None:
        text = torch.zeros(1, 1, frames.shape[-1])
        text[0, 0, 0] = 1.0
    return Tokens(
        features=features, layout=(t, *per_frame), special=special, text=text, frames=frames
    )


def axis_frames(cosines: list[float]) -> torch.Tensor:
    """(1, T, 2) frame features whose cosine with the axis e0 is each of `cosines`."""
    c = torch.tensor(cosines, dtype=torch.float64)
    return torch.stack([c, (1 - c**2).clamp_min(0).sqrt()], dim=-1).unsqueeze(0)


def per_frame_kept(out, tokens: Tokens, per_frame: int) -> list[int]:
    frames = tokens.layout[0]
    kept = (out.positions[0] - tokens.special)[out.positions[0] >= tokens.special]
    return torch.bincount(kept // per_frame, minlength=frames).tolist()


def test_shares_follow_the_softmax_of_the_relevance():
    # cosines (1, 0, 0, 0), scale ln 3, temperature 1: weights 3 : 1 : 1 : 1 of 6 tokens
    tokens = clip(axis_frames([1.0, 0.0, 0.0, 0.0]), features=torch.randn(1, 16, 3))
    method = get("kvtp", keep=6, scale=LOG3, temperature=1.0, pruner="random")
    out = method(tokens)
    assert method.counts(tokens)[0].tolist() == [3, 1, 1, 1]
    assert per_frame_kept(out, tokens, 4) == [3, 1, 1, 1]
    assert torch.equal(out.features, tokens.features[:, out.positions[0]])  # random: copies
    check_compression(out, tokens)
    # the temperature divides the logits: scale 2 ln 3 at temperature 2 is the same allocation
    same = get("kvtp", keep=6, scale=2 * LOG3, temperature=2.0, pruner="random")
    assert same.counts(tokens)[0].tolist() == [3, 1, 1, 1]


def test_a_capped_frame_passes_its_excess_on_and_the_budget_is_exact():
    # 12 tokens at weights 3 : 1 : 1 : 1 would give frame 0 six of its four tokens: it keeps 4,
    # the other 8 split 8/3 each, rounded by largest remainder (ties: the earlier frame)
    tokens = clip(axis_frames([1.0, 0.0, 0.0, 0.0]))
    method = get("kvtp", keep=12, scale=LOG3, temperature=1.0)
    assert method.counts(tokens)[0].tolist() == [4, 3, 3, 2]
    out = method(tokens)
    assert out.count == 12 == method.output_count(tokens)
    check_compression(out, tokens)


def test_frame_counts_rounding_ties_and_dropped_frames():
    assert frame_counts(torch.zeros(4), 10, 4).tolist() == [3, 3, 2, 2]  # equal: earlier first
    assert frame_counts(torch.tensor([0.0, 0.0, 1e-3, 0.0]), 10, 4).tolist() == [3, 2, 3, 2]
    assert frame_counts(torch.tensor([50.0, 0.0, 0.0, -50.0]), 7, 4).tolist() == [4, 2, 1, 0]
    assert frame_counts(torch.zeros(3), 12, 4).tolist() == [4, 4, 4]
    assert frame_counts(torch.tensor([3.0, -2.0]), 0, 4).tolist() == [0, 0]


def test_tome_merges_into_the_most_similar_destination_keeping_the_largest_norm():
    # destinations x0, x2 (even places), sources x1, x3; x1 is parallel to x0 (cosine 1)
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    features, index, slot = tome_frame(x, 3)
    # mean (2, 0) rescaled to the larger norm 3: (3, 0), not the average (2, 0)
    assert torch.allclose(
        features, torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 2.0]], dtype=x.dtype)
    )
    assert index.tolist() == [0, 2, 3] and slot.tolist() == [0, 0, 1, 2]


def test_tome_repeats_rounds_on_the_reordered_sequence():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    features, index, slot = tome_frame(x, 1)
    # round 1 (two merges): x1 -> x0 gives (3, 0); x3 -> x2 (cosine 0.89 > 0.45) gives the mean
    # (0.5, 1.5) rescaled to norm sqrt 5; round 2 merges that into (3, 0): the plain mean of the
    # two, rescaled to norm 3
    g2 = torch.tensor([0.5, 1.5], dtype=x.dtype)
    g2 = g2 / g2.norm() * math.sqrt(5)
    mean = (torch.tensor([3.0, 0.0], dtype=x.dtype) + g2) / 2
    assert torch.allclose(features[0], mean / mean.norm() * 3)
    assert index.tolist() == [0] and slot.tolist() == [0, 0, 0, 0]


def test_tome_inside_the_method_books_sources_and_keeps_positional_order():
    frame = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    # [CLS] + 2 frames
    features = torch.cat([torch.tensor([[9.0, 9.0]]), frame, frame]).unsqueeze(0)
    tokens = clip(axis_frames([1.0, 1.0]), special=1, features=features)
    out = get("kvtp", keep=1 + 6, scale=0.0)(tokens)  # equal shares: 3 tokens per frame
    assert out.positions[0].tolist() == [0, 1, 3, 4, 5, 7, 8]
    assert out.source[0].tolist() == [0, 1, 1, 2, 3, 4, 4, 5, 6]
    assert out.sizes[0].tolist() == [1, 2, 1, 1, 2, 1, 1]
    assert torch.equal(out.features[0, 0], features[0, 0])
    assert torch.allclose(out.features[0, 1], torch.tensor([3.0, 0.0]))
    check_compression(out, tokens)


def test_chunks_take_the_best_chunk_not_the_mean_of_all_rows():
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two rows: e0 and e1
    s = 1 / math.sqrt(2)
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [s, s]]])  # e0, e1, their diagonal
    tokens = clip(frames, text=text)
    # one chunk: the query (e0 + e1) / 2 matches the diagonal frame best
    whole = get("kvtp", keep=6, chunk=64, scale=10.0).counts(tokens)[0]
    assert int(whole.argmax()) == 2 and whole[0] == whole[1]
    # chunks of one row: frames 0 and 1 match a chunk exactly (cosine 1), the diagonal 0.71
    rows = get("kvtp", keep=6, chunk=1, scale=10.0).counts(tokens)[0]
    assert rows[2] < rows[0] == rows[1]


def test_budget_rule_identity_and_batching():
    g = torch.Generator().manual_seed(1)
    tokens = Tokens(
        features=torch.randn(2, 1 + 4 * 9, 5, generator=g),
        layout=(4, 3, 3),
        special=1,
        text=torch.randn(2, 7, 6, generator=g),
        frames=torch.randn(2, 4, 6, generator=g),
    )
    for pruner in ("tome", "random"):
        out = get("kvtp", keep=0.25, pruner=pruner)(tokens)
        assert out.count == math.floor(0.25 * 37)
        check_compression(out, tokens)
        full = get("kvtp", keep=37, pruner=pruner)(tokens)
        assert torch.equal(full.features, tokens.features)
    cls_only = get("kvtp", keep=1)(tokens)
    assert cls_only.count == 1 and (cls_only.source[:, 1:] == -1).all()


def test_random_pruner_is_seeded_per_video():
    tokens = clip(axis_frames([0.0] * 4), per_frame=(4, 4), features=torch.randn(1, 64, 3))
    a = get("kvtp", keep=16, scale=0.0, pruner="random", seed=3)(tokens)
    b = get("kvtp", keep=16, scale=0.0, pruner="random", seed=3)(tokens)
    c = get("kvtp", keep=16, scale=0.0, pruner="random", seed=4)(tokens)
    assert torch.equal(a.positions, b.positions) and not torch.equal(a.positions, c.positions)
    assert per_frame_kept(a, tokens, 16) == [4, 4, 4, 4]
    assert (a.positions[0].diff() > 0).all()


def test_errors_name_what_to_pass():
    tokens = clip(axis_frames([1.0, 0.0]))
    with pytest.raises(ValueError, match="same embedding space"):
        get("kvtp", keep=4)(clip(axis_frames([1.0, 0.0]), text=torch.ones(1, 2, 3)))
    with pytest.raises(ValueError, match="keep"):
        get("kvtp", keep=9)(tokens)
    bad = {
        "temperature": [0.0, -1.0, math.inf, True],
        "scale": [-0.5, math.nan, "1"],
        "chunk": [0, 2.0, True],
        "pruner": ["prumerge", None],
        "seed": [1.5, True],
        "keep": [0, 0.0, 1.5],
    }
    for name, values in bad.items():
        for value in values:
            with pytest.raises(ValueError, match=name):
                get("kvtp", **{name: value})


def reference_tome(x: torch.Tensor, keep: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """The released rule, one token at a time: lists of (feature, original index, members)."""
    seq = [(x[i], i, [i]) for i in range(x.shape[0])]
    left = x.shape[0] - keep
    while left > 0:
        even, odd = seq[0::2], seq[1::2]
        unit = [torch.nn.functional.normalize(v, dim=0) for v, _, _ in seq]
        matches = []  # (similarity, source place, destination place)
        for j in range(len(odd)):
            sims = [float(unit[2 * j + 1] @ unit[2 * i]) for i in range(len(even))]
            best = max(range(len(even)), key=lambda i: (sims[i], -i))
            matches.append((sims[best], j, best))
        ranked = sorted(matches, key=lambda m: (-m[0], m[1]))[: min(left, len(odd))]
        groups = {i: [even[i]] for i in range(len(even))}
        for _, j, i in ranked:
            groups[i].append(odd[j])
        new_even = []
        for i in range(len(even)):
            members = groups[i]
            feats = torch.stack([v for v, _, _ in members])
            value = even[i][0]
            if len(members) > 1:
                mean = feats.mean(dim=0)
                value = mean / mean.norm() * feats.norm(dim=-1).max()
            new_even.append((value, even[i][1], sum((m for _, _, m in members), [])))
        gone = {j for _, j, _ in ranked}
        seq = new_even + [odd[j] for j in range(len(odd)) if j not in gone]
        left -= len(ranked)
    seq.sort(key=lambda item: item[1])
    slot = [0] * x.shape[0]
    for k, (_, _, members) in enumerate(seq):
        for m in members:
            slot[m] = k
    return torch.stack([v for v, _, _ in seq]), [i for _, i, _ in seq], slot


def test_batched_tome_equals_the_rule_applied_frame_by_frame():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 25, 4, generator=g, dtype=torch.float64)
    keep = [1, 2, 7, 12, 13, 24]
    for frame, result in enumerate(tome_frames(x, keep)):
        features, index, slot = result
        want_features, want_index, want_slot = reference_tome(x[frame], keep[frame])
        assert torch.allclose(features, want_features, atol=1e-12)
        assert index.tolist() == want_index and slot.tolist() == want_slot


@pytest.mark.parametrize("seed", range(5))
def test_counts_stay_within_a_token_of_the_released_rates_when_none_is_capped(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, generator=g, dtype=torch.float64) * 0.5
    budget, per_frame = 32 * 196 // 10, 196  # base rate 0.1
    rates = 32 * 0.1 * logits.softmax(0)  # the released r_t
    assert (rates < 1).all()
    counts = frame_counts(logits, budget, per_frame)
    assert int(counts.sum()) == budget
    assert ((counts - per_frame * rates).abs() < 1).all()
