"""The shared helpers of `reproductions/interface.py`: field validators and `Compression.then`."""

import math

import pytest

from reproductions.interface import (
    check_int,
    check_ints,
    check_number,
)


def test_check_int_bounds_and_bools():
    check_int("n", 3, 1, high=3)
    for bad in (0, 4, True, 2.0, "2"):
        with pytest.raises(ValueError, match=r"n=.*pass an int in \[1, 3\]"):
            check_int("n", bad, 1, high=3)


def test_check_ints_returns_a_tuple_and_names_the_field():
    assert check_ints("layers", [2, 4], 1, increasing=True) == (2, 4)
    assert check_ints("size", (1, 1, 2), 1, length=3) == (1, 1, 2)
    bad = [((), {}), ((2, 2), {"increasing": True}), ((1, True), {}), ((1, 2), {"length": 3}),
           ((0,), {}), (5, {}), ((1, 2.0), {})]
    for value, options in bad:
        with pytest.raises(ValueError, match="layers="):
            check_ints("layers", value, 1, **options)
    with pytest.raises(ValueError, match="pass 3 ints >= 1"):
        check_ints("layers", (1, 2), 1, length=3)


def test_an_open_end_at_inf_admits_finite_numbers_only():
    check_number("t", 1e30, 0.0, math.inf, open_low=True, open_high=True)
    for bad in (0.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="t="):
            check_number("t", bad, 0.0, math.inf, open_low=True, open_high=True)
