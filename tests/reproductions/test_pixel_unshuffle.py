"""Pixel unshuffle: InternVL's channel order, checked against its own view / permute sequence."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def internvl_pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    """A plain restatement of InternVL's `pixel_shuffle` (ps_version "v2") on (n, h, w, c)."""
    n, w, h, c = x.size()  # InternVL's names: dim 1 is called w, dim 2 h
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor**2)))
    return x.permute(0, 2, 1, 3).contiguous()


def test_channel_order_is_internvl_v2():
    h, w, d = 4, 6, 3
    # hand-built: channel c of the token at (r, q) holds 100 r + 10 q + c, so every value
    # says where it came from
    r, q, c = torch.meshgrid(torch.arange(h), torch.arange(w), torch.arange(d), indexing="ij")
    grid = (100 * r + 10 * q + c).float().unsqueeze(0)
    out = get("pixel_unshuffle", factor=2)(
        Tokens(features=grid.reshape(1, h * w, d), layout=(h, w))
    )
    want = internvl_pixel_shuffle(grid).reshape(1, -1, 4 * d)
    assert torch.equal(out.features, want)
    # block (1, 2) = [top-left, top-right, bottom-left, bottom-right] of rows 2-3, columns 4-5
    assert out.features[0, 1 * 3 + 2].tolist() == [
        *[240, 241, 242],
        *[250, 251, 252],
        *[340, 341, 342],
        *[350, 351, 352],
    ]


def test_bookkeeping_and_video_frames():
    x = torch.randn(2, 2 * 4 * 4, 5, dtype=torch.float64)
    tokens = Tokens(features=x, layout=(2, 4, 4))
    out = get("pixel_unshuffle")(tokens)
    assert out.features.shape == (2, 8, 20)
    assert (out.sizes == 4).all()
    assert out.positions[0].tolist() == [0, 2, 8, 10, 16, 18, 24, 26]
    check_compression(out, tokens)
    second_frame = get("pixel_unshuffle")(Tokens(features=x[:, 16:], layout=(4, 4)))
    assert torch.equal(out.features[:, 4:], second_frame.features)


def test_factor_must_divide_the_grid():
    with pytest.raises(ValueError, match="divisible by factor=2"):
        get("pixel_unshuffle")(Tokens(features=torch.randn(1, 15, 4), layout=(3, 5)))
    with pytest.raises(ValueError, match="factor"):
        get("pixel_unshuffle", factor=0)


def test_special_tokens_are_refused():
    tokens = Tokens(features=torch.randn(1, 17, 4), layout=(4, 4), special=1)
    with pytest.raises(ValueError, match="special"):
        get("pixel_unshuffle")(tokens)
