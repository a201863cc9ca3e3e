"""audio_pool: Qwen2-Audio's AvgPool1d(2, 2) over the encoder frames."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def test_matches_avgpool1d_and_drops_the_odd_frame():
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    out = get("audio_pool")(Tokens(features=x, layout=(9,)))
    expected = torch.nn.AvgPool1d(2, stride=2)(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(out.features, expected)
    assert out.source[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, -1]
    assert out.positions[0].tolist() == [0, 2, 4, 6]
    assert out.sizes[0].tolist() == [2, 2, 2, 2]


def test_larger_stride_and_special_tokens_pass_through():
    x = torch.arange(7.0).reshape(1, 7, 1)
    out = get("audio_pool", stride=3)(Tokens(features=x, layout=(6,), special=1))
    assert out.features[0, :, 0].tolist() == [0.0, 2.0, 5.0]  # [CLS], mean(1,2,3), mean(4,5,6)
    assert out.positions[0].tolist() == [0, 1, 4]


def test_sizes_are_summed_but_do_not_weight_the_mean():
    x = torch.tensor([[[0.0], [4.0]]])
    out = get("audio_pool")(Tokens(features=x, layout=(2,), sizes=torch.tensor([[3.0, 1.0]])))
    assert out.features.item() == 2.0 and out.sizes.item() == 4.0


@pytest.mark.parametrize("stride", [0, -2, 1.5, True])
def test_bad_stride_raises(stride):
    with pytest.raises(ValueError, match="stride"):
        get("audio_pool", stride=stride)


def test_clip_shorter_than_stride_raises():
    with pytest.raises(ValueError, match="at least 4 frames"):
        get("audio_pool", stride=4)(Tokens(features=torch.randn(1, 3, 2), layout=(3,)))
