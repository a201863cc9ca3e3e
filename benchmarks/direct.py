"""The integration's overhead: what `compress` adds beyond the method's call and the forward on
the shortened inputs (hooks, signal taps, attention recompute, sequence rebuild).

Why this way: the shortened forward is measured, not estimated. The probe keeps the inputs each
decoder layer (and LLaVA's projector) really got at prefill, after every hook of `compress` had
shortened them; once `compress` has exited, `rerun` calls those modules again on those inputs
with no hook installed: the same model run directly on the already-shortened inputs. Then

    overhead = watched - method - rerun  -  (watched - rerun) of the uncompressed runs

where `watched` is the prefill time of the modules `compress` hooks (language model, projector,
encoder layers), `method` the method's calls up to the end of the prefill. The uncompressed
term is the model's own work there outside the rerun layers (embedding, rotary, masks, LM head;
the encoder, whose input no method shrinks): what is left is what `compress` added. The rest
of the model's forward (the media merge, rope indices) is left out: `compress` hooks nothing
there, and some families take a different path through it for the shorter input (Qwen2-Audio's
uncompressed forward spends ~3x its LLM time outside it). An uncompressed run against its own
reruns gives the measurement's noise floor.
"""

from __future__ import annotations

from typing import Any

from transformers import DynamicCache

from .probe import Probe, Stamps


def rerun(probe: Probe, stamps: Stamps) -> tuple[float, float]:
    """Seconds of the probe's captured prefill calls (decoder layers, projector), run again
    directly on their captured inputs, and of the decoder layers among them (what the
    shortened layers take with no hook: the efficiency's ceiling); a fresh cache, shared by the
    layers, stands for the run's (a rerun writes its keys and values, as the prefill does, but
    must not grow the real cache). The captured inputs are dropped afterwards."""
    cache = DynamicCache()
    layers = {id(layer) for layer in probe.decoder_layers}
    total = in_layers = 0.0
    for module, args, kwargs in probe.calls:
        kwargs = {k: cache if isinstance(v, DynamicCache) else v for k, v in kwargs.items()}
        start = stamps.now()
        module(*args, **kwargs)
        seconds = stamps.seconds(start, stamps.now())
        total += seconds
        in_layers += seconds if id(module) in layers else 0.0
    probe.calls.clear()
    return total, in_layers


def watched(probe: Probe) -> float:
    """Prefill seconds of the language model, the projector and the encoder layers."""
    return sum(probe.seconds(probe.llm[:1] + probe.projector_spans + probe.encoder_spans))


def prefill_method(probe: Probe) -> float:
    """Seconds of the method's calls up to the end of the prefill (the first forward)."""
    s, end = probe.stamps, probe.steps[0][1]
    return sum(s.seconds(a, b) for a, b in probe.method if s.seconds(b, end) >= 0)


def inside(probe: Probe, spans: list[list[Any]], outer: list[Any]) -> float:
    """Seconds of the `spans` that lie within the span `outer` (method calls in one forward)."""
    s = probe.stamps
    return sum(s.seconds(a, b) for a, b in spans
               if s.seconds(outer[0], a) >= 0 and s.seconds(b, outer[1]) >= 0)
