"""`compress(model, method)`: run a registered method inside a transformers model.

It only picks: the model family's adapter (`models/`), and the stage the method declares
(`stages/`), whose context installs the hooks on entry and removes them on exit, also when the
body raises. `why_unsupported` says why a (model, method) cell cannot run.

Every generation mode works: num_return_sequences and beam search, use_cache=False, sampling.
`labels=` gives the model's own loss on the kept positions (each kept token predicts the next
kept one; with nothing dropped, the unpatched loss). Refused up front, with what to do instead:
nested compress contexts, static caches, models on the meta device; a `torch.compile` wrapper
is compressed through the module it wraps. Trainable methods warn that they run with their
current weights, and a context in which no token of the method's modality appeared warns when
it exits.

Signals follow the agreed convention: `attention` (B, heads, M, N_media) with M = every token
after the last media token up to the last prompt token, `text` the hidden states of those M
rows (the input of layer K), `keys` for the cache stage the layer-K keys with heads flattened;
`cls_attention` and `keys` for LLaVA's projector stage come from the encoder layer the projector
reads (keys averaged over heads, as ToMe and VisionZip use them; `cls_from`: the last layer's
logits); `anyres` each anyres image token's place; `received` from the encoder layers the method
names (`Method.encoder_layers`), averaged over heads and query rows. Where the projector stage acts
on the LLM input (every model but LLaVA), `text` is the prompt's real non-media token embeddings
of the item's row and `frames` each video frame's mean token: one embedding space for both, as
frame-selection methods require.

Differences from the official code (of the methods' own LLaVA / Qwen integrations):

- Position ids: kept tokens keep their original ids by default (needed for M-RoPE). The official
  LLaVA code of projector-stage methods (VisionZip, PruMerge, FasterVLM, DivPrune, ...) builds a
  new, shorter sequence numbered 0, 1, ...: pass `positions="renumbered"` to reproduce that.
  FastV keeps the original ids, as here.
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

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..interface import Method
from ..registry import get, methods
from .models import adapter_for
from .report import Report
from .stages import STAGES, decoder_layer
from .stages.encoder import stage_signals, stage_special
from .stages.projector import at_projector_input, encoder_cls, projector_signals, received_layers


def _output_width(method: Method) -> str | None:
    """A reason where `method` changes the feature width (pixel shuffle, frame stacking): its
    output needs a projector trained for the new width, which the model does not have. Read
    from the method's declared `output_width`, at the width it reads (a learned-query method's
    own `dim`)."""
    width = getattr(method, "dim", 8)
    out = method.output_width(width)
    if out != width:
        return (
            f"{method.name} turns {width}-wide tokens into {out}-wide ones, which need a "
            "projector trained for that width; it cannot run inside a pretrained model's "
            "projector stage"
        )
    return None


def _modality_fits(method: Method, tokens: dict[str, int]) -> bool:
    """Whether the model carries tokens of a modality the method works on; a method that reads
    one modality as the signal of another (OmniZip: a video guided by its audio) needs them all,
    so a model without audio, or without video, can never run it."""
    media = [signal for signal in method.needs if signal in ("image", "video", "audio")]
    if media:
        return all(x in tokens for x in (*method.modality, *media))
    return any(x in tokens for x in method.modality)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module a `torch.compile` wrapper holds (hooks go on it; the wrapper recompiles)."""
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        return model._orig_mod
    return model


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
        a = adapter_for(model)
    except ValueError as error:
        return str(error)
    m, model_name = method, type(model).__name__
    if not _modality_fits(m, a.tokens):
        together = any(x in m.needs for x in ("image", "video", "audio"))
        return (
            f"{m.name} works on {('+' if together else '/').join(m.modality)} tokens but {model_name} carries "
            f"{'/'.join(a.tokens)} tokens: pick a method for {'/'.join(a.tokens)}"
        )
    if m.stage in a.unsupported_stages:
        return f"{m.name} ({m.stage} stage) on {model_name}: {a.unsupported_stages[m.stage]}"
    carried = [x for x in m.modality if x in a.tokens]
    if all(x in a.unsupported for x in carried):
        return f"{m.name} on {model_name}: " + "; ".join(a.unsupported[x] for x in carried)
    if m.grid and not any(x in a.gridded for x in m.modality):
        return (
            f"{m.name} works on the grid of its tokens, but {model_name} packs its "
            f"{'/'.join(carried)} tokens with no regular grid (anyres tiles and newline tokens): "
            "pick a method that takes tokens without a layout"
        )
    if m.stage == "encoder" and (a.encoder_layers is None or "image" not in m.modality):
        return (
            f"{m.name} is an encoder-stage method; reproductions.hf merges inside the encoders of "
            "LLaVA (projector reading one layer), Gemma 3, Idefics3, InternVL and the Qwen ViTs, which this "
            f"{model_name} is not (its encoder's crops, tiles or pooling are not handled yet)"
        )
    available = set(STAGES[m.stage].signals)
    if m.stage == "projector":
        available |= projector_signals(a, m)
        width = _output_width(m)
        if width is not None:
            return width
    elif m.stage == "encoder":
        available |= stage_signals(a)
    missing = [s for s in m.needs if s not in available]
    if missing:
        where = (" (a layer's values exist where each encoder token is one patch, as in LLaVA; its [CLS] "
                 "attention where that encoder has a [CLS]: CLIP)") if m.stage == "encoder" else ""
        return (
            f"{m.name} needs {', '.join(missing)}, which {model_name} cannot supply at the "
            f"{m.stage} stage (it supplies: {', '.join(sorted(available)) or 'no signals'}){where}"
        )
    if m.stage == "projector" and m.cls_from == "last_logits" and not encoder_cls(a, m):
        return (f"{m.name} reads the [CLS] attention logits of the encoder's last layer, but {model_name}'s "
                "encoder has no [CLS] that its projector drops: pick one with CLIP (LLaVA-NeXT)")
    if m.stage == "projector" and "received" in m.needs:
        try:
            received_layers(a, m)
        except ValueError as error:
            return f"{m.name} on {model_name}: {error}"
    cls_token = (m.stage == "projector" and at_projector_input(a, m) and a.encoder_special > 0) or (
        m.stage == "encoder" and stage_special(a) > 0
    )
    if m.special_tokens is not None and 0 not in m.special_tokens and not cls_token:
        return (
            f"{m.name} takes {m.special_tokens} leading [CLS] tokens, which {model_name} does not "
            f"have at the {m.stage} stage (only CLIP and InternViT encoders have one: LLaVA's at the "
            "projector and encoder stages, InternVL's at the encoder stage)"
        )
    if m.stage in ("llm", "cache"):
        several = m.decoder_layers() if m.stage == "llm" else ()
        if several and layer is not None:
            return f"{m.name} acts at its layers {several}: set them on the method, not with layer="
        first = 0 if m.stage == "llm" else 1
        for k in several or (decoder_layer(m, layer),):
            if not isinstance(k, int) or not first <= k < len(a.layers):
                return (
                    f"{m.name}.layer={k!r}: the {m.stage} stage needs a decoder layer K in "
                    f"[{first}, {len(a.layers) - 1}] (its attention comes from layer K - 1"
                    + (", or layer 0's own at K = 0)" if first == 0 else ")")
                )
        k = min(several or (decoder_layer(m, layer),))
        if k < a.deepstack_layers:
            return (
                f"{m.name}.layer={k}: {model_name}'s DeepStack adds vision features to the visual "
                f"tokens after decoder layers 0-{a.deepstack_layers - 1}, which need every visual "
                f"token; pick layer >= {a.deepstack_layers}"
            )
        implementation = a.language_model.config._attn_implementation
        if implementation not in ("eager", "sdpa"):
            return (
                f"attn_implementation={implementation!r}: the {m.stage} stage builds its own "
                "attention masks; load the model with attn_implementation='sdpa' or 'eager'"
            )
    return None


