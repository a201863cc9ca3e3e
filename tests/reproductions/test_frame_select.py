"""frame_select: the frames most similar to the query, whole, in temporal order."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def clip(text: torch.Tensor, frames: torch.Tensor, per_frame: int = 4, special: int = 1) -> Tokens:
    t = frames.shape[1]
    n = special + t * per_frame
    features = torch.arange(n * 2, dtype=torch.float32).reshape(1, n, 2)
    return Tokens(features=features, layout=(t, 2, 2), special=special, text=text, frames=frames)


def test_keeps_the_best_matching_frames_whole_in_time_order():
    frames = torch.eye(5).unsqueeze(0)  # frame f points along axis f
    # rows average to (0, 0.3, 0, 0.5, 0.1): frame 3 first, then frame 1
    text = torch.tensor([[[0.0, 0.6, 0.0, 0.4, 0.2], [0.0, 0.0, 0.0, 0.6, 0.0]]])
    tokens = clip(text, frames)
    out = get("frame_select", frames=2)(tokens)
    assert out.positions[0].tolist() == [0, 5, 6, 7, 8, 13, 14, 15, 16]  # [CLS], frame 1, frame 3
    assert torch.equal(out.features, tokens.features[:, out.positions[0]])
    check_compression(out, tokens)


def test_fraction_identity_and_errors():
    frames = torch.randn(1, 4, 3)
    tokens = clip(torch.randn(1, 2, 3), frames)
    assert get("frame_select", frames=0.5)(tokens).count == 1 + 2 * 4
    assert torch.equal(get("frame_select", frames=1.0)(tokens).features, tokens.features)
    with pytest.raises(ValueError, match="at most 4"):
        get("frame_select", frames=5)(tokens)
    with pytest.raises(ValueError, match="same embedding space"):
        get("frame_select", frames=2)(clip(torch.randn(1, 2, 7), frames))
    for bad in (0, -1, 0.0, 1.5, True):
        with pytest.raises(ValueError, match="frames"):
            get("frame_select", frames=bad)
