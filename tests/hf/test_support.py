"""The support matrix is true: the README's copy equals a fresh generation; every cell marked
"runs" compresses its family's tiny prompt through `generate()`, only in its own modality and
leaving no hook behind, and a budget that keeps every token changes no logit; the others are
refused with the reason the matrix gives. Cases come from the matrix, which comes from the
registry, so a method that lands later is exercised (or refused) without a line here."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import cell_method, cell_prompts, hook_count, tiny

import reproductions
from reproductions import Tokens
from reproductions.hf import compress
from reproductions.hf.support import FAMILIES, matrix
from tools.catalog import ROOT
from tools.support import render

CELLS = matrix()


def test_the_readme_matrix_is_current():
    from reproductions.hf.support import markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme, markdown(CELLS)) == readme, "run `python -m tools support`"


RUNS = [(name, family) for name, row in CELLS.items() for family, (kind, _) in row.items() if kind == "runs"]
REFUSED = [(name, family) for name, row in CELLS.items() for family, (kind, _) in row.items() if kind != "runs"]


#: every "runs" cell with each of its family's prompts in a modality the method takes
PROMPTS = [
    (name, family, prompt)
    for name, family in RUNS
    for prompt in cell_prompts(family, reproductions.methods()[name])
]


@pytest.mark.parametrize("name,family,prompt", PROMPTS, ids=["-".join(case) for case in PROMPTS])
def test_a_cell_that_runs_compresses_through_generate(name, family, prompt):
    cls = reproductions.methods()[name]
    model, inputs = tiny(FAMILIES[family])[0], tiny(prompt)[1]
    method = cell_method(cls, model)
    hooks = hook_count(model)
    with compress(model, method) as report, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] + 3)
    assert hook_count(model) == hooks
    assert report.records, f"{name} compressed nothing in {family}"
    for record in report.records:
        assert record.stage == method.stage
        for b in range(len(record.tokens_before)):
            lowest = 0 if keeps_none(method, record.media_before[b]) else 1
            assert lowest <= record.media_after[b] <= record.media_before[b]
            removed = record.media_before[b] - record.media_after[b]
            assert record.tokens_after[b] == record.tokens_before[b] - removed


def keeps_none(method, count: int) -> bool:
    """True where the method declares it keeps no token of `count` (VTW's withdrawal)."""
    try:
        return method.output_count(Tokens(features=torch.zeros(1, count, 1))) == 0
    except (ValueError, AttributeError):  # a count it cannot take, or a signal it reads
        return False


def keeps_everything(cls) -> dict | None:
    """The parameters of a budget that keeps every token: the method's `identity`, else keep=1.0;
    None where it has neither (a fixed-ratio pooling)."""
    if cls.identity is not None:
        return dict(cls.identity)
    return {"keep": 1.0} if "keep" in cls.__dataclass_fields__ else None


KEEP_ALL = [case for case in PROMPTS if keeps_everything(reproductions.methods()[case[0]]) is not None]


@pytest.mark.parametrize("name,family,prompt", KEEP_ALL, ids=["-".join(case) for case in KEEP_ALL])
def test_a_budget_that_keeps_everything_changes_nothing(name, family, prompt):
    cls = reproductions.methods()[name]
    model, inputs = tiny(FAMILIES[family])[0], tiny(prompt)[1]
    method = cell_method(cls, model, **keeps_everything(cls))
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with compress(model, method):
            kept_logits = model(**inputs).logits
            kept_tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    valid = inputs["attention_mask"].bool()
    assert torch.equal(kept_logits[valid], logits[valid])
    assert torch.equal(kept_tokens, tokens)


@pytest.mark.parametrize("name,family", REFUSED, ids=[f"{n}-{f}" for n, f in REFUSED])
def test_a_cell_that_does_not_run_is_refused_with_its_reason(name, family):
    cls = reproductions.methods()[name]
    model, _ = tiny(FAMILIES[family])
    _, reason = CELLS[name][family]
    with pytest.raises(ValueError) as error, compress(model, cls(**cls.example)):
        pass
    assert str(error.value) == reason
