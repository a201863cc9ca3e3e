"""sttm: quadtree spatial merging per frame, then temporal merging of nested nodes."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.sttm import official_union, pyramid_sizes

D = 16


def e(i: int) -> torch.Tensor:
    return torch.eye(D, dtype=torch.float64)[i]


def video(frames: list[list[torch.Tensor]], h: int, w: int, special: int = 0) -> Tokens:
    """Tokens of a video given as one list of H * W vectors (row-major) per frame."""
    x = torch.stack([v for frame in frames for v in frame]).unsqueeze(0)
    if special:
        x = torch.cat([torch.full((1, special, D), 7.0, dtype=torch.float64), x], dim=1)
    return Tokens(features=x, layout=(len(frames), h, w), special=special)


def quadrants(tl: list, tr: list, bl: list, br: list) -> list[torch.Tensor]:
    """A 4 x 4 frame from its four 2 x 2 quadrants, each given row-major."""
    q = [tl, tr, bl, br]
    return [q[2 * (y // 2) + x // 2][2 * (y % 2) + x % 2] for y in range(4) for x in range(4)]


def same(v: torch.Tensor) -> list[torch.Tensor]:
    return [v, v, v, v]


def test_a_quadrant_merges_when_every_child_is_similar_to_its_mean():
    # 4 x 4 frame, root_level 0: the root is the 2 x 2 level (one node per quadrant).
    bl = [e(3), e(3), e(3), e(3) + 0.1 * e(4)]  # all children within 0.9 of their mean
    frame = quadrants(same(e(0)), [e(1), e(1), e(1), e(2)], bl, [e(4), e(5), e(6), e(7)])
    tokens = video([frame], 4, 4)
    out = get("sttm", threshold=0.9, temporal_threshold=None, root_level=0)(tokens)
    assert out.positions[0].tolist() == [0, 2, 3, 6, 7, 8, 10, 11, 14, 15]
    assert out.source[0].tolist() == [0, 0, 1, 2, 0, 0, 3, 4, 5, 5, 6, 7, 5, 5, 8, 9]
    assert out.sizes[0].tolist() == [4, 1, 1, 1, 1, 4, 1, 1, 1, 1]
    assert torch.allclose(out.features[0, 0], e(0))
    assert torch.allclose(out.features[0, 5], torch.stack(bl).mean(0))
    assert torch.equal(out.features[0, 1], e(1)) and torch.equal(out.features[0, 4], e(2))
    check_compression(out, tokens)


def test_odd_sides_keep_first_row_and_column_strips_and_means_are_recursive():
    # 7 x 7, root_level 0: levels 7 x 7 -> 4 x 4 -> 2 x 2. Rows / columns of the 4 x 4 level
    # cover input rows {0}, {1, 2}, {3, 4}, {5, 6}; the 2 x 2 roots cover 3 or 4 of them.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 49, D, generator=g, dtype=torch.float64)
    tokens = Tokens(features=x, layout=(1, 7, 7))
    out = get("sttm", threshold=-1.0, temporal_threshold=None, root_level=0)(tokens)
    assert out.positions[0].tolist() == [0, 3, 21, 24]
    assert out.sizes[0].tolist() == [9, 12, 12, 16]
    grid = x[0].reshape(7, 7, D)
    # the top-left root averages its four children: 1, 2, 2 and 4 cells
    children = [grid[0, 0], grid[0, 1:3].mean(0), grid[1:3, 0].mean(0), grid[1:3, 1:3].mean((0, 1))]
    assert torch.allclose(out.features[0, 0], torch.stack(children).mean(0))
    assert not torch.allclose(out.features[0, 0], grid[:3, :3].reshape(9, D).mean(0))
    check_compression(out, tokens)


def test_strip_nodes_are_tested_on_their_real_children_only():
    # 3 x 3, root 2 x 2: nodes {0}, {1, 2}, {3, 6}, {4, 5, 7, 8}. The released code would also
    # compare the strips {1, 2} and {3, 6} with padding children that read cell 0 (e0 here).
    frame = [e(0)] + [e(1)] * 8
    out = get("sttm", threshold=0.9, temporal_threshold=None, root_level=0)(video([frame], 3, 3))
    assert out.positions[0].tolist() == [0, 1, 3, 4]
    assert out.sizes[0].tolist() == [1, 2, 2, 4]
    assert out.source[0].tolist() == [0, 1, 1, 2, 3, 3, 2, 3, 3]


def test_temporal_chain_merges_into_the_earliest_frame():
    # 2 x 2 frames have no coarser level (the pyramid stops at a side of 2): tokens only merge
    # in time. Position 0 repeats over three frames; everything else differs.
    frames = [[e(0), e(1 + 3 * t), e(2 + 3 * t), e(3 + 3 * t)] for t in range(3)]
    frames[2][0] = e(0) * 2  # same direction, another norm
    tokens = video(frames, 2, 2)
    out = get("sttm", threshold=0.9, temporal_threshold=0.9)(tokens)
    assert out.source[0].tolist() == [0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9]
    assert out.positions[0].tolist() == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert out.sizes[0, 0] == 3
    assert torch.allclose(out.features[0, 0], e(0) * 4 / 3)  # plain mean of e0, e0, 2 e0


def background(t: int) -> tuple[list, list, list]:
    """Three uniform quadrants, orthogonal between frames (they merge spatially, never in time)."""
    return same(e(8 + 3 * t)), same(e(9 + 3 * t)), same(e(10 + 3 * t))


def test_a_coarse_node_absorbs_the_finer_nodes_it_contains_with_a_node_mean():
    leaves = [e(0) + 0.8 * e(1), e(0) + 0.8 * e(1), e(0) + 0.8 * e(2), e(0) - 0.8 * e(2)]
    frame0 = quadrants(same(e(0)), *background(0))  # the top-left quadrant is one node
    frame1 = quadrants(leaves, *background(1))  # too diverse: four leaves, each 0.78 to e0
    tokens = video([frame0, frame1], 4, 4)
    out = get("sttm", threshold=0.9, temporal_threshold=0.7, root_level=0)(tokens)
    assert out.positions[0].tolist() == [0, 2, 8, 10, 18, 24, 26]
    assert out.sizes[0].tolist() == [8, 4, 4, 4, 4, 4, 4]
    # the mean of the five nodes (e0 and the four leaves), not of the eight tokens
    assert torch.allclose(out.features[0, 0], e(0) + 0.32 * e(1))
    check_compression(out, tokens)


def test_finer_nodes_sharing_a_coarse_successor_follow_the_released_label_propagation():
    # Frame 0's top-left quadrant splits into A1..A4, frame 1's is one node B, 0.71 to each.
    # The released propagation stops once every label points at itself: B joins A1 (the lowest
    # label); A2, A3, A4 keep their own labels although they pass the threshold with B.
    leaves = [e(0) + e(1), e(0) - e(1), e(0) + e(2), e(0) - e(2)]
    frame0 = quadrants(leaves, *background(0))
    frame1 = quadrants(same(e(0)), *background(1))
    tokens = video([frame0, frame1], 4, 4)
    out = get("sttm", threshold=0.9, temporal_threshold=0.6, root_level=0)(tokens)
    assert out.positions[0].tolist() == [0, 1, 2, 4, 5, 8, 10, 18, 24, 26]
    assert out.sizes[0].tolist() == [5, 1, 4, 1, 1, 4, 4, 4, 4, 4]
    assert out.source[0, 16:].tolist() == [0, 0, 7, 7, 0, 0, 7, 7, 8, 8, 9, 9, 8, 8, 9, 9]
    assert torch.allclose(out.features[0, 0], e(0) + 0.5 * e(1))
    check_compression(out, tokens)


def test_official_union_label_propagation():
    chain = official_union(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), 5)
    assert chain.tolist() == [0, 0, 0, 0, 4]
    shared = official_union(torch.tensor([0, 1]), torch.tensor([2, 2]), 3)
    assert shared.tolist() == [0, 1, 0]  # node 1 keeps its label (see the test above)


def test_pyramid_follows_the_released_halving_rule():
    assert pyramid_sizes(14, 14) == [(2, 2), (4, 4), (7, 7), (14, 14)]
    assert pyramid_sizes(14, 15) == [(2, 2), (4, 4), (7, 8), (14, 15)]
    assert pyramid_sizes(27, 27) == [(2, 2), (4, 4), (7, 7), (14, 14), (27, 27)]
    assert pyramid_sizes(2, 20) == [(2, 20)]
    assert pyramid_sizes(1, 1) == [(1, 1)]  # the released loop never ends here
    assert pyramid_sizes(1, 5) == [(1, 2), (1, 3), (1, 5)]


def test_root_level_picks_the_coarsest_node_size():
    x = torch.ones(1, 2 * 8 * 8, D, dtype=torch.float64)  # everything identical
    tokens = Tokens(features=x, layout=(2, 8, 8))
    for root, per_frame in [(0, 4), (1, 16), (2, 64), (9, 64)]:
        out = get("sttm", threshold=0.9, temporal_threshold=None, root_level=root)(tokens)
        assert out.count == 2 * per_frame
    both = get("sttm", threshold=0.9, temporal_threshold=0.9, root_level=1)(tokens)
    assert both.count == 16 and both.sizes[0].tolist() == [8.0] * 16


def test_special_tokens_pass_through_and_batches_agree():
    leaves = [e(0) + 0.8 * e(1), e(0) + 0.8 * e(1), e(0) + 0.8 * e(2), e(0) - 0.8 * e(2)]
    one = video([quadrants(same(e(0)), *background(0)), quadrants(leaves, *background(1))], 4, 4, 2)
    x = torch.cat([one.features, 3 * one.features])  # same cosines, scaled features
    tokens = Tokens(features=x, layout=one.layout, special=2)
    out = get("sttm", threshold=0.9, temporal_threshold=0.7, root_level=0)(tokens)
    assert out.count == 2 + 7
    assert torch.equal(out.features[:, :2], x[:, :2]) and out.positions[0, :2].tolist() == [0, 1]
    assert torch.equal(out.source[0], out.source[1])
    assert torch.allclose(out.features[1], 3 * out.features[0])
    check_compression(out, tokens)


def test_rows_that_merge_differently_raise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, D, generator=g, dtype=torch.float64)
    x = torch.cat([x, torch.ones_like(x)])  # the second row merges completely
    with pytest.raises(ValueError, match="one video at a time"):
        get("sttm", threshold=0.9, temporal_threshold=0.9, root_level=0)(
            Tokens(features=x, layout=(4, 4, 4))
        )


def test_no_merging_returns_the_input():
    g = torch.Generator().manual_seed(0)
    tokens = Tokens(features=torch.randn(1, 1 + 64, D, generator=g), layout=(4, 4, 4), special=1)
    method = get("sttm", threshold=None, temporal_threshold=None)
    assert method.output_count(tokens) == 65
    assert torch.equal(method(tokens).features, tokens.features)
    nothing_similar = get("sttm", threshold=1.0, temporal_threshold=1.0, root_level=0)
    assert nothing_similar.output_count(tokens) is None
    assert torch.equal(nothing_similar(tokens).features, tokens.features)


@pytest.mark.parametrize(
    "layout", [(1, 1, 1), (3, 1, 1), (2, 1, 5), (2, 5, 1), (2, 3, 2), (1, 9, 5)]
)
def test_small_and_thin_grids(layout):
    t, h, w = layout
    x = torch.ones(1, t * h * w, D)
    out = get("sttm", threshold=0.5, temporal_threshold=0.5, root_level=0)(
        Tokens(features=x, layout=layout)
    )
    check_compression(out, Tokens(features=x, layout=layout))
    assert torch.allclose(out.features, torch.ones_like(out.features))


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="threshold"):
        get("sttm", threshold=1.5)
    with pytest.raises(ValueError, match="None"):
        get("sttm", temporal_threshold=-1.0)  # the released "off" value
    with pytest.raises(ValueError, match="temporal_threshold"):
        get("sttm", temporal_threshold=0.0)
    with pytest.raises(ValueError, match="root_level"):
        get("sttm", root_level=-1)
    with pytest.raises(ValueError, match="root_level"):
        get("sttm", root_level=True)
    with pytest.raises(ValueError, match="layout"):
        get("sttm")(Tokens(features=torch.ones(1, 8, D)))
