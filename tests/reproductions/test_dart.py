"""DART: pivots by the L1 norm of their keys, then per pivot the least similar tokens stay."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.examples import example_tokens


def unit(degrees: list[float]) -> torch.Tensor:
    """(1, N, 2) unit vectors at these angles: their cosines are cos(angle differences)."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=-1)[None]


def hand_built() -> Tokens:
    """8 visual tokens at angles 0, 90, 10, 80, 200, 270, 45, 135 degrees; token 1 has the
    largest key L1 norm (|-5|), text row 1 the largest text key (4) and lies at 0 degrees."""
    return Tokens(
        features=unit([0, 90, 10, 80, 200, 270, 45, 135]),
        keys=torch.tensor([[[1.0], [-5.0], [2.0], [0.0], [3.0], [1.0], [0.5], [2.0]]]).double(),
        text=unit([90, 0]),
        text_keys=torch.tensor([[[1.0], [-4.0]]]).double(),
    )


def test_keeps_the_image_pivot_and_each_pivots_least_duplicated_tokens():
    """T = 4 over 2 pivots: 2 tokens each. Image pivot 1 (90 deg) takes the lowest cosines to
    90 deg among the others: token 5 (cos 180 = -1), token 4 (cos 110 = -0.34). Text pivot (0
    deg) then takes from {0, 2, 3, 6, 7}: token 7 (cos 135 = -0.71), token 3 (cos 80 = 0.17).
    Kept: the image pivot and those four; the text pivot only guides. Tokens 0, 2 and 6 go:
    they duplicate the text pivot's direction."""
    tokens = hand_built()
    method = get("dart", keep=4, pivot_image=1, pivot_text=1)
    out = method(tokens)
    assert out.positions[0].tolist() == [1, 3, 4, 5, 7]
    assert torch.equal(out.features[0], tokens.features[0, [1, 3, 4, 5, 7]])
    assert out.source[0].tolist() == [-1, 0, -1, 1, 2, 3, -1, 4]
    assert method.output_count(tokens) == 5


def test_count_is_the_official_rounding():
    """int(T // pivots) per pivot plus the image pivots: 4 + 8 * 16 = 132 of 576 at T = 128;
    at T = 64, 4 + 8 * 8 = 68; a fraction T = floor(0.222 * 576) = 127 gives 4 + 8 * 15."""
    tokens = example_tokens(get("dart"), batch=1, layout=(24, 24), special=0)
    assert get("dart").output_count(tokens) == 132
    assert get("dart", keep=64)(tokens).count == 68
    assert get("dart", keep=0.222)(tokens).count == 124


def test_a_pivot_takes_what_is_left_and_budget_n_keeps_everything():
    """T = N = 8 over 2 pivots asks 4 each after 1 image pivot: 1 + 4 + 3 (the official topk
    raises there); without text pivots keep=1.0 is the identity."""
    tokens = hand_built()
    out = get("dart", keep=8, pivot_image=1, pivot_text=1)(tokens)
    assert out.positions[0].tolist() == list(range(8))
    assert torch.equal(out.features, tokens.features)
    assert get("dart", keep=1.0, pivot_text=0)(tokens).count == 8


def test_bad_parameters_and_signals_raise():
    with pytest.raises(ValueError, match="layer"):
        get("dart", layer=0)
    with pytest.raises(ValueError, match="pivot_image"):
        get("dart", pivot_image=-1)
    with pytest.raises(ValueError, match="at least one pivot"):
        get("dart", pivot_image=0, pivot_text=0)
    with pytest.raises(ValueError, match="keep"):
        get("dart", keep=0)
    tokens = hand_built()
    short = Tokens(features=tokens.features, keys=tokens.keys, text=tokens.text, text_keys=tokens.text_keys[:, :1])
    with pytest.raises(ValueError, match="text_keys"):
        get("dart", keep=4)(short)
    with pytest.raises(ValueError, match="text_keys"):
        get("dart", keep=4)(Tokens(features=tokens.features, keys=tokens.keys, text=tokens.text))


def test_pivots_are_visited_in_positional_order():
    """Image pivots A = token 0 (key norm 2) and B = token 3 (key norm 5), one token each.
    X = token 2 is the least similar to both (cos -0.71); Y = token 1 is A's next (-0.6), Z =
    token 4 B's next (-0.6). A comes first in the sequence and takes X, so B takes Z: kept
    0, 2, 3, 4. (Visiting B first, by its larger norm, would keep Y instead of Z.)"""
    r = 2**-0.5
    features = torch.tensor(
        [[1, 0, 0], [-0.6, 0, 0.8], [-r, -r, 0], [0, 1, 0], [0, -0.6, 0.8], [0, 0, 1]], dtype=torch.float64
    )[None]
    keys = torch.tensor([2.0, 0.1, 0.1, 5.0, 0.1, 0.1], dtype=torch.float64)[None, :, None]
    tokens = Tokens(features=features, keys=keys, text=features[:, :1], text_keys=keys[:, :1])
    out = get("dart", keep=2, pivot_image=2, pivot_text=0)(tokens)
    assert out.positions[0].tolist() == [0, 2, 3, 4]
