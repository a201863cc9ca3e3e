"""The lmms-eval model plugin: `--model reproductions`.

    pip install -e ".[eval]"
    python -m lmms_eval --model reproductions \\
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=fastv,keep=64 --tasks pope

lmms-eval finds the model through the `lmms_eval.models` entry point that `pyproject.toml`
declares (`manifest` below), the registration lmms-eval 0.7.3 documents for third-party models;
nothing inside lmms-eval is patched. `model.py` is the model, `options.py` checks the model args
before any weight loads, `inputs.py` turns requests into processor inputs, and `counts.py`
writes what compression did into the results.
"""

from __future__ import annotations

from typing import Any

#: the `--model` name
MODEL = "reproductions"


def manifest() -> Any:
    """lmms-eval's entry-point payload: where the `reproductions` model class lives (imported by
    lmms-eval only when the model is asked for)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL, simple_class_path="reproductions.lmms_eval.model.Reproductions")
