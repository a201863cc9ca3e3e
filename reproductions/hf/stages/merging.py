"""What the encoder stage's merging shares across encoders: a forward bound to each encoder layer
instance for the duration of `compress` (the class is untouched; the instance attribute is deleted
on exit), and the method each layer runs."""

from __future__ import annotations

import dataclasses
import types
from typing import Any

from torch import nn

from ...interface import Method
from ..models.base import shadow


class Merging:
    """Installs a merging forward on every encoder layer (`_forward_for`), with the method each
    layer runs (`schedule`: ToMe's r per layer)."""

    def __init__(self, method: Method, layers: nn.ModuleList, schedule: list[int] | None) -> None:
        if schedule is not None and len(schedule) != len(layers):
            raise ValueError(
                f"schedule has {len(schedule)} entries for {len(layers)} encoder layers: pass "
                "one merge count per layer"
            )
        if schedule is not None and not any(f.name == "r" for f in dataclasses.fields(method)):
            raise ValueError(f"schedule= sets ToMe's r per layer; {method.name} has no r")
        self.method = method
        self.layers = layers
        self.schedule = schedule
        #: what `remove()` undoes: each layer's shadowed forward, and a subclass's own hooks
        self.handles: list[Any] = []

    def install(self) -> None:
        for index, layer in enumerate(self.layers):
            self.handles.append(shadow(layer, "forward", types.MethodType(self._forward_for(index), layer)))

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    def _method_for(self, index: int) -> Method:
        if self.schedule is None:
            return self.method
        return dataclasses.replace(self.method, r=self.schedule[index])

    def _forward_for(self, index: int):
        raise NotImplementedError
