"""What every stage does: a context that installs hooks on entry and removes them in `finally`,
reads each call's prompt, finds the media spans at the decoder's entry, keeps the shortened
sequence's bookkeeping across decoding steps, and scores `labels=` on the kept positions.

A stage subclass adds its own hooks (`install_hooks`) and says what happens at a prefill and at
a decoding step (`prefill`, `decode`); both return the decoder call's new (args, kwargs), or None
to leave the call as it is.

The shortened sequence is described by `cols` (B, L'): for every row the decoder now sees, the
original index whose position id, mask value and label it inherits (-1: left padding).

The stages of a method that spans several (`Method.parts`) run in one context, in model order,
each after the one before it (`follow`): a later stage's decoder input is the sequence the
earlier one handed on, so it finds its spans there (`InputStage.hand_on`: the rows their tokens
or their compression took, with the frames each stands for), and the labels follow every
stage's `cols` in turn.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ...interface import Method
from ..models import Adapter
from ..report import Report
from ..sequence import Span, runs, split_runs, take, valid_columns

#: models inside a compress context, and the stage that holds each
ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_of(kwargs: dict) -> Any:
    """The KV cache a decoder module was called with: `cache=` from transformers 5.24 on,
    `past_key_values=` before (5.24 renamed the argument; the old name is still accepted)."""
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def argument(args: tuple, kwargs: dict, name: str, position: int = 0) -> Any:
    """A hooked call's argument, given by name or at `position`."""
    return kwargs[name] if name in kwargs else (args[position] if len(args) > position else None)


