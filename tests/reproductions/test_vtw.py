"""VTW: from layer K no visual token is left; the K search's arithmetic on given divergences."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.image.vtw import VTW


def test_withdraws_every_visual_token():
    x = torch.randn(2, 5, 3)
    out = get("vtw")(Tokens(features=x, layout=(5, 1)))
    assert out.count == 0 and out.features.shape == (2, 0, 3)
    assert out.source.tolist() == [[-1] * 5] * 2
    assert out.positions.shape == (2, 0) and out.sizes.shape == (2, 0)
    assert get("vtw").layer == 15  # the released LLaVA-1.5-7B run


def test_divergence_is_kl_of_the_withdrawn_from_the_full_distribution():
    """Row 0: full uniform over 2, withdrawn (0.75, 0.25): 0.75 ln 1.5 + 0.25 ln 0.5; row 1:
    equal logits, 0. Batch mean: half of row 0's."""
    full = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    withdrawn = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert VTW.divergence(full, withdrawn).item() == pytest.approx(expected, rel=1e-6)


def test_search_takes_the_first_layer_whose_mean_meets_eta():
    """Means per layer 5, 6, 7, 8: 0.015, 0.0035, 0.0025, 0.0005; eta 0.003 -> layer 7 (the
    later layer 8 also meets it; the first counts)."""
    divergences = torch.tensor([[0.01, 0.004, 0.002, 0.001], [0.02, 0.003, 0.003, 0.0]])
    assert VTW.search_layer(divergences, eta=0.003) == 7
    assert VTW.search_layer(divergences, eta=0.01, first=3) == 4
    with pytest.raises(ValueError, match="larger eta"):
        VTW.search_layer(divergences, eta=0.0001)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="layer"):
        get("vtw", layer=0)
    with pytest.raises(ValueError, match="divergences"):
        VTW.search_layer(torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        VTW.divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="has no budget knob: its count follows from layer"):
        VTW.at_budget(4, Tokens(features=torch.zeros(1, 8, 2)))
