"""Flamingo's Perceiver Resampler: a fixed number of learned queries summarise all the tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..interface import Compression, Method, Tokens, check_int, resolve_keep
from ..ops import input_sizes
from ..registry import register


class ResamplerAttention(nn.Module):
    """Latents attend to [tokens, latents] (Flamingo's keys and values include the latents)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.token_norm = nn.LayerNorm(dim)
        self.latent_norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, heads * head_dim, bias=False)
        self.key_value = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, tokens: Tensor, latents: Tensor) -> Tensor:
        b, q = latents.shape[:2]
        tokens, latents = self.token_norm(tokens), self.latent_norm(latents)
        context = torch.cat([tokens, latents], dim=1)

        def split(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], self.heads, self.head_dim).transpose(1, 2)

        keys, values = self.key_value(context).chunk(2, dim=-1)
        attended = nn.functional.scaled_dot_product_attention(
            split(self.query(latents)), split(keys), split(values)
        )
        return self.out(attended.transpose(1, 2).reshape(b, q, self.heads * self.head_dim))


class PerceiverResamplerModule(nn.Module):
    """`num_queries` learned latents, `depth` blocks of (attention, feed-forward), a final norm."""

    def __init__(
        self, dim: int, num_queries: int, depth: int, heads: int, head_dim: int, ff_mult: int
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_queries, dim))
        self.attention = nn.ModuleList(
            ResamplerAttention(dim, heads, head_dim) for _ in range(depth)
        )
        self.feed_forward = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, ff_mult * dim, bias=False),
                nn.GELU(),
                nn.Linear(ff_mult * dim, dim, bias=False),
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, dim) tokens -> (B, num_queries, dim)."""
        latents = self.latents.expand(tokens.shape[0], -1, -1)
        for attention, feed_forward in zip(self.attention, self.feed_forward, strict=True):
            latents = latents + attention(tokens, latents)
            latents = latents + feed_forward(latents)
        return self.norm(latents)


@register("resampler")
@dataclass
class PerceiverResampler(Method):
    """Learned queries cross-attend to all the tokens and replace them (a Perceiver Resampler).

    Paper: "Flamingo: a Visual Language Model for Few-Shot Learning" (Alayrac et al., NeurIPS
    2022, arXiv 2204.14198), whose Perceiver Resampler maps any number of visual tokens to
    `num_queries` (64) outputs: learned latents, `depth` (6) blocks of attention whose keys and
    values are the layer-normed tokens concatenated with the latents, then a feed-forward block
    (GELU, width `ff_mult` * dim), residual connections, a final LayerNorm. The same idea as the
    BLIP-2 Q-Former and Qwen-VL's one-layer resampler.

    Compression: `features` (B, num_queries, dim) are the module's outputs; `source` is all -1
    (no input token survives as such); `sizes` = the (size-weighted) number of tokens, as every
    query reads them all; `positions` = N // 2, the centre of the span each query summarises.
    Special tokens are read like any other token.

    Parameters: `dim` (token width, in and out), `num_queries`, `depth`, `heads`, `head_dim`,
    `ff_mult`, `seed` (initialisation). Trainable: train `self.module` (an `nn.Module`) with any
    optimiser; the module runs in its own dtype (float32 by default) and the outputs come back in
    the input dtype.

    Differences from the official code: Flamingo's code is not public; this follows the paper's
    description and pseudo-code. Flamingo adds learned per-frame time embeddings for video; this
    image version has none.
    """

    dim: int = 1024
    num_queries: int = 64
    depth: int = 6
    heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4
    seed: int = 0
    module: PerceiverResamplerModule = field(init=False, repr=False, compare=False)

    paper = "alayrac2022flamingo"
    stage = "projector"
    mechanisms = ("query",)
    copies = False
    trainable = True
    example = {"dim": 32, "num_queries": 8, "depth": 2, "heads": 4, "head_dim": 8}
    benchmark = {"dim": 1024}  # Flamingo's defaults on the image preset's width

    def __post_init__(self) -> None:
        for name in ("dim", "num_queries", "depth", "heads", "head_dim", "ff_mult"):
            value = getattr(self, name)
            check_int(name, value, 1, "pass a positive int")
        check_int("seed", self.seed)
        generator_state = torch.random.get_rng_state()
        try:  # a seeded initialisation that leaves the global generator as it was
            torch.manual_seed(self.seed)
            self.module = PerceiverResamplerModule(
                self.dim, self.num_queries, self.depth, self.heads, self.head_dim, self.ff_mult
            )
        finally:
            torch.random.set_rng_state(generator_state)

    def output_count(self, tokens: Tokens) -> int:
        return self.num_queries

    @classmethod
    def at_budget(cls, budget, tokens, **params):
        """`budget` learned queries (the count is exactly the number of queries)."""
        return cls(**{**params, "num_queries": resolve_keep(budget, tokens.count, tokens.special)})

    def compress(self, tokens: Tokens) -> Compression:
        x = tokens.features
        b, n, d = x.shape
        if d != self.dim:
            raise ValueError(
                f"resampler was built for dim={self.dim} features, got D={d}: pass dim={d}"
            )
        outputs = self.module(x.to(self.module.latents.dtype))
        q = self.num_queries
        return Compression(
            features=outputs.to(x.dtype),
            source=torch.full((b, n), -1, dtype=torch.long, device=x.device),
            positions=torch.full((b, q), n // 2, dtype=torch.long, device=x.device),
            sizes=input_sizes(tokens).sum(dim=1, keepdim=True).expand(b, q).clone(),
        )
