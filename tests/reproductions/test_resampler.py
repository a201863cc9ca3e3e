"""The Perceiver Resampler: shapes, bad input, seeding, and that it learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reproductions
from reproductions.interface import Tokens


def build(**params):
    return reproductions.get(
        "resampler", **{**reproductions.methods()["resampler"].example, **params}
    )


def test_outputs_num_queries_tokens_in_the_input_dtype():
    method = build()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        tokens = Tokens(features=torch.randn(3, 65, 32).to(dtype), layout=(8, 8), special=1)
        out = method(tokens)
        assert out.features.shape == (3, 8, 32) and out.features.dtype == dtype
        assert method.output_count(tokens) == 8
        assert (out.source == -1).all() and out.source.shape == (3, 65)
        assert (out.positions == 32).all() and (out.sizes == 65).all()
        assert not out.features.isnan().any()


def test_each_query_reads_every_token():
    method = build()
    x = torch.randn(1, 20, 32, requires_grad=True)
    weights = torch.randn(32)  # not a plain sum: the final LayerNorm makes that constant
    (method(Tokens(features=x)).features[0, 0] * weights).sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()


def test_sizes_carry_the_input_sizes():
    tokens = Tokens(features=torch.randn(2, 10, 32), sizes=torch.full((2, 10), 3.0))
    assert (build()(tokens).sizes == 30).all()


def test_seed_fixes_the_initialisation_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b, c = build(seed=1), build(seed=1), build(seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.module.latents, b.module.latents)
    assert not torch.equal(a.module.latents, c.module.latents)
    assert a == b  # the module is not a hyperparameter


def test_bad_input_raises():
    with pytest.raises(ValueError, match="dim=32"):
        build()(Tokens(features=torch.randn(1, 10, 16)))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        build()(Tokens(features=torch.randn(10, 32)))
    for name in ("dim", "num_queries", "depth", "heads", "head_dim", "ff_mult"):
        with pytest.raises(ValueError, match=name):
            build(**{name: 0})
    with pytest.raises(ValueError, match="seed"):
        build(seed=1.5)


def test_loss_falls_when_trained_to_reconstruct_the_tokens():
    """Four queries must carry what a rank-4 set of 16 tokens holds, for a decoder to rebuild."""
    g = torch.Generator().manual_seed(0)
    n, dim, rank = 16, 32, 4
    basis = torch.randn(rank, n * dim, generator=g) / rank**0.5

    def batch() -> torch.Tensor:
        return (torch.randn(16, rank, generator=g) @ basis).view(16, n, dim)

    torch.manual_seed(0)
    method = build(num_queries=4, depth=1, head_dim=8)
    decoder = nn.Linear(4 * dim, n * dim)
    optimiser = torch.optim.Adam([*method.module.parameters(), *decoder.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        x = batch()
        summary = method(Tokens(features=x)).features
        loss = nn.functional.mse_loss(decoder(summary.flatten(1)).view_as(x), x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
