"""The shared helpers of `reproductions/interface.py`: field validators and `Compression.then`."""

import math
from dataclasses import dataclass

import pytest
import torch

from reproductions import get
from reproductions.interface import (
    Compression,
    Method,
    Tokens,
    check_compression,
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


def _compression(source, positions, sizes, width=2):
    source = torch.tensor(source)
    k = len(positions[0])
    return Compression(
        features=torch.randn(source.shape[0], k, width),
        source=source,
        positions=torch.tensor(positions),
        sizes=torch.tensor(sizes, dtype=torch.float32),
    )


def test_then_composes_sources_positions_and_sizes():
    # 6 tokens: row 0 drops 2 and merges 3, 4 (standing at 3); row 1 merges 0, 1, drops 5
    first = _compression(
        [[0, 1, -1, 2, 2, 3], [0, 0, 1, 2, 3, -1]],
        [[0, 1, 3, 5], [1, 2, 3, 4]],
        [[1, 1, 2, 1], [2, 1, 1, 1]],
    )
    # on its 4 outputs: row 0 merges 0 and 3 (at 0), drops 1; row 1 drops 0, merges 2, 3 (at 3)
    second = _compression(
        [[0, -1, 1, 0], [-1, 0, 1, 1]],
        [[0, 2], [1, 3]],
        [[2, 1], [1, 2]],  # counted over its own inputs, one each: `then` recounts
    )
    both = first.then(second)
    assert both.source.tolist() == [[0, -1, -1, 1, 1, 0], [-1, -1, 0, 1, 1, -1]]
    assert both.positions.tolist() == [[0, 3], [2, 4]]
    assert both.sizes.tolist() == [[2.0, 2.0], [1.0, 2.0]]
    assert both.features is second.features
    check_compression(both, Tokens(features=torch.randn(2, 6, 2)))


def test_then_of_two_methods_is_one_compression_of_the_original_tokens():
    tokens = Tokens(features=torch.randn(2, 12, 4, generator=torch.Generator().manual_seed(0)))
    first = get("tome", r=3)(tokens)
    second = get("tome", r=2)(Tokens(features=first.features, sizes=first.sizes))
    both = first.then(second)
    check_compression(both, tokens)
    assert both.count == 7
    assert torch.equal(both.sizes, second.sizes)  # the second already read the first's sizes


def test_then_refuses_a_compression_of_other_tokens():
    first = _compression([[0, 1, -1]], [[0, 1]], [[1, 1]])
    with pytest.raises(ValueError, match="compression of this one's output"):
        first.then(_compression([[0, 1, 2]], [[0, 1, 2]], [[1, 1, 1]]))


def test_a_method_of_several_stages_lists_one_single_stage_part_per_stage_in_model_order():
    @dataclass
    class Early(Method):
        keep: int = 4
        stage = "projector"
        needs = ("frames",)

    @dataclass
    class Late(Method):
        keep: int = 4
        layer: int = 2
        stage = "llm"
        copies = False
        needs = ("attention",)

    @dataclass
    class Both(Method):
        keep: int = 3
        layer: int = 5
        parts_of = (Early, Late)

    early, late = Both().parts()
    assert early == Early(keep=3) and late == Late(keep=3, layer=5)  # same names, same values
    assert Both.stages() == ("projector", "llm") and Both.stage == "projector"
    assert Both.needs == ("frames", "attention") and not Both.copies
    assert Early(keep=3).parts() == (Early(keep=3),) and Early.stages() == ("projector",)
    for parts in ((Late, Early), (Early,), (Early, Early)):
        with pytest.raises(TypeError, match="model order"):
            type("Wrong", (Method,), {"parts_of": parts})


def _several_stages() -> list[type[Method]]:
    from reproductions.registry import methods

    return [cls for cls in methods().values() if cls.parts_of]


@pytest.mark.parametrize("cls", _several_stages(), ids=lambda cls: cls.name)
def test_a_registered_method_of_several_stages_declares_exactly_its_parts_hyperparameters(cls):
    """The parent repeats each part's hyperparameters with the same defaults (so `get(name)` runs
    the parts as their own defaults would), and has none of its own that no part reads."""
    from dataclasses import MISSING, fields

    def defaults(c):
        return {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(c) if f.init}

    mine, theirs = defaults(cls), {}
    for part in cls.parts_of:
        for name, value in defaults(part).items():
            assert theirs.setdefault(name, value) == value, (part.name, name)
    assert mine == theirs


def test_all_finite_is_exact_where_the_sum_overflows_or_cancels():
    from reproductions.interface import all_finite

    big = torch.full((4, 3), 3e38)  # finite, but its float32 sum overflows to inf
    assert all_finite(big) and all_finite(torch.zeros(0, 3))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(4, 3)
        x[2, 1] = bad
        assert not all_finite(x) and not all_finite(x.to(torch.bfloat16))
    both = torch.tensor([float("inf"), -float("inf"), 1.0])  # inf - inf: the sum is NaN
    assert not all_finite(both)
