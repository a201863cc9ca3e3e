"""holitom: the window segmentation, the raised ratio, temporal and density-peak merging."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.holitom import cluster, segment, static_counts


def test_static_counts_follow_runs_of_static_pairs():
    # 4 frames, 2 positions; pairs (0,1), (1,2), (2,3): position 0 static, static, moving;
    # position 1 static, moving, static
    static = torch.tensor([[True, True], [True, False], [False, True]])
    counts = static_counts(static)
    assert counts[0] == [0, 2, 1, 0]
    assert counts[1] == [0, 0, 1, 0]
    assert counts[2] == [0, 0, 0, 1]


def test_segmentation_maximises_saved_tokens_and_ties_keep_frames_alone():
    # saved tokens of window [s, e] = counts[s][e] * (e - s). By frame i:
    # i=1: [0,1] saves 2. i=2: alone keeps 2; [1,2] gives 0 + 1 = 1; [0,2] gives 1 * 2 = 2,
    # a tie, so frame 2 stays alone. i=3: [2,3] gives 2 + 2 = 4, the best.
    counts = [[0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 2], [0, 0, 0, 0]]
    assert segment(counts, 1024) == ([(0, 1), (2, 3)], 4)
    assert segment(counts, 1) == ([(0, 0), (1, 1), (2, 2), (3, 3)], 0)
    # frame 2 joins [0, 2] only where that is strictly better
    counts[0][2] = 2
    assert segment(counts, 3)[0][0] == (0, 2)


def test_density_peak_clusters_and_beta_merge():
    # 1-D tokens 0, 1, 3, 10, 11 into 3 clusters: k = 3 nearest (itself included), so
    # density = exp(-(0 + d1^2 + d2^2) / 3): 1 is densest (5/3), then 0 (10/3), 3 (13/3),
    # 10 (50/3), 11 (65/3). delta: 11 for the densest, else the distance to the nearest
    # denser token: 0 -> 1, 3 -> 2, 10 -> 7, 11 -> 1. density x delta ranks 1, 0, 3 first.
    # 10 and 11 join their nearest centre, 3: 0.6 * 3 + 0.4 * (10 + 11) / 2 = 6.
    x = torch.tensor([0.0, 1.0, 3.0, 10.0, 11.0], dtype=torch.float64).view(1, 5, 1)
    centres, joined, merged = cluster(x, 3, 7, 0.6)
    assert centres.tolist() == [[0, 1, 2]]
    assert joined.tolist() == [[0, 1, 2, 2, 2]]
    assert torch.allclose(merged, torch.tensor([[[0.0], [1.0], [6.0]]], dtype=torch.float64))


def test_a_static_window_becomes_its_temporal_mean_and_raises_the_ratio():
    # 3 frames x 2 positions. Position 0 holds e1, e1, 2 e1 (cosine 1: static); position 1
    # flips e2, -e2, e2 (cosine -1). One window [0, 2] saves (3 - 1) * 1 = 2 of 6 tokens, so
    # r' = 0.5 / (4 / 6) = 0.75. Static: round(1 * 0.75) = 1 token, the mean (4/3, 0), at
    # frame 0; each frame keeps ceil(1 * 0.75) = 1 dynamic token.
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    x = torch.tensor([[e1, e2, e1, [0.0, -1.0], [2.0, 0.0], e2]], dtype=torch.float64)
    tokens = Tokens(features=x, layout=(3, 1, 2), cls_attention=torch.ones(1, 1, 6))
    out = get("holitom", retention=0.5)(tokens)
    check_compression(out, tokens)
    assert out.positions.tolist() == [[0, 1, 3, 5]]
    assert out.source.tolist() == [[0, 1, 0, 2, 0, 3]]
    assert out.sizes.tolist() == [[3.0, 1.0, 1.0, 1.0]]
    expected = torch.tensor([[[4 / 3, 0.0], e2, [0.0, -1.0], e2]], dtype=torch.float64)
    assert torch.allclose(out.features, expected)
    # tau = 1: nothing is static, r stays 0.5 and each frame keeps ceil(2 * 0.5) = 1 token,
    # the most attended (position 0: attention 2 > 1)
    attention = torch.tensor([[[2.0, 1.0] * 3]])
    tokens = Tokens(features=x, layout=(3, 1, 2), cls_attention=attention)
    assert get("holitom", retention=0.5, tau=1.0)(tokens).positions.tolist() == [[0, 2, 4]]


def test_dynamic_tokens_keep_the_most_attended_then_contextual_clusters():
    # one frame of 7 1-D tokens; r = 0.7 keeps ceil(7 * 0.7) = 5: round(5 * 0.4) = 2 dominant
    # (the most attended, 100 and 200), then 3 clusters of the other 5 (as in the cluster test)
    x = torch.tensor([0.0, 1.0, 3.0, 10.0, 11.0, 100.0, 200.0], dtype=torch.float64)
    attention = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.8]).view(1, 1, 7)
    tokens = Tokens(features=x.view(1, 7, 1), layout=(1, 1, 7), cls_attention=attention)
    out = get("holitom", retention=0.7, contextual=0.6)(tokens)
    check_compression(out, tokens)
    assert out.positions.tolist() == [[0, 1, 2, 5, 6]]
    assert out.features.flatten().tolist() == pytest.approx([0.0, 1.0, 6.0, 100.0, 200.0])
    assert out.sizes.tolist() == [[1.0, 1.0, 3.0, 1.0, 1.0]]
    # attention alone (contextual 0, as released): the 5 most attended
    plain = get("holitom", retention=0.7)(tokens)
    assert plain.positions.tolist() == [[2, 3, 4, 5, 6]]


def test_identity_and_bad_parameters():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2 * 4, 3, generator=g)
    tokens = Tokens(features=x, layout=(2, 2, 2), cls_attention=torch.rand(1, 2, 8, generator=g))
    out = get("holitom", retention=1.0, max_window=1)(tokens)
    assert torch.equal(out.features, x)
    for bad in (
        {"retention": 0.0},
        {"tau": 1.5},
        {"beta": -0.1},
        {"neighbours": 0},
        {"max_window": True},
        {"contextual": 2.0},
    ):
        with pytest.raises(ValueError):
            get("holitom", **bad)
    with pytest.raises(ValueError, match="cls_attention"):
        get("holitom")(Tokens(features=x, layout=(2, 2, 2)))
