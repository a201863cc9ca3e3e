"""framefusion: run merging into the previous token of a patch, the cost budget, attention pruning."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.framefusion import pruning_ratio


def attention_for(last_row: list[float], rows: int = 2) -> torch.Tensor:
    """(1, 2, rows, N) attention whose last row is `last_row` in both heads; others are noise."""
    n = len(last_row)
    attention = torch.rand(1, 2, rows, n, generator=torch.Generator().manual_seed(0))
    attention[:, :, -1] = torch.tensor(last_row, dtype=torch.float64)
    return attention.double()


def test_pruning_ratio_is_the_paper_budget():
    assert pruning_ratio([], 0.3, 28) == pytest.approx(0.7)
    # one step merging 1/3: s = 2/3 spent; the 27 other layers share 28 * 0.5 - 2/3
    assert pruning_ratio([1 / 3], 0.5, 28) == pytest.approx(1 - (14 - 2 / 3) / (27 * 2 / 3))
    assert pruning_ratio([], 1.0, 28) == 0.0
    with pytest.raises(ValueError, match="cost"):
        pruning_ratio([0.0] * 27, 0.01, 28)


def test_runs_merge_into_the_token_before_them_then_the_least_attended_are_pruned():
    # layout (3, 1, 2): indices f0p0=0 f0p1=1 f1p0=2 f1p1=3 f2p0=4 f2p1=5
    x = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [1.0, 0.5, 0.0, 0.0],  # cosine 0.89 with token 0
            [0.0, 1.0, 0.0, 0.0],  # cosine 0 with token 1
            [1.0, 0.0, 0.5, 0.0],  # cosine 0.8 with token 2
            [0.0, 0.0, 1.0, 0.0],  # cosine 0 with token 3
        ],
        dtype=torch.float64,
    ).unsqueeze(0)
    tokens = Tokens(
        features=x, layout=(3, 1, 2), attention=attention_for([0.3, 0.2, 0.3, 0.05, 0.3, 0.15])
    )
    before = x.clone()
    out = get("framefusion", cost=0.5, similarity=0.6, min_ratio=0.1)(tokens)
    # step 1 merges 2 / 6 (>= min_ratio), step 2 merges 0; pruning ratio for [1/3, 0] at
    # cost 0.5 is 0.269 -> keep round(4 * 0.731) = 3 of the 4 left: token 3 is least attended
    assert out.positions[0].tolist() == [0, 1, 5]
    assert torch.allclose(out.features[0, 0], x[0, [0, 2, 4]].mean(dim=0))  # uniform average
    assert torch.equal(out.features[0, 1:], x[0, [1, 5]])
    assert out.source[0].tolist() == [0, 1, 0, -1, 0, 2]
    assert out.sizes[0].tolist() == [3, 1, 1]
    assert torch.equal(x, before)  # the released code averages in place; never here
    check_compression(out, tokens)


def test_too_many_similar_tokens_merge_only_the_budget_and_prune_nothing():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [1.0, 0.31]], dtype=torch.float64)
    tokens = Tokens(features=x.unsqueeze(0), layout=(4, 1, 1), attention=attention_for([0.1] * 4))
    # 3 of 4 similar >= bound 1 - 0.5 = 0.5: merge the int(0.5 * 4) = 2 most similar (frames 3
    # and 1), each into the token before it; no pruning
    out = get("framefusion", cost=0.5, similarity=0.6)(tokens)
    assert out.positions[0].tolist() == [0, 2]
    assert torch.allclose(out.features[0], torch.stack([x[:2].mean(0), x[2:].mean(0)]))


def official_merge_then_prune(x, last_row, grid, similarity, keep_fraction):
    """One merge step in the released code's patch order, then pruning by mean member attention."""
    t, h, w = grid
    p = h * w
    by_patch = [f * p + q for q in range(p) for f in range(t)]  # patch-major, frames ascending
    cos = [-2.0] + [
        torch.nn.functional.cosine_similarity(x[by_patch[i - 1]], x[by_patch[i]], dim=0).item()
        if by_patch[i] % p == by_patch[i - 1] % p
        else -2.0
        for i in range(1, len(by_patch))
    ]
    groups: dict[int, list[int]] = {}
    anchor = None
    for i, token in enumerate(by_patch):
        if cos[i] >= similarity:
            groups[anchor].append(token)
        else:
            anchor = token
            groups[anchor] = [token]
    alive = sorted(groups)
    keep = round(len(alive) * keep_fraction)
    score = {a: last_row[groups[a]].mean().item() for a in alive}
    kept = sorted(sorted(alive, key=lambda a: (-score[a], a))[:keep])
    return kept, torch.stack([x[groups[a]].mean(0) for a in kept])


