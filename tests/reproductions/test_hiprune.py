"""HiPrune: anchors at the object layer, their grid 4-neighbours, registers at the deep layer."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def scores(values: dict[int, float], n: int = 16, rest: float = 0.0) -> torch.Tensor:
    """(N,) scores: `rest` everywhere but at the given indices."""
    out = torch.full((n,), rest, dtype=torch.float64)
    for i, v in values.items():
        out[i] = v
    return out


def hand_built(special: int = 0) -> Tokens:
    """A 4 x 4 grid (index = 4 * row + col). Object layer: token 4 (row 1, col 0) highest, then
    15 (row 3, col 3), then 10. Deep layer: token 4 highest (already an anchor), then 12, 9, 1;
    token 3 (row 0, col 3, the official's wrapped 'left neighbour' of 4) nearly nothing, 15
    nothing."""
    obj = scores({4: 0.9, 15: 0.8, 10: 0.7}, rest=0.01)
    deep = scores({4: 0.95, 12: 0.5, 9: 0.4, 1: 0.3, 3: 0.001, 15: 0.0}, rest=0.02)
    received = torch.stack([obj, deep])[None]
    if special:
        received = torch.cat([torch.full((1, 2, special), 5.0, dtype=torch.float64), received], dim=-1)
    features = torch.arange(16 + special, dtype=torch.float64)[None, :, None].expand(1, -1, 3)
    return Tokens(features=features.contiguous(), layout=(4, 4), special=special, received=received)


def test_anchors_their_grid_neighbours_then_deep_registers():
    """T = 10, alpha = 1: round(10 / 5) = 2 anchors, 4 and 15. Buffers: 4's up 0, down 8,
    right 5 (no left neighbour in column 0); 15's up 11, left 14: 7 tokens. The 3 registers are
    the best deep scores among the rest (4 is taken): 12, 9, 1. Token 3 is not kept: the
    official wraps 4's left neighbour to it and would keep it as a buffer."""
    out = get("hiprune", keep=10, alpha=1.0)(hand_built())
    assert out.positions[0].tolist() == [0, 1, 4, 5, 8, 9, 11, 12, 14, 15]
    assert out.features[0, :, 0].tolist() == [0, 1, 4, 5, 8, 9, 11, 12, 14, 15]


def test_special_tokens_stay_and_their_scores_are_ignored():
    """A leading [CLS] with the highest scores of all is kept and not ranked: the ordinary
    tokens are those of the previous test, shifted by one."""
    out = get("hiprune", keep=11, alpha=1.0)(hand_built(special=1))
    assert out.positions[0].tolist() == [0] + [i + 1 for i in [0, 1, 4, 5, 8, 9, 11, 12, 14, 15]]


@pytest.mark.parametrize(
    ("keep", "alpha", "kept"),
    [
        (10, 0.1, [0, 1, 2, 4, 5, 6, 7, 8, 9, 12]),  # 0.2 -> 0 anchors: the deep top 10
        (10, 0.25, [0, 1, 2, 4, 5, 6, 7, 8, 9, 12]),  # 0.5 -> 0 (half to even)
        (15, 0.5, [i for i in range(16) if i != 3]),  # 1.5 -> 2: anchor 15 is kept, 3 is not
        (3, 1.0, [0, 4, 5]),  # 0.6 -> 1 anchor
    ],
)
def test_anchor_count_rounds_half_to_even(keep, alpha, kept):
    """round(T * alpha / 5), Python's round. Without anchors every kept token is a deep-layer
    register (4, 12, 9, 1, then ties at 0.02 by index; 3 and 15 score least); with 1.5 -> 2
    anchors, 15 (the lowest deep score) is kept as an anchor (one anchor would drop it)."""
    out = get("hiprune", keep=keep, alpha=alpha)(hand_built())
    assert out.positions[0].tolist() == kept


def test_anchors_and_buffers_beyond_the_budget_keep_the_best_buffers():
    """T = 3, alpha = 1: 1 anchor (4) with 3 buffers (0, 5, 8) > T. The official crashes (topk
    with k = -1); here the anchor and the 2 buffers of highest object score, all 0.01: ties to
    the lowest index, 0 and 5."""
    out = get("hiprune", keep=3, alpha=1.0)(hand_built())
    assert out.positions[0].tolist() == [0, 4, 5]


def test_keep_everything_returns_the_input():
    tokens = hand_built()
    out = get("hiprune", keep=16)(tokens)
    assert out.positions[0].tolist() == list(range(16))
    assert torch.equal(out.features, tokens.features)


def test_encoder_layers_are_the_official_choice_per_encoder():
    """CLIP ViT-L (24 layers, the projector reads layer 22): layer 9 (index 8) and 22;
    Qwen2.5-VL's 32-layer ViT (the merger reads the last): 16 (index 15) and 31; another depth
    takes its middle layer; an explicit layer wins."""
    method = get("hiprune")
    assert method.encoder_layers(24, 22) == (8, 22)
    assert method.encoder_layers(32, 31) == (15, 31)
    assert method.encoder_layers(2, 0) == (0, 0)
    assert method.encoder_layers(27, 25) == (12, 25)
    assert get("hiprune", object_layer=3).encoder_layers(24, 22) == (2, 22)


def test_bad_inputs_say_what_to_pass():
    with pytest.raises(ValueError, match="object_layer between 1 and 24"):
        get("hiprune", object_layer=30).encoder_layers(24, 22)
    with pytest.raises(ValueError, match="alpha"):
        get("hiprune", alpha=1.5)
    with pytest.raises(ValueError, match="object_layer"):
        get("hiprune", object_layer=0)
    tokens = hand_built()
    with pytest.raises(ValueError, match="layout=\\(H, W\\)"):
        get("hiprune", keep=4)(Tokens(features=tokens.features, received=tokens.received))
    with pytest.raises(ValueError, match="reads 2"):
        get("hiprune", keep=4)(Tokens(features=tokens.features, layout=(4, 4), received=tokens.received[:, :1]))
    with pytest.raises(ValueError, match="received"):
        get("hiprune", keep=4)(Tokens(features=tokens.features, layout=(4, 4)))
