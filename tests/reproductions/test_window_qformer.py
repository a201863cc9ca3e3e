"""window_qformer: SALMONN's window-level Q-Former (trainable)."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get

SMALL = {"dim": 8, "hidden": 16, "out_dim": 8, "window": 4, "heads": 2, "dropout": 0.0}


def audio(batch: int = 2, frames: int = 18, seed: int = 0) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    return Tokens(features=torch.randn(batch, frames, 8, generator=g), layout=(frames,))


def test_shapes_positions_and_sizes():
    method = get("window_qformer", **SMALL, num_queries=2)
    out = method(audio())
    assert out.features.shape == (2, 4 * 2, 8)  # 18 frames -> 4 whole windows of 4, 2 frames unread
    assert out.positions[0].tolist() == [2, 2, 6, 6, 10, 10, 14, 14]
    assert (out.sizes == 4).all() and (out.source == -1).all()


def test_each_window_is_summarised_on_its_own():
    method = get("window_qformer", **SMALL)
    tokens = audio(batch=1)
    changed = tokens.features.clone()
    changed[0, 5] += 10.0  # a frame of window 1
    a, b = method(tokens), method(Tokens(features=changed, layout=(18,)))
    same = (a.features - b.features).abs().amax(dim=-1)[0]
    assert same[0] == 0 and same[2] == 0 and same[3] == 0 and same[1] > 0


def test_overlapping_stride_and_dtypes():
    method = get("window_qformer", **SMALL, stride=2)
    out = method(audio(frames=10))
    assert out.count == 4 and out.positions[0].tolist() == [2, 4, 6, 8]
    for dtype in (torch.float64, torch.bfloat16):
        tokens = Tokens(features=audio(frames=10).features.to(dtype), layout=(10,))
        assert method(tokens).features.dtype == dtype


def test_seed_fixes_the_initialisation():
    a, b, c = (get("window_qformer", **SMALL, seed=s) for s in (1, 1, 2))
    assert torch.equal(a(audio()).features, b(audio()).features)
    assert not torch.equal(a(audio()).features, c(audio()).features)


def test_bad_input_raises():
    method = get("window_qformer", **SMALL)
    with pytest.raises(ValueError, match="dim=8"):
        method(Tokens(features=torch.randn(1, 8, 5), layout=(8,)))
    with pytest.raises(ValueError, match="at least 4 frames"):
        method(audio(frames=3))
    with pytest.raises(ValueError, match="divisible"):
        get("window_qformer", **{**SMALL, "heads": 3})
    with pytest.raises(ValueError, match="window"):
        get("window_qformer", **{**SMALL, "window": 0})


def test_loss_falls_when_trained_to_reconstruct_window_means():
    torch.manual_seed(0)
    method = get("window_qformer", **SMALL, seed=0)
    tokens = audio(batch=4, frames=16, seed=3)
    target = tokens.features.unfold(1, 4, 4).mean(dim=-1)  # (4, 4 windows, 8)
    optimiser = torch.optim.Adam(method.module.parameters(), lr=1e-2)
    method.module.train()
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(method(tokens).features, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
