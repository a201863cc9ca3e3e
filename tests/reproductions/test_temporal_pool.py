"""temporal_pool: PLLaVA's AdaptiveAvgPool3d over the (T, H, W) grid, and the stride form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reproductions import Tokens, get
from reproductions.interface import check_compression


def video(grid: tuple[int, int, int], dim: int = 6, special: int = 0, batch: int = 2) -> Tokens:
    g = torch.Generator().manual_seed(0)
    n = special + grid[0] * grid[1] * grid[2]
    x = torch.randn(batch, n, dim, generator=g, dtype=torch.float64)
    return Tokens(features=x, layout=grid, special=special)


@pytest.mark.parametrize(
    ("grid", "size"), [((5, 7, 9), (3, 4, 5)), ((8, 14, 14), (4, 12, 12)), ((4, 6, 6), (4, 3, 2))]
)
def test_equals_adaptive_avg_pool3d_including_overlapping_windows(grid, size):
    tokens = video(grid, special=1)
    out = get("temporal_pool", size=size)(tokens)
    x = tokens.features[:, 1:].reshape(2, *grid, -1).permute(0, 4, 1, 2, 3)
    expected = F.adaptive_avg_pool3d(x, size).permute(0, 2, 3, 4, 1).reshape(2, -1, x.shape[1])
    assert torch.allclose(out.features[:, 1:], expected, atol=1e-12)
    assert torch.equal(out.features[:, 0], tokens.features[:, 0])  # the special token
    check_compression(out, tokens)
    assert out.sizes.sum(dim=1).tolist() == [tokens.count] * 2  # every token booked once


def test_overlapping_cell_is_booked_to_the_later_window():
    # 3 -> 2 along T: windows [0, 2) and [1, 3) share frame 1, booked to window 1
    tokens = video((3, 1, 1), batch=1)
    out = get("temporal_pool", size=(2, 1, 1))(tokens)
    assert out.source[0].tolist() == [0, 1, 1]
    assert out.positions[0].tolist() == [0, 1]
    assert torch.allclose(out.features[0, 1], tokens.features[0, 1:].mean(dim=0))


def test_stride_pools_windows_in_ceil_mode():
    tokens = video((3, 2, 5), batch=1)
    out = get("temporal_pool", stride=(2, 2, 2))(tokens)
    assert out.count == 2 * 1 * 3
    grid = tokens.features[0].reshape(3, 2, 5, -1)
    assert torch.allclose(out.features[0, 0], grid[0:2, 0:2, 0:2].mean(dim=(0, 1, 2)))
    assert torch.allclose(out.features[0, -1], grid[2:3, 0:2, 4:5].mean(dim=(0, 1, 2)))  # partial
    check_compression(out, tokens)


@pytest.mark.parametrize("params", [{"size": (3, 4, 4)}, {"stride": (1, 1, 1)}])
def test_identity(params):
    tokens = video((3, 4, 4), special=1)
    out = get("temporal_pool", **params)(tokens)
    assert torch.equal(out.features, tokens.features)


def test_default_is_pllava_size():
    assert get("temporal_pool").size == (16, 12, 12)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"size": (2, 2, 2), "stride": (1, 2, 2)}, "exactly one"),
        ({"size": (2, 2)}, "three positive ints"),
        ({"stride": (0, 1, 1)}, "three positive ints"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        get("temporal_pool", **params)


def test_size_above_the_grid_and_missing_layout_raise():
    tokens = video((2, 4, 4))
    with pytest.raises(ValueError, match="larger than the token grid"):
        get("temporal_pool", size=(4, 2, 2))(tokens)
    with pytest.raises(ValueError, match="layout"):
        get("temporal_pool", size=(1, 2, 2))(Tokens(features=tokens.features))
