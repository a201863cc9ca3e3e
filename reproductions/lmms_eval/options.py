"""The plugin's `--model_args`, checked before any weight is read.

A sweep over many cells must not spend minutes loading a 7B checkpoint only to learn that a
parameter was misspelt, so every check that the configuration and the method allow runs here,
on the checkpoint's `config.json` and a skeleton of the model on the meta device (no weights):
the method's name, its parameters, the model family, and `why_unsupported` for the cell.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers

from ..hf import SUPPORTED, why_unsupported
from ..hf.context import stage_options
from ..interface import Method
from ..registry import get, methods

#: the method name that runs the model as it is
NONE = "none"

#: model args that configure the run; every other model arg is a method parameter
RUN_ARGS = (
    "pretrained", "method", "device", "dtype", "attn_implementation", "batch_size",
    "max_batch_size", "layer", "schedule", "positions", "max_new_tokens", "max_frames",
)


@dataclass
class Options:
    """One run's configuration, as parsed from `--model_args`."""

    pretrained: str
    method: str = NONE
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    batch_size: int = 1
    layer: int | None = None
    schedule: list[int] | None = None
    positions: str = "original"
    max_new_tokens: int = 128
    max_frames: int = 8

    def stage_args(self, method: Method) -> dict[str, Any]:
        """`compress`'s stage options for `method` (its own `layer` field, if it has one, is
        already set from `layer=`)."""
        own_layer = "layer" in {f.name for f in dataclasses.fields(method)}
        layer = None if own_layer else self.layer
        return {"layer": layer, "schedule": self.schedule, "positions": self.positions}

    def record(self, method: Method | None) -> dict[str, Any]:
        """What the results record of this run: the method with every parameter resolved."""
        resolved = dataclasses.asdict(method) if method is not None else {}
        return {
            "method": self.method,
            "params": resolved,
            "stage": method.stage if method is not None else None,
            "layer": self.layer,
            "positions": self.positions,
        }


def parse(model_args: dict[str, Any]) -> Options:
    """Split `model_args` (as lmms-eval parsed them) into run options and method parameters."""
    args = {k: v for k, v in model_args.items() if v is not None}
    if "pretrained" not in args:
        raise ValueError(
            "--model_args needs pretrained=<checkpoint dir or hub id>, e.g. "
            "pretrained=llava-hf/llava-1.5-7b-hf,method=fastv,keep=64"
        )
    run = {k: args.pop(k) for k in list(args) if k in RUN_ARGS and k != "max_batch_size"}
    args.pop("max_batch_size", None)
    if isinstance(run.get("schedule"), str):
        run["schedule"] = json.loads(run["schedule"])
    run["device"] = str(run.get("device") or "cpu")
    run["batch_size"] = int(run.get("batch_size", 1))
    if run["batch_size"] != 1:
        raise ValueError(
            f"batch_size={run['batch_size']}: the plugin runs one request at a time, so that each "
            "compression report is one sample's; pass --batch_size 1"
        )
    return Options(**run, params=args)


def build_method(options: Options) -> Method | None:
    """The method `options` name with its parameters (None for `method=none`); a ValueError
    naming what to pass where the name or a parameter is unknown or a value is refused."""
    known = methods()
    if options.method == NONE:
        if options.params:
            raise ValueError(
                f"method=none runs the model uncompressed and takes no parameters, got "
                f"{', '.join(sorted(options.params))}: drop them or name a method "
                f"(registered: {', '.join(sorted(known))})"
            )
        return None
    if options.method not in known:
        raise ValueError(
            f"method={options.method!r} is not a registered method: pass method=none or one of "
            f"{', '.join(sorted(known))}"
        )
    cls = known[options.method]
    fields = [f.name for f in dataclasses.fields(cls)]
    stray = sorted(set(options.params) - set(fields))
    if stray:
        raise ValueError(
            f"{options.method} takes the parameters {', '.join(fields) or '(none)'} (and the "
            f"run options {', '.join(RUN_ARGS)}), not {', '.join(stray)}"
        )
    params = dict(options.params)
    if options.layer is not None and "layer" in fields:
        params["layer"] = options.layer
    return get(options.method, **params)


def architecture(pretrained: str) -> tuple[type[torch.nn.Module], Any]:
    """The supported model class of the checkpoint and its config, from `config.json` alone."""
    config = transformers.AutoConfig.from_pretrained(pretrained)
    names = getattr(config, "architectures", None) or []
    name = next((n for n in names if n in SUPPORTED), None)
    if name is None:
        raise ValueError(
            f"{pretrained} is a {', '.join(names) or config.model_type} checkpoint, which "
            f"reproductions.hf does not support: pass a checkpoint of one of {', '.join(SUPPORTED)}"
        )
    return getattr(transformers, name), config


def check(options: Options) -> Method | None:
    """Every check that needs no weights; returns the method to run (None: uncompressed).

    The model is built on the meta device, so `why_unsupported` sees the real module tree of the
    family (its encoder, projector and decoder layers) at no cost."""
    method = build_method(options)
    cls, config = architecture(options.pretrained)
    if method is None:
        return None
    stage = options.stage_args(method)
    stage_options(method, **stage)
    config._attn_implementation = options.attn_implementation
    with torch.device("meta"):
        skeleton = cls(config)
    reason = why_unsupported(skeleton, method, stage["layer"])
    if reason is not None:
        raise ValueError(f"method={options.method} cannot run in {options.pretrained}: {reason}")
    return method
