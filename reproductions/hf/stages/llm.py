"""The llm stage: at decoder layer K, during prefill, the media rows are dropped (or merged) for
layers >= K. The method reads the attention that the rows after the last media token pay to the
media tokens at layer K - 1 (recomputed from that layer's queries and keys, in float32) and those
rows' hidden states as `text`; all media tokens of a row form one candidate set. Layers < K cache
every token, layers >= K the kept ones. K = 0 acts on the decoder's input (FrameFusion's first
merge): no layer has run, so the attention is layer 0's own over the full input; a method with
`attention_from = "own"` reads layer K's own attention at every K; one with
`attention_rows = "media"` also gets the rows of the media tokens themselves, first (FitPrune).

A method that declares several `decoder_layers()` K_1 < K_2 < ... (PyramidDrop) runs one step
per layer, `method.step(i, N)` at K_i on the media tokens the earlier steps kept; the layers of
each segment [K_i, K_i+1) run with the mask and positions of that segment's kept rows, also
while decoding (each segment's cache holds its own rows).

A method that needs `keys` / `text_keys` gets layer K - 1's keys (after RoPE, kv heads
concatenated, as its KV cache holds them) of the media tokens and of the query rows, and one that
needs `values` / `text_values` that layer's per-head values (kv heads repeated to the query heads,
as its attention uses them: FlowCut's Qwen2-VL port); one that
reads `hidden_from = "final_norm"` scores the states through the decoder's final norm and keeps
the unnormalised rows of the tokens it keeps (DART). A method may keep no media token (VTW).
One that reads `attention_raw` gets the attention before RoPE and without the causal mask.
Decoding steps see the rows `decoding_rows` says (`llm_decoding.py`). `scores` holds the scores an encoder part of the same
method returned for the media tokens (MustDrop's key set), following them through the projector
and the earlier steps; `timespan` holds the frames each media token stands for, from its video's grid or,
after a projector stage of the same context, from the tokens it merged.

Where the family adds features to the visual tokens after its first decoder layers (Qwen3-VL's
DeepStack) and a step acts before the last of them, each kept visual row gets the features of
the token it stands at; a merged row (FrameFusion), the mean of its members' features, as its
hidden state is their mean (`row_moves`; no Qwen3-VL port of these methods exists to follow);
padding and text rows get none (`Adapter.follow_rows`).

Where the family's layers have types (`Adapter.layer_types`: Gemma 3's full / sliding), layers
>= K run as the model would on a prompt of the kept rows: each gets its type's mask from the
family's own mask functions on those rows (`Adapter.prefill_mask`, no cache; Gemma 3: kept image
tokens of one image bidirectional, the window counted over kept rows) and its own position
embeddings gathered at them. The attention read at layer K - 1 follows that layer's own mask
(`visible`).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ...interface import Compression, Method, Tokens
from ..attention import cached_layer, media_signals, rows_attention, visible
from ..models import Adapter
from ..moves import Moves, move_rows, row_moves, then_moves
from ..report import Record
from ..sequence import mask_4d, rebuild_rows, row_of, take, unchanged, valid_columns
from .base import argument, cache_of
from .decoder import DecoderStage, Group
from .llm_decoding import DecodingSteps, cut_layer


class LlmStage(DecodingSteps, DecoderStage):
    name = "llm"
    signals = ("attention", "text", "keys", "text_keys", "values", "text_values", "scores")

    def __init__(self, model: nn.Module, method: Method, adapter: Adapter, layer: int | None = None) -> None:
        super().__init__(model, method, adapter, layer)
        #: the decoder layers the method acts at: its own several, else K
        self.ks: tuple[int, ...] = tuple(method.decoder_layers()) or (self.layer,)
        self.layer = self.ks[0]
        #: K -> layer K - 1's attention module, its input and position embeddings; its mask
        self.inputs: dict[int, tuple[nn.Module, Tensor, tuple[Tensor, Tensor]]] = {}
        self.masks: dict[int, Any] = {}
        #: each layer's type (None: the family has one mask for every layer)
        self.types: list[str | None] = list(adapter.layer_types) or [None] * len(adapter.layers)
        if adapter.layer_types and method.decoding_rows != "seen":
            raise ValueError(
                f"{method.name} hides dropped rows from the caches of layers < K, which in "
                f"{adapter.family} include sliding-window layers that do not hold every row; "
                "use a method that does not prune the earlier cache"
            )
        #: per step run in this prefill: the original index of every row layers >= K_i see (B, L_i)
        #: (-1: padding), None while nothing was dropped; and the kwargs those layers run with
        self.indices: list[Tensor | None] = []
        self.groups: list[Group | None] = []
        #: at a decoding step, the kwargs of the cut layers < K_1 (`decoding_rows`: the kept rows)
        self.earlier: Group | None = None
        #: in prefill, where the decoder input's rows went in the steps run so far (None: nowhere
        #: yet); kept where the family's per-visual-token features come after K_1
        self.follows = self.ks[0] < adapter.deepstack_layers
        self.moves: Moves | None = None
        #: the first layer whose decoding steps see only the last step's kept rows (None: none)
        self.cut = cut_layer(method, self.ks[0])

    def install_hooks(self) -> None:
        layers = self.adapter.layers
        for i, k in enumerate(self.ks):
            if k > 0 and self.method.attention_from == "previous":
                hook = partial(self._capture_for, k)
                self.hook(layers[k - 1].self_attn.register_forward_pre_hook(hook, with_kwargs=True))
            self.hook(layers[k].register_forward_pre_hook(partial(self._step, i), with_kwargs=True))
        for j in range(self.ks[0] + 1, len(layers)):
            if j not in self.ks:
                hook = partial(self._segment, j)
                self.hook(layers[j].register_forward_pre_hook(hook, with_kwargs=True))
        for j in range(self.cut, self.ks[0]) if self.cut is not None else ():
            self.hook(layers[j].register_forward_pre_hook(partial(self._earlier, j), with_kwargs=True))
        if self.follows:
            self.hook(self.adapter.follow_rows(self.kept_rows))

    def prefill(self, args: tuple, kwargs: dict, embeds: Tensor) -> None:
        self.indices, self.groups, self.earlier, self.moves = [], [], None, None
        return super().prefill(args, kwargs, embeds)

    def kept_rows(self, features: Tensor, visual: Tensor) -> tuple[Tensor, Tensor] | None:
        """The family's per-visual-token `features` (B, n, D) and `visual` (B, n) at the decoder
        input's rows, carried onto the rows the steps so far left (`Adapter.follow_rows`)."""
        if not self.in_prefill or self.moves is None:
            return None
        width = self.indices[-1].shape[1]
        moved = move_rows(visual[..., None], self.moves, width)[..., 0] > 0
        return move_rows(features, self.moves, width).to(features.dtype), moved

    def _capture_for(self, k: int, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.inputs[k] = (module, argument(args, kwargs, "hidden_states"), kwargs.get("position_embeddings"))
        self.masks[k] = kwargs.get("attention_mask")

    def _segment(self, j: int, module: nn.Module, args: tuple, kwargs: dict):
        """A layer between two steps: the kwargs of the last step before it."""
        done = [i for i, k in enumerate(self.ks) if k < j and i < len(self.groups)]
        return self.apply(self.groups[done[-1]] if done else None, j, args, kwargs)

    def apply(self, group: Group | None, j: int, args: tuple, kwargs: dict):
        return None if group is None else group.apply(self.types[j], args, kwargs)

    def _step(self, i: int, module: nn.Module, args: tuple, kwargs: dict):
        """Step i at layer K_i: in prefill, the method on the media rows still present; then
        the kwargs of the rows it kept."""
        k = self.ks[i]
        if not self.in_prefill:
            return self.apply(self.groups[i] if i < len(self.groups) else None, k, args, kwargs)
        if i != len(self.groups):  # an earlier step did not run (no prefill hook saw it)
            return None
        before = self.indices[-1] if self.indices else None
        group = self.groups[-1] if self.groups else None
        if group is not None:  # the layer's inputs as the layers before it saw them
            args, seen_kwargs = self.apply(group, k, args, kwargs)
        else:
            seen_kwargs = kwargs
        hidden = args[0] if args else seen_kwargs["hidden_states"]
        index = self.compress_step(i, module, hidden, args, seen_kwargs, before)
        if index is None:
            self.indices.append(before)
            self.groups.append(group)
            return self.apply(group, k, args, kwargs)
        new, index = index
        self.indices.append(index)
        self.cols = index
        group = self.group_for(index, kwargs, new)
        self.groups.append(group)
        args = (new, *args[1:]) if args else args
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": new}
        return self.apply(group, k, args, kwargs)

    def compress_step(
        self, i: int, module: nn.Module, hidden: Tensor, args: tuple, kwargs: dict, before: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """Step i on `hidden` (B, n): the new rows and their original indices, or None where
        nothing changed."""
        if not self.spans:
            return None
        b, n = hidden.shape[:2]
        k = self.ks[i]
        if k == 0 or self.method.attention_from == "own":
            self.own_input(module, args, kwargs)
        else:
            self.attention_input, self.attention_mask = self.inputs.get(k), self.masks.get(k)
        if self.attention_input is None:
            return None
        original = [self.media_columns(r).to(hidden.device) for r in range(b)]
        at = before if before is not None else torch.arange(n, device=hidden.device).expand(b, n)
        columns = [torch.isin(at[r], original[r]).nonzero().flatten() for r in range(b)]
        # M: every row after the last media token up to the last prompt token
        rows = [
            torch.arange(min(int(c.max()) + 1 if len(c) else n - 1, n - 1), n, device=hidden.device)
            for c in columns
        ]
        outer = self.mask2d[:, -self.seen :] if self.mask2d is not None else None
        valid = valid_columns(at, outer)  # the real columns of this sequence
        asking = rows
        if self.method.attention_rows == "media":  # the media rows' own attention first
            asking = [torch.cat([c, r]) for c, r in zip(columns, rows, strict=True)]
        cached = cached_layer(cache_of(kwargs), k, self.method.attention_from == "previous")
        allowed = visible(self.attention_mask, n)  # layer K - 1's own mask (its type's)
        attention = rows_attention(
            *self.attention_input, asking, columns, cached, valid, self.method.attention_raw, allowed,
            self.method.attention_heads,
        )
        methods = [self.method.step(i, len(c)) if len(c) else None for c in original]
        layouts = [self.row_layout(r) if before is None else None for r in range(b)]
        scored = hidden
        if self.method.hidden_from == "final_norm":  # DART's norm(hidden), for scoring only
            scored = self.adapter.language_model.norm(hidden)
        states = scored
        if self.method.text_from == "embeddings":  # the query rows' input embeddings
            states = take(self.embeds, at.to(self.embeds.device), dim=1)
        extra: dict[str, list[Tensor]] = {}
        if {"keys", "text_keys", "values", "text_values"} & set(self.method.needs):
            extra |= media_signals(self.method.needs, *self.attention_input, cached_layer(cache_of(kwargs), k), columns, rows)
        if "scores" in self.method.needs:  # an encoder part's, for the tokens as they are now
            given = [self.media_scores(r, self.seen) for r in range(b)]
            if all(g is not None for g in given):
                extra["scores"] = [g[at[r, columns[r]].cpu()].to(hidden.device, hidden.dtype) for r, g in enumerate(given)]
        if "timespan" in self.method.needs:  # the frames of the tokens, from the decoder input's
            extra["timespan"] = [self.timespans(r, self.seen)[at[r, columns[r]].cpu()].to(hidden.device) for r in range(b)]
        comps = self.compressions(scored, states, columns, rows, attention, methods, layouts, extra)
        if scored is not hidden:  # a pure selection: its kept rows, unnormalised
            comps = [
                None if c is None else replace(c, features=hidden[r, columns[r][c.positions[0]]][None])
                for r, c in enumerate(comps)
            ]
        new, sub = rebuild_rows(hidden, columns, comps)
        index = torch.where(sub >= 0, at.gather(1, sub.clamp_min(0)), -1)
        self.record(valid, valid_columns(index, outer), columns, comps)
        if before is None and unchanged(hidden, new, index):
            return None
        if self.follows:
            self.moves = then_moves(self.moves, row_moves(n, columns, comps, sub))
        return new, index

    def group_for(self, index: Tensor, kwargs: dict, new: Tensor) -> Group:
        """The kwargs of layers that see the rows `new` (B, L, D), at original indices `index`
        (-1 padding): per layer type, the family's own masks on those rows, where it has types."""
        outer = self.mask2d[:, -self.seen :] if self.mask2d is not None else None
        valid = valid_columns(index, outer)
        pos = kwargs.get("position_ids")
        extra = {"position_ids": take(pos, index, dim=-1, fill=1)} if isinstance(pos, Tensor) else {}
        if self.adapter.layer_types:
            positions = extra.get("position_ids", index.clamp_min(0))
            masks = self.adapter.prefill_mask(valid, index, self.input_ids, new, positions, None)
        elif self.implementation == "sdpa" and bool(valid.all()):
            masks = {None: None}  # plain causal: SDPA's is_causal path, as unpatched
        else:
            masks = {None: mask_4d(valid, index.shape[1], self.implementation, new.dtype)}
        return Group({t: {"attention_mask": masks[t], **extra} for t in set(self.types)}, index)

    def compressions(
        self,
        hidden: Tensor,
        states: Tensor,
        columns: list[Tensor],
        rows: list[Tensor],
        attention: list[Tensor],
        methods: list[Method | None],
        layouts: list[tuple[int, ...] | None],
        extra: dict[str, list[Tensor]],
    ) -> list[Compression | None]:
        """Each row's method on its media tokens (one call for the batch where every row has as
        many media tokens and query rows and the same method, and the count does not depend on
        the data; else one per row). None: a row without media. `states` (B, n, D) hold the
        query rows' `text`; `extra` the other signals the method needs, per row."""
        b = hidden.shape[0]

        def tokens(picked: list[int], layout: tuple[int, ...] | None) -> Tokens:
            return Tokens(
                features=torch.stack([hidden[i, columns[i]] for i in picked]),
                layout=layout,
                attention=torch.stack([attention[i] for i in picked]).to(hidden.dtype),
                text=torch.stack([states[i, rows[i]].to(hidden.dtype) for i in picked]),
                **{name: torch.stack([value[i] for i in picked]) for name, value in extra.items()},
            )

        alike = len({(len(c), len(m)) for c, m in zip(columns, rows, strict=True)}) == 1
        if alike and all(m == methods[0] for m in methods):
            if not len(columns[0]):
                return [None] * b
            batch = tokens(list(range(b)), layouts[0])
            if b == 1 or methods[0].output_count(batch) is not None:
                comp = methods[0](batch)
                return [row_of(comp, r) for r in range(b)]
        return [methods[r](tokens([r], layouts[r])) if len(columns[r]) else None for r in range(b)]

    def record(self, before: Tensor, after: Tensor, columns: list[Tensor], comps: list[Compression | None]) -> None:
        """One Record per step: real tokens before and after (valid columns), media tokens
        before and after."""
        self.report.records.append(
            Record(
                self.report.calls,
                self.name,
                before.sum(1).tolist(),
                after.sum(1).tolist(),
                [len(c) for c in columns],
                [0 if c is None else c.count for c in comps],
            )
        )
