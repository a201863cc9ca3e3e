"""Where the rows of a sequence went when the llm stage rebuilt it (`rebuild_rows`), over one or
several steps, so that values given per row of the decoder's input follow the rows (Qwen3-VL's
DeepStack features, added after its first decoder layers)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interface import Compression

#: where each row of a sequence went in a rebuilt one: (B, n) its new row (-1: dropped) and
#: (B, n) float32 its weight in that row
Moves = tuple[Tensor, Tensor]


def row_moves(n: int, columns: list[Tensor], comps: list[Compression | None], sub: Tensor) -> Moves:
    """The Moves of the `n` rows `rebuild_rows` read (`sub`: the row each new row stands at). A
    media token weighs 1 / its slot's size: a merged row is the mean of its members, as a merge's
    features are (the llm stage's tokens each stand for one); every other row weighs 1."""
    b, width = sub.shape
    new = torch.full((b, n + 1), -1, dtype=torch.long, device=sub.device)
    new.scatter_(1, torch.where(sub >= 0, sub, n), torch.arange(width, device=sub.device).repeat(b, 1))
    into, weight = new[:, :n], torch.ones(b, n, device=sub.device)
    for r, comp in enumerate(comps):
        if comp is not None:
            source, cols = comp.source[0].to(sub.device), columns[r].to(sub.device)
            slot, kept = source.clamp_min(0), source >= 0
            into[r, cols] = torch.where(kept, into[r, cols[comp.positions[0].to(sub.device)]][slot], -1)
            weight[r, cols] = torch.where(kept, 1 / comp.sizes[0].to(sub.device, torch.float32)[slot], 0.0)
    return into, weight


def then_moves(first: Moves | None, second: Moves) -> Moves:
    """`second`, the Moves of the rows `first` led to, after `first`: one Moves of `first`'s
    rows (weights multiply)."""
    if first is None:
        return second
    (into, weight), (then, w) = first, second
    at = into.clamp_min(0)
    return torch.where(into >= 0, then.gather(1, at), -1), weight * w.gather(1, at)


def move_rows(values: Tensor, moves: Moves, width: int) -> Tensor:
    """Per-row `values` (B, n, D) carried by `moves` onto `width` rows: each the weighted sum of
    the rows moved into it, in float32; zeros where none (padding)."""
    into, weight = (x.to(values.device) for x in moves)
    b, n, d = values.shape
    slot = torch.where(into >= 0, into, width)[..., None].expand(b, n, d)
    out = torch.zeros(b, width + 1, d, device=values.device)
    return out.scatter_add_(1, slot, values.float() * weight[..., None])[:, :width]
