"""SCOPE: greedy saliency-weighted coverage gains, worked by hand on four 2-D tokens."""

from __future__ import annotations

import pytest
import torch

import reproductions
from reproductions.interface import Tokens, check_compression

# t0 and t1 coincide, t2 is orthogonal to them, t3 opposite: cosines 1, 0 and -1
FEATURES = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])


def run(attention: list[list[float]], **params) -> list[int]:
    tokens = Tokens(features=FEATURES, cls_attention=torch.tensor([attention]))
    out = reproductions.get("scope", **params)(tokens)
    check_compression(out, tokens)
    return out.positions[0].tolist()


def official_loop(x: torch.Tensor, a: torch.Tensor, k: int, alpha: float) -> list[int]:
    """The authors' greedy loop for one image, written over Python lists."""
    n = x.shape[0]
    sim = (x / x.norm(dim=1, keepdim=True)) @ (x / x.norm(dim=1, keepdim=True)).T
    cover, picked = [0.0] * n, []
    for _ in range(k):
        best, best_score = -1, -float("inf")
        for j in range(n):
            if j in picked:
                continue
            gain = sum(max(0.0, float(sim[i, j]) - cover[i]) for i in range(n))
            score = gain * float(a[j]) ** alpha
            if score > best_score:
                best, best_score = j, score
        picked.append(best)
        cover = [max(c, float(sim[best, i])) for i, c in enumerate(cover)]
    return sorted(picked)


def test_coverage_beats_a_duplicate_of_a_kept_token():
    # step 1: gains (sum_i max(0, S[i, j])) 2, 2, 1, 1, times saliency: 0.8, 0.6, 0.2, 0.1 -> t0;
    # coverage becomes 1, 1, 0, 0. Step 2: t1 adds nothing (gain 0), t2 gains 1 * 0.2, t3
    # 1 * 0.1 -> t2. Saliency alone would keep t0 and t1.
    assert run([[0.4, 0.3, 0.2, 0.1]], keep=2) == [0, 2]
    # step 3: coverage 1, 1, 1, 0; t1 gains 0, t3 gains 1 * 0.1 -> t3
    assert run([[0.4, 0.3, 0.2, 0.1]], keep=3) == [0, 2, 3]


def test_alpha_weighs_saliency_against_coverage():
    attention = [[0.1, 0.1, 0.1, 0.7]]
    # alpha 1: t3 first (1 * 0.7 beats 2 * 0.1); coverage 0, 0, 0, 1; then t0 and t1 tie at
    # 2 * 0.1, the lower index wins
    assert run(attention, keep=2) == [0, 3]
    # alpha 0: coverage only; t0 (gain 2, tied with t1: lowest index), then t2 and t3 tie at 1
    assert run(attention, keep=2, alpha=0.0) == [0, 2]


def test_add_combines_the_head_sum_of_attention():
    # two heads, summed: saliency 0, 0, 1.6, 0.4. "add": 2 + 0, 2 + 0, 1 + 1.6, 1 + 0.4 -> t2
    # (a mean over heads, 0.8, would give t0: 2 > 1.8); "multi": 0, 0, 1.6, 0.4 -> t2 as well
    heads = [[0.0, 0.0, 0.8, 0.2], [0.0, 0.0, 0.8, 0.2]]
    assert run(heads, keep=1, combine="add") == [2]
    assert run(heads, keep=1) == [2]
    # saliency 0.1, 0.1, 0.3, 0.05: multi 0.2, 0.2, 0.3, 0.05 -> t2; add 2.1, 2.1, 1.3, 1.05 -> t0
    assert run([[0.1, 0.1, 0.3, 0.05]], keep=1) == [2]
    assert run([[0.1, 0.1, 0.3, 0.05]], keep=1, combine="add") == [0]


def test_special_tokens_lead_and_take_no_part():
    features = torch.cat([torch.tensor([[[5.0, 5.0]]]), FEATURES], dim=1)
    attention = torch.tensor([[[10.0, 0.4, 0.3, 0.2, 0.1]]])
    tokens = Tokens(features=features, special=1, cls_attention=attention)
    out = reproductions.get("scope", keep=3)(tokens)
    assert out.positions.tolist() == [[0, 1, 3]]
    assert torch.equal(out.features, features[:, [0, 1, 3]])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_matches_the_official_loop(seed, alpha):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 36, 8, generator=g, dtype=torch.float64)
    a = torch.randn(2, 3, 36, generator=g, dtype=torch.float64).softmax(-1)
    out = reproductions.get("scope", keep=9, alpha=alpha)(Tokens(features=x, cls_attention=a))
    for b in range(2):
        assert out.positions[b].tolist() == official_loop(x[b], a[b].sum(0), 9, alpha)


@pytest.mark.parametrize(
    "params,name",
    [({"alpha": -1.0}, "alpha"), ({"alpha": float("nan")}, "alpha"), ({"combine": "max"}, "combine"),
     ({"keep": 0}, "keep")],
)
def test_bad_parameters_are_named(params, name):
    with pytest.raises(ValueError, match=name):
        reproductions.get("scope", **params)


def test_missing_attention_is_named():
    with pytest.raises(ValueError, match="cls_attention"):
        reproductions.get("scope", keep=2)(Tokens(features=FEATURES))
