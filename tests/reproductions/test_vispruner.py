"""VisPruner: important tokens by [CLS] attention, then rounds that drop near-duplicates."""

from __future__ import annotations

import math

import pytest
import torch

import reproductions
from reproductions.image.vispruner import remove_duplicates
from reproductions.interface import Tokens, check_compression


def official_rounds(features: torch.Tensor, residual: list[int], target: int) -> list[int]:
    """The official while-loop for one image, written over Python lists (odd counts fixed)."""
    normed = features / features.norm(dim=-1, keepdim=True)
    while (excess := len(residual) - target) > 0:
        r = min(8, excess)
        a, b = residual[::2], residual[1::2]
        scores = (normed[a] @ normed[b].T).max(dim=-1).values
        ranked = torch.sort(scores, descending=True, stable=True).indices.tolist()
        residual = [a[i] for i in ranked[r:]] + b
    return residual


def test_hand_built_rounds_drop_the_duplicated_even_token():
    # list order: 0, 1, 2, 3; token 2 duplicates token 1, token 0 is orthogonal to both odds
    vectors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.01], [0.0, 0.0, 1.0]])
    sim = vectors @ vectors.T / vectors.norm(dim=1)[:, None] / vectors.norm(dim=1)[None, :]
    assert remove_duplicates(sim[None], 3).tolist() == [[0, 1, 3]]
    assert remove_duplicates(sim[None], 2).tolist() == [[1, 3]]  # both evens, score order


def test_important_tokens_then_diverse_ones_in_positional_order():
    # ordinary tokens 4, 5 get the most [CLS] attention; the residual in attention order is
    # 0, 1, 2, 3, where token 1 duplicates token 0 (opposite parity: they get compared)
    features = torch.tensor(
        [[[5.0, 5, 5], [1, 0, 0], [1, 0, 0.01], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, -1, 0]]]
    )
    cls = torch.tensor([[[0.9, 0.3, 0.2, 0.15, 0.1, 0.5, 0.4]]])
    tokens = Tokens(features=features, special=1, cls_attention=cls)
    out = reproductions.get("vispruner", keep=6)(tokens)  # [CLS] + 2 important + 3 diverse
    # one round: a = [0, 2], b = [1, 3]; token 0 matches token 1 (cosine ~1) and is dropped
    assert official_rounds(features[0, 1:], [0, 1, 2, 3], 3) == [2, 1, 3]
    assert out.positions.tolist() == [[0, 2, 3, 4, 5, 6]]
    assert torch.equal(out.features, features[:, [0, 2, 3, 4, 5, 6]])
    check_compression(out, tokens)


@pytest.mark.parametrize("keep", [7, 16, 33, 50])
def test_matches_the_official_loop(keep):
    g = torch.Generator().manual_seed(keep)
    features = torch.randn(1, 65, 12, generator=g, dtype=torch.float64)
    cls = torch.randn(1, 3, 65, generator=g, dtype=torch.float64).softmax(-1)
    tokens = Tokens(features=features, special=1, cls_attention=cls, layout=(8, 8))
    out = reproductions.get("vispruner", keep=keep)(tokens)
    budget = keep - 1
    important = int(budget * 0.5)
    ranked = torch.sort(cls[0, :, 1:].mean(0), descending=True, stable=True).indices.tolist()
    residual = official_rounds(features[0, 1:], ranked[important:], budget - important)
    expected = sorted(ranked[:important] + residual)
    assert out.positions[0].tolist() == [0] + [i + 1 for i in expected]
    assert torch.equal(out.features[0, 1:], features[0, 1:][expected])


def test_odd_residual_counts_do_not_crash():
    # 63 ordinary tokens, budget 10 -> 5 important, 58 residual, then odd counts along the way
    features = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(3))
    cls = torch.rand(2, 2, 64, generator=torch.Generator().manual_seed(4))
    tokens = Tokens(features=features, special=1, cls_attention=cls)
    for keep in (11, 12, 2, 64):
        out = reproductions.get("vispruner", keep=keep)(tokens)
        assert out.count == keep
        assert (out.positions.diff(dim=1) > 0).all()  # positional order


def test_only_important_tokens_when_the_ratio_is_one():
    tokens = Tokens(
        features=torch.randn(1, 10, 4),
        cls_attention=torch.arange(10.0).view(1, 1, 10),
    )
    out = reproductions.get("vispruner", keep=3, important_ratio=1.0)(tokens)
    assert out.positions.tolist() == [[7, 8, 9]]


@pytest.mark.parametrize("ratio", [-0.1, 1.5, math.nan, "half", True])
def test_bad_important_ratio_raises(ratio):
    with pytest.raises(ValueError, match="important_ratio"):
        reproductions.get("vispruner", important_ratio=ratio)
