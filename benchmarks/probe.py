"""Instruments for a run of `model.generate()`: hooks that time each forward step, the LLM's
prefill and the method's own calls, and count the tokens each layer reads.

Why hooks: they observe the code a user runs (`reproductions.hf.compress` + `generate`)
without a copy of it. Entered inside `compress`, the pre-hooks go first and the post-hooks
last, so a step's time includes everything `compress` does on that module (attention
recompute, sequence rebuild). Times are CUDA events on a GPU (read after one synchronisation
at the end), process or wall time on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class Stamps:
    """Points in time on one clock, and the seconds between two of them."""

    def __init__(self, device: torch.device, clock: str = "process") -> None:
        self.cuda = device.type == "cuda"
        # on a CPU with one thread, process time is the compute time, which other work on a
        # shared machine barely moves (as in the sweep's `--clock process`)
        self.clock = time.process_time if clock == "process" else time.perf_counter

    def now(self) -> Any:
        if not self.cuda:
            return self.clock()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        if not self.cuda:
            return end - start
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0


def _rows(args: tuple, kwargs: dict[str, Any]) -> int:
    """Sequence length of a layer's input (its first tensor argument, or `hidden_states`)."""
    hidden = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs["hidden_states"]
    return int(hidden.shape[-2])


class Probe:
    """Hooks on one model for one `generate` call; read `steps`, `llm`, `method` and the
    per-layer token counts of the first (prefill) step after it exits."""

    def __init__(
        self,
        stamps: Stamps,
        model: nn.Module,
        language_model: nn.Module,
        llm_layers: Sequence[nn.Module],
        encoder_layers: Sequence[nn.Module],
        projector: nn.Module | None,
        method_cls: type | None,
    ) -> None:
        self.stamps = stamps
        self.steps: list[list[Any]] = []  # [start, end] of every forward of the whole model
        self.llm: list[list[Any]] = []  # the same for the language model
        self.method: list[list[Any]] = []  # every call of the method
        self.llm_schedule: list[int] = []  # tokens entering each decoder layer at prefill
        self.encoder_schedule: list[int] = []
        self.projected: int | None = None
        #: prefill only: [start, end] of each decoder layer and of the projector, and the
        #: (module, args, kwargs) each was called with, after every hook of `compress` had
        #: changed them (`direct.rerun` runs them again without any hook)
        self.layer_spans: list[list[Any]] = []
        self.projector_spans: list[list[Any]] = []
        self.encoder_spans: list[list[Any]] = []  # timed only (their inputs do not shrink)
        self.calls: list[tuple[nn.Module, tuple, dict[str, Any]]] = []
        self._targets = (model, language_model, llm_layers, encoder_layers, projector)
        self.decoder_layers = tuple(llm_layers)
        self._method_cls = method_cls
        self._handles: list[Any] = []
        self._original: Callable | None = None

    def _span(self, module: nn.Module, spans: list[list[Any]]) -> None:
        def begin(*_: Any) -> None:
            spans.append([self.stamps.now(), None])

        def end(*_: Any) -> None:
            spans[-1][1] = self.stamps.now()

        self._handles += [
            module.register_forward_pre_hook(begin, prepend=True),
            module.register_forward_hook(end),
        ]

    def _prefill_span(self, module: nn.Module, spans: list[list[Any]], limit: int,
                      keep: bool = True) -> None:
        """Time the module's first `limit` calls up to the prefill and keep their inputs."""
        def begin(*_: Any) -> None:
            if len(self.steps) <= 1 and len(spans) < limit:
                spans.append([self.stamps.now(), None])

        def end(module: nn.Module, args: tuple, kwargs: dict[str, Any], _: Any) -> None:
            if spans and spans[-1][1] is None:
                spans[-1][1] = self.stamps.now()
                if keep:
                    self.calls.append((module, args, kwargs))

        self._handles += [
            module.register_forward_pre_hook(begin, prepend=True),
            module.register_forward_hook(end, with_kwargs=True),
        ]

    def _count(self, module: nn.Module, counts: list[int], limit: int) -> None:
        def count(_: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            if len(self.steps) <= 1 and len(counts) < limit:  # up to the prefill step (some
                # generate loops encode media before the first forward)
                counts.append(_rows(args, kwargs))

        self._handles.append(module.register_forward_pre_hook(count, with_kwargs=True))

    def __enter__(self) -> Probe:
        model, language_model, llm_layers, encoder_layers, projector = self._targets
        self._span(model, self.steps)
        self._span(language_model, self.llm)
        for layer in llm_layers:
            self._count(layer, self.llm_schedule, len(llm_layers))
            self._prefill_span(layer, self.layer_spans, len(llm_layers))
        for layer in encoder_layers:
            self._count(layer, self.encoder_schedule, len(encoder_layers))
            self._prefill_span(layer, self.encoder_spans, len(encoder_layers), keep=False)
        if projector is not None:
            projected: list[int] = []
            self._projected = projected
            self._count(projector, projected, 1)
            self._prefill_span(projector, self.projector_spans, 1)
        if self._method_cls is not None:
            self._wrap_method(self._method_cls)
        return self

    def _wrap_method(self, cls: type) -> None:
        """Time the method's calls by wrapping its class's `__call__` for this run only."""
        self._original = cls.__dict__.get("__call__")
        inherited = cls.__call__
        spans = self.method

        def timed(this: Any, *args: Any, **kwargs: Any) -> Any:
            spans.append([self.stamps.now(), None])
            out = inherited(this, *args, **kwargs)
            spans[-1][1] = self.stamps.now()
            return out

        cls.__call__ = timed  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        cls = self._method_cls
        if cls is not None:
            if self._original is None:
                del cls.__call__
            else:
                cls.__call__ = self._original  # type: ignore[method-assign]
        if getattr(self, "_projected", None):
            self.projected = self._projected[0]

    def seconds(self, spans: list[list[Any]]) -> list[float]:
        """The length of each span, in seconds."""
        return [self.stamps.seconds(start, end) for start, end in spans]
