"""Why a (model, method) cell cannot run: `why_unsupported` (a sentence naming what would) and
`support` (the support-matrix cell). A method that spans several stages runs where each of its
parts can, in one context: its reason is that of the first part that cannot."""

from __future__ import annotations

import torch
from torch import nn

from ..interface import Method
from ..registry import methods
from .models import Adapter, adapter_for
from .stages import STAGES, decoder_layer
from .stages.audio import SIGNALS as AUDIO_SIGNALS
from .stages.audio import refusal as audio_refusal
from .stages.encoder import stage_signals, stage_special
from .stages.projector import at_projector_input, encoder_cls, projector_signals, received_layers


def output_width(method: Method) -> str | None:
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


def modality_fits(method: Method, tokens: dict[str, int]) -> bool:
    """Whether the model carries tokens of a modality the method works on; a method that reads
    one modality as the signal of another (OmniZip: a video guided by its audio) needs them all,
    so a model without audio, or without video, can never run it."""
    media = [signal for signal in method.needs if signal in ("image", "video", "audio")]
    if media:
        return all(x in tokens for x in (*method.modality, *media))
    return any(x in tokens for x in method.modality)


def unwrapped(model: nn.Module) -> nn.Module:
    """The module a `torch.compile` wrapper holds (hooks go on it; the wrapper recompiles)."""
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        return model._orig_mod
    return model


def why_unsupported(model: nn.Module, method: Method | str, layer: int | None = None) -> str | None:
    """Why `compress(model, method)` cannot run (a sentence naming what would), or None.

    `method` is a `Method` or a registry name (built with its example hyperparameters). It never
    raises for an unsupported model or method: the reason is the answer."""
    model = unwrapped(model)
    if isinstance(method, str):
        cls = methods().get(method)
        if cls is None:
            return f"{method!r} is not a registered method; registered: {', '.join(sorted(methods()))}"
        method = cls(**cls.example)
    try:
        a = adapter_for(model)
    except ValueError as error:
        return str(error)
    for part in method.parts():
        reason = part_reason(a, part, type(model).__name__, layer if part.stage in ("llm", "cache") else None)
        if reason is not None:
            return reason
    if any(part.stage in ("llm", "cache") for part in method.parts()[:-1]):
        return (
            f"{method.name} acts at the {' and '.join(method.stages())} stages: a stage after one "
            "inside the decoder (llm, cache) cannot follow the rows it dropped yet"
        )
    return None


def part_reason(a: Adapter, m: Method, model_name: str, layer: int | None) -> str | None:
    """Why the single-stage method `m` cannot run in the model of adapter `a`, or None."""
    if not modality_fits(m, a.tokens):
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
    audio = m.stage == "encoder" and "audio" in m.modality and a.audio_tower is not None
    vision = m.stage == "encoder" and "image" in m.modality and a.encoder_layers is not None
    if m.stage == "encoder" and not (audio or vision):
        return (
            f"{m.name} is an encoder-stage method; reproductions.hf compresses inside the vision "
            "encoders of LLaVA (projector reading one layer), Gemma 3, Idefics3, InternVL and the "
            "Qwen ViTs, and inside the audio encoders of Qwen2-Audio and Qwen2.5-Omni, which this "
            f"{model_name} is not (its encoder's crops, tiles or pooling are not handled yet)"
        )
    if m.stage == "encoder" and m.encoder_point != "layers":
        return (
            f"{m.name} acts once on the encoder's pooled output (before its final norm), a point "
            "reproductions.hf does not hook yet (the encoder stage acts inside the encoder's "
            "layers): call the method on that output yourself"
        )
    if vision and m.grid and (a.packed is not None or a.projector is None):
        return (
            f"{m.name} works on the patch grid inside the encoder, which the encoder stage hands "
            f"on only where a projector reads the encoder's patches (LLaVA); {model_name}'s encoder "
            "packs or pools its patches first"
        )
    reason = audio_refusal(a.audio_tower, m) if audio else None
    if reason is not None:
        return f"{m.name} on {model_name}: {reason}"
    available = set(STAGES[m.stage].signals) | (set(AUDIO_SIGNALS) if audio else set())
    if m.stage == "llm" and "video" in a.gridded:  # frames from each video's (T, H, W) grid
        available.add("timespan")
    if m.stage == "projector":
        available |= projector_signals(a, m)
        width = output_width(m)
        if width is not None:
            return width
    elif vision:
        available |= stage_signals(a, m)
    missing = [s for s in m.needs if s not in available]
    if missing:
        where = (" (a layer's values exist where each encoder token is one patch, as in LLaVA, or one "
                 "merge unit of a Qwen ViT; its [CLS] attention where that encoder has a [CLS] (CLIP), "
                 "or a mean query's for a method that names one (`cls_free_query`) in Qwen2-VL's ViT, "
                 "without windowed blocks or DeepStack taps)") if vision else ""
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
        vision and stage_special(a) > 0
    )
    if m.special_tokens is not None and 0 not in m.special_tokens and not cls_token:
        return (
            f"{m.name} takes {m.special_tokens} leading [CLS] tokens, which {model_name} does not "
            f"have at the {m.stage} stage (only CLIP and InternViT encoders have one: LLaVA's at the "
            "projector and encoder stages, InternVL's at the encoder stage)"
        )
    if vision and m.special_tokens is not None and stage_special(a) not in m.special_tokens:
        return (
            f"{m.name} takes {' or '.join(map(str, m.special_tokens))} leading [CLS] tokens in the encoder, "
            f"but {model_name}'s encoder leads with {stage_special(a)}: pick a method for an encoder "
            f"{'with' if stage_special(a) else 'without'} a [CLS]"
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
        if m.stage == "cache" and k < a.deepstack_layers:  # (the llm stage carries them: `follow_rows`)
            return (
                f"{m.name}.layer={k}: {model_name}'s DeepStack adds vision features to the visual "
                f"tokens after decoder layers 0-{a.deepstack_layers - 1}, which the cache stage does "
                f"not follow yet; pick layer >= {a.deepstack_layers}"
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
        adapter = adapter_for(unwrapped(model))
    except ValueError:
        return "missing", reason
    inherent = method is not None and any(
        not modality_fits(part, adapter.tokens)
        or (part.stage == "projector" and output_width(part) is not None)
        or ("anyres" in part.needs and getattr(adapter.tap, "packer", None) is None)
        for part in method.parts()
    )
    return ("inherent" if inherent else "missing"), reason
