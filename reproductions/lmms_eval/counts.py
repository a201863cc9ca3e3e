"""Per-sample compression counts, carried into lmms-eval's results.

lmms-eval writes each request's `TokenCounts` into the sample log (`--log_samples`, every rank's
samples gathered) through `to_dict()`; `CompressionCounts` extends it with what the compress
context did for that request, so the per-sample record travels the same way in one process or
many. The means of each request type go to `results["throughput"]` through lmms-eval's
`log_metrics`, once per type, on rank 0, over every rank's requests (padding duplicates that
lmms-eval adds to even out the ranks are counted once): `avg_generate_until_tokens_after`, ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from statistics import fmean
from typing import Any

import torch.distributed as dist
from lmms_eval.api.instance import TokenCounts
from lmms_eval.models.model_utils.gen_metrics import log_metrics

from ..hf import Report


@dataclass
class CompressionCounts(TokenCounts):
    """One request: LLM input tokens and media tokens before and after compression, and the
    time of its prefill (the first forward call), to its first token, and of the whole call;
    `rank` is the process that ran it (under `accelerate launch`); `run` the run's configuration
    with every method parameter resolved (lmms-eval's `config` keeps only the model_args as typed,
    and a model has no way to add to it)."""

    tokens_before: int = 0
    tokens_after: int = 0
    #: the rows each decoder layer read at the prefill (the per-layer FLOPs follow them)
    schedule: list[int] | None = None
    media_before: int = 0
    media_after: int = 0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0
    rank: int = 0
    run: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def from_report(report: Report | None, tokens: int, media: int) -> dict[str, int]:
    """The counts of a single-row request: from the first record of its compress context (its
    prefill; a cache-stage method's first decoding step), or the prompt as it is where nothing
    was compressed (`method=none`, or no media in the prompt)."""
    if report is None or not report.records:
        return {"tokens_before": tokens, "tokens_after": tokens, "media_before": media, "media_after": media}
    first = report.records[0]
    return {
        "tokens_before": first.tokens_before[0],
        "tokens_after": first.tokens_after[0],
        "media_before": first.media_before[0],
        "media_after": first.media_after[0],
    }


#: the numeric fields averaged into results["throughput"]
SUMMED = [f.name for f in fields(CompressionCounts) if f.name not in ("reasoning_tokens", "rank", "run", "schedule")]


def summarize(
    kind: str, local: dict[tuple, CompressionCounts], world_size: int, rank: int
) -> None:
    """Gather every rank's counts of one request type (keyed by task, doc id and request index)
    and log their means on rank 0, where lmms-eval builds the results."""
    everything = dict(local)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[dict[tuple, CompressionCounts]] = [{} for _ in range(world_size)]
        dist.all_gather_object(gathered, local)
        for part in gathered:
            everything.update(part)
    if rank != 0 or not everything:
        return
    counts = list(everything.values())
    means = {
        name: fmean(float(getattr(c, name) or 0) for c in counts) for name in SUMMED
    }
    generated = sum(c.output_tokens or 0 for c in counts)
    elapsed = sum(c.total_s for c in counts)
    log_metrics(
        total_elapsed_time=elapsed,
        total_gen_tokens=generated,
        avg_speed=generated / elapsed if elapsed > 0 else 0.0,
        additional_metrics={**{f"{kind}_{k}": v for k, v in means.items()}, f"{kind}_requests": len(counts)},
    )
