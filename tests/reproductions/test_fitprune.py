"""fitprune: FitPrune's recipe of deletions per layer, ranked by (question x visual) attention."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.image.fitprune import RECIPES, FitPrune, share
from reproductions.interface import check_compression

#: 2 heads; rows 0-3 are the 4 visual tokens' own (causal), rows 4-5 the question's
ATTENTION = torch.tensor(
    [
        [[0.0, 0, 0, 0], [0.4, 0.3, 0, 0], [0.4, 0.7, 0.5, 0], [0.3, 0.2, 0.8, 0.1],
         [0.8, 0.6, 0.9, 0.6], [0.0, 0.4, 0.8, 0.6]],
        [[0.6, 0, 0, 0], [0.5, 0.2, 0, 0], [0.0, 0.3, 0.2, 0], [0.2, 0.7, 0.6, 0.9],
         [0.0, 0.7, 0.3, 0.4], [0.3, 0.4, 0.7, 0.2]],
    ],
    dtype=torch.float64,
)[None]


def test_deletes_the_lowest_cross_times_self_of_the_head_max():
    """Head max: visual rows [.6 0 0 0], [.5 .3 0 0], [.4 .7 .5 0], [.3 .7 .8 .9]; question rows
    [.8 .7 .9 .6], [.3 .4 .8 .6]. self = column sums / 4 = [.45, .425, .325, .225]; cross =
    column sums = [1.1, 1.1, 1.7, 1.2]; cross x self = [.495, .4675, .5525, .27]: deleting 2
    drops tokens 3 and 1. (Heads averaged would keep 1 and 2; self alone 0 and 1; cross alone
    2 and 3.)"""
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    tokens = Tokens(features=x, attention=ATTENTION)
    for recipe in (((5, 2),), ((0, 1), (3, 1))):  # one call applies every layer's deletions
        out = get("fitprune", recipe=recipe, reference=None)(tokens)
        assert out.positions[0].tolist() == [0, 2]
        assert torch.equal(out.features, x[:, [0, 2]])
        check_compression(out, tokens)


def test_the_released_recipe_runs_layer_by_layer_from_the_layer_after():
    """reduction=60, the released scripts' setting: 14, 33, 89 tokens after layers 0, 1, 2, ...
    (449 of 576 in all); layer L's deletions run before layer L + 1, by layer L's attention."""
    method = get("fitprune")
    assert method.attention_from == "previous" and method.attention_rows == "media"
    assert method.decoder_layers()[:3] == (1, 2, 3)
    assert method.decoder_layers()[-4:] == (23, 24, 27, 29)  # d_22, d_23, d_26, d_28 > 0, d_24 = d_25 = 0
    assert method.step(2, 576) == FitPrune(recipe=((2, 89),), reference=None)
    assert method.kept(576) == 576 - 449 == 127
    assert sum(RECIPES[90]) == 539


def test_counts_scale_to_other_token_counts_in_proportion():
    """On 288 tokens the 60% recipe deletes floor(449 * 288 / 576) = 224, shared by largest
    remainders (ties to the earlier layer)."""
    assert share([3, 1], 2) == [2, 0]  # quotas 1.5, 0.5: the tie goes to the first
    assert share([14, 33, 89], 68) == [7, 17, 44]  # quotas 7, 16.5, 44.5: one more to 33's
    assert share(list(RECIPES[60]), 449) == list(RECIPES[60])
    assert get("fitprune").kept(288) == 288 - 224


def test_a_budget_scales_the_recipe_to_that_count():
    tokens = Tokens(features=torch.randn(1, 576, 2), attention=torch.rand(1, 1, 580, 576))
    method = FitPrune.at_budget(64, tokens)
    assert method.output_count(tokens) == 64 and method.reference is None
    assert sum(d for _, d in method.recipe) == 512


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="reduction="):
        get("fitprune", reduction=65)
    with pytest.raises(ValueError, match="recipe="):
        get("fitprune", recipe=((3, 1), (2, 1)))
    with pytest.raises(ValueError, match="reference="):
        get("fitprune", reference=0)
    with pytest.raises(ValueError, match="at least one"):
        get("fitprune", recipe=((0, 3), (1, 1)), reference=None)(Tokens(features=torch.randn(1, 4, 3), attention=ATTENTION))
    with pytest.raises(ValueError, match="N \\+ M"):  # the question rows alone
        get("fitprune", recipe=((0, 1),))(Tokens(features=torch.randn(1, 4, 3), attention=ATTENTION[:, :, 4:]))
