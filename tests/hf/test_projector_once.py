"""LLaVA's projector runs once per image call, on the kept tokens only: the projector stage
replaces its forward for the context instead of projecting every token and then the kept ones
again (which cost the whole uncompressed projector on top of the compressed run)."""

from __future__ import annotations

import torch
from hf_helpers import tiny

from reproductions.hf import compress


def test_the_projector_projects_only_the_kept_tokens():
    model, inputs = tiny("llava")
    projector = model.model.multi_modal_projector
    first = next(m for m in projector.modules() if isinstance(m, torch.nn.Linear))
    rows: list[int] = []
    handle = first.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[-2]))
    try:
        with torch.no_grad():
            model(**inputs)
            full = list(rows)
            rows.clear()
            with compress(model, "random", keep=4):
                model(**inputs)
    finally:
        handle.remove()
    assert full and all(n > 4 for n in full)
    assert rows == [4] * len(full)  # one projector call per encoder call, on the 4 kept tokens
    assert "forward" not in vars(projector)  # the class's forward again after the context


def test_a_forward_the_instance_already_had_runs_inside_and_is_put_back():
    """accelerate's device_map wraps a module's forward as an instance attribute: the projector
    stage projects through that wrapper and leaves it in place on exit."""
    model, inputs = tiny("llava")
    projector = model.model.multi_modal_projector
    seen: list[int] = []
    own = projector.forward

    def wrapped(features):
        seen.append(features.shape[-2])
        return own(features)

    projector.forward = wrapped
    try:
        with torch.no_grad(), compress(model, "random", keep=4):
            model(**inputs)
        assert seen and set(seen) == {4}
        assert vars(projector)["forward"] is wrapped
    finally:
        del projector.forward
