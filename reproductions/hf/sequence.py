"""Pure tensor helpers of the integration: find the media spans of a prompt, rebuild a shorter
sequence from per-span compressions, and build the attention masks that go with it.

A rebuilt sequence is described by `index` (B, L') long: for every new row, the index in the
original sequence whose position id, attention-mask value and cache column it inherits, -1 for
a padding row added on the left (rows of one batch may shrink by different amounts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression


@dataclass
class Span:
    """One image, video or audio clip in one row of the LLM sequence.

    `columns`: where its placeholder tokens lie in the row, ascending (one run of placeholders,
    or several: Qwen3-VL writes a video frame by frame, a timestamp before each); `layout`: the
    grid the tokens fill ((H, W), (T, H, W) or (T,)), None where the model packs them
    irregularly; `item`: its index among the items of its modality in (batch, sequence) order;
    `frames`: where an earlier stage of the context compressed the span, the (length, 2) first
    and last frame each of its tokens stands for; `scores`: the (length,) scores that stage's
    method returned for them (`Compression.scores`), where it returned any.
    """

    row: int
    columns: Tensor
    modality: str
    layout: tuple[int, ...] | None
    item: int
    frames: Tensor | None = None
    scores: Tensor | None = None

    def timespan(self) -> Tensor | None:
        """(length, 2) the first and last frame each token stands for: `frames`, else its own
        frame of a (T, H, W) layout; None for a span without frames."""
        if self.frames is not None:
            return self.frames
        if self.layout is None or len(self.layout) != 3:
            return None
        own = torch.arange(self.length) // (self.layout[1] * self.layout[2])
        return torch.stack([own, own], dim=-1)

    @property
    def start(self) -> int:
        return int(self.columns[0])

    @property
    def length(self) -> int:
        return len(self.columns)


def placed_here(placed: Tensor, piece: Tensor) -> bool:
    """Whether `piece`, rows of the LLM input, is exactly the media item `placed` that the model
    put there (in the input's dtype): how a span finds its item's compression or signals."""
    return placed.shape == piece.shape and torch.equal(placed.to(piece.dtype), piece)


def row_of(comp: Compression, row: int) -> Compression:
    """Batch row `row` of a Compression, as a batch of one."""
    scores = None if comp.scores is None else comp.scores[row : row + 1]
    return Compression(*(t[row : row + 1] for t in (comp.features, comp.source, comp.positions, comp.sizes)), scores)


def runs(ids: Tensor, token: int) -> list[list[tuple[int, int]]]:
    """Per row, the (start, length) of each maximal run of `token` in `ids` (B, L)."""
    out: list[list[tuple[int, int]]] = []
    hits = (ids == token).cpu()
    for row in hits:
        found: list[tuple[int, int]] = []
        flags = row.tolist()
        i = 0
        while i < len(flags):
            if flags[i]:
                j = i
                while j < len(flags) and flags[j]:
                    j += 1
                found.append((i, j - i))
                i = j
            else:
                i += 1
        out.append(found)
    return out


def split_runs(found: list[list[tuple[int, int]]], size: int | None) -> list[list[tuple[int, int]]]:
    """Split runs into items of `size` tokens (adjacent items share one run); None keeps one
    item per run."""
    if size is None:
        return found
    out: list[list[tuple[int, int]]] = []
    for row in found:
        items: list[tuple[int, int]] = []
        for start, length in row:
            if length % size:
                raise ValueError(
                    f"a run of {length} media placeholder tokens is not a whole number of items "
                    f"of {size} tokens: expand every image to {size} placeholders"
                )
            items += [(start + i, size) for i in range(0, length, size)]
        out.append(items)
    return out


def take(x: Tensor, index: Tensor, dim: int, fill: float | int = 0) -> Tensor:
    """x gathered along the sequence `dim` by `index` (B, L') per batch row; -1 gives `fill`.

    The batch dimension of `x` is the one just before `dim` (size B or 1, broadcast).
    """
    dim = dim % x.dim()
    batch_dim = dim - 1
    b = index.shape[0]
    if x.shape[batch_dim] == 1 and b > 1:
        x = x.expand(*x.shape[:batch_dim], b, *x.shape[batch_dim + 1 :])
    safe = index.clamp_min(0)
    shape = [1] * x.dim()
    shape[batch_dim], shape[dim] = b, index.shape[1]
    idx = safe.reshape(shape).expand(*x.shape[:dim], index.shape[1], *x.shape[dim + 1 :])
    out = x.gather(dim, idx.to(x.device))
    pad = (index < 0).reshape(shape).expand_as(out).to(out.device)
    return out.masked_fill(pad, fill) if bool(pad.any()) else out


def rebuild(
    hidden: Tensor, spans: list[Span], compressions: dict[int, tuple[Compression, int]]
) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
    """The shorter sequence where each compressed span is replaced by its compression.

    `compressions[i]` is (Compression over the tokens of `spans[i]`, number of leading special
    tokens the method saw, which have no placeholder of their own). Output token k of a span
    takes the position of the placeholder `columns[max(positions[k] - special, 0)]` and is
    emitted where the run of placeholders holding that position starts, in the method's output
    order (a one-run span: all at its start). Returns (new hidden (B, L', D), index (B, L'), the
    new row of each output token of each compressed span), rows left-padded with zeros (index
    -1) to the longest row.
    """
    b, n = hidden.shape[:2]
    rows: list[Tensor] = []
    indices: list[Tensor] = []
    device = hidden.device
    slots: dict[int, Tensor] = {}  # the output tokens' places in their row, before padding
    for row in range(b):
        own = [(i, s) for i, s in enumerate(spans) if s.row == row and i in compressions]
        keep = torch.ones(n, dtype=torch.bool, device=device)
        for _, span in own:
            keep[span.columns.to(device)] = False
        where = [torch.arange(n, device=device)[keep]]
        pieces = [hidden[row, keep]]
        keys = [where[0] * (n + 1)]  # a kept prompt token sorts at its index
        for i, span in own:
            comp, special = compressions[i]
            columns = span.columns.to(device)
            at = columns[(comp.positions[0].to(device) - special).clamp_min(0)]
            starts = columns[torch.cat([torch.ones(1, dtype=torch.bool, device=device), columns.diff() != 1])]
            run_start = starts[torch.searchsorted(starts, at, right=True) - 1]
            slots[i] = torch.arange(len(at), device=device) + sum(len(w) for w in where)
            where.append(at)
            pieces.append(comp.features[0].to(hidden.dtype))
            keys.append(run_start * (n + 1) + 1 + torch.arange(len(at), device=device))
        order = torch.cat(keys).argsort(stable=True)
        place = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=device))
        for i, _ in own:
            slots[i] = place[slots[i]] - len(order)  # counted from the row's end
        rows.append(torch.cat(pieces)[order])
        indices.append(torch.cat(where)[order])
    width = max(r.shape[0] for r in rows)
    out = hidden.new_zeros(b, width, hidden.shape[2])
    index = torch.full((b, width), -1, dtype=torch.long, device=device)
    for row, (r, w) in enumerate(zip(rows, indices, strict=True)):
        out[row, width - r.shape[0] :] = r
        index[row, width - w.shape[0] :] = w
    return out, index, {i: at + width for i, at in slots.items()}


def rebuild_rows(
    hidden: Tensor, columns: list[Tensor], comps: list[Compression | None]
) -> tuple[Tensor, Tensor]:
    """The llm stage's rows: those of `hidden` (B, n, D) outside the media `columns`, and each
    row's media compression, each token at the row of `hidden` it stands at, in that order;
    rows left-padded to the longest. Returns (rows, the row of `hidden` each stands at)."""
    b, n, d = hidden.shape
    rows, indices = [], []
    for r in range(b):
        keep = torch.ones(n, dtype=torch.bool, device=hidden.device)
        keep[columns[r]] = False
        where = torch.arange(n, device=hidden.device)[keep]
        feats = hidden[r, keep]
        if comps[r] is not None:
            where = torch.cat([where, columns[r][comps[r].positions[0]]])
            feats = torch.cat([feats, comps[r].features[0].to(hidden.dtype)])
            order = where.argsort(stable=True)
            where, feats = where[order], feats[order]
        rows.append(feats)
        indices.append(where)
    width = max(len(w) for w in indices)
    out = hidden.new_zeros(b, width, d)
    index = torch.full((b, width), -1, dtype=torch.long, device=hidden.device)
    for r in range(b):
        out[r, width - len(indices[r]) :] = rows[r]
        index[r, width - len(indices[r]) :] = indices[r]
    return out, index


def unchanged(old: Tensor, new: Tensor, index: Tensor) -> bool:
    """Whether the rebuilt sequence `new` (with its `index`) is `old` itself, every row in place:
    then the call is left exactly as it was."""
    n = old.shape[1]
    return index.shape[1] == n and bool((index == torch.arange(n, device=index.device)).all()) and torch.equal(new, old)


def valid_columns(index: Tensor, mask2d: Tensor | None) -> Tensor:
    """(B, L') bool: the rebuilt rows that are real tokens (not padding, old or new)."""
    valid = index >= 0
    if mask2d is not None:
        valid = valid & take(mask2d.bool(), index, dim=1, fill=False)
    return valid


def mask_4d(
    valid: Tensor, queries: int, implementation: str, dtype: torch.dtype, window: int | None = None
) -> Tensor:
    """The (B, 1, q, kv) mask of the last `queries` rows over `valid` (B, kv) columns, causal by
    sequence index, in the format the attention implementation adds or selects with. `window`:
    a sliding-window layer's, each row sees the `window` columns up to itself only (counted by
    index, padding included, as transformers' `sliding_window_overlay` counts them).

    A query row that would see nothing (a padding row) sees itself, so softmax stays finite.
    """
    b, kv = valid.shape
    q_index = torch.arange(kv - queries, kv, device=valid.device)[:, None]
    k_index = torch.arange(kv, device=valid.device)[None, :]
    causal = k_index <= q_index
    if window is not None:
        causal = causal & (k_index > q_index - window)
    allowed = causal[None] & valid[:, None, :]
    allowed = allowed | (k_index == q_index)[None]
    allowed = allowed[:, None]
    if implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=valid.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    return allowed