class Stage:
    """The hooks of one `compress` context for one stage, and the state they share."""

    #: the stage's name, as methods declare it
    name: ClassVar[str]
    #: signals the stage itself supplies, beyond the model-specific ones
    signals: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, method: Method, adapter: Adapter) -> None:
        self.model, self.method, self.adapter = model, method, adapter
        self.report = Report(method=method.name or type(method).__name__, stage=self.name)
        self.modalities = [m for m in method.modality if m in adapter.tokens and m not in adapter.unsupported]
        self.implementation = adapter.language_model.config._attn_implementation
        self.handles: list[Any] = []
        self.input_ids: Tensor | None = None
        self.outer_mask: Tensor | None = None
        self.outer_kwargs: dict[str, Any] = {}
        self.spans: list[Span] = []
        self.cache: Any = None
        self.cols: Tensor | None = None
        self.seen = 0  # original tokens seen so far in this generation
        self.mask2d: Tensor | None = None
        self.in_prefill = False
        self.labels: Tensor | None = None
        self.saw_media = False  # whether any call carried tokens of the method's modality
        #: the stages before and after this one in the same context (`follow`)
        self.upstream: Stage | None = None
        self.downstream: Stage | None = None
        #: the position ids of the last prefill's decoder call as this stage received it
        self.positions_in: Tensor | None = None

    def follow(self, upstream: Stage) -> None:
        """Run after `upstream` in its context: on the sequence it hands on, into its report."""
        self.upstream, upstream.downstream, self.report = upstream, self, upstream.report

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Report:
        try:
            self.install()
        except BaseException:
            self.remove()
            raise
        return self.report

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def install(self) -> None:
        active = ACTIVE.get(self.model)
        if active is not None and active is not self.upstream:
            raise ValueError(
                f"{type(self.model).__name__} is already inside compress(..., {active.report.method!r}) "
                f"({active.report.stage} stage); compress contexts do not nest: exit that one first, "
                f"or run {self.report.method!r} ({self.report.stage} stage) on its own"
            )
        ACTIVE[self.model] = self
        self.hook(self.model.register_forward_pre_hook(self._take_labels, with_kwargs=True))
        self.hook(self.model.register_forward_hook(self._loss, with_kwargs=True))
        self.hook(self.adapter.outer.register_forward_pre_hook(self._outer, with_kwargs=True))
        self.hook(self.adapter.language_model.register_forward_pre_hook(self._decoder, with_kwargs=True))
        self.install_hooks()

    def install_hooks(self) -> None:
        """The stage's own hooks (each passed to `hook`, so `remove` finds it)."""

    def hook(self, handle: Any) -> None:
        self.handles.append(handle)

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        if ACTIVE.get(self.model) is self:
            if self.upstream is not None and self.upstream.handles:
                ACTIVE[self.model] = self.upstream
            else:
                del ACTIVE[self.model]

    # ------------------------------------------------------------------ labels= (log-likelihood)
    def _take_labels(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Refuse a call the family cannot compress; hold `labels` back from the model: its
        logits may come out shorter than the prompt, so `_loss` computes the loss on the kept
        positions instead."""
        refusal = self.adapter.refuse_call(kwargs)
        if refusal is not None:
            raise ValueError(f"{type(self.model).__name__} with {self.method.name}: {refusal}")
        self.labels = kwargs.get("labels")
        if self.labels is None:
            return None
        return args, {key: value for key, value in kwargs.items() if key != "labels"}

    def _loss(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """The model's own loss function on the kept positions: each kept token's label is the
        one at the original position it stands at (-100 for padding), so every kept position
        predicts the next kept token. With nothing dropped, this is the unpatched loss."""
        labels, self.labels = self.labels, None
        if labels is None:
            return None
        logits = output[0] if isinstance(output, tuple) else output.logits
        if logits.shape[1] != labels.shape[1]:
            labels = take(labels, self.final_cols().to(labels.device), dim=1, fill=-100)
        vocab = module.config.get_text_config().vocab_size
        loss = module.loss_function(logits=logits, labels=labels, vocab_size=vocab)
        if isinstance(output, tuple):
            return (loss, *output)
        return type(output)(loss=loss, **{key: value for key, value in output.items() if key != "loss"})

    def final_cols(self) -> Tensor:
        """The original index of every row the model's output holds: `cols`, through the `cols`
        of each later stage of the context."""
        cols, later = self.cols, self.downstream
        while later is not None:
            if later.cols is not None:
                cols = later.cols if cols is None else take(cols, later.cols.to(cols.device), dim=1, fill=-1)
            later = later.downstream
        return cols

    # ------------------------------------------------------------------ prompt and decoder entry
    def _outer(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.upstream is None:
            self.report.calls += 1
        ids = argument(args, kwargs, "input_ids")
        self.input_ids = ids if isinstance(ids, Tensor) else None
        mask = kwargs.get("attention_mask")  # 2-D here, also where the decoder gets 4-D masks (Gemma 3)
        self.outer_mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
        self.outer_kwargs = kwargs

    def _decoder(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return None
        cache = cache_of(kwargs)
        self.in_prefill = cache is None or cache.get_seq_length() == 0
        if self.in_prefill:
            if getattr(cache, "is_compileable", False):
                raise ValueError(
                    f"{type(self.model).__name__} with {self.method.name} ({self.name} stage): a "
                    f"static cache ({type(cache).__name__}) has a fixed length that a compressed "
                    "sequence does not fill; generate with the default dynamic cache (drop "
                    "cache_implementation='static' or pass a DynamicCache)"
                )
            self.cache, self.cols, self.seen = cache, None, embeds.shape[1]
            mask2d = self.mask_2d(kwargs)
            self.mask2d = mask2d if mask2d is not None and mask2d.shape[-1] == embeds.shape[1] else None
            self.positions_in = kwargs.get("position_ids")
            self.spans = self.find_spans(embeds.shape[1], self.positions_in)
            self.saw_media |= bool(self.spans)
            if hasattr(self.method, "reset"):
                self.method.reset()
            return self.prefill(args, kwargs, embeds)
        if cache is not self.cache:
            return None
        return self.decode(args, kwargs, embeds)

    def prefill(self, args: tuple, kwargs: dict, embeds: Tensor) -> tuple[tuple, dict] | None:
        """The decoder's prefill call (spans found); the new (args, kwargs) or None."""
        return None

    def decode(self, args: tuple, kwargs: dict, embeds: Tensor) -> tuple[tuple, dict] | None:
        """A decoding step's decoder call; the new (args, kwargs) or None."""
        return None

    # ------------------------------------------------------------------ shared pieces
    def find_spans(self, length: int, positions: Tensor | None) -> list[Span]:
        """Every media item of the method's modalities in the decoder input, in (row, start)
        order: in the prompt, or where an earlier stage shortened it, in what it handed on."""
        up = self.upstream
        if up is not None and up.cols is not None and self.input_ids is not None:  # it rebuilt this call's
            return [up.hand_on(span) for span in self.prompt_spans(self.input_ids.shape[1], up.positions_in)]
        spans = self.prompt_spans(length, positions)
        return spans if up is None else [up.hand_on(span) for span in spans]

    def prompt_spans(self, length: int, positions: Tensor | None) -> list[Span]:
        """Every media item of the method's modalities in the prompt (`length` rows)."""
        ids = self.input_ids
        if ids is None or ids.shape[1] != length:
            return []
        grid = positions[-3:] if positions is not None and positions.dim() == 3 else None
        spans: list[Span] = []
        for modality in self.modalities:
            found = split_runs(runs(ids, self.adapter.tokens[modality]), self.adapter.item_size(modality))
            trailer = self.adapter.video_trailer if modality == "video" else 0
            item = 0
            for row, items in enumerate(self.adapter.item_runs(modality, found, self.outer_kwargs)):
                for item_runs, layout in items:
                    columns = torch.cat([torch.arange(start, start + run - trailer) for start, run in item_runs])
                    if layout is None:
                        ids3 = grid[:, row, columns.to(grid.device)] if grid is not None else None
                        layout = self.adapter.layout(modality, len(columns), ids3)
                    spans.append(Span(row, columns, modality, layout, item))
                    item += 1
        return spans

    def mask_2d(self, kwargs: dict) -> Tensor | None:
        """The call's 2-D attention mask: the decoder's, or the prompt's where the decoder gets
        4-D masks (Gemma 3)."""
        mask = kwargs.get("attention_mask")
        return mask if isinstance(mask, Tensor) and mask.dim() == 2 else self.outer_mask

    def positions(self, kwargs: dict, embeds: Tensor, start: int) -> Tensor:
        """The position ids the unpatched decoder would use for these rows."""
        position_ids = kwargs.get("position_ids")
        if position_ids is not None:
            return position_ids
        b, n = embeds.shape[:2]
        pos = torch.arange(start, start + n, device=embeds.device).expand(b, n)
        return pos[None].expand(3, b, n) if self.adapter.mrope else pos

    def extend(self, kwargs: dict, embeds: Tensor) -> Tensor:
        """At a decoding step: append the new rows to `cols` and return which columns of the
        shortened cache each row may see (B, L' + q), the step's mask applied."""
        b, q = embeds.shape[:2]
        mask2d = self.mask_2d(kwargs)
        new_cols = torch.arange(self.seen, self.seen + q, device=embeds.device).expand(b, q)
        full = mask2d if mask2d is not None else torch.ones(b, self.seen + q, dtype=torch.long, device=embeds.device)
        self.cols = torch.cat([self.cols, new_cols], dim=1)
        self.seen += q
        return valid_columns(self.cols, full)

    def hand_on(self, span: Span) -> Span:
        """`span`, found in this stage's decoder input, in the sequence the stage handed on
        (stages that shorten it say where its tokens went)."""
        return span

    def timespans(self, row: int, length: int) -> Tensor:
        """(length, 2) the first and last frame each row of the decoder input stands for, frames
        numbered across the row's videos one after another (-1 outside them)."""
        out = torch.full((length, 2), -1, dtype=torch.long)
        offset = 0
        for span in self.spans:
            frames = span.timespan() if span.row == row else None
            if frames is not None:
                out[span.columns] = frames + offset
                offset += int(frames.max()) + 1
        return out

    def media_scores(self, row: int, length: int) -> Tensor | None:
        """(length,) the scores an earlier stage's method returned for each media token of `row`
        of the decoder input (NaN elsewhere); None where a span of the row has none."""
        own = [s for s in self.spans if s.row == row]
        if any(s.scores is None for s in own):
            return None
        out = torch.full((length,), float("nan"))
        for span in own:
            out[span.columns] = span.scores.float()
        return out

    def media_columns(self, row: int) -> Tensor:
        """The original indices of every media token of `row`."""
        idx = [s.columns for s in self.spans if s.row == row]
        return torch.cat(idx) if idx else torch.empty(0, dtype=torch.long)

    def row_layout(self, row: int) -> tuple[int, ...] | None:
        """The grid of a row's media where it holds one item, else None."""
        own = [s for s in self.spans if s.row == row]
        return own[0].layout if len(own) == 1 else None
