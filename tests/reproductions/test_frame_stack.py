"""frame_stack: LLaMA-Omni's k-frame concatenation."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def test_drop_equals_the_official_reshape():
    x = torch.randn(2, 12, 3)
    out = get("frame_stack", k=5)(Tokens(features=x, layout=(12,)))
    assert torch.equal(out.features, x[:, :10].reshape(2, 2, 15))
    assert out.source[0].tolist() == [0] * 5 + [1] * 5 + [-1, -1]
    assert out.positions[0].tolist() == [0, 5]
    assert out.sizes[0].tolist() == [5, 5]


def test_pad_adds_a_zero_padded_token_that_counts_only_real_frames():
    x = torch.arange(1.0, 8.0).reshape(1, 7, 1)
    out = get("frame_stack", k=3, tail="pad")(Tokens(features=x, layout=(7,)))
    assert out.features[0].tolist() == [[1, 2, 3], [4, 5, 6], [7, 0, 0]]
    assert out.source[0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert out.sizes[0].tolist() == [3, 3, 1]
    assert out.positions[0].tolist() == [0, 3, 6]


def test_bad_parameters_and_inputs_raise():
    with pytest.raises(ValueError, match="k="):
        get("frame_stack", k=0)
    with pytest.raises(ValueError, match="tail"):
        get("frame_stack", tail="truncate")
    with pytest.raises(ValueError, match="at least 5 frames"):
        get("frame_stack")(Tokens(features=torch.randn(1, 4, 2), layout=(4,)))
    with pytest.raises(ValueError, match="special"):
        get("frame_stack")(Tokens(features=torch.randn(1, 11, 2), layout=(10,), special=1))
