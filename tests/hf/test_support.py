"""The support matrix is true: the README's copy equals a fresh generation, every cell marked
"runs" compresses a prompt of its family's tiny model, and the others are refused with the
reason the matrix gives."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

import reproductions
from reproductions.hf import compress
from reproductions.hf.models import adapter_for
from reproductions.hf.support import FAMILIES, matrix
from reproductions.hf.tiny import BUILDERS, MODALITY
from tools.catalog import ROOT
from tools.support import render

CELLS = matrix()


@functools.cache
def built(tiny: str):
    return BUILDERS[tiny]()


def inputs_for(family: str, cls) -> tuple[torch.nn.Module, dict]:
    """The family's model with a prompt of a modality the method takes (one with a grid for
    grid methods: OneVision's video)."""
    base = FAMILIES[family]
    model, _ = built(base)
    gridded = adapter_for(model).gridded
    for tiny in [name for name in MODALITY if name == base or name.startswith(f"{base}_")]:
        modality = MODALITY[tiny]
        if modality in cls.modality and (not cls.grid or modality in gridded):
            return model, built(tiny)[1]
    raise AssertionError(f"no tiny prompt of {cls.modality} for {family}")


def small(cls, model: torch.nn.Module):
    """The example parameters with budgets for 8-16-token spans, a layer of the 4-layer decoder,
    and (trainable methods) the width of the features the stage hands them."""
    params = dict(cls.example)
    names = {f.name for f in dataclasses.fields(cls)}
    if "dim" in names:
        adapter = adapter_for(model)
        config = model.config
        params["dim"] = (config.vision_config if adapter.projector is not None else config.get_text_config()).hidden_size
        if "out_dim" in names:
            params["out_dim"] = params["dim"]
    if "keep" in names and isinstance(params.get("keep", getattr(cls, "keep", None)), int):
        params["keep"] = 0.5
    if "layer" in names:
        params["layer"] = 2
    return cls(**params)


def test_the_readme_matrix_is_current():
    from reproductions.hf.support import markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme, markdown(CELLS)) == readme, "run `python -m tools support`"


RUNS = [(name, family) for name, row in CELLS.items() for family, (kind, _) in row.items() if kind == "runs"]
REFUSED = [(name, family) for name, row in CELLS.items() for family, (kind, _) in row.items() if kind != "runs"]


@pytest.mark.parametrize("name,family", RUNS, ids=[f"{n}-{f}" for n, f in RUNS])
def test_a_cell_that_runs_compresses(name, family):
    cls = reproductions.methods()[name]
    model, inputs = inputs_for(family, cls)
    with compress(model, small(cls, model)) as report, torch.no_grad():
        if cls.stage == "cache":
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
        else:
            model(**inputs)
    assert report.records, f"{name} compressed nothing in {family}"
    assert all(sum(r.media_after) <= sum(r.media_before) for r in report.records)


@pytest.mark.parametrize("name,family", REFUSED, ids=[f"{n}-{f}" for n, f in REFUSED])
def test_a_cell_that_does_not_run_is_refused_with_its_reason(name, family):
    cls = reproductions.methods()[name]
    model, _ = built(FAMILIES[family])
    _, reason = CELLS[name][family]
    with pytest.raises(ValueError) as error, compress(model, cls(**cls.example)):
        pass
    assert str(error.value) == reason