def test_one_merge_step_matches_the_released_patch_order_loop():
    g = torch.Generator().manual_seed(3)
    grid = (5, 2, 3)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64)
    for i in range(6, 30):  # plant repeats of the same patch one frame earlier
        if torch.rand(1, generator=g).item() < 0.4:
            x[i] = x[i - 6] + 0.1 * torch.randn(6, generator=g, dtype=torch.float64)
    last_row = torch.rand(30, generator=g, dtype=torch.float64)
    tokens = Tokens(
        features=x.unsqueeze(0), layout=grid, attention=attention_for(last_row.tolist())
    )
    method = get("framefusion", cost=0.3, similarity=0.6, min_ratio=1.0)  # stop after one step
    out = method(tokens)
    merged = int((out.sizes[0] > 1).sum())
    assert merged > 0
    kept, features = official_merge_then_prune(
        x, last_row, grid, 0.6, 1 - pruning_ratio([merged_fraction(x, grid)], 0.3, 28)
    )
    assert out.positions[0].tolist() == kept
    assert torch.allclose(out.features[0], features, atol=1e-12)
    check_compression(out, tokens)


def merged_fraction(x: torch.Tensor, grid: tuple[int, int, int]) -> float:
    """Fraction of tokens whose cosine to the same patch one frame earlier is >= 0.6."""
    p = grid[1] * grid[2]
    cos = torch.nn.functional.cosine_similarity(x[p:], x[:-p], dim=-1)
    return int((cos >= 0.6).sum()) / x.shape[0]


def test_cost_one_is_identity_and_bad_parameters_raise():
    tokens = Tokens(
        features=torch.randn(1, 8, 3), layout=(2, 2, 2), attention=torch.rand(1, 1, 1, 8)
    )
    out = get("framefusion", cost=1.0)(tokens)
    assert torch.equal(out.features, tokens.features)
    for params in ({"cost": 0.0}, {"similarity": 2.0}, {"layers": 0}):
        with pytest.raises(ValueError):
            get("framefusion", **params)


def test_layers_before_k_count_at_full_cost():
    # 100 random 64-d tokens: no cosine reaches 0.6, so one merge step merges nothing and the
    # rest is pruning. At K = 0: [0] -> ratio 1 - (28 * 0.5 - 1) / 27 -> keep round(48.1) = 48.
    # At K = 2 the two full layers come first: [0, 0, 0] -> 1 - (14 - 3) / 25 -> keep 44.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 100, 64, generator=g, dtype=torch.float64)
    tokens = Tokens(features=x, layout=(4, 5, 5), attention=attention_for(torch.rand(100).tolist()))
    assert get("framefusion", cost=0.5).layer == 0  # the released code merges before layer 0
    assert get("framefusion", cost=0.5)(tokens).count == 48
    assert get("framefusion", cost=0.5, layer=2)(tokens).count == 44


def test_layer_must_leave_budget_and_layers():
    with pytest.raises(ValueError, match="layer="):
        get("framefusion", layer=27)
    with pytest.raises(ValueError, match="full-cost layers"):
        get("framefusion", cost=0.05, layer=2)  # 28 * 0.05 = 1.4 layer-equivalents < 2
