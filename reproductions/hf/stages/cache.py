"""The cache stage: at every decoding step, the method selects the media cache entries that
layers >= K attend to at that step (DyCoke's stage 2), from the step's attention to them at layer
K - 1 and layer K's cached keys; the dropped entries are masked for the step (the cache keeps
them), as DyCoke's released code does. `reset()` is called at every prefill.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...interface import Tokens
from ..attention import probabilities, queries_keys, repeat_heads
from ..report import Record
from ..sequence import mask_4d
from .base import argument, cache_of
from .decoder import DecoderStage


class CacheStage(DecoderStage):
    name = "cache"
    signals = ("keys", "attention")

    def prefill(self, args: tuple, kwargs: dict, embeds: Tensor) -> None:
        self.mask2d_step: Tensor | None = None
        return super().prefill(args, kwargs, embeds)

    def decode(self, args: tuple, kwargs: dict, embeds: Tensor) -> None:
        self.mask2d_step = self.mask_2d(kwargs)
        self.seen += embeds.shape[1]
        return None

    def _layer_k(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.in_prefill:
            return None
        cache = cache_of(kwargs)
        if cache is self.cache and self.spans:
            self.step(cache, argument(args, kwargs, "hidden_states"))
        return self.apply_group(args, kwargs)

    def step(self, cache, hidden: Tensor) -> None:
        """One decoding step: score the media entries, mask the dropped ones for layers >= K."""
        b, q = hidden.shape[:2]
        columns = [self.media_columns(r) for r in range(b)]
        if len({len(c) for c in columns}) != 1:
            raise ValueError(
                f"{self.method.name}: the rows of the batch hold different numbers of media "
                "tokens; the cache stage needs the same count in every row"
            )
        module, h, position_embeddings = self.attention_input
        # layer K - 1 has already cached this step's key: its cache is every column
        qs, _ = queries_keys(module, h, position_embeddings)
        keys = repeat_heads(cache.layers[self.layer - 1].keys, qs.shape[1])
        total = keys.shape[2]
        full = self.mask2d_step if self.mask2d_step is not None else torch.ones(b, total, dtype=torch.bool)
        allowed = full[:, None, None, -total:].bool().to(qs.device)
        probs = probabilities(qs[:, :, -1:], keys, module.scaling, allowed)
        cols = torch.stack(columns).to(probs.device)
        attention = torch.stack([probs[r, :, :, cols[r]] for r in range(b)]).to(hidden.dtype)
        kv = cache.layers[self.layer].keys  # (B, kv heads, C, hd), the current token not yet added
        # the media entries first, then heads flattened: one copy of those entries only
        features = torch.stack([kv[r][:, cols[r]].transpose(0, 1).flatten(1) for r in range(b)])
        comp = self.method(Tokens(features=features, layout=self.row_layout(0), attention=attention))
        keep = torch.ones(b, total, dtype=torch.bool, device=probs.device)
        for r in range(b):
            keep[r, cols[r]] = comp.source[r] >= 0
        valid = keep & full[:, -total:].bool().to(keep.device)
        self.group = {"attention_mask": mask_4d(valid, q, self.implementation, hidden.dtype)}
        self.report.records.append(
            Record(
                self.report.calls,
                self.name,
                full[:, -total:].sum(1).tolist(),
                valid.sum(1).tolist(),
                [len(c) for c in columns],
                [int((comp.source[r] >= 0).sum()) for r in range(b)],
            )
        )
