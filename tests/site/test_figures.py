"""The photograph figures of the method pages: patch features, what the rendering shows."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pytest

import reproductions
from tools import site_figures
from tools.site_figures import (
    GRID,
    PATCH,
    SCALE,
    can_draw,
    draw,
    patch_features,
    photograph,
    render,
)


def test_patch_features_are_standardised_statistics() -> None:
    features = patch_features(photograph())
    assert features.shape == (GRID * GRID, 3 + 3 + 2 + 16)
    assert np.allclose(features.mean(axis=0), 0, atol=1e-6)
    assert np.allclose(features.std(axis=0), 1, atol=1e-3)


def test_patch_features_follow_row_major_patch_order() -> None:
    image = np.zeros((GRID * PATCH, GRID * PATCH, 3))
    image[:PATCH, PATCH : 2 * PATCH] = 1.0  # only patch (0, 1) is white
    brightest = patch_features(image)[:, 0].argmax()
    assert brightest == 1


def test_render_greys_dropped_paints_merged_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((GRID * PATCH, GRID * PATCH, 3))
    slots = np.arange(GRID * GRID).reshape(GRID, GRID)
    slots[0, 0] = -1  # dropped
    slots[1, 1] = slots[1, 2] = 999  # merged into one token
    out = render(image, slots)
    dropped = out[:PATCH, :PATCH]
    assert np.allclose(dropped[..., 0], dropped[..., 1]) and np.allclose(dropped[..., 1], dropped[..., 2])
    group = image[PATCH : 2 * PATCH, PATCH : 3 * PATCH].reshape(-1, 3).mean(axis=0)
    inside = out[PATCH + 2 : 2 * PATCH - 2, PATCH + 2 : 3 * PATCH - 2]
    assert np.allclose(inside, group)
    assert np.array_equal(out[5 * PATCH : 6 * PATCH, 5 * PATCH : 6 * PATCH], image[5 * PATCH : 6 * PATCH, 5 * PATCH : 6 * PATCH])


def test_only_feature_methods_are_drawn() -> None:
    methods = reproductions.methods()
    assert can_draw(methods["random"])
    drawable = {name for name, cls in methods.items() if can_draw(cls)}
    for name in drawable:
        cls = methods[name]
        assert "image" in cls.modality and not cls.needs and not cls.trainable, name
    needing = [name for name, cls in methods.items() if cls.needs and "image" in cls.modality]
    assert needing and not (drawable & set(needing))


def test_draw_random_keeps_a_quarter() -> None:
    png, caption = draw(reproductions.methods()["random"])
    picture = matplotlib.image.imread(io.BytesIO(png), format="png")
    side = GRID * PATCH * SCALE
    assert picture.shape[:2] == (side, 2 * side + 8 * SCALE)
    kept = int(site_figures.FIGURE_KEEP * GRID * GRID)
    assert f"{kept} of {GRID * GRID} patches reach {kept} output tokens" in caption


@pytest.mark.parametrize("name", sorted(n for n, c in reproductions.methods().items() if can_draw(c)))
def test_every_drawable_method_draws(name: str) -> None:
    png, caption = draw(reproductions.methods()[name])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"`{name}`" in caption
