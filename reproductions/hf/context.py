"""`compress(model, method)`: run a registered method inside a transformers model.

It only picks: the model family's adapter (`models/`), and the stage the method declares
(`stages/`), whose context installs the hooks on entry and removes them on exit, also when the
body raises; a method that spans several stages (`Method.parts`) gets one stage per part, all
in one context, each after the one before (`Stage.follow`). `why_unsupported`
(`unsupported.py`) says why a (model, method) cell cannot run.

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
  projected tokens (the rows entering the LLM); there is no [CLS] there. Encoder signals are
  pooled onto those rows as the model pools the encoder's tokens, `cls_attention` being the
  attention each token receives averaged over the query rows (audio encoders: over the real
  frames of the attention window, Qwen2-Audio's clip or Qwen2.5-Omni's chunk; `AudioTap`, which
  also gives SA-MAP's `encoder_attention`, the map among each clip's placed frames).
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
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

from ..interface import Method
from ..registry import get, methods
from .models import adapter_for
from .report import Report
from .stages import STAGES
from .unsupported import support, unwrapped, why_unsupported

__all__ = ["compress", "stage_options", "support", "why_unsupported"]


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


def stage_options(
    method: Method, layer: int | None, schedule: list[int] | None, positions: str
) -> list[dict[str, Any]]:
    """The options of each of the method's stages (one per part, in order); refuses an option
    that none of its stages takes (public: the lmms-eval plugin checks them before it loads any
    weights)."""
    stages = method.stages()
    where = f"{method.name} acts at the {' and '.join(stages)} stage"
    if positions not in ("original", "renumbered"):
        raise ValueError(f"positions={positions!r}: pass 'original' or 'renumbered'")
    if schedule is not None and "encoder" not in stages:
        raise ValueError(f"schedule= sets merges per encoder layer, but {where}: drop schedule=")
    if layer is not None and not {"llm", "cache"} & set(stages):
        raise ValueError(f"layer= picks the decoder layer of llm / cache methods, but {where}: drop layer=")
    if positions == "renumbered" and not {"projector", "encoder"} & set(stages):
        raise ValueError(
            "positions='renumbered' numbers the shorter sequence 0, 1, ... with 1-D RoPE ids: it "
            "applies to the projector and encoder stages of LLaVA, LLaVA-OneVision and "
            "Qwen2-Audio; pass positions='original' here"
        )
    options: list[dict[str, Any]] = []
    for stage in stages:
        if stage in ("llm", "cache"):
            options.append({"layer": layer})
        else:
            options.append({"positions": positions} | ({"schedule": schedule} if stage == "encoder" else {}))
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
    since LLaVA builds a new, shorter sequence). A method that spans several stages (PruneVid)
    runs each of its parts at its stage, in model order, each on the sequence the one before
    handed on; `layer` is its llm / cache part's, `schedule` and `positions` its encoder /
    projector part's. Every hook is removed on exit, also when the body raises.
    """
    method, layer = _method(method, layer, options)
    for_parts = stage_options(method, layer, schedule, positions)
    model = unwrapped(model)
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
    adapter = adapter_for(model)
    parts = method.parts()
    stages = [STAGES[p.stage](model, p, adapter, **o) for p, o in zip(parts, for_parts, strict=True)]
    if len(stages) > 1:  # one report, one record per stage and call
        stages[0].report = Report(method=method.name, stage=" + ".join(method.stages()))
    for before, after in zip(stages, stages[1:], strict=False):
        after.follow(before)
    report, stage = stages[0].report, stages[0]
    with ExitStack() as stack:
        for each in stages:
            stack.enter_context(each)
        yield report
    if report.calls and not stage.saw_media:
        warnings.warn(
            f"{method.name} compressed nothing in {report.calls} forward calls of "
            f"{type(model).__name__}: no {'/'.join(method.modality)} tokens reached its "
            f"{method.stage} stage (is the prompt's media of another modality?)",
            stacklevel=3,
        )