def support(model: nn.Module, method: Method | str, layer: int | None = None) -> tuple[str, str | None]:
    """A support-matrix cell: ("runs", None); ("inherent", reason) where the method's modality is
    not the model's, the method changes the token width (no pretrained projector reads it), or
    it needs an input layout the model does not have (`anyres` crops); else ("missing", reason):
    something this integration could supply but does not yet."""
    reason = why_unsupported(model, method, layer)
    if reason is None:
        return "runs", None
    if isinstance(method, str):
        cls = methods().get(method)
        method = cls(**cls.example) if cls is not None else None
    try:
        adapter = adapter_for(_unwrapped(model))
    except ValueError:
        return "missing", reason
    inherent = method is not None and (
        not _modality_fits(method, adapter.tokens)
        or (method.stage == "projector" and _output_width(method) is not None)
        or ("anyres" in method.needs and getattr(adapter.tap, "packer", None) is None)
    )
    return ("inherent" if inherent else "missing"), reason


def _method(method: Method | str, layer: int | None, options: dict[str, Any]) -> tuple[Method, int | None]:
    """The Method to run, and the `layer` option left for the stage."""
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
        raise ValueError(f"method must be a reproductions Method or a registry name, got {type(method).__name__}")
    if layer is not None and getattr(method, "layer", None) is not None and layer != method.layer:
        raise ValueError(f"layer={layer} disagrees with {method.name}.layer={method.layer}: pass one of them")
    return method, layer


def stage_options(method: Method, layer: int | None, schedule: list[int] | None, positions: str) -> dict[str, Any]:
    """The options of the method's stage; refuses the options of another stage (public: the
    lmms-eval plugin checks them before it loads any weights)."""
    if positions not in ("original", "renumbered"):
        raise ValueError(f"positions={positions!r}: pass 'original' or 'renumbered'")
    if schedule is not None and method.stage != "encoder":
        raise ValueError(
            f"schedule= sets merges per encoder layer, but {method.name} acts at the "
            f"{method.stage} stage: drop schedule="
        )
    if layer is not None and method.stage not in ("llm", "cache"):
        raise ValueError(
            f"layer= picks the decoder layer of llm / cache methods, but {method.name} "
            f"acts at the {method.stage} stage: drop layer="
        )
    if positions == "renumbered" and method.stage not in ("projector", "encoder"):
        raise ValueError(
            "positions='renumbered' numbers the shorter sequence 0, 1, ... with 1-D RoPE ids: it "
            "applies to the projector and encoder stages of LLaVA, LLaVA-OneVision and "
            "Qwen2-Audio; pass positions='original' here"
        )
    if method.stage in ("llm", "cache"):
        return {"layer": layer}
    options: dict[str, Any] = {"positions": positions}
    if method.stage == "encoder":
        options["schedule"] = schedule
    return options


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
    method, layer = _method(method, layer, options)
    for_stage = stage_options(method, layer, schedule, positions)
    model = _unwrapped(model)
    reason = why_unsupported(model, method, layer)
    if reason is not None:
        raise ValueError(reason)
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
    stage = STAGES[method.stage](model, method, adapter_for(model), **for_stage)
    with stage as report:
        yield report
    if report.calls and not stage.saw_media:
        warnings.warn(
            f"{method.name} compressed nothing in {report.calls} forward calls of "
            f"{type(model).__name__}: no {'/'.join(method.modality)} tokens reached its "
            f"{method.stage} stage (is the prompt's media of another modality?)",
            stacklevel=3,
        )
