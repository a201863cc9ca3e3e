"""prunevid: its segments, static merging, score-ordered clusters, grouped attention pruning, and
the two parts a multi-stage method is made of."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.prunevid import PruneVidMerge, PruneVidPrune, dpc_knn, refine, windows


@pytest.mark.parametrize(
    "labels,refined",
    [
        # 0 runs [0, 2) and [3, 6): the longer stays; 1 is one frame alone: it goes; the stretch
        # [0, 3) left over has no left neighbour and joins the run on its right
        ([0, 0, 1, 0, 0, 0, 2, 2], [0, 0, 0, 0, 0, 0, 2, 2]),
        ([0, 0, 1, 2, 2], [0, 0, 0, 2, 2]),  # neighbours of equal length: the left one
        ([0, 0, 1, 2, 2, 2], [0, 0, 2, 2, 2, 2]),  # the right run is longer
        ([0, 1, 2], [0, 0, 0]),  # every cluster a single frame: all cluster 0
        ([0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]),  # every longest run of a cluster stays
    ],
)
def test_refine_keeps_each_clusters_longest_runs_and_gives_the_rest_to_the_longer_neighbour(labels, refined):
    assert refine(labels) == refined


def test_windows_are_the_runs_of_equal_labels():
    assert windows([0, 0, 0, 0, 0, 0, 2, 2]) == [(0, 5), (6, 7)]
    assert windows([0, 0, 1, 1, 0, 0]) == [(0, 1), (2, 3), (4, 5)]


def test_dpc_knn_orders_centres_by_score_and_joins_the_nearest():
    # 1-D rows 0, 1, 3, 10, 11; k = min(7, 5) = 5: density = exp(-mean of the squared distances
    # to all five): 3 (25.2) > 1 (37.2) > 0 = 10 (46.2) > 11 (57.2). delta: 11 for the densest,
    # else the distance to the nearest denser row: 1 -> 2, 0 -> 1, 10 -> 7, 11 -> 1. Scores
    # rank 3, 1, 10: the centres in that order; 0 joins 1 and 11 joins 10.
    x = torch.tensor([0.0, 1.0, 3.0, 10.0, 11.0], dtype=torch.float64).view(1, 5, 1)
    centres, joined = dpc_knn(x, 3, 7)
    assert centres.tolist() == [[2, 1, 3]]
    assert joined.tolist() == [[1, 1, 0, 2, 2]]


def test_a_static_position_becomes_its_window_mean_before_the_frames_dynamic_tokens():
    # 4 frames x 2 positions, one window (int(4 x 0.25) = 1 cluster of frames). Position 0
    # holds e1 at magnitudes 1, 2, 3, 6 (cosine 1: static); position 1 flips e2, -e2 (mean
    # cosine over the 12 ordered pairs -1/3: dynamic). Output: the static mean (3, 0) at
    # frame 0, then each frame's dynamic token.
    e2 = [0.0, 1.0]
    x = torch.tensor(
        [[[1.0, 0.0], e2, [2.0, 0.0], [0.0, -1.0], [3.0, 0.0], e2, [6.0, 0.0], [0.0, -1.0]]],
        dtype=torch.float64,
    )
    tokens = Tokens(features=x, layout=(4, 1, 2))
    out = PruneVidMerge()(tokens)
    check_compression(out, tokens)
    assert out.positions.tolist() == [[0, 1, 3, 5, 7]]
    assert out.source.tolist() == [[0, 1, 0, 2, 0, 3, 0, 4]]
    assert out.sizes.tolist() == [[4.0, 1.0, 1.0, 1.0, 1.0]]
    assert out.features[0, 0].tolist() == [3.0, 0.0]
    assert torch.equal(out.features[0, 1:], x[0, 1::2])
    # above tau = 1 (capped cosines) nothing is static: every token stays, in order
    same = PruneVidMerge(tau=1.0)(tokens)
    assert torch.equal(same.features, x) and same.positions.tolist() == [list(range(8))]


def test_dynamic_tokens_above_the_threshold_become_clusters_in_score_order():
    # one frame of 4 tokens 0, 1, 10, 12 (cluster_above 2): int(4 x 0.5) = 2 clusters, k = 4.
    # Mean squared distances 61.25, 50.75, 46.25, 67.25: 10 is densest (delta 12), then
    # 1 (delta 9 to 10), 0 (1), 12 (2): centres 10, then 1. 12 joins 10, 0 joins 1; each
    # cluster is the mean of its members, at its centre.
    x = torch.tensor([0.0, 1.0, 10.0, 12.0], dtype=torch.float64).view(1, 4, 1)
    tokens = Tokens(features=x, layout=(1, 1, 4))
    out = PruneVidMerge(cluster_above=2, cluster_ratio=0.5)(tokens)
    check_compression(out, tokens)
    assert out.positions.tolist() == [[2, 1]]
    assert out.source.tolist() == [[1, 1, 0, 0]]
    assert out.features.flatten().tolist() == [11.0, 0.5]


def test_pruning_keeps_each_groups_share_by_the_highest_attention_of_any_head_and_row():
    # timespans: a static group over frames 0-1 (tokens 0-2), frame 0 (3, 4), frame 1 (5).
    # alpha 0.5: int(1.5) = 1, int(1.0) = 1 and int(0.5) = 0 tokens. Token 1 wins its group
    # by one head's one row (0.9) although token 0 has the higher mean.
    spans = torch.tensor([[[0, 1], [0, 1], [0, 1], [0, 0], [0, 0], [1, 1]]])
    attention = torch.full((1, 2, 2, 6), 0.1)
    attention[0, :, :, 0] = 0.5
    attention[0, 1, 0, 1] = 0.9
    attention[0, 0, 1, 4] = 0.3
    attention[0, :, :, 5] = 1.0
    tokens = Tokens(features=torch.randn(1, 6, 4), attention=attention, timespan=spans)
    out = PruneVidPrune(alpha=0.5)(tokens)
    check_compression(out, tokens)
    assert out.positions.tolist() == [[1, 4]]
    assert PruneVidPrune(alpha=1.0)(tokens).positions.tolist() == [list(range(6))]
    assert PruneVidPrune(alpha=0.0)(tokens).count == 0


def test_prunevid_is_its_two_parts_one_per_stage():
    method = get("prunevid", tau=0.7, alpha=0.3, layer=5)
    merge, prune = method.parts()
    assert (type(merge).name, type(prune).name) == ("prunevid.projector", "prunevid.llm")
    assert merge == PruneVidMerge(tau=0.7) and prune == PruneVidPrune(alpha=0.3, layer=5)
    assert type(method).stages() == ("projector", "llm") and type(method).stage == "projector"
    assert set(type(method).needs) == {"attention", "timespan"} and type(method).grid
    assert merge.paper == prune.paper == method.paper == "huang2024prunevid"
    with pytest.raises(ValueError, match="parts"):
        method(Tokens(features=torch.randn(1, 8, 4), layout=(2, 2, 2)))
    with pytest.raises(ValueError, match="alpha"):
        get("prunevid", alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        get("prunevid", tau=2.0)


def test_the_parts_chain_on_one_video():
    # part 1's output, each token with the frames it stands for, is what part 2 prunes
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4 * 16, 8, generator=g, dtype=torch.float64)
    for frame in (1, 3):  # frames 0-1 and 2-3 repeat: two windows, all static
        x[0, 16 * frame : 16 * frame + 16] = x[0, 16 * frame - 16 : 16 * frame] + 0.01 * torch.randn(
            16, 8, generator=g, dtype=torch.float64
        )
    tokens = Tokens(features=x, layout=(4, 4, 4))
    first = PruneVidMerge(temporal_ratio=0.5, cluster_above=4)(tokens)
    frames = torch.arange(64) // 16
    members = [frames[first.source[0] == k] for k in range(first.count)]
    spans = torch.tensor([[int(m.min()), int(m.max())] for m in members])[None]
    assert spans[0].unique(dim=0).tolist() == [[0, 1], [2, 3]]  # each window's static clusters
    attention = torch.rand(1, 2, 3, first.count, generator=g, dtype=torch.float64)
    second = PruneVidPrune(alpha=0.5)(Tokens(features=first.features, attention=attention, timespan=spans))
    both = first.then(second)
    check_compression(both, tokens)
    expected = sum(int((spans[0] == s).all(-1).sum()) // 2 for s in spans[0].unique(dim=0))
    assert both.count == expected
