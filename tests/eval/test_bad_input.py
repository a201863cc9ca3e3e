"""Bad model args stop before any weight loads, with a message naming what to pass.

The checkpoint here has its config and processor but no weights file: a plugin that tried to
load weights would fail with an OSError about the missing file, not the ValueError expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_cli import NOT_INSTALLED, env

pytest.importorskip("lmms_eval", reason=NOT_INSTALLED)

from reproductions.lmms_eval.model import Reproductions


@pytest.fixture(scope="module")
def weightless(llava: Path, home: Path) -> Path:
    target = home / "weightless"
    target.mkdir(exist_ok=True)
    for path in llava.iterdir():
        if path.suffix != ".safetensors":
            (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.fixture(scope="module")
def text_only(home: Path) -> Path:
    target = home / "text_only"
    target.mkdir(exist_ok=True)
    (target / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    return target


def load(args: str, batch_size: int = 1) -> Reproductions:
    """The model as lmms-eval makes it from `--model_args` and `--batch_size`."""
    return Reproductions.create_from_arg_string(args, {"batch_size": batch_size, "device": "cpu"})


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ("method=fastvv,keep=4", ["'fastvv' is not a registered method", "method=none", "fastv"]),
        ("method=fastv,kep=4", ["fastv takes the parameters keep, layer", "not kep"]),
        ("method=none,keep=4", ["takes no parameters", "keep"]),
        ("method=fastv,keep=4,layer=9", ["cannot run in", "layer=9", "[0, 3]"]),
        ("method=audio_pool,stride=2", ["cannot run in", "audio tokens", "pick a method for image"]),
        ("method=visionzip,dominant=4,contextual=2,layer=2", ["layer=", "drop layer="]),
        ("method=random,keep=-1", ["keep"]),
    ],
)
def test_refused_before_any_weight_loads(weightless: Path, args: str, named: list[str]):
    with pytest.raises(ValueError) as error:
        load(f"pretrained={weightless},{args}")
    for words in named:
        assert words in str(error.value)


def test_a_batch_size_above_one_is_refused(weightless: Path):
    with pytest.raises(ValueError, match="pass --batch_size 1"):
        load(f"pretrained={weightless},method=fastv,keep=4", batch_size=2)


def test_an_unsupported_family_is_named_with_the_supported_ones(text_only: Path):
    with pytest.raises(ValueError, match="LlamaForCausalLM checkpoint.*LlavaForConditionalGeneration"):
        load(f"pretrained={text_only},method=fastv,keep=4")


def test_a_missing_checkpoint_is_asked_for(weightless: Path):
    with pytest.raises(ValueError, match="pretrained=<checkpoint dir"):
        load("method=fastv,keep=4")


def test_the_weightless_checkpoint_would_fail_to_load(weightless: Path):
    """The control for the tests above: valid args reach the weights, and fail there."""
    with pytest.raises(OSError):
        load(f"pretrained={weightless},method=fastv,keep=4")


def test_the_cli_reports_the_refusal(weightless: Path, home: Path, tasks: Path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "reproductions", "--model_args",
         f"pretrained={weightless},method=fastv,kep=4", "--tasks", "tiny_open", "--include_path",
         str(tasks), "--device", "cpu", "--batch_size", "1"],
        env=env(home), capture_output=True, text=True, timeout=300,
    )
    assert "fastv takes the parameters keep, layer" in done.stdout + done.stderr
    assert "Loading weights" not in done.stdout + done.stderr
