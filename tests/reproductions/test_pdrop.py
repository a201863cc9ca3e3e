"""pdrop: PyramidDrop's staged rank & drop by the last instruction token's attention."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.image.fastv import FastV
from reproductions.interface import check_compression


def test_one_call_keeps_the_last_stage_count_by_the_last_row():
    last = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.05, 0.6, 0.7], dtype=torch.float64)
    attention = torch.rand(
        1, 2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    attention[:, :, -1] = last  # both heads: the head mean is `last`
    x = torch.randn(1, 8, 4, dtype=torch.float64)
    tokens = Tokens(features=x, attention=attention)
    out = get("pdrop", layers=(2, 4), ratio=0.5)(tokens)
    # two stages: int(8 * 0.5^2) = 2 left, the two most attended, in positional order
    assert out.positions[0].tolist() == [1, 3]
    assert torch.equal(out.features, x[:, [1, 3]])
    check_compression(out, tokens)


def test_each_stage_keeps_int_n_ratio_power_of_the_original_n():
    method = get("pdrop", layers=(8, 16, 24), ratio=0.6)
    assert method.decoder_layers() == (8, 16, 24)
    # the released counts: int(10 * 0.6) = 6, int(10 * 0.36) = 3, int(10 * 0.216) = 2 (not
    # int(3 * 0.6) = 1: every stage counts from the original N)
    steps = [method.step(i, 10) for i in range(3)]
    assert steps == [FastV(keep=6, layer=8), FastV(keep=3, layer=16), FastV(keep=2, layer=24)]
    assert method.attention_from == "own"  # layer K's own attention, as pdrop_rank_drop


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="layers="):
        get("pdrop", layers=(16, 8))
    with pytest.raises(ValueError, match="layers="):
        get("pdrop", layers=(0, 8))
    with pytest.raises(ValueError, match="ratio="):
        get("pdrop", ratio=0.0)
    with pytest.raises(ValueError, match="0 tokens"):
        get("pdrop", layers=(1, 2, 3), ratio=0.5).step(2, 7)  # int(7 * 0.125) = 0
