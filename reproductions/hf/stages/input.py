"""The stages that hand the language model a shorter input (projector and encoder): at the
decoder's prefill every media span is replaced by its compression, each kept token at the
original index it stands at; the attention mask and the position ids shrink to match, and later
decoding steps see only the kept cache columns.

On LLaVA the compression of each image is made where the projector reads the encoder (a hook
there records it in `encoded`); a span finds its image's compression by content, the projected
features the model placed in it, so rows that generate() expands (num_return_sequences, beams)
and calls that reuse encoded images (use_cache=False) get the same one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ...interface import Compression
from ..report import Record
from ..sequence import Span, placed_here, rebuild, take, unchanged, valid_columns
from .base import Stage


class InputStage(Stage):
    """Replace the media spans of the LLM input; subclasses say how each span is compressed."""

    def __init__(self, *args, positions: str = "original", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: LLaVA: each image the projector encoded in this context, as (what the model puts into
        #: the image's placeholders, its compression, its [CLS] count)
        self.encoded: list[tuple[Tensor, Compression, int]] = []
        if positions == "renumbered" and self.adapter.mrope:
            raise ValueError(
                "positions='renumbered' numbers the shorter sequence 0, 1, ... with 1-D RoPE ids: it "
                "applies to the projector and encoder stages of LLaVA, LLaVA-OneVision and "
                "Qwen2-Audio; pass positions='original' here"
            )
        self.renumber = positions == "renumbered"
        self.shift: Tensor | None = None
        #: the last prefill's compressed spans by (row, start): the rows their outputs took in
        #: the sequence handed on, ascending, the frames each output stands for and its scores
        self.handed: dict[tuple[int, int], tuple[Tensor, Tensor | None, Tensor | None]] = {}

    def compress_spans(self, embeds: Tensor) -> dict[int, tuple[Compression, int]]:
        """Span index -> (its compression, the [CLS] tokens the compression leads with)."""
        raise NotImplementedError

    def encoded_image(self, embeds: Tensor, span: Span) -> tuple[Compression, int]:
        """The compression a hook made of the image in this span, found by the span's content."""
        piece = embeds[span.row, span.columns.to(embeds.device)]
        for placed, comp, special in self.encoded:
            if placed_here(placed, piece):
                return comp, special
        inputs = "input_features" if span.modality == "audio" else "pixel_values"
        raise RuntimeError(
            f"{self.method.name}: the {span.modality} at row {span.row}, tokens {span.start}-"
            f"{int(span.columns[-1])} was not encoded through {type(self.model).__name__}'s "
            f"projector inside this compress context ({span.modality} features computed outside "
            "it, e.g. passed as mm_encoder_outputs or inputs_embeds, cannot be compressed at the "
            f"encoder output): pass {inputs} inside the context"
        )

    def prefill(self, args: tuple, kwargs: dict, embeds: Tensor) -> tuple[tuple, dict] | None:
        self.handed = {}
        if not self.spans:
            return None
        n = embeds.shape[1]
        compressions = self.compress_spans(embeds)
        new, index, slots = rebuild(embeds, self.spans, compressions)
        self.record(index, n, compressions)
        self.handed = {}
        for i, rows in slots.items():
            span, order = self.spans[i], rows.argsort()
            (comp, _), frames = compressions[i], output_frames(span, *compressions[i])
            scores = None if comp.scores is None else comp.scores[0][order.to(comp.scores.device)].cpu()
            self.handed[(span.row, span.start)] = (rows[order].cpu(), None if frames is None else frames[order], scores)
        if unchanged(embeds, new, index):
            return None  # nothing changed: leave the call exactly as it was (`hand_on`: its scores)
        self.cols = index
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = new
        kwargs["position_ids"] = take(self.positions(kwargs, embeds, 0), index, dim=-1, fill=1)
        kwargs["attention_mask"] = self.adapter.prefill_mask(
            valid_columns(index, self.mask2d), index, self.input_ids, new, kwargs["position_ids"], self.cache
        )
        if kwargs.get("deepstack_visual_embeds") is not None:
            kwargs.update(self.deepstack(kwargs, compressions, index))
        if self.renumber:  # the shorter sequence numbered 0, 1, ... as LLaVA's own code does
            valid = valid_columns(index, self.mask2d)
            renumbered = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)
            self.shift = kwargs["position_ids"][:, -1] - renumbered[:, -1]
            kwargs["position_ids"] = renumbered
        return args, kwargs

    def hand_on(self, span: Span) -> Span:
        done = self.handed.get((span.row, span.start))
        if self.cols is None:  # the call went on unchanged: the spans as they were, with scores
            return span if done is None else replace(span, scores=done[2])
        if done is None:  # a span this stage left alone: its tokens, where they moved
            row = self.cols[span.row]
            return replace(span, columns=torch.isin(row, span.columns.to(row.device)).nonzero().squeeze(1).cpu())
        return replace(span, columns=done[0], layout=None, frames=done[1], scores=done[2])

    def deepstack(
        self, kwargs: dict, compressions: dict[int, tuple[Compression, int]], index: Tensor
    ) -> dict[str, Any]:
        """Qwen3-VL's DeepStack inputs for the shortened sequence: the visual positions that
        remain, and each layer's features of every remaining visual token (a kept token keeps its
        own; a merged token takes the mean over the tokens merged into it; a token that stands for
        no input token, a learned query's, takes zeros)."""
        mask = kwargs["visual_pos_masks"]
        flat = mask.flatten().long().cumsum(0).view_as(mask) - 1  # each visual token's row in the features
        owner = {}  # (row, original index) -> the input tokens of its span that it stands for
        for i, span in enumerate(self.spans):
            comp, special = compressions[i]
            source = comp.source[0, special:] - special
            for k, position in enumerate(comp.positions[0, special:].tolist()):
                members = span.columns[(source == k).nonzero().flatten().cpu()]
                owner[(span.row, int(span.columns[position]))] = members
        new_mask = take(mask.long(), index, dim=1, fill=0).bool()
        rows = []
        for b, p in new_mask.nonzero().tolist():
            original = int(index[b, p])
            members = owner.get((b, original), torch.tensor([original]))
            rows.append(flat[b, members.to(flat.device)])
        weights = torch.zeros(len(rows), int(mask.sum()), device=mask.device)
        for r, members in enumerate(rows):
            if len(members):  # a token that stands for no input token (a learned query) gets none
                weights[r, members] = 1.0 / len(members)
        embeds = [(weights.to(e.dtype) @ e) for e in kwargs["deepstack_visual_embeds"]]
        return {"visual_pos_masks": new_mask, "deepstack_visual_embeds": embeds}

    def decode(self, args: tuple, kwargs: dict, embeds: Tensor) -> tuple[tuple, dict] | None:
        if self.cols is None:
            return None
        start = self.seen
        valid = self.extend(kwargs, embeds)
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = valid.long()
        kwargs["position_ids"] = self.positions(kwargs, embeds, start)
        if self.renumber:
            kwargs["position_ids"] = kwargs["position_ids"] - self.shift[:, None]
        return args, kwargs

    def record(self, index: Tensor, before_len: int, compressions: dict[int, tuple[Compression, int]]) -> None:
        b = index.shape[0]
        real = self.mask2d.bool() if self.mask2d is not None else torch.ones(b, before_len, dtype=torch.bool)
        media_after = [
            sum(compressions[i][0].count for i, s in enumerate(self.spans) if s.row == r and i in compressions)
            for r in range(b)
        ]
        self.report.records.append(
            Record(
                self.report.calls,
                self.name,
                real.sum(1).tolist(),
                valid_columns(index, self.mask2d).sum(1).tolist(),
                [sum(s.length for s in self.spans if s.row == r) for r in range(b)],
                media_after,
            )
        )


def output_frames(span: Span, comp: Compression, special: int) -> Tensor | None:
    """(K, 2) the first and last frame each output token of a span's compression stands for,
    from its members' (a token that stands for none, a [CLS] or a learned query: every frame);
    None for a span without frames."""
    frames = span.timespan()
    if frames is None:
        return None
    source = comp.source[0, special:].cpu()
    kept = source >= 0
    low, high = int(frames[:, 0].min()), int(frames[:, 1].max())
    first = torch.full((comp.count,), high + 1).scatter_reduce(0, source[kept], frames[kept, 0], "amin")
    last = torch.full((comp.count,), low - 1).scatter_reduce(0, source[kept], frames[kept, 1], "amax")
    return torch.stack([first.where(first <= high, low), last.where(last >= low, high)], dim=-1)
