"""Pool: each mode against the torch op it stands for, plus the ceil-mode edge handling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reproductions import Tokens, get
from reproductions.interface import check_compression


def grid_tokens(h: int, w: int, d: int = 3, special: int = 0, batch: int = 2) -> Tokens:
    x = torch.randn(batch, special + h * w, d, generator=torch.Generator().manual_seed(h * w))
    return Tokens(features=x, layout=(h, w), special=special)


def as_image(tokens: Tokens, h: int, w: int) -> torch.Tensor:
    """(B, D, H, W) view of the ordinary tokens, the layout torch's pooling ops take."""
    x = tokens.features[:, tokens.special :]
    return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)


def as_tokens(image: torch.Tensor) -> torch.Tensor:
    return image.permute(0, 2, 3, 1).reshape(image.shape[0], -1, image.shape[1])


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_even_grid_matches_torch_pooling(mode):
    tokens = grid_tokens(4, 6)
    out = get("pool", stride=2, mode=mode)(tokens)
    op = F.avg_pool2d if mode == "avg" else F.max_pool2d
    assert torch.allclose(out.features, as_tokens(op(as_image(tokens, 4, 6), 2)), atol=1e-6)
    assert (out.sizes == 4).all()
    # positions: the top-left token of each window, row-major over the 2 x 3 output grid
    assert out.positions[0].tolist() == [0, 2, 4, 12, 14, 16]
    check_compression(out, tokens)


def test_odd_grid_keeps_the_partial_windows():
    tokens = grid_tokens(3, 3)
    out = get("pool", stride=2, mode="avg")(tokens)
    x = tokens.features
    assert out.count == 4 and out.sizes[0].tolist() == [4, 2, 2, 1]
    assert torch.allclose(out.features[:, 1], (x[:, 2] + x[:, 5]) / 2)  # right column window
    assert torch.equal(out.features[:, 3], x[:, 8])  # the lone corner token
    assert out.source[0].tolist() == [0, 0, 1, 0, 0, 1, 2, 2, 3]
    # the same as torch's ceil mode, whose partial windows average only the cells they hold
    ceil = F.avg_pool2d(as_image(tokens, 3, 3), 2, ceil_mode=True)
    assert torch.allclose(out.features, as_tokens(ceil), atol=1e-6)


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (27, 27)])
def test_bilinear_is_llava_onevision_resize(size):
    h, w = size
    tokens = grid_tokens(h, w, special=1)
    out = get("pool", stride=2, mode="bilinear")(tokens)
    scaled = [math.ceil(h / 2), math.ceil(w / 2)]
    want = F.interpolate(as_image(tokens, h, w), size=scaled, mode="bilinear", align_corners=False)
    assert out.count == 1 + scaled[0] * scaled[1]
    assert torch.allclose(out.features[:, 1:], as_tokens(want), atol=1e-6)
    assert torch.equal(out.features[:, 0], tokens.features[:, 0])  # [CLS] passes through
    check_compression(out, tokens)


def test_bilinear_on_an_even_grid_is_the_window_mean():
    tokens = grid_tokens(6, 4)
    bilinear = get("pool", mode="bilinear")(tokens)
    mean = get("pool", mode="avg")(tokens)
    assert torch.allclose(bilinear.features, mean.features, atol=1e-6)


def test_video_frames_pool_independently():
    x = torch.randn(1, 2 * 4 * 4, 5)
    out = get("pool", stride=2)(Tokens(features=x, layout=(2, 4, 4)))
    frames = [
        get("pool", stride=2)(Tokens(features=x[:, 16 * t : 16 * (t + 1)], layout=(4, 4)))
        for t in range(2)
    ]
    assert torch.allclose(out.features, torch.cat([f.features for f in frames], dim=1))
    assert out.positions[0, 4:].tolist() == [16, 18, 24, 26]


def test_avg_ignores_input_sizes_but_sums_them():
    tokens = grid_tokens(2, 2, batch=1)
    sized = Tokens(
        features=tokens.features, layout=(2, 2), sizes=torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    )
    out = get("pool", stride=2)(sized)
    assert torch.allclose(out.features[0, 0], tokens.features[0].mean(0))
    assert out.sizes.tolist() == [[10.0]]


def test_bad_parameters_and_missing_layout_raise():
    with pytest.raises(ValueError, match="mode"):
        get("pool", mode="mean")
    with pytest.raises(ValueError, match="stride"):
        get("pool", stride=0)
    with pytest.raises(ValueError, match="layout"):
        get("pool")(Tokens(features=torch.randn(1, 16, 3)))
