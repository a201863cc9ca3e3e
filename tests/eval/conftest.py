"""Fixtures of the lmms-eval tests: a tiny checkpoint per family and the tiny task suite, made
once per session (saving a checkpoint takes a fraction of a second; each CLI run ~10 s)."""

from __future__ import annotations

from pathlib import Path

import eval_checkpoints
import eval_tasks
import pytest


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lmms_eval")


@pytest.fixture(scope="session")
def tasks(home: Path) -> Path:
    return eval_tasks.write(home / "tasks")


@pytest.fixture(scope="session")
def llava(home: Path) -> Path:
    return eval_checkpoints.save("llava", home / "llava")


@pytest.fixture(scope="session")
def qwen2_vl(home: Path) -> Path:
    return eval_checkpoints.save("qwen2_vl", home / "qwen2_vl")


@pytest.fixture(scope="session")
def qwen2_5_vl(home: Path) -> Path:
    return eval_checkpoints.save("qwen2_5_vl", home / "qwen2_5_vl")


@pytest.fixture(scope="session")
def qwen2_audio(home: Path) -> Path:
    return eval_checkpoints.save("qwen2_audio", home / "qwen2_audio")
