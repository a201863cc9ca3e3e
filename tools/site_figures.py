"""What a method keeps or merges on a real photograph, drawn at site build time.

The photograph (scikit-image's `astronaut()`) is cut into a grid of 14x14-pixel patches, and each
patch becomes one token whose features are simple statistics anyone can interpret: mean colour,
colour spread and texture (gradient energy and a coarse 4x4 thumbnail of its grey levels). A
method that needs only token features runs on these tokens, and the figure shows the photograph
beside what survives: dropped patches greyed out, merged patches painted in their group's mean
colour with white borders between groups.
"""

from __future__ import annotations

import io
from dataclasses import fields
from functools import lru_cache
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402

#: the patch side in pixels (ViT-L/14 patches) and the grid of the resized photograph
PATCH = 14
GRID = 16
#: the budget a figure uses for methods with a `keep` field: a quarter of the patches
FIGURE_KEEP = 0.25
#: nearest-neighbour upscaling of the saved figure
SCALE = 2


def can_draw(cls: type) -> bool:
    """Whether a method runs on patch features alone: image tokens, no other signal, no weights."""
    return why_not_drawn(cls) is None


def why_not_drawn(cls: type) -> str | None:
    """Why the method page has no photograph figure (markdown), or None when it can have one."""
    if "image" not in cls.modality:
        return (
            f"No photograph figure: `{cls.name}` works on {' and '.join(cls.modality)} tokens, "
            "not on an image grid."
        )
    if cls.trainable:
        return (
            f"No photograph figure: `{cls.name}` has learned weights, and an untrained module would "
            "show nothing about the method."
        )
    if cls.needs:
        signals = ", ".join(f"`{signal}`" for signal in cls.needs)
        return (
            f"No photograph figure: `{cls.name}` reads {signals} from the model, which patch "
            "statistics of a photograph cannot stand in for."
        )
    return None


@lru_cache(maxsize=1)
def photograph() -> np.ndarray:
    """The astronaut, resized to GRID x GRID patches, float RGB in [0, 1]."""
    from skimage import data, transform

    side = PATCH * GRID
    image = data.astronaut().astype(np.float64) / 255.0
    return transform.resize(image, (side, side), anti_aliasing=True)


def patch_features(image: np.ndarray) -> np.ndarray:
    """(GRID*GRID, D) per-patch statistics, standardised per dimension, in row-major patch order."""
    patches = image.reshape(GRID, PATCH, GRID, PATCH, 3).transpose(0, 2, 1, 3, 4)
    patches = patches.reshape(GRID * GRID, PATCH, PATCH, 3)
    grey = patches.mean(axis=-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    bands = np.array_split(np.arange(PATCH), 4)  # a 4x4 thumbnail over near-equal pixel bands
    thumbnail = np.stack(
        [grey[:, rows][:, :, cols].mean(axis=(1, 2)) for rows in bands for cols in bands], axis=1
    )
    columns = [
        patches.mean(axis=(1, 2)),
        patches.std(axis=(1, 2)),
        np.abs(gx).mean(axis=(1, 2))[:, None],
        np.abs(gy).mean(axis=(1, 2))[:, None],
        thumbnail,
    ]
    features = np.concatenate(columns, axis=1)
    return (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-6)


def figure_parameters(cls: type, special: int) -> dict[str, Any]:
    """The method's example parameters, with a budget that shows on the photograph: a quarter of
    the patches (plus the special tokens, which `keep` counts) for a `keep` budget, half of them
    merged away for a ToMe-style `r`."""
    params = dict(cls.example)
    names = {f.name for f in fields(cls)}
    if "keep" in names:
        params["keep"] = int(FIGURE_KEEP * GRID * GRID) + special
    elif "r" in names:
        params["r"] = GRID * GRID // 2
    return params


def draw(cls: type) -> tuple[bytes, str]:
    """(PNG bytes, a caption in markdown) of what method `cls` does to the photograph."""
    import torch

    from reproductions import Tokens

    image = photograph()
    features = torch.from_numpy(patch_features(image)).float()[None]
    allowed = cls.special_tokens
    special = 1 if allowed is None or 1 in allowed else allowed[0]
    if special:  # a [CLS] stand-in: the mean of the patch tokens
        features = torch.cat([features.mean(dim=1, keepdim=True).expand(1, special, -1), features], 1)
    params = figure_parameters(cls, special)
    method = cls(**params)
    out = method(Tokens(features=features, layout=(GRID, GRID), special=special))
    slots = out.source[0, special:].numpy().reshape(GRID, GRID)
    picture = np.concatenate([image, np.ones((image.shape[0], 8, 3)), render(image, slots)], axis=1)
    picture = picture.repeat(SCALE, axis=0).repeat(SCALE, axis=1)  # crisp patches on screen
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.clip(picture, 0, 1), format="png")
    kept = int((slots >= 0).sum())
    groups = len(np.unique(slots[slots >= 0]))
    shown = ", ".join(f"`{k}={v!r}`" for k, v in params.items()) or "defaults"
    caption = (
        f"Left: scikit-image's `astronaut()` as {GRID}x{GRID} patches of {PATCH}x{PATCH} pixels. "
        f"Right: `{cls.name}` ({shown}) on per-patch features (mean colour, colour spread, "
        f"gradient energy, a 4x4 grey thumbnail): {kept} of {GRID * GRID} patches reach "
        f"{groups} output tokens{'' if special == 0 else ' plus a [CLS] stand-in'}. Grey: dropped; "
        "flat colour with white borders: merged into one token."
    )
    return buffer.getvalue(), caption


def render(image: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The photograph as the output tokens see it, from the (GRID, GRID) slot of every patch."""
    pixel_slots = np.repeat(np.repeat(slots, PATCH, axis=0), PATCH, axis=1)
    result = image.copy()
    grey = image.mean(axis=-1, keepdims=True)
    dropped = pixel_slots < 0
    result[dropped] = (0.35 * grey + 0.55)[dropped].repeat(3, axis=-1)
    values, counts = np.unique(slots[slots >= 0], return_counts=True)
    for slot in values[counts > 1]:
        where = pixel_slots == slot
        result[where] = image[where].mean(axis=0)
    border = np.zeros(pixel_slots.shape, dtype=bool)
    border[:, 1:] |= pixel_slots[:, 1:] != pixel_slots[:, :-1]
    border[1:, :] |= pixel_slots[1:, :] != pixel_slots[:-1, :]
    merged = np.isin(pixel_slots, values[counts > 1])
    result[border & merged] = 1.0
    return result
