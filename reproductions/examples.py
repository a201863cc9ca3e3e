"""Example inputs for any method: random tokens with every signal the method declares it needs.

Used by the conformance suite, the benchmarks and the docs' runnable snippets, so that all three
exercise a method on the same footing.
"""

from __future__ import annotations

import math

import torch

from .interface import Method, Tokens
from .ops import anyres_places

#: the default grid per modality: small enough for tests, big enough for every example budget
LAYOUTS: dict[str, tuple[int, ...]] = {"image": (8, 8), "video": (4, 4, 4), "audio": (64,)}


def example_tokens(
    method: type[Method] | Method,
    batch: int = 2,
    dim: int = 32,
    layout: tuple[int, ...] | None = None,
    special: int | None = None,
    heads: int = 4,
    queries: int = 6,
    audio_tokens: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Tokens:
    """Random `Tokens` for `method`, carrying exactly the signals in `method.needs`.

    `special` defaults to one leading [CLS] where the method accepts one, else none. Attention
    signals are softmax-normalised over the tokens, like real attention rows.
    """
    layout = layout or LAYOUTS[method.modality[0]]
    if special is None:
        allowed = method.special_tokens
        special = 1 if allowed is None or 1 in allowed else allowed[0]
    n = special + math.prod(layout)
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)

    def attention(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 2).softmax(-1).to(dtype=dtype, device=device)

    signals = {
        "cls_attention": lambda: attention(batch, heads, n),
        "keys": lambda: randn(batch, n, dim // 2),
        "values": lambda: randn(batch, heads, n, max(dim // heads, 1)),
        "scores": lambda: randn(batch, n),
        # omni methods read the attention paid to the audio tokens too: columns [features, audio]
        # methods that read the media rows' own attention get those N rows first
        "attention": lambda: attention(
            batch,
            heads,
            queries + (n if method.attention_rows == "media" else 0),
            n + (audio_tokens if "audio" in method.needs else 0),
        ),
        "received": lambda: attention(batch, 2, n),
        "encoder_attention": lambda: attention(batch, heads, 2 * n, 2 * n),
        "text": lambda: randn(batch, queries, dim),
        "text_keys": lambda: randn(batch, queries, dim // 2),
        "text_values": lambda: randn(batch, heads, queries, max(dim // heads, 1)),
        "frames": lambda: randn(batch, layout[0], dim),
        "audio": lambda: randn(batch, audio_tokens, dim),
        "anyres": lambda: example_anyres(n).repeat(batch, 1, 1).to(device),
        "timespan": lambda: timespan(batch, special, layout),
    }
    features = randn(batch, n, dim)
    given = {name: signals[name]() for name in method.needs}
    return Tokens(features=features, layout=tuple(layout), special=special, **given)


def example_anyres(n: int) -> torch.Tensor:
    """`anyres` places for n tokens: the largest s x s thumbnail whose crops (a row of s x s
    tiles, no unpadding, no newlines) fill the rest; one token alone is a thumbnail."""
    side = max((s for s in range(1, math.isqrt(n) + 1) if n % (s * s) == 0 and n // (s * s) >= 2), default=0)
    if side == 0:
        return anyres_places((1, 1), newline=False)
    return anyres_places((side, side), (1, n // (side * side) - 1), newline=False)


def timespan(batch: int, special: int, layout: tuple[int, ...]) -> torch.Tensor:
    """(B, N, 2) the frames each token of a frame-major `layout` stands for: its own frame, for
    every token before any merging; a special token stands for the whole clip."""
    frames = layout[0] if len(layout) == 3 else 1
    own = torch.arange(math.prod(layout)) // (math.prod(layout) // frames)
    first = torch.cat([torch.zeros(special, dtype=torch.long), own])
    last = torch.cat([torch.full((special,), frames - 1), own])
    return torch.stack([first, last], dim=-1).expand(batch, -1, -1).clone()
