"""One budget for every method (`Method.at_budget`): sweeps compare methods at the same token
count, whatever each calls its own budget (`keep`, a stride, ToMe's r, a prune ratio).

The rule: `keep` takes the budget as it is (where a method adds tokens to `keep`, SparseVLM's
recycled clusters, `keep` is searched like a knob); otherwise the method's `budget_knob` takes the
value whose output count is nearest, ties to more tokens. Int knobs try 1 ... N; float knobs search
[0, 1] by bisection on the count (counts grow or shrink monotonically with a ratio), running the
method where its count depends on the data. A method can refine the rule by overriding
`at_budget` (VisionZip splits the budget as its official settings do).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from .interface import Budget, Method, Tokens, resolve_keep

#: steps of the bisection over a float knob (2^-20 of [0, 1]: finer than any token)
STEPS = 20


def fit(cls: type[Method], budget: Budget, tokens: Tokens, params: dict[str, Any]) -> Method:
    """`cls` set to `budget` tokens of `tokens` by the rule of the module docstring."""
    names = {f.name for f in dataclasses.fields(cls)}
    target = resolve_keep(budget, tokens.count, tokens.special)
    knob = "keep" if "keep" in names else cls.budget_knob
    if knob == "keep":
        method = cls(**{**params, "keep": budget})
        if _count(method, tokens) == target:
            return method  # `keep` is the count: exact
    if knob is None:
        raise ValueError(
            f"{cls.name} has no budget knob: its count follows from {_knobs(cls)} and the data; "
            "pass those parameters instead"
        )
    default = next(f.default for f in dataclasses.fields(cls) if f.name == knob)
    floats = isinstance(default, float) and knob != "keep"  # `keep` also takes counts: search those
    options = _floats(cls, knob, target, tokens, params) if floats else _ints(cls, knob, tokens, params)
    if not options:
        raise ValueError(f"no value of {cls.name}.{knob} runs on these tokens: check the layout and N")
    count, method = min(options, key=lambda option: (abs(option[0] - target), -option[0]))
    return method


def _count(method: Method, tokens: Tokens) -> int | None:
    """The output count on `tokens`: declared where the method knows it, else by running it on
    the first input (rows of a batch may differ where the data decides)."""
    try:
        count = method.output_count(tokens)
        return method(_first(tokens)).count if count is None else count
    except ValueError:
        return None


def _first(tokens: Tokens) -> Tokens:
    """The first input of a batch, as a batch of one."""
    rows = {
        f.name: value[:1]
        for f in dataclasses.fields(tokens)
        if isinstance(value := getattr(tokens, f.name), Tensor) and value.dim() and value.shape[0] == tokens.batch
    }
    return dataclasses.replace(tokens, **rows)


def _ints(cls: type[Method], knob: str, tokens: Tokens, params: dict[str, Any]) -> list[tuple[int, Method]]:
    options = []
    for value in range(1, tokens.count + 1):
        try:
            method = cls(**{**params, knob: value})
        except ValueError:
            continue
        count = _count(method, tokens)
        if count is not None:
            options.append((count, method))
    return options


def _floats(
    cls: type[Method], knob: str, target: int, tokens: Tokens, params: dict[str, Any]
) -> list[tuple[int, Method]]:
    """The methods met while bisecting the knob in (0, 1] towards `target` tokens."""
    options: list[tuple[int, Method]] = []

    def at(value: float) -> int | None:
        try:
            method = cls(**{**params, knob: value})
        except ValueError:
            return None
        count = _count(method, tokens)
        if count is not None:
            options.append((count, method))
        return count

    low, high = 0.0, 1.0
    rising = (at(1.0) or 0) >= (at(1.0 / 2**STEPS) or 0)  # a keep ratio or a prune ratio
    for _ in range(STEPS):
        middle = (low + high) / 2
        count = at(middle)
        if count is None or (count < target) == rising:
            low = middle
        else:
            high = middle
    return options


def _knobs(cls: type[Method]) -> str:
    """The hyperparameters that shape the count (every field but seeds and built modules)."""
    fields = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "seed"]
    return ", ".join(fields) or "its inputs"
