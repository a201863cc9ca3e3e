"""A decorator registry: `@register("fastv")` on a method class; `get` and `methods` to find them."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

from .interface import Method

M = TypeVar("M", bound=type[Method])

_METHODS: dict[str, type[Method]] = {}
_loaded = False


def register(name: str):
    """Class decorator that records a method under `name` (its registry name)."""

    def add(cls: M) -> M:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"a method named {name!r} is already registered: {_METHODS[name]}")
        cls.name = name
        for part in cls.parts_of:  # a multi-stage method's parts: "prunevid.llm", its paper
            part.name, part.paper = f"{name}.{part.stage}", part.paper or cls.paper
        _METHODS[name] = cls
        return cls

    return add


def get(name: str, **params: Any) -> Method:
    """Build the method registered as `name` with hyperparameters `params`."""
    _load_all()
    try:
        cls = _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise ValueError(f"no method named {name!r}; registered methods: {known}") from None
    return cls(**params)


def methods() -> dict[str, type[Method]]:
    """Every registered method class by name, sorted by name."""
    _load_all()
    return dict(sorted(_METHODS.items()))


def _load_all() -> None:
    """Import every method module (one per method, under image/ video/ audio/ omni/) once."""
    global _loaded
    if _loaded:
        return
    for family in ("image", "video", "audio", "omni"):
        package = importlib.import_module(f"{__package__}.{family}")
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded = True
