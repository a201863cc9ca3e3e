"""What a compress context did: one `Record` per compressing call, in a `Report`."""

from __future__ import annotations

from dataclasses import dataclass, field


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
