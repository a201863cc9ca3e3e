"""DivPrune: the max-min picks on hand-built points, and the official loop restated."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get, ops
from reproductions.image.divprune import max_min_diverse


def official_divprune(x: torch.Tensor, k: int) -> list[int]:
    """A plain restatement of the official DivPrune loop on one image's tokens (N, D)."""
    normed = x / x.norm(dim=1, keepdim=True)
    dist = 1.0 - normed @ normed.t()
    picks: list[int] = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(dist, 2, dim=0, largest=False).values[1, :]
        else:
            scores = torch.min(dist[torch.tensor(picks)], dim=0).values
        picks.append(int(torch.argmax(scores)))
    return picks


def angles(*degrees: float) -> torch.Tensor:
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=-1).unsqueeze(0)


def test_first_pick_is_the_loneliest_and_second_the_farthest_from_it():
    # directions 0, 10, 20 degrees form a cluster; 150 and 270 stand apart
    x = angles(0, 10, 20, 150, 270)
    picks = max_min_diverse(x, 3)[0].tolist()
    assert picks[0] == 3  # 150: its nearest neighbour (270) is 120 degrees away, 270's only 90
    assert picks[1] == 0  # 0 degrees is the farthest from 150 (150 degrees)
    assert picks[2] == 4  # then 270: 90 degrees from {150, 0}, while 10 and 20 are close to 0
    out = get("divprune", keep=3)(Tokens(features=x.float()))
    assert out.positions[0].tolist() == [0, 3, 4]  # positional order
    assert torch.equal(out.features[0], x[0, [0, 3, 4]].float())


@pytest.mark.parametrize("block", [512, 7], ids=["one block", "blocks of 7"])
def test_matches_the_official_loop(block, monkeypatch):
    """Also when the similarity is built in blocks of 7 rows (`ops.SELF_BLOCK`), with exact
    duplicates among the 40 tokens (ties in every column they stand in)."""
    monkeypatch.setattr(ops, "SELF_BLOCK", block)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 16, generator=g, dtype=torch.float64)
    x[:, 30:35] = x[:, 3:8]
    ours = max_min_diverse(x, 12)
    for row in range(3):
        assert ours[row].tolist() == official_divprune(x[row], 12)


def test_duplicates_are_not_picked_twice():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([a, a, a, b]).unsqueeze(0)
    picks = max_min_diverse(x, 3)[0].tolist()
    assert picks[:2] == [3, 0] and len(set(picks)) == 3


def test_special_tokens_are_kept_and_the_rest_chosen_among_ordinary_tokens():
    x = torch.cat([torch.full((1, 1, 2), 5.0), angles(0, 10, 120).float()], dim=1)
    out = get("divprune", keep=3)(Tokens(features=x, special=1))
    assert out.positions[0].tolist() == [0, 1, 3]  # [CLS], then 0 and 120 degrees
    assert out.source[0].tolist() == [0, 1, -1, 2]
