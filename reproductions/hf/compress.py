"""`compress(model, method)`: run a registered method inside a transformers model.

Hooks, installed on entry and removed on exit (also when the body raises), act where the
method's declared `stage` says:

- `projector`: the media tokens entering the LLM are compressed, per image / video / audio item.
  On LLaVA the method sees the encoder features the projector reads (with the [CLS] token where
  the method takes one) and [CLS] attention and keys from that encoder layer, recomputed
  eagerly for that layer only; the compressed features are projected. On the other models it
  sees the projected rows of the LLM input. The LLM input, attention mask and position ids
  shrink to match; kept tokens keep their original (M-RoPE) position ids.
- `llm`: at decoder layer K = `method.layer` (or `layer=`, default 2) during prefill, the
  media rows are dropped (or merged) for layers >= K; the attention the method reads at layer
  K - 1 is recomputed from that layer's queries and keys (so SDPA works); layers < K cache
  every token, layers >= K the kept ones. All media tokens of a row form one candidate set.
- `cache`: at every decoding step, the method selects the media cache entries that layers >= K
  attend to at that step (DyCoke's stage 2); `reset()` is called at every prefill.
- `encoder`: ToMe-style merging inside every layer of a LLaVA model's CLIP or SigLIP encoder,
  with proportional attention and a per-layer schedule; see `encoder.py`.

Every generation mode works: num_return_sequences and beam search (LLaVA's expanded rows find
their image's compression by content), use_cache=False, sampling. `labels=` gives the model's own
loss on the kept positions (each kept token predicts the next kept one; with nothing dropped,
the unpatched loss). Refused up front, with what to do instead: nested compress contexts, static
caches, models on the meta device; a `torch.compile` wrapper is compressed through the module it
wraps. Trainable methods warn that they run with their current weights, and a context in which
no token of the method's modality appeared warns when it exits.

Signals follow the agreed convention: `attention` (B, heads, M, N_media) with M = every token
after the last media token up to the last prompt token, `text` the hidden states of those M
rows (the input of layer K), `keys` for the cache stage the layer-K keys with heads flattened;
`cls_attention` and `keys` for LLaVA's projector stage come from the encoder layer the projector
reads (keys averaged over heads, as ToMe and VisionZip use them). Where the projector stage acts
on the LLM input (every model but LLaVA), `text` is the prompt's real non-media token embeddings
of the item's row and `frames` each video frame's mean token: one embedding space for both, as
frame-selection methods require.

Differences from the official code (of the methods' own LLaVA / Qwen integrations):

- Position ids: kept tokens keep their original ids by default (the issue's contract, needed
  for M-RoPE). The official LLaVA code of projector-stage methods (VisionZip, PruMerge,
  FasterVLM, DivPrune, ...) builds a new, shorter sequence numbered 0, 1, ...: pass
  `positions="renumbered"` to reproduce that. FastV keeps the original ids, as here.
- A [CLS] token that a method keeps (VisionZip) has no placeholder of its own; it takes the
  position id of the image's first placeholder.
- Several images in one prompt: the projector stage compresses each image with the budget
  (as LLaVA's per-image encoding does); the llm and cache stages rank all media tokens of a
  row together (FastV's single image span, generalised).
- On LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL and Qwen2-Audio the projector stage compresses the
  projected tokens (the rows entering the LLM); there is no [CLS] and no encoder signal there.
  FastVID's `cls_attention` and `frames` (SigLIP's pooling head and its attention, in the
  released code) cannot be supplied: transformers' OneVision SigLIP has no head
  (`vision_use_head=False`).
- The llm stage's attention is recomputed in float32 from the captured queries and keys
  (eager attention computes it in the model's dtype); equal in float32, within rounding below.
- The cache stage masks the dropped entries for the step (the cache keeps them), as DyCoke's
  released code does (see `dycoke_cache`).
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..examples import example_tokens
from ..interface import Compression, Method, Tokens
from ..registry import get, methods
from .encoder import EncoderMerging
from .models import Adapter, adapter_for
from .sequence import Span, mask_4d, rebuild, runs, split_runs, take, valid_columns

#: signals each stage can supply, beyond the model-specific projector signals
STAGE_SIGNALS: dict[str, tuple[str, ...]] = {
    "projector": (),
    "encoder": ("keys",),
    "llm": ("attention", "text"),
    "cache": ("keys", "attention"),
}


@dataclass
class Record:
    """What one forward call (or one decoding step, for the cache stage) did, per batch row.

    `tokens_*` count the real (non-padding) tokens of the LLM sequence (for `cache`: the cache
    entries attended to at layers >= K); `media_*` the tokens of the compressed modality.
    """

    call: int
    stage: str
    tokens_before: list[int]
    tokens_after: list[int]
    media_before: list[int]
    media_after: list[int]

    @property
    def ratio(self) -> float:
        """Kept media tokens / media tokens over the batch."""
        return sum(self.media_after) / max(1, sum(self.media_before))


@dataclass
class Report:
    """Everything `compress` did, one `Record` per compressing call, in order."""

    method: str
    stage: str
    records: list[Record] = field(default_factory=list)
    calls: int = 0

    def __str__(self) -> str:
        lines = [f"{self.method} ({self.stage} stage): {self.calls} forward calls"]
        for r in self.records:
            lines.append(
                f"  call {r.call}: tokens {r.tokens_before} -> {r.tokens_after}, "
                f"media {r.media_before} -> {r.media_after}"
            )
        return "\n".join(lines)


def _rope(
    attn: nn.Module, q: Tensor, k: Tensor, position_embeddings: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Apply the rotary embedding exactly as the attention module's own file does."""
    module = sys.modules[type(attn).__module__]
    cos, sin = position_embeddings
    return module.apply_rotary_pos_emb(q, k, cos, sin)


