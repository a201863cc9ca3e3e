"""VisionZip: the official dominant + contextual computation restated, and hand-built cases."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def official_visionzip(hidden, attn, metric, dominant_num, contextual_num):
    """A plain restatement of VisionZip's CLIP feature selection (dominant_num excludes [CLS])."""
    b, n, d = hidden.shape
    cls_attention_sum = attn.sum(dim=1)  # (B, N): [CLS] row, summed over heads
    topk_indices = cls_attention_sum[:, 1:].topk(dominant_num, dim=1).indices + 1
    all_indices = torch.cat([torch.zeros(b, 1, dtype=torch.long), topk_indices], dim=1)
    mask = torch.ones(b, n, dtype=torch.bool).scatter_(1, all_indices, False)
    dominant_tokens = hidden.masked_select(~mask.unsqueeze(-1)).view(b, dominant_num + 1, d)
    metric_filtered = metric[mask].view(b, n - (dominant_num + 1), metric.shape[2])
    hidden_filtered = hidden.masked_select(mask.unsqueeze(-1)).view(b, n - (dominant_num + 1), d)
    metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)
    step = max(1, metric_normalized.shape[1] // contextual_num)
    target_indices = torch.arange(0, metric_normalized.shape[1], step)[:contextual_num]
    rest = ~torch.isin(torch.arange(metric_normalized.shape[1]), target_indices)
    similarity = torch.bmm(
        metric_normalized[:, rest], metric_normalized[:, target_indices].transpose(1, 2)
    )
    assign_one_hot = torch.zeros(b, int(rest.sum()), contextual_num, dtype=hidden.dtype)
    assign_one_hot.scatter_(2, similarity.argmax(dim=2).unsqueeze(-1), 1)
    counts = assign_one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
    aggregated = torch.bmm(assign_one_hot.transpose(1, 2), hidden_filtered[:, rest]) / counts
    contextual_tokens = hidden_filtered[:, target_indices] + aggregated
    return torch.cat([dominant_tokens, contextual_tokens], dim=1)


def test_matches_the_official_computation():
    g = torch.Generator().manual_seed(0)
    n = 1 + 24 * 24
    hidden = torch.randn(2, n, 32, generator=g, dtype=torch.float64)
    metric = torch.randn(2, n, 16, generator=g, dtype=torch.float64)
    attn = torch.randn(2, 16, n, generator=g, dtype=torch.float64).softmax(-1)
    tokens = Tokens(features=hidden, layout=(24, 24), special=1, cls_attention=attn, keys=metric)
    out = get("visionzip", dominant=54, contextual=10)(tokens)
    want = official_visionzip(hidden, attn, metric, 53, 10)
    assert out.count == 64
    assert torch.allclose(out.features, want, atol=1e-12)
    check_compression(out, tokens)
    assert out.sizes.sum(dim=1).tolist() == [64 + (n - 64)] * 2  # every token is accounted for


def test_hand_built_dominant_and_contextual_tokens():
    # 1 [CLS] + 6 tokens; [CLS] attends most to tokens 5 and 2
    x = torch.arange(7, dtype=torch.float64).unsqueeze(-1).expand(1, 7, 2).clone()
    cls_attention = torch.tensor([[[0.5, 0.0, 0.2, 0.0, 0.0, 0.3, 0.0]]], dtype=torch.float64)
    # remaining tokens 1, 3, 4, 6 -> targets (step 4 // 2 = 2): positions 0 and 2 = tokens 1, 4;
    # token 3 points like token 4, token 6 like token 1
    keys = torch.tensor(
        [[[1, 1], [1, 0], [1, 1], [0, 1], [0, 2], [1, 1], [3, 0]]], dtype=torch.float64
    )
    tokens = Tokens(features=x, layout=(2, 3), special=1, cls_attention=cls_attention, keys=keys)
    out = get("visionzip", dominant=3, contextual=2)(tokens)
    assert out.positions[0].tolist() == [0, 2, 5, 1, 4]
    assert out.source[0].tolist() == [0, 3, 1, 4, 4, 2, 3]
    assert out.sizes[0].tolist() == [1, 1, 1, 2, 2]
    # contextual = target + mean(assigned): 1 + 6 and 4 + 3
    assert out.features[0, :, 0].tolist() == [0, 2, 5, 7, 7]


def test_without_a_cls_every_dominant_token_is_ranked():
    """special=0 (SigLIP, Qwen ViTs; LightCompress' Qwen2.5-VL port): token 0 is not kept for
    its index; the `dominant` most attended tokens are, then the contextual merge as usual."""
    x = torch.arange(6, dtype=torch.float64).unsqueeze(-1).expand(1, 6, 2).clone()
    received = torch.tensor([[[0.0, 0.1, 0.4, 0.0, 0.0, 0.5]]], dtype=torch.float64)
    # remaining 0, 1, 3, 4 -> targets (step 4 // 2 = 2) tokens 0 and 3; 1 points like 0, 4 like 3
    keys = torch.tensor([[[1, 0], [1, 0], [9, 9], [0, 1], [0, 1], [9, 9]]], dtype=torch.float64)
    tokens = Tokens(features=x, layout=(2, 3), special=0, cls_attention=received, keys=keys)
    out = get("visionzip", dominant=2, contextual=2)(tokens)
    assert out.positions[0].tolist() == [2, 5, 0, 3]
    assert out.source[0].tolist() == [2, 2, 0, 3, 3, 1]
    assert out.features[0, :, 0].tolist() == [2, 5, 0 + 1, 3 + 4]


def test_a_target_with_nothing_assigned_is_itself():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 9, 4, generator=g)
    attention = torch.rand(1, 2, 9, generator=g)
    keys = torch.randn(1, 9, 3, generator=g)
    tokens = Tokens(features=x, layout=(2, 4), special=1, cls_attention=attention, keys=keys)
    out = get("visionzip", dominant=5, contextual=4)(tokens)  # 4 remaining, all targets
    remaining = out.positions[0, 5:]
    assert torch.equal(out.features[0, 5:], x[0, remaining]) and (out.sizes[0, 5:] == 1).all()


def test_dominant_n_without_contextual_is_identity():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 10, 4, generator=g)
    attention = torch.rand(2, 3, 10, generator=g)
    tokens = Tokens(
        features=x, layout=(3, 3), special=1, cls_attention=attention, keys=torch.randn(2, 10, 2)
    )
    out = get("visionzip", dominant=10, contextual=0)(tokens)
    assert torch.equal(out.features, x) and out.positions[0].tolist() == list(range(10))
    pruned = get("visionzip", dominant=4, contextual=0)(tokens)
    assert pruned.count == 4 and (pruned.source[0] >= 0).sum() == 4


def test_budget_above_n_and_bad_parameters_raise():
    tokens = Tokens(
        features=torch.randn(1, 5, 2),
        layout=(2, 2),
        special=1,
        cls_attention=torch.rand(1, 1, 5),
        keys=torch.randn(1, 5, 2),
    )
    with pytest.raises(ValueError, match="exceeds"):
        get("visionzip", dominant=4, contextual=2)(tokens)
    with pytest.raises(ValueError, match="dominant"):
        get("visionzip", dominant=0)
    with pytest.raises(ValueError, match="contextual"):
        get("visionzip", contextual=-1)
