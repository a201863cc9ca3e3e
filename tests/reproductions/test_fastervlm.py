"""FasterVLM: [CLS] attention averaged over heads ranks the tokens; a [CLS] in features stays."""

from __future__ import annotations

import torch

from reproductions import Tokens, get


def test_keeps_the_tokens_cls_attends_to_most():
    cls_attention = torch.tensor([[[0.1, 0.3, 0.0, 0.2, 0.4], [0.3, 0.1, 0.2, 0.0, 0.4]]])
    x = torch.randn(1, 5, 3)
    out = get("fastervlm", keep=3)(Tokens(features=x, cls_attention=cls_attention))
    # head means: 0.2, 0.2, 0.1, 0.1, 0.4 -> token 4, then the tie 0 / 1
    assert out.positions[0].tolist() == [0, 1, 4]
    assert torch.equal(out.features[0], x[0, [0, 1, 4]])


def test_a_leading_cls_is_kept_and_not_ranked():
    cls_attention = torch.tensor([[[0.9, 0.0, 0.05, 0.05, 0.0]]])
    x = torch.randn(1, 5, 3)
    tokens = Tokens(features=x, cls_attention=cls_attention, special=1, layout=(2, 2))
    out = get("fastervlm", keep=3)(tokens)
    assert out.positions[0].tolist() == [0, 2, 3]


def test_matches_the_official_selection():
    g = torch.Generator().manual_seed(0)
    attention = torch.rand(2, 16, 576, generator=g, dtype=torch.float64).softmax(-1)
    x = torch.randn(2, 576, 8, dtype=torch.float64)
    out = get("fastervlm", keep=64)(Tokens(features=x, cls_attention=attention))
    token_indices = torch.topk(attention.mean(dim=1), k=64, dim=1)[1]
    mask = torch.zeros(2, 576, dtype=torch.bool).scatter_(1, token_indices, True)
    assert torch.equal(out.features, torch.stack([x[b][mask[b]] for b in range(2)]))
