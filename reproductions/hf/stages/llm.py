"""The llm stage: at decoder layer K, during prefill, the media rows are dropped (or merged) for
layers >= K. The method reads the attention that the rows after the last media token pay to the
media tokens at layer K - 1 (recomputed from that layer's queries and keys, in float32) and those
rows' hidden states as `text`; all media tokens of a row form one candidate set. Layers < K cache
every token, layers >= K the kept ones. K = 0 acts on the decoder's input (FrameFusion's first
merge): no layer has run, so the attention is layer 0's own over the full input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Tokens
from ..attention import probabilities, queries, queries_keys, repeat_heads, rope
from ..report import Record
from ..sequence import mask_4d, row_of, take, valid_columns
from .base import cache_of
from .decoder import DecoderStage


class LlmStage(DecoderStage):
    name = "llm"

    def decode(self, args: tuple, kwargs: dict, embeds: Tensor):
        if self.cols is None:
            return None
        valid = self.extend(kwargs, embeds)
        self.group = {"attention_mask": mask_4d(valid, embeds.shape[1], self.implementation, embeds.dtype)}
        return None

    def _layer_k(self, module: nn.Module, args: tuple, kwargs: dict):
        if not self.in_prefill:
            return self.apply_group(args, kwargs)
        if self.layer == 0 and self.spans:
            self.own_input(module, args, kwargs)
        if not self.spans or self.attention_input is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        b, n = hidden.shape[:2]
        columns = [self.media_columns(r).to(hidden.device) for r in range(b)]
        # M: every row after the last media token up to the last prompt token
        rows = [
            torch.arange(min(int(c.max()) + 1 if len(c) else n - 1, n - 1), n, device=hidden.device)
            for c in columns
        ]
        attention = self.attention_rows(rows, columns, cache_of(kwargs))
        comps = self.compressions(hidden, columns, rows, attention)
        new, index = self.rebuild_rows(hidden, columns, comps)
        self.record(index, n, columns, comps)
        if index.shape[1] == n and bool((index == torch.arange(n, device=index.device)).all()) and torch.equal(new, hidden):
            return None
        self.cols = index
        valid = valid_columns(index, self.mask2d[:, -n:] if self.mask2d is not None else None)
        group: dict[str, Any] = {}
        if self.implementation == "sdpa" and bool(valid.all()):
            group["attention_mask"] = None  # plain causal: SDPA's is_causal path, as unpatched
        else:
            group["attention_mask"] = mask_4d(valid, index.shape[1], self.implementation, hidden.dtype)
        cos, sin = kwargs["position_embeddings"]
        group["position_embeddings"] = (take(cos, index, dim=1), take(sin, index, dim=1))
        pos = kwargs.get("position_ids")
        if isinstance(pos, Tensor):
            group["position_ids"] = take(pos, index, dim=-1, fill=1)
        self.group = group
        args = (new, *args[1:]) if args else args
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": new}
        return self.apply_group(args, kwargs)

    def attention_rows(self, rows_of: list[Tensor], columns_of: list[Tensor], cache: Any) -> list[Tensor]:
        """Per batch row, the (heads, M, N) attention that rows_of[b] pay to columns_of[b] at
        layer K - 1, softmax over every column the row may see (causal, padding), in float32.

        Queries are projected for the rows that need them only; keys are read from layer
        K - 1's cache when it holds this prefill (it has run already), else projected."""
        module, hidden, (cos, sin) = self.attention_input
        n = hidden.shape[1]
        start = min(int(rows[0]) for rows in rows_of)
        q = queries(module, hidden[:, start:])
        q, _ = rope(module, q, q, (cos[:, start:], sin[:, start:]))
        layers = getattr(cache, "layers", [])
        cached = layers[self.layer - 1] if 1 <= self.layer <= len(layers) else None
        if cached is not None and getattr(cached, "keys", None) is not None and cached.keys.shape[2] == n:
            k = repeat_heads(cached.keys, q.shape[1])
        else:
            _, k = queries_keys(module, hidden, (cos, sin))
        out = []
        for row, (rows, cols) in enumerate(zip(rows_of, columns_of, strict=True)):
            rows = rows.to(q.device)
            seen = torch.arange(n, device=q.device)[None, :] <= rows[:, None]
            if self.mask2d is not None:
                seen = seen & self.mask2d[row, -n:].bool().to(q.device)[None, :]
            probs = probabilities(q[row][:, rows - start], k[row], module.scaling, seen[None])
            out.append(probs[:, :, cols.to(q.device)])
        return out

    def compressions(
        self, hidden: Tensor, columns: list[Tensor], rows: list[Tensor], attention: list[Tensor]
    ) -> list[Compression | None]:
        """The method on each row's media tokens (one call for the batch where every row has
        as many media tokens and query rows; else one per row). None: a row without media."""
        b = hidden.shape[0]
        states = self.embeds if self.method.text_from == "embeddings" else hidden

        def tokens(picked: list[int], layout: tuple[int, ...] | None) -> Tokens:
            return Tokens(
                features=torch.stack([hidden[i, columns[i]] for i in picked]),
                layout=layout,
                attention=torch.stack([attention[i] for i in picked]).to(hidden.dtype),
                text=torch.stack([states[i, rows[i]].to(hidden.dtype) for i in picked]),
            )

        if len({(len(c), len(m)) for c, m in zip(columns, rows, strict=True)}) == 1:
            if not len(columns[0]):
                return [None] * b
            comp = self.method(tokens(list(range(b)), self.row_layout(0)))
            return [row_of(comp, r) for r in range(b)]
        return [self.method(tokens([r], self.row_layout(r))) if len(columns[r]) else None for r in range(b)]

    def rebuild_rows(self, hidden: Tensor, columns: list[Tensor], comps: list[Compression | None]) -> tuple[Tensor, Tensor]:
        """Keep the non-media rows and the method's media output, each token at the original
        index it stands at, in original order; rows left-padded to the longest."""
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

    def record(self, index: Tensor, n: int, columns: list[Tensor], comps: list[Compression | None]) -> None:
        b = index.shape[0]
        mask = self.mask2d[:, -n:] if self.mask2d is not None else None
        real = mask.bool() if mask is not None else torch.ones(b, n, dtype=torch.bool)
        self.report.records.append(
            Record(
                self.report.calls,
                self.name,
                real.sum(1).tolist(),
                valid_columns(index, mask).sum(1).tolist(),
                [len(c) for c in columns],
                [0 if c is None else c.count for c in comps],
            )
        )
