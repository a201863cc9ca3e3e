"""One budget for every method (`Method.at_budget`): `keep` takes it as it is, a method's
declared `budget_knob` takes the value whose count is nearest, and a method with neither says
which parameters to pass. Cases come from each method's declarations."""

from __future__ import annotations

import dataclasses

import pytest

import reproductions
from reproductions.budget import _first
from reproductions.examples import example_tokens

METHODS = reproductions.methods()
#: fixed widths of the trainable methods (their example sizes), not budgets
SIZES = ("dim", "out_dim", "hidden", "heads", "head_dim", "depth", "window", "layers")


def count(method, tokens) -> int:
    declared = method.output_count(tokens)
    return method(_first(tokens)).count if declared is None else declared


def fixed(cls) -> dict:
    return {k: v for k, v in cls.example.items() if k in SIZES}


def budgeted(cls) -> bool:
    """A `keep`, a declared knob, or a rule of its own (`at_budget` overridden)."""
    own = cls.at_budget.__func__ is not reproductions.Method.at_budget.__func__
    return own or bool(cls.budget_knob) or "keep" in {f.name for f in dataclasses.fields(cls)}


BUDGETED = sorted(n for n, c in METHODS.items() if budgeted(c))
UNBUDGETED = sorted(set(METHODS) - set(BUDGETED))


@pytest.mark.parametrize("name", BUDGETED)
def test_a_count_the_method_can_give_is_met_exactly(name):
    """The count of the method's own example parameters is reachable, so the rule must land on it."""
    cls = METHODS[name]
    tokens = example_tokens(cls)
    target = count(cls(**cls.example), tokens)
    method = cls.at_budget(target, tokens, **fixed(cls))
    assert isinstance(method, cls) and count(method, tokens) == target


@pytest.mark.parametrize("name", BUDGETED)
def test_a_budget_lands_on_the_nearest_count_the_knob_allows(name):
    cls = METHODS[name]
    tokens = example_tokens(cls)
    target = max(1, tokens.count // 3)
    got = count(cls.at_budget(target, tokens, **fixed(cls)), tokens)
    knob = "keep" if "keep" in {f.name for f in dataclasses.fields(cls)} else cls.budget_knob
    default = next((f.default for f in dataclasses.fields(cls) if f.name == knob), None)
    if knob and (isinstance(default, int) or knob == "keep"):  # every int value is tried: none is nearer
        nearer = []
        for value in range(1, tokens.count + 1):
            try:
                other = count(cls(**{**fixed(cls), knob: value}), tokens)
            except ValueError:
                continue
            if abs(other - target) < abs(got - target):
                nearer.append((value, other))
        assert not nearer, f"{name}: {knob} values {nearer[:3]} come nearer to {target} than {got}"


@pytest.mark.parametrize("name", UNBUDGETED)
def test_a_method_without_a_knob_names_its_parameters(name):
    cls = METHODS[name]
    with pytest.raises(ValueError, match="has no budget knob: its count follows from"):
        cls.at_budget(8, example_tokens(cls), **fixed(cls))


def test_visionzip_splits_a_budget_as_the_official_settings_do():
    cls = METHODS["visionzip"]
    tokens = example_tokens(cls, layout=(24, 24))
    assert [(m.dominant, m.contextual) for m in (cls.at_budget(b, tokens) for b in (64, 128, 192))] == [
        (54, 10), (108, 20), (162, 30)
    ]


def test_pooling_strides_give_the_nearest_grid():
    """576 tokens on 24 x 24: stride 3 gives 64 exactly; 100 lies nearer to stride 3's 64 than
    to stride 2's 144, 110 nearer to 144."""
    cls = METHODS["pool"]
    tokens = example_tokens(cls, layout=(24, 24), special=0)
    assert cls.at_budget(64, tokens).stride == 3
    assert cls.at_budget(100, tokens).stride == 3
    assert cls.at_budget(110, tokens).stride == 2  # 144 is nearer than 64


def test_sparsevlm_counts_its_recycled_clusters_in_the_budget():
    cls = METHODS["sparsevlm"]
    tokens = example_tokens(cls)
    assert count(cls.at_budget(21, tokens), tokens) == 21  # keep 19 + 2 recycled clusters


def test_prumerge_turns_the_adaptive_ratio_off_for_a_budget():
    method = METHODS["prumerge"].at_budget(21, example_tokens(METHODS["prumerge"]))
    assert method.adaptive is False