def _queries_keys(
    attn: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """(B, heads, L, hd) queries and keys (kv heads repeated) of a decoder attention module."""
    b, n, _ = hidden.shape
    hd = attn.head_dim
    q = attn.q_proj(hidden).view(b, n, -1, hd).transpose(1, 2)
    k = attn.k_proj(hidden).view(b, n, -1, hd).transpose(1, 2)
    q, k = _rope(attn, q, k, position_embeddings)
    return q, k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)


def _row_of(comp: Compression, row: int) -> Compression:
    """Batch row `row` of a Compression, as a batch of one."""
    return Compression(
        *(t[row : row + 1] for t in (comp.features, comp.source, comp.positions, comp.sizes))
    )


def _cache_of(kwargs: dict) -> Any:
    """The KV cache a decoder module was called with: `cache=` from transformers 5.24 on,
    `past_key_values=` before (5.24 renamed the argument; the old name is still accepted)."""
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def _arg(args: tuple, kwargs: dict, name: str, position: int = 0) -> Any:
    return kwargs[name] if name in kwargs else (args[position] if len(args) > position else None)


#: models inside a compress context, and the session that holds each
_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Session:
    """The hooks of one `compress` context and the state they share across calls."""

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        layer: int | None = None,
        schedule: list[int] | None = None,
        positions: str = "original",
    ) -> None:
        self.model = model
        self.method = method
        self.layer = decoder_layer(method, layer)
        self.layer_option = layer
        self.schedule = schedule
        self.merging: EncoderMerging | None = None
        self.renumber = positions == "renumbered"
        self.shift: Tensor | None = None
        self.adapter: Adapter = adapter_for(model)
        self.stage = method.stage
        self.report = Report(method=method.name or type(method).__name__, stage=self.stage)
        self.handles: list[Any] = []
        self.implementation = self.adapter.language_model.config._attn_implementation
        self.modalities = [m for m in method.modality if m in self.adapter.tokens]
        self._check()
        self.input_ids: Tensor | None = None
        #: LLaVA: each image the projector encoded in this context, as (what the model puts into
        #: the image's placeholders, its compression, its [CLS] count); spans find theirs by
        #: content, so rows that generate() expands (num_return_sequences, beams) or calls that
        #: reuse the encoded images (use_cache=False) get the same compression
        self.encoded: list[tuple[Tensor, Compression, int]] = []
        self.spans: list[Span] = []
        self.cache: Any = None
        self.cols: Tensor | None = None  # original index of each compressed-group cache column
        self.seen = 0  # original tokens seen so far in this generation
        self.mask2d: Tensor | None = None
        self.group: dict[str, Any] | None = None  # kwargs for layers >= K
        self.captured: dict[str, Any] = {}
        self.inside_projector = False
        self.mask2d_step: Tensor | None = None
        self.in_prefill = False
        self.labels: Tensor | None = None
        self.saw_media = False  # whether any call carried tokens of the method's modality

    # ------------------------------------------------------------------ checks and install
    def _check(self) -> None:
        reason = why_unsupported(self.model, self.method, self.layer)
        if reason is not None:
            raise ValueError(reason)
        if self.schedule is not None and self.stage != "encoder":
            raise ValueError(
                f"schedule= sets merges per encoder layer, but {self.method.name} acts at the "
                f"{self.stage} stage: drop schedule="
            )
        if self.layer_option is not None and self.stage not in ("llm", "cache"):
            raise ValueError(
                f"layer= picks the decoder layer of llm / cache methods, but {self.method.name} "
                f"acts at the {self.stage} stage: drop layer="
            )
        if self.renumber and (
            self.stage not in ("projector", "encoder") or self.adapter.family.startswith("qwen2_")
        ):
            raise ValueError(
                "positions='renumbered' numbers the shorter sequence 0, 1, ... with 1-D RoPE ids: it "
                "applies to the projector and encoder stages of LLaVA, LLaVA-OneVision and "
                "Qwen2-Audio; pass positions='original' here"
            )

    def install(self) -> None:
        a = self.adapter
        active = _ACTIVE.get(self.model)
        if active is not None:
            raise ValueError(
                f"{type(self.model).__name__} is already inside compress(..., {active.method.name!r}) "
                f"({active.stage} stage); compress contexts do not nest: exit that one first, or "
                f"run {self.method.name!r} ({self.stage} stage) on its own"
            )
        _ACTIVE[self.model] = self
        self._hook(self.model.register_forward_pre_hook(self._take_labels, with_kwargs=True))
        self._hook(self.model.register_forward_hook(self._loss, with_kwargs=True))
        self._hook(a.outer.register_forward_pre_hook(self._outer, with_kwargs=True))
        self._hook(a.language_model.register_forward_pre_hook(self._decoder, with_kwargs=True))
        if self.stage == "encoder":
            self.merging = EncoderMerging(
                self.method, a.encoder_layers, self.schedule, special=a.extra["cls"]
            )
            self.merging.install()
            self._hook(a.projector.register_forward_hook(self._projector_after_merging))
        if self.stage == "projector" and a.projector is not None:
            self._hook(a.projector.register_forward_hook(self._projector))
            if a.feature_layer is not None:
                layer = a.encoder_layers[a.feature_layer]
                self._hook(layer.register_forward_hook(self._encoder_output))
                self._hook(
                    layer.self_attn.register_forward_pre_hook(
                        self._encoder_attention, with_kwargs=True
                    )
                )
        if self.stage in ("llm", "cache"):
            k = self.layer
            attn = a.layers[k - 1].self_attn
            self._hook(attn.register_forward_pre_hook(self._capture_attention, with_kwargs=True))
            self._hook(a.layers[k].register_forward_pre_hook(self._layer_k, with_kwargs=True))
            for layer in a.layers[k + 1 :]:
                self._hook(layer.register_forward_pre_hook(self._later_layer, with_kwargs=True))

    def _hook(self, handle: Any) -> None:
        self.handles.append(handle)

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        if self.merging is not None:
            self.merging.remove()
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]

    # ------------------------------------------------------------------ labels= (log-likelihood)
    def _take_labels(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Hold `labels` back from the model: its logits may come out shorter than the prompt,
        so `_loss` computes the loss on the kept positions instead."""
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
            labels = take(labels, self.cols.to(labels.device), dim=1, fill=-100)
        vocab = module.config.get_text_config().vocab_size
        loss = module.loss_function(logits=logits, labels=labels, vocab_size=vocab)
        if isinstance(output, tuple):
            return (loss, *output)
        return type(output)(loss=loss, **{key: value for key, value in output.items() if key != "loss"})

    # ------------------------------------------------------------------ outer model
    def _outer(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.report.calls += 1
        ids = _arg(args, kwargs, "input_ids")
        self.input_ids = ids if isinstance(ids, Tensor) else None

    # ------------------------------------------------------------------ spans
    def _find_spans(self, length: int, positions: Tensor | None) -> list[Span]:
        ids = self.input_ids
        if ids is None or ids.shape[1] != length:
            return []
        grid = positions[-3:] if positions is not None and positions.dim() == 3 else None
        spans: list[Span] = []
        for modality in self.modalities:
            found = split_runs(
                runs(ids, self.adapter.tokens[modality]), self.adapter.item_size(modality)
            )
            item = 0
            for row, items in enumerate(found):
                for start, length_ in items:
                    n = length_ - (self.adapter.video_trailer if modality == "video" else 0)
                    ids3 = grid[:, row, start : start + n] if grid is not None else None
                    layout = self.adapter.layout(modality, n, ids3)
                    spans.append(Span(row, start, n, modality, layout, item))
                    item += 1
        return spans

    # ------------------------------------------------------------------ LLaVA projector
    def _encoder_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.inside_projector or not {"cls_attention", "keys"} & set(self.method.needs):
            return
        hidden = _arg(args, kwargs, "hidden_states")
        b, n, _ = hidden.shape
        k = module.k_proj(hidden).view(b, n, module.num_heads, -1).transpose(1, 2)
        self.captured["keys"] = k.mean(1)
        if not self.adapter.extra["cls"]:
            return
        q = module.q_proj(hidden).view(b, n, module.num_heads, -1).transpose(1, 2)
        # eager attention of the [CLS] row, for this one layer (ToMe / VisionZip read keys
        # averaged over heads)
        scores = (q[:, :, :1].float() @ k.float().transpose(-1, -2)) * module.scale
        self.captured["cls_attention"] = scores.softmax(-1)[:, :, 0].to(hidden.dtype)

    def _encoder_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.inside_projector:
            self.captured["hidden"] = output[0] if isinstance(output, tuple) else output

    def _projector(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if self.inside_projector:
            return None
        features = args[0]
        special = 0
        wants_cls = self.method.special_tokens is not None and 0 not in self.method.special_tokens
        drop = self.adapter.encoder_special
        if wants_cls and drop and "hidden" in self.captured:
            features, special, drop = self.captured["hidden"], drop, 0
        signals = {}
        for name in self.method.needs:
            value = self.captured[name]
            signals[name] = value[:, :, drop:] if name == "cls_attention" else value[:, drop:]
        side = self.adapter.extra["patches_per_side"]
        layout = (side, side) if features.shape[1] - special == side * side else None
        tokens = Tokens(features=features, layout=layout, special=special, **signals)
        comp = self.method(tokens)
        self.inside_projector = True
        try:
            projected = module(comp.features)
        finally:
            self.inside_projector = False
        projected_comp = Compression(projected, comp.source, comp.positions, comp.sizes)
        self.encoded = [(output[i], _row_of(projected_comp, i), special) for i in range(features.shape[0])]
        return None

    def _projector_after_merging(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        """Record the merged, projected tokens of each image; hand the model a placeholder
        tensor of the unmerged size so its own placeholder check holds (the decoder hook
        replaces every span with the recorded tokens)."""
        drop = self.adapter.encoder_special
        merged = self.merging.compression_at(self.adapter.feature_layer, output)
        positions, sizes, source = merged.positions[:, drop:], merged.sizes[:, drop:], merged.source
        if drop:
            source = torch.where(source >= drop, source - drop, torch.full_like(source, -1))
        comp = Compression(output, source, positions, sizes)
        cls = self.adapter.extra["cls"]
        # the placeholder: every token the model expects, holding the merged token it went to
        # (ToMe's unmerge), so each image's placeholder content identifies its compression
        slots = (merged.source[:, drop:] - drop).clamp(min=0)  # a dropped token: any slot will do
        placeholder = torch.gather(output, 1, slots[..., None].expand(-1, -1, output.shape[2]))
        self.encoded = [(placeholder[i], _row_of(comp, i), cls) for i in range(output.shape[0])]
        return placeholder

    # ------------------------------------------------------------------ decoder entry
    def _prefill(self, cache: Any) -> bool:
        return cache is None or cache.get_seq_length() == 0

    def _decoder(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return None
        cache = _cache_of(kwargs)
        self.in_prefill = self._prefill(cache)
        if self.in_prefill:
            return self._decoder_prefill(args, kwargs, embeds, cache)
        if cache is not self.cache:
            return None
        if self.stage == "cache":
            mask2d = kwargs.get("attention_mask")
            self.mask2d_step = mask2d if isinstance(mask2d, Tensor) and mask2d.dim() == 2 else None
            self.seen += embeds.shape[1]
            return None
        if self.cols is not None:
            return self._decoder_decode(args, kwargs, embeds)
        return None

    def _positions(self, kwargs: dict, embeds: Tensor, start: int) -> Tensor:
        """The position ids the unpatched decoder would use for these rows."""
        position_ids = kwargs.get("position_ids")
        if position_ids is not None:
            return position_ids
        b, n = embeds.shape[:2]
        pos = torch.arange(start, start + n, device=embeds.device).expand(b, n)
        if self.adapter.family in ("qwen2_vl", "qwen2_5_vl"):
            pos = pos[None].expand(3, b, n)
        return pos

    def _decoder_prefill(self, args: tuple, kwargs: dict, embeds: Tensor, cache: Any):
        if getattr(cache, "is_compileable", False):
            raise ValueError(
                f"{type(self.model).__name__} with {self.method.name} ({self.stage} stage): a static "
                f"cache ({type(cache).__name__}) has a fixed length that a compressed sequence does not "
                "fill; generate with the default dynamic cache (drop cache_implementation='static' "
                "or pass a DynamicCache)"
            )
        self.cache, self.cols, self.group, self.mask2d_step = cache, None, None, None
        b, n = embeds.shape[:2]
        self.seen = n
        mask2d = kwargs.get("attention_mask")
        self.mask2d = mask2d if isinstance(mask2d, Tensor) and mask2d.dim() == 2 else None
        self.spans = self._find_spans(n, kwargs.get("position_ids"))
        self.saw_media |= bool(self.spans)
        if hasattr(self.method, "reset"):
            self.method.reset()
        if self.stage not in ("projector", "encoder") or not self.spans:
            return None
        compressions = self._compress_spans(embeds)
        new, index = rebuild(embeds, self.spans, compressions)
        self._record(index, embeds.shape[1], compressions)
        if (
            index.shape[1] == n
            and bool((index == torch.arange(n, device=index.device)).all())
            and torch.equal(new, embeds)
        ):
            return None  # nothing changed: leave the call exactly as it was
        self.cols = index
        kwargs = dict(kwargs)
        kwargs["inputs_embeds"] = new
        kwargs["attention_mask"] = valid_columns(index, self.mask2d).long()
        kwargs["position_ids"] = take(self._positions(kwargs, embeds, 0), index, dim=-1, fill=1)
        if self.renumber:  # the shorter sequence numbered 0, 1, ... as LLaVA's own code does
            valid = kwargs["attention_mask"].bool()
            renumbered = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)
            self.shift = kwargs["position_ids"][:, -1] - renumbered[:, -1]
            kwargs["position_ids"] = renumbered
        return args, kwargs

    def _compress_spans(self, embeds: Tensor) -> dict[int, tuple[Compression, int]]:
        """Compression of every span: from the projector hook (LLaVA) or of the LLM input rows,
        batched over spans of one shape."""
        out: dict[int, tuple[Compression, int]] = {}
        groups: dict[tuple, list[int]] = {}
        for i, span in enumerate(self.spans):
            if span.modality == "image" and self.adapter.projector is not None:
                out[i] = self._encoded_image(embeds, span)
            elif self.stage == "projector":  # encoder-stage merges exist only via the encoder
                groups.setdefault((span.length, span.layout, span.modality), []).append(i)
        needs_text = "text" in self.method.needs  # prompts differ in length: one call per span
        batches = [[i] for m in groups.values() for i in m] if needs_text else groups.values()
        for members in batches:
            first = self.spans[members[0]]
            rows = torch.stack(
                [
                    embeds[
                        self.spans[i].row, self.spans[i].start : self.spans[i].start + first.length
                    ]
                    for i in members
                ]
            )
            signals = self._sequence_signals(embeds, first, rows)
            comp = self.method(Tokens(features=rows, layout=first.layout, **signals))
            for j, i in enumerate(members):
                out[i] = (_row_of(comp, j), 0)
        return out

    def _encoded_image(self, embeds: Tensor, span: Span) -> tuple[Compression, int]:
        """The compression the projector hook made of the image in this span, found by the
        span's content (the projected features the model placed there)."""
        piece = embeds[span.row, span.start : span.start + span.length]
        for placed, comp, special in self.encoded:
            if placed.shape == piece.shape and torch.equal(placed.to(piece.dtype), piece):
                return comp, special
        raise RuntimeError(
            f"{self.method.name}: the image at row {span.row}, tokens {span.start}-"
            f"{span.start + span.length - 1} was not encoded through {type(self.model).__name__}'s "
            "projector inside this compress context (image features computed outside it, e.g. "
            "passed as mm_encoder_outputs or inputs_embeds, cannot be compressed at the encoder "
            "output): pass pixel_values inside the context"
        )

    def _sequence_signals(self, embeds: Tensor, span: Span, rows: Tensor) -> dict[str, Tensor]:
        """`text` and `frames` for media compressed at the LLM input, in its embedding space:
        the prompt's text tokens (every real non-media token of the span's row) and the mean of
        each frame's tokens of a video laid out (T, H, W)."""
        signals: dict[str, Tensor] = {}
        if "frames" in self.method.needs and span.layout is not None and len(span.layout) == 3:
            t = span.layout[0]
            signals["frames"] = rows.reshape(rows.shape[0], t, -1, rows.shape[-1]).mean(2)
        if "text" in self.method.needs:
            text = torch.ones(embeds.shape[1], dtype=torch.bool, device=embeds.device)
            if self.mask2d is not None:
                text &= self.mask2d[span.row].bool().to(embeds.device)
            for other in self.spans:
                if other.row == span.row:
                    text[other.start : other.start + other.length] = False
            signals["text"] = embeds[span.row, text][None]
        return signals

    def _record(
        self, index: Tensor, before_len: int, compressions: dict[int, tuple[Compression, int]]
    ) -> None:
        b = index.shape[0]
        real = (
            self.mask2d.bool()
            if self.mask2d is not None
            else torch.ones(b, before_len, dtype=torch.bool)
        )
        before = real.sum(1).tolist()
        after = valid_columns(index, self.mask2d).sum(1).tolist()
        media_before = [sum(s.length for s in self.spans if s.row == r) for r in range(b)]
        media_after = [
            sum(
                compressions[i][0].count
                for i, s in enumerate(self.spans)
                if s.row == r and i in compressions
            )
            for r in range(b)
        ]
        self.report.records.append(
            Record(self.report.calls, self.stage, before, after, media_before, media_after)
        )

    def _decoder_decode(self, args: tuple, kwargs: dict, embeds: Tensor):
        q = embeds.shape[1]
        b = embeds.shape[0]
        mask2d = kwargs.get("attention_mask")
        mask2d = mask2d if isinstance(mask2d, Tensor) and mask2d.dim() == 2 else None
        new_cols = torch.arange(self.seen, self.seen + q, device=embeds.device).expand(b, q)
        if mask2d is None:
            full = torch.ones(b, self.seen + q, dtype=torch.long, device=embeds.device)
        else:
            full = mask2d
        cols = torch.cat([self.cols, new_cols], dim=1)
        valid = valid_columns(cols, full)
        kwargs = dict(kwargs)
        if self.stage in ("projector", "encoder"):
            kwargs["attention_mask"] = valid.long()
            kwargs["position_ids"] = self._positions(kwargs, embeds, self.seen)
            if self.renumber:
                kwargs["position_ids"] = kwargs["position_ids"] - self.shift[:, None]
        else:
            dtype = embeds.dtype
            self.group = {"attention_mask": mask_4d(valid, q, self.implementation, dtype)}
        self.cols = cols
        self.seen += q
        return args, kwargs

    # ------------------------------------------------------------------ llm / cache stages
    def _capture_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = _arg(args, kwargs, "hidden_states")
        self.captured["attn_input"] = (module, hidden, kwargs.get("position_embeddings"))

    def _media_columns(self, row: int) -> Tensor:
        idx = [torch.arange(s.start, s.start + s.length) for s in self.spans if s.row == row]
        return torch.cat(idx) if idx else torch.empty(0, dtype=torch.long)

    def _attention_rows(
        self, rows_of: list[Tensor], columns_of: list[Tensor], cache: Any
    ) -> list[Tensor]:
        """Per batch row, the (heads, M, N) attention that rows_of[b] pay to columns_of[b] at
        layer K - 1, softmax over every column the row may see (causal, padding), in float32.

        Queries are projected for the rows that need them only; keys are read from layer
        K - 1's cache when it holds this prefill (it has run already), else projected."""
        module, hidden, (cos, sin) = self.captured["attn_input"]
        n = hidden.shape[1]
        start = min(int(rows[0]) for rows in rows_of)
        b, hd = hidden.shape[0], module.head_dim
        q = module.q_proj(hidden[:, start:]).view(b, n - start, -1, hd).transpose(1, 2)
        q, _ = _rope(module, q, q, (cos[:, start:], sin[:, start:]))
        cached = (
            cache.layers[self.layer - 1]
            if cache is not None and len(cache.layers) >= self.layer
            else None
        )
        if (
            cached is not None
            and getattr(cached, "keys", None) is not None
            and cached.keys.shape[2] == n
        ):
            k = cached.keys
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        else:
            _, k = _queries_keys(module, hidden, (cos, sin))
        out = []
        for row, (rows, cols) in enumerate(zip(rows_of, columns_of, strict=True)):
            rows = rows.to(q.device)
            scores = (
                q[row][:, rows - start].float() @ k[row].float().transpose(-1, -2)
            ) * module.scaling
            seen = torch.arange(n, device=q.device)[None, :] <= rows[:, None]
            if self.mask2d is not None:
                seen = seen & self.mask2d[row, -n:].bool().to(q.device)[None, :]
            scores = scores.masked_fill(~seen[None], float("-inf"))
            out.append(scores.softmax(-1)[:, :, cols.to(q.device)])
        return out

    def _layer_k(self, module: nn.Module, args: tuple, kwargs: dict):
        hidden = _arg(args, kwargs, "hidden_states")
        cache = _cache_of(kwargs)
        if self.stage == "cache":
            if not self.in_prefill and cache is self.cache and self.spans:
                self._cache_step(cache, hidden)
            return None if self.in_prefill else self._apply_group(args, kwargs)
        if not self.in_prefill:
            return self._apply_group(args, kwargs)
        if not self.spans or "attn_input" not in self.captured:
            return None
        return self._llm_prefill(args, kwargs, hidden)

    def _llm_prefill(self, args: tuple, kwargs: dict, hidden: Tensor):
        b, n = hidden.shape[:2]
        columns = [self._media_columns(r).to(hidden.device) for r in range(b)]
        # M: every row after the last media token up to the last prompt token
        rows = [
            torch.arange(min(int(c.max()) + 1 if len(c) else n - 1, n - 1), n, device=hidden.device)
            for c in columns
        ]
        attention = self._attention_rows(rows, columns, _cache_of(kwargs))
        comps = self._llm_compressions(hidden, columns, rows, attention)
        new, index = self._rebuild_rows(hidden, columns, comps)
        self._record_llm(index, n, columns, comps)
        if (
            index.shape[1] == n
            and bool((index == torch.arange(n, device=index.device)).all())
            and torch.equal(new, hidden)
        ):
            return None
        self.cols = index
        valid = valid_columns(index, self.mask2d[:, -n:] if self.mask2d is not None else None)
        group: dict[str, Any] = {}
        if self.implementation == "sdpa" and bool(valid.all()):
            group["attention_mask"] = None  # plain causal: SDPA's is_causal path, as unpatched
        else:
            group["attention_mask"] = mask_4d(
                valid, index.shape[1], self.implementation, hidden.dtype
            )
        cos, sin = kwargs["position_embeddings"]
        group["position_embeddings"] = (take(cos, index, dim=1), take(sin, index, dim=1))
        pos = kwargs.get("position_ids")
        if isinstance(pos, Tensor):
            group["position_ids"] = take(pos, index, dim=-1, fill=1)
        self.group = group
        args = (new, *args[1:]) if args else args
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": new}
        return self._apply_group(args, kwargs)

    def _llm_compressions(
        self, hidden: Tensor, columns: list[Tensor], rows: list[Tensor], attention: list[Tensor]
    ) -> list[Compression | None]:
        """The method on each row's media tokens (one call for the batch where every row has
        as many media tokens and query rows; else one per row). None: a row without media."""
        b = hidden.shape[0]

        def tokens(r: slice | int, layout: tuple[int, ...] | None) -> Tokens:
            picked = range(b)[r] if isinstance(r, slice) else [r]
            return Tokens(
                features=torch.stack([hidden[i, columns[i]] for i in picked]),
                layout=layout,
                attention=torch.stack([attention[i] for i in picked]).to(hidden.dtype),
                text=torch.stack([hidden[i, rows[i]] for i in picked]),
            )

        if len({(len(c), len(m)) for c, m in zip(columns, rows, strict=True)}) == 1:
            if not len(columns[0]):
                return [None] * b
            comp = self.method(tokens(slice(None), self._row_layout(0)))
            return [_row_of(comp, r) for r in range(b)]
        return [
            self.method(tokens(r, self._row_layout(r))) if len(columns[r]) else None
            for r in range(b)
        ]

    def _row_layout(self, row: int) -> tuple[int, ...] | None:
        own = [s for s in self.spans if s.row == row]
        return own[0].layout if len(own) == 1 else None

    def _rebuild_rows(
        self, hidden: Tensor, columns: list[Tensor], comps: list[Compression | None]
    ) -> tuple[Tensor, Tensor]:
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

    def _record_llm(
        self, index: Tensor, n: int, columns: list[Tensor], comps: list[Compression | None]
    ) -> None:
        b = index.shape[0]
        mask = self.mask2d[:, -n:] if self.mask2d is not None else None
        real = mask.bool() if mask is not None else torch.ones(b, n, dtype=torch.bool)
        after = valid_columns(index, mask).sum(1).tolist()
        media_after = [0 if c is None else c.count for c in comps]
        self.report.records.append(
            Record(
                self.report.calls,
                self.stage,
                real.sum(1).tolist(),
                after,
                [len(c) for c in columns],
                media_after,
            )
        )

    def _later_layer(self, module: nn.Module, args: tuple, kwargs: dict):
        return self._apply_group(args, kwargs)

    def _apply_group(self, args: tuple, kwargs: dict):
        if self.group is None:
            return None
        return args, {**kwargs, **self.group}

    def _cache_step(self, cache: Any, hidden: Tensor) -> None:
        """One decoding step of the cache stage: score the media entries, mask the dropped."""
        b, q = hidden.shape[:2]
        k = self.layer
        columns = [self._media_columns(r) for r in range(b)]
        if len({len(c) for c in columns}) != 1:
            raise ValueError(
                f"{self.method.name}: the rows of the batch hold different numbers of media "
                "tokens; the cache stage needs the same count in every row"
            )
        module, h, position_embeddings = self.captured["attn_input"]
        # layer K - 1 has already cached this step's key: its cache is every column
        qs, _ = _queries_keys(module, h, position_embeddings)
        keys = cache.layers[k - 1].keys
        keys = keys.repeat_interleave(qs.shape[1] // keys.shape[1], dim=1)
        total = keys.shape[2]
        scores = (qs[:, :, -1:].float() @ keys.float().transpose(-1, -2)) * module.scaling
        full = (
            self.mask2d_step
            if self.mask2d_step is not None
            else torch.ones(b, total, dtype=torch.bool)
        )
        scores = scores.masked_fill(
            ~full[:, None, None, -total:].bool().to(scores.device), float("-inf")
        )
        probs = scores.softmax(-1)
        cols = torch.stack(columns).to(probs.device)
        attention = torch.stack([probs[r, :, :, cols[r]] for r in range(b)]).to(hidden.dtype)
        kv = cache.layers[k].keys  # (B, kv heads, C, hd), the current token not yet added
        flat = kv.transpose(1, 2).reshape(b, kv.shape[2], -1)
        features = torch.stack([flat[r, cols[r]] for r in range(b)])
        comp = self.method(
            Tokens(features=features, layout=self._row_layout(0), attention=attention)
        )
        keep = torch.ones(b, total, dtype=torch.bool, device=probs.device)
        for r in range(b):
            keep[r, cols[r]] = comp.source[r] >= 0
        valid = keep & full[:, -total:].bool().to(keep.device)
        self.group = {"attention_mask": mask_4d(valid, q, self.implementation, hidden.dtype)}
        before = full[:, -total:].sum(1).tolist()
        self.report.records.append(
            Record(
                self.report.calls,
                self.stage,
                before,
                valid.sum(1).tolist(),
                [len(c) for c in columns],
                [int((comp.source[r] >= 0).sum()) for r in range(b)],
            )
        )


def _output_width(method: Method) -> str | None:
    """A reason where `method` changes the feature width (pixel shuffle, frame stacking): its
    output needs a projector trained for the new width, which the model does not have."""
    takes_none = method.special_tokens is None or 0 in method.special_tokens
    tokens = example_tokens(method, dim=8, special=0 if takes_none else None)
    try:
        out = method(tokens)
    except ValueError:
        return None
    if out.features.shape[-1] != tokens.features.shape[-1]:
        return (
            f"{method.name} turns {tokens.features.shape[-1]}-wide tokens into "
            f"{out.features.shape[-1]}-wide ones, which need a projector trained for that width; "
            "it cannot run inside a pretrained model's projector stage"
        )
    return None


#: the decoder layer K of llm / cache methods that do not declare one (FastV's and SparseVLM's
#: first pruning layer)
DEFAULT_LAYER = 2


def decoder_layer(method: Method, layer: int | None = None) -> int | None:
    """K for an llm / cache method: its own `layer` field, else `layer`, else DEFAULT_LAYER."""
    own = getattr(method, "layer", None)
    return own if own is not None else (layer if layer is not None else DEFAULT_LAYER)


def why_unsupported(model: nn.Module, method: Method | str, layer: int | None = None) -> str | None:
    """Why `compress(model, method)` cannot run (a sentence naming what would), or None.

    `method` is a `Method` or a registry name (built with its example hyperparameters). It never
    raises for an unsupported model or method: the reason is the answer."""
    model = _unwrapped(model)
    if isinstance(method, str):
        cls = methods().get(method)
        if cls is None:
            return f"{method!r} is not a registered method; registered: {', '.join(sorted(methods()))}"
        method = cls(**cls.example)
    try:
        adapter_for(model)
    except ValueError as error:
        return str(error)
    a, m = adapter_for(model), method
    model_name = type(model).__name__
    if not any(x in a.tokens for x in m.modality):
        return (
            f"{m.name} works on {'/'.join(m.modality)} tokens but {model_name} carries "
            f"{'/'.join(a.tokens)} tokens: pick a method for {'/'.join(a.tokens)}"
        )
    if m.stage == "encoder" and (a.encoder_layers is None or "image" not in m.modality):
        return (
            f"{m.name} is an encoder-stage method; reproductions.hf merges inside the CLIP / "
            "SigLIP encoder of LlavaForConditionalGeneration models whose projector reads one "
            f"encoder layer, which this {model_name} is not (LLaVA-OneVision and Qwen2-VL pack "
            "or merge the encoder output into fixed grids)"
        )
    available = set(STAGE_SIGNALS[m.stage])
    if m.stage == "projector":
        # at the LLM input (no projector hook): the prompt's text embeddings and, for videos,
        # each frame's mean token (see _Session._sequence_signals)
        available |= set(a.signals) if a.projector is not None else {"text", "frames"}
    if m.stage == "projector":
        width = _output_width(m)
        if width is not None:
            return width
    missing = [s for s in m.needs if s not in available]
    if missing:
        return (
            f"{m.name} needs {', '.join(missing)}, which {model_name} cannot supply at the "
            f"{m.stage} stage (it supplies: {', '.join(sorted(available)) or 'no signals'})"
        )
    cls_token = m.stage == "projector" and a.projector is not None and a.encoder_special > 0
    if m.special_tokens is not None and 0 not in m.special_tokens and not cls_token:
        return (
            f"{m.name} takes {m.special_tokens} leading [CLS] tokens, which {model_name} does not "
            f"have at the {m.stage} stage (only LLaVA's CLIP encoder has one, at the projector stage)"
        )
    if m.stage in ("llm", "cache"):
        layer = decoder_layer(m, layer)
        if not isinstance(layer, int) or not 1 <= layer < len(a.layers):
            return (
                f"{m.name}.layer={layer!r}: the {m.stage} stage needs a decoder layer K in "
                f"[1, {len(a.layers) - 1}] (its attention comes from layer K - 1)"
            )
        implementation = a.language_model.config._attn_implementation
        if implementation not in ("eager", "sdpa"):
            return (
                f"attn_implementation={implementation!r}: the {m.stage} stage builds its own "
                "attention masks; load the model with attn_implementation='sdpa' or 'eager'"
            )
    return None


@contextmanager
def compress(
    model: nn.Module,
    method: Method | str,
    layer: int | None = None,
    schedule: list[int] | None = None,
    positions: str = "original",
    **options: Any,
) -> Iterator[Report]:
    """Run `model` with `method` applied where its stage says; yields the `Report`.

    `method` is a `Method` or a registry name, built with `options` as its hyperparameters
    (`compress(model, "fastv", keep=64)`). `layer` is the decoder layer K of an llm / cache
    method that has no `layer` hyperparameter of its own (default 2); for one that has, it is
    passed to the method. `schedule` gives an encoder-stage method with a merge count `r` one
    count per encoder layer (default: its `r` in every layer). `positions`: "original" (kept
    tokens keep their position ids, M-RoPE included) or "renumbered" (the shorter sequence is
    numbered 0, 1, ..., which is what the official LLaVA code of projector-stage methods does,
    since LLaVA builds a new, shorter sequence). Every hook is removed on exit, also when the
    body raises.
    """
    if isinstance(method, str):
        cls = methods().get(method)
        if layer is not None and cls is not None and "layer" in cls.__dataclass_fields__:
            options["layer"], layer = layer, None
        method = get(method, **options)
    elif options:
        raise ValueError(
            f"options {sorted(options)} are hyperparameters: pass a method name with them, e.g. "
            f"compress(model, {method.name!r}, ...), or build the method yourself"
        )
    if not isinstance(method, Method):
        raise ValueError(
            f"method must be a reproductions Method or a registry name, got {type(method).__name__}"
        )
    if layer is not None and getattr(method, "layer", None) is not None and layer != method.layer:
        raise ValueError(
            f"layer={layer} disagrees with {method.name}.layer={method.layer}: pass one of them"
        )
    if positions not in ("original", "renumbered"):
        raise ValueError(f"positions={positions!r}: pass 'original' or 'renumbered'")
    model = _unwrapped(model)
    if any(parameter.is_meta for parameter in model.parameters()):
        raise ValueError(
            f"{type(model).__name__} has parameters on the meta device (weights not loaded), so "
            f"{method.name} cannot run in it: load the weights first (from_pretrained without "
            "device_map='meta', or load_state_dict(..., assign=True))"
        )
    if method.trainable:
        warnings.warn(
            f"{method.name} is a trainable method: it runs with the weights it has now (random "
            "unless you trained or loaded them), so its outputs mean nothing until then",
            stacklevel=3,
        )
    session = _Session(model, method, layer, schedule, positions)
    try:
        session.install()
        yield session.report
    finally:
        session.remove()
    if session.report.calls and not session.saw_media:
        warnings.warn(
            f"{method.name} compressed nothing in {session.report.calls} forward calls of "
            f"{type(model).__name__}: no {'/'.join(method.modality)} tokens reached its "
            f"{method.stage} stage (is the prompt's media of another modality?)",
            stacklevel=3,
        )


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module a `torch.compile` wrapper holds (hooks go on it; the wrapper recompiles)."""
    return getattr(model, "_orig_mod", model) if isinstance(model, torch._dynamo.eval_frame.OptimizedModule) else model
