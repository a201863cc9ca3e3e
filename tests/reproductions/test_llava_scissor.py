"""llava_scissor: connected components per frame then across frames, and the final fold-in."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.llava_scissor import sample_size, semantic_components

E = torch.eye(3, dtype=torch.float64)


def test_frames_merge_spatially_then_temporally_then_every_token_folds_into_its_nearest():
    # layout (2, 1, 3): frame 0 = [1 e1, 3 e1, 2 e2], frame 1 = [5 e1, 4 e3, 2 e3]
    x = torch.stack([1 * E[0], 3 * E[0], 2 * E[1], 5 * E[0], 4 * E[2], 2 * E[2]]).unsqueeze(0)
    tokens = Tokens(features=x, layout=(2, 1, 3))
    before = x.clone()
    out = get("llava_scissor", tau=0.9)(tokens)
    # step 1: frame 0 -> {0, 1} = 2 e1, {2} = 2 e2; frame 1 -> {3} = 5 e1, {4, 5} = 3 e3
    # step 2 over [2 e1, 2 e2, 5 e1, 3 e3]: {2 e1, 5 e1} -> 3.5 e1 (a plain mean of the step-1
    # tokens; weighted by their sizes it would be 3 e1), 2 e2, 3 e3
    # step 3: tokens 0, 1, 3 are nearest 3.5 e1 -> (3.5 + 1 + 3 + 5) / 4 = 3.125 e1;
    # token 2 -> (2 + 2) / 2 = 2 e2; tokens 4, 5 -> (3 + 4 + 2) / 3 = 3 e3
    expected = torch.stack([3.125 * E[0], 2 * E[1], 3 * E[2]])
    assert torch.allclose(out.features[0], expected, atol=1e-12)
    assert out.source[0].tolist() == [0, 0, 1, 0, 2, 2]
    assert out.positions[0].tolist() == [0, 2, 4]
    assert out.sizes[0].tolist() == [3, 1, 2]
    assert torch.equal(x, before)
    check_compression(out, tokens)

    # without frames everything is one frame: {0, 1, 3} merges in one step -> 3 e1, and
    # step 3 gives (3 + 1 + 3 + 5) / 4 = 3 e1
    flat = get("llava_scissor", tau=0.9)(Tokens(features=x))
    assert torch.allclose(flat.features[0, 0], 3 * E[0], atol=1e-12)


def test_a_component_is_transitive_and_ordered_by_its_highest_degree_token():
    # one frame of A (0 deg), D (e3), B (30 deg), C (60 deg): tau 0.8 joins A-B and B-C
    # (cosine 0.87) but not A-C (0.5); degrees A 2, B 3, C 2: B represents {A, B, C}
    def unit(degrees: float) -> torch.Tensor:
        r = math.radians(degrees)
        return torch.tensor([math.cos(r), math.sin(r), 0.0], dtype=torch.float64)

    a, b, c, d = unit(0), unit(30), unit(60), E[2]
    x = torch.stack([a, d, b, c]).unsqueeze(0)
    tokens = Tokens(features=x, layout=(2, 2))
    out = get("llava_scissor", tau=0.8)(tokens)
    # components ordered by representative: {D} (1) before {A, B, C} (2), although A is 0
    assert out.positions[0].tolist() == [1, 2]
    assert out.source[0].tolist() == [1, 0, 1, 1]
    mean = (a + b + c) / 3  # A, B, C are all nearest their mean: (m + A + B + C) / 4 = m
    assert torch.allclose(out.features[0], torch.stack([d, mean]), atol=1e-12)
    check_compression(out, tokens)


def test_sampled_nodes_read_their_rows_only():
    # the path A - B - C - D (self-loops included, as similarity > tau gives them)
    path = torch.eye(4, dtype=torch.bool)
    for i in range(3):
        path[i, i + 1] = path[i + 1, i] = True

    def run(sampled: list[int]) -> tuple[list[int], list[int]]:
        mask = torch.zeros(1, 4, dtype=torch.bool)
        mask[0, sampled] = True
        component, representative = semantic_components(path.unsqueeze(0), mask)
        return component.tolist(), representative.tolist()

    # all sampled: one component; degrees 2 3 3 2 -> B (the lower of B, C) represents it
    assert run([0, 1, 2, 3]) == ([0, 0, 0, 0], [1])
    assert run([1]) == ([0, 0, 0, 1], [1, 3])  # edges of B only: {A, B, C}, {D}
    assert run([0]) == ([0, 0, 1, 2], [1, 2, 3])  # edge A-B only; B still has degree 3

    one_way = torch.eye(2, dtype=torch.bool)
    one_way[0, 1] = True  # only row 0 sees the edge
    both = torch.ones(1, 2, dtype=torch.bool)
    assert semantic_components(one_way.unsqueeze(0), both)[0].tolist() == [0, 0]
    row1 = torch.tensor([[False, True]])
    assert semantic_components(one_way.unsqueeze(0), row1)[0].tolist() == [0, 1]


def test_sample_size_is_the_official_ceil_log_n_over_epsilon_squared():
    assert sample_size(196, 0.05) == 196  # every frame-sized graph is searched exactly
    assert sample_size(6272, 0.05) == math.ceil(math.log(6272) / 0.05**2) == 3498
    assert sample_size(6272, None) == 6272
    assert sample_size(1, 0.05) == 0  # ln 1 = 0: a lone node stays alone anyway


def test_a_clique_is_one_component_whatever_node_is_sampled():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.1], [3.0, 0.0], [1.0, -0.1]], dtype=torch.float64)
    tokens = Tokens(features=x.unsqueeze(0))
    for seed in range(4):  # epsilon 10 samples ceil(ln 4 / 100) = 1 node
        out = get("llava_scissor", tau=0.9, epsilon=10.0, seed=seed)(tokens)
        assert out.count == 1 and out.source[0].tolist() == [0, 0, 0, 0]


def reference(x: torch.Tensor, frames: int, tau: float) -> tuple[torch.Tensor, list[int]]:
    """The algorithm written plainly: BFS components, highest-degree representatives."""

    def components(v: torch.Tensor) -> list[list[int]]:
        unit = v / v.norm(dim=1, keepdim=True)
        adjacency = (unit @ unit.T) > tau
        degree = adjacency.sum(dim=1).tolist()
        seen, found = set(), []
        for start in range(len(v)):
            if start in seen:
                continue
            queue, members = [start], []
            seen.add(start)
            while queue:
                node = queue.pop()
                members.append(node)
                for other in adjacency[node].nonzero().flatten().tolist():
                    if other not in seen:
                        seen.add(other)
                        queue.append(other)
            found.append(sorted(members))
        return sorted(found, key=lambda c: min(c, key=lambda i: (-degree[i], i)))

    per_frame = x.shape[0] // frames
    fused, members = [], []
    for f in range(frames):
        block = x[f * per_frame : (f + 1) * per_frame]
        for comp in components(block):
            fused.append(block[comp].mean(dim=0))
            members.append([f * per_frame + i for i in comp])
    fused = torch.stack(fused)
    merged, groups = [], []
    for comp in components(fused):
        merged.append(fused[comp].mean(dim=0))
        groups.append(sorted(i for j in comp for i in members[j]))
    merged = torch.stack(merged)
    unit = x / x.norm(dim=1, keepdim=True)
    nearest = (unit @ (merged / merged.norm(dim=1, keepdim=True)).T).argmax(dim=1)
    out = torch.stack(
        [
            (merged[k] + x[nearest == k].sum(dim=0)) / (1 + (nearest == k).sum())
            for k in range(len(merged))
        ]
    )
    source = [0] * x.shape[0]
    for k, group in enumerate(groups):
        for i in group:
            source[i] = k
    return out, source


@pytest.mark.parametrize("seed", range(4))
def test_matches_a_plain_reference_on_clustered_videos(seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 16, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 10, (4 * 25,), generator=g)
    x = centers[labels] + 0.3 * torch.randn(100, 16, generator=g, dtype=torch.float64)
    cls = torch.randn(1, 16, generator=g, dtype=torch.float64)
    tokens = Tokens(features=torch.cat([cls, x]).unsqueeze(0), layout=(4, 5, 5), special=1)
    out = get("llava_scissor", tau=0.8)(tokens)
    expected, source = reference(x, 4, 0.8)
    assert out.count == 1 + len(expected) < 101
    assert torch.equal(out.features[0, 0], cls[0])  # the [CLS] passes through in front
    assert torch.allclose(out.features[0, 1:], expected, atol=1e-10)
    assert out.source[0].tolist() == [0] + [s + 1 for s in source]
    check_compression(out, tokens)


def test_identical_tokens_become_one():
    x = torch.tensor([1.0, 2.0, 3.0]).expand(1, 8, 3) * torch.arange(1.0, 9.0).view(1, 8, 1)
    out = get("llava_scissor")(Tokens(features=x, layout=(2, 2, 2)))
    # frames 0 and 1 (1..4 v, 5..8 v) merge to 2.5 v and 6.5 v, then to 4.5 v, and every
    # token folds into it: (4.5 + 36) / 9 = 4.5 v
    assert out.count == 1 and out.positions[0].tolist() == [0]
    assert torch.allclose(out.features[0, 0], 4.5 * torch.tensor([1.0, 2.0, 3.0]))
    assert out.sizes[0].tolist() == [8]


def test_rows_with_different_counts_ask_for_one_video_at_a_time():
    same = torch.tensor([1.0, 0.0]).expand(4, 2)
    apart = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    tokens = Tokens(features=torch.stack([same, apart]), layout=(2, 1, 2))
    with pytest.raises(ValueError, match="one video at a time"):
        get("llava_scissor")(tokens)


def test_only_special_tokens_pass_through():
    x = torch.randn(1, 2, 4)
    out = get("llava_scissor")(Tokens(features=x, special=2))
    assert torch.equal(out.features, x) and out.source[0].tolist() == [0, 1]


@pytest.mark.parametrize(
    "params",
    [
        {"tau": 1.5},
        {"tau": True},
        {"tau": "0.9"},
        {"epsilon": 0},
        {"epsilon": -1.0},
        {"epsilon": math.inf},
        {"seed": 1.5},
    ],
)
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        get("llava_scissor", **params)
