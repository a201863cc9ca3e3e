"""FastV: the last prompt row, averaged over heads, decides; the official ranking restated."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def test_keeps_exactly_the_most_attended_tokens_by_the_last_row():
    n = 8
    attention = torch.zeros(1, 2, 3, n)
    # head 0 and head 1 disagree; their mean ranks tokens 6 > 1 > 4 > the rest
    attention[0, 0, -1] = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.1, 0.0, 0.4, 0.0])
    attention[0, 1, -1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.7, 0.0])
    attention[0, :, 0] = torch.eye(n)[3]  # earlier rows must not count
    x = torch.randn(1, n, 4)
    out = get("fastv", keep=3)(Tokens(features=x, attention=attention))
    assert out.positions[0].tolist() == [1, 4, 6]
    assert torch.equal(out.features[0], x[0, [1, 4, 6]])
    assert out.source[0].tolist() == [-1, 0, -1, -1, 1, -1, 2, -1]


def test_matches_the_official_ranking():
    g = torch.Generator().manual_seed(0)
    attention = torch.rand(1, 4, 5, 30, generator=g, dtype=torch.float64).softmax(-1)
    out = get("fastv", keep=0.4)(Tokens(features=torch.randn(1, 30, 2), attention=attention))
    official = torch.mean(attention, dim=1)[0][-1].topk(12).indices.sort().values
    assert out.positions[0].tolist() == official.tolist()


def test_layer_must_leave_a_layer_to_score_with():
    with pytest.raises(ValueError, match="layer"):
        get("fastv", layer=0)
    assert get("fastv", keep=4, layer=5).layer == 5
