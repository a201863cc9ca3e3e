"""IDPruner: Maximal Marginal Relevance, worked by hand on four 2-D tokens."""

from __future__ import annotations

import pytest
import torch

import reproductions
from reproductions.interface import Tokens, check_compression

# t0 and t1 coincide, t2 is orthogonal to them, t3 opposite: cosines 1, 0 and -1
FEATURES = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
# importance (w - 0.1) / (0.8 + 1e-6): about 1, 0.875, 0, 0.5
SCORES = torch.tensor([[[0.9, 0.8, 0.1, 0.5]]])


def run(**params) -> list[int]:
    tokens = Tokens(features=FEATURES, cls_attention=SCORES)
    out = reproductions.get("idpruner", **params)(tokens)
    check_compression(out, tokens)
    return out.positions[0].tolist()


def official_loop(x: torch.Tensor, w: torch.Tensor, k: int, lam: float) -> list[int]:
    """The released greedy loop for one image (one token a step), over Python lists."""
    n = x.shape[0]
    imp = [(float(v) - float(w.min())) / (float(w.max() - w.min()) + 1e-6) for v in w]
    unit = x / x.norm(dim=1, keepdim=True)
    sim = (unit @ unit.T).tolist()
    picked: list[int] = []
    nearest = [-2.0] * n
    while len(picked) < k:
        scores = imp if not picked else [lam * imp[i] - (1 - lam) * nearest[i] for i in range(n)]
        best = max((i for i in range(n) if i not in picked), key=lambda i: (scores[i], -i))
        picked.append(best)
        nearest = [max(m, sim[i][best]) for i, m in enumerate(nearest)]
    return sorted(picked)


def test_the_most_important_first_then_relevance_minus_redundancy():
    # step 1: t0 (importance 1). Nearest kept cosines: 1, 1, 0, -1. Step 2 scores
    # 0.5 * imp - 0.5 * nearest: t1 0.4375 - 0.5, t2 0 - 0, t3 0.25 + 0.5 -> t3
    assert run(keep=2) == [0, 3]
    # nearest becomes 1, 1, 0, 1: t1 -0.0625, t2 0 -> t2
    assert run(keep=3) == [0, 2, 3]


def test_lambda_moves_between_importance_and_diversity():
    assert run(keep=2, mmr_lambda=1.0) == [0, 1]  # importance only: the two most important
    # diversity only after the first: -nearest is -1, 0, 1 for t1, t2, t3 -> t3, then t2
    assert run(keep=2, mmr_lambda=0.0) == [0, 3]
    assert run(keep=3, mmr_lambda=0.0) == [0, 2, 3]


def test_per_step_keeps_several_tokens_a_step():
    # step 1 takes the two most important, t0 and t1; nearest 1, 1, 0, -1; the last step's one
    # token: t2 scores 0, t3 0.75 -> t3 (one at a time gives t0, t3, t2)
    assert run(keep=3, per_step=2) == [0, 1, 3]


def test_special_tokens_lead_and_take_no_part():
    features = torch.cat([torch.tensor([[[5.0, 5.0]]]), FEATURES], dim=1)
    # the [CLS] column (100) would flatten every other importance if it took part in min-max
    scores = torch.cat([torch.tensor([[[100.0]]]), SCORES], dim=2)
    tokens = Tokens(features=features, special=1, cls_attention=scores)
    out = reproductions.get("idpruner", keep=3)(tokens)
    assert out.positions.tolist() == [[0, 1, 4]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 0.2, 0.8])
def test_matches_the_official_loop(seed, lam):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 36, 8, generator=g, dtype=torch.float64)
    a = torch.randn(2, 3, 36, generator=g, dtype=torch.float64).softmax(-1)
    out = reproductions.get("idpruner", keep=9, mmr_lambda=lam)(Tokens(features=x, cls_attention=a))
    for b in range(2):
        assert out.positions[b].tolist() == official_loop(x[b], a[b].mean(0), 9, lam)


@pytest.mark.parametrize(
    "params,name",
    [({"mmr_lambda": 1.5}, "mmr_lambda"), ({"mmr_lambda": float("nan")}, "mmr_lambda"),
     ({"per_step": 0}, "per_step"), ({"per_step": 2.0}, "per_step"), ({"keep": 1.5}, "keep")],
)
def test_bad_parameters_are_named(params, name):
    with pytest.raises(ValueError, match=name):
        reproductions.get("idpruner", **params)


def test_missing_attention_is_named():
    with pytest.raises(ValueError, match="cls_attention"):
        reproductions.get("idpruner", keep=2)(Tokens(features=FEATURES))
