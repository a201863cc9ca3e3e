"""The shared validators of hyperparameter fields, for a method's `__post_init__`.

Each raises `ValueError` "name=value: hint", naming the field and what to pass. A bool is never
an int or a number here. Re-exported by `reproductions.interface`, where methods import them.
"""

from __future__ import annotations

from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(
    name: str,
    value: Any,
    low: int | None = None,
    hint: str | None = None,
    *,
    high: int | None = None,
) -> None:
    """The shared validator of an int field (for `__post_init__`): raise `ValueError`
    "name=value: hint" unless `value` is an int (a bool is not) in [low, high] (either end
    omitted where None)."""
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            default = f"pass an int in [{low}, {high}]"
        else:
            default = "pass an int" + ("" if low is None else f" >= {low}")
            default += "" if high is None else f" <= {high}"
        raise ValueError(f"{name}={value!r}: {hint or default}")


def check_ints(
    name: str,
    value: Any,
    low: int | None = None,
    hint: str | None = None,
    *,
    length: int | None = None,
    increasing: bool = False,
) -> tuple[int, ...]:
    """The shared validator of a tuple (or list) of ints, returned as a tuple: raise
    `ValueError` "name=value: hint" unless `value` holds ints (no bools) of at least `low`,
    exactly `length` of them where given (else at least one), strictly increasing where asked."""
    ok = isinstance(value, tuple | list) and (
        len(value) == length if length is not None else len(value) > 0
    )
    ok = ok and all(_is_int(v) and (low is None or v >= low) for v in value)
    if ok and increasing:
        ok = all(a < b for a, b in zip(value, value[1:], strict=False))
    if not ok:
        count = "one or more" if length is None else str(length)
        default = f"pass {count} ints" + ("" if low is None else f" >= {low}")
        default += ", increasing" if increasing else ""
        raise ValueError(f"{name}={value!r}: {hint or default}")
    return tuple(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
    hint: str | None = None,
) -> None:
    """The shared validator of a real-valued field: raise `ValueError` "name=value: hint" unless
    `value` is an int or a float (a bool is not) in [low, high] (an end open where asked; NaN
    lies in no interval)."""
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name}={value!r}: {hint or f'pass a number in {interval}'}")


def check_bool(name: str, value: Any, hint: str | None = None) -> None:
    """The shared validator of a flag: raise `ValueError` unless `value` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: {hint or 'pass True or False'}")
