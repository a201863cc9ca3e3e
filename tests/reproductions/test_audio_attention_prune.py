"""audio_attention_prune: EViT-style pruning in AST / Audio-MAE."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get


def self_attention() -> torch.Tensor:
    """(1, 2, 6, 6): [CLS] then 5 patches; the [CLS] row favours 1 and 2, the patch rows 4 and 5."""
    a = torch.full((1, 2, 6, 6), 0.1, dtype=torch.float64)
    a[:, :, 0, 1] = a[:, :, 0, 2] = 0.9
    a[:, :, 1:, 4] = 0.8
    a[:, :, 1:, 5] = 0.7
    a[:, 1, 1:, 3] = 0.75  # one head only: the head mean puts token 3 below 5
    return a


def make(attention: torch.Tensor, special: int = 1) -> Tokens:
    n = attention.shape[-1]
    x = torch.randn(1, n, 4, dtype=torch.float64)
    return Tokens(features=x, layout=(n - special,), special=special, attention=attention)


def test_default_ranks_by_the_non_special_rows_and_keeps_positional_order():
    out = get("audio_attention_prune", keep_ratio=0.4)(make(self_attention()))
    assert out.positions[0].tolist() == [0, 4, 5]  # ceil(0.4 * 5) = 2 patches after [CLS]


def test_cls_rule_ranks_by_row_zero():
    out = get("audio_attention_prune", keep_ratio=0.4, query="cls")(make(self_attention()))
    assert out.positions[0].tolist() == [0, 1, 2]


def test_count_rounds_up_like_the_official_code():
    out = get("audio_attention_prune", keep_ratio=0.5)(make(self_attention()))
    assert out.count == 1 + 3  # ceil(2.5)


def test_rows_that_are_not_the_tokens_are_all_averaged():
    a = torch.zeros(1, 1, 2, 4, dtype=torch.float64)
    a[0, 0, 0, 1] = 1.0  # first query row (would be "special" if M == N) favours token 1
    a[0, 0, 1, 2] = 0.5
    out = get("audio_attention_prune", keep_ratio=0.5)(make(a))
    assert out.positions[0].tolist() == [0, 1, 2]


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="keep_ratio"):
        get("audio_attention_prune", keep_ratio=0.0)
    with pytest.raises(ValueError, match="query"):
        get("audio_attention_prune", query="mean")
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        get("audio_attention_prune", query="cls")(make(torch.rand(1, 1, 4, 4), special=0))
    for layers in [(6, 3), (-1,), ()]:
        with pytest.raises(ValueError, match="layers="):
            get("audio_attention_prune", layers=layers)


def test_the_pruning_layers_are_the_official_drop_loc_and_must_exist():
    """drop_loc defaults to (3, 6, 9) (the released run scripts); an encoder without layer 9
    cannot run them."""
    def acting(method, depth):
        return tuple(i for i in range(depth) if method.encoder_step(i, 0, depth - 1) is not None)

    assert acting(get("audio_attention_prune"), 12) == (3, 6, 9)
    assert acting(get("audio_attention_prune", layers=[0, 1]), 2) == (0, 1)
    with pytest.raises(ValueError, match="pass layers between 0 and 8"):
        get("audio_attention_prune").encoder_step(0, 0, 8)
