"""`schedule=`: ToMe's merge count r set per encoder layer, shared by the encoder stage's vision
and audio paths."""

from __future__ import annotations

import dataclasses

from torch import nn

from ...interface import Method


def check_schedule(method: Method, layers: nn.ModuleList, schedule: list[int] | None) -> None:
    """Refuse a schedule that does not give one count per layer, or a method without r."""
    if schedule is not None and len(schedule) != len(layers):
        raise ValueError(
            f"schedule has {len(schedule)} entries for {len(layers)} encoder layers: pass "
            "one merge count per layer"
        )
    if schedule is not None and not any(f.name == "r" for f in dataclasses.fields(method)):
        raise ValueError(f"schedule= sets ToMe's r per layer; {method.name} has no r")


def method_at(method: Method, schedule: list[int] | None, index: int) -> Method:
    """The method as it runs in encoder layer `index`: with that layer's r where scheduled."""
    return method if schedule is None else dataclasses.replace(method, r=schedule[index])
