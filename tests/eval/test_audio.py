"""The plugin on a tiny Qwen2-Audio checkpoint through the real CLI: audio clips, handed over
as lmms-eval's audio tasks hand them (`{"array", "sampling_rate"}`), go through the checkpoint's
own processor (Whisper features), and projector-stage methods record their budgets.

lmms-eval's own `qwen2_audio` model moves its inputs to CUDA unconditionally, so the
uncompressed run cannot be compared with it on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_cli import NOT_INSTALLED, Run, lmms_eval

pytest.importorskip("lmms_eval", reason=NOT_INSTALLED)


@pytest.fixture(scope="module")
def none(home: Path, tasks: Path, qwen2_audio: Path) -> Run:
    return lmms_eval(home, tasks, "reproductions", f"pretrained={qwen2_audio},method=none", "tiny_audio")


def test_each_clip_reaches_the_model(none: Run):
    replies = none.replies("tiny_audio")
    # docs i and i + 4 ask the same question about clips of different pitch
    assert all(replies[i] != replies[i + 4] for i in range(4))
    for count in none.counts("tiny_audio"):
        assert count["media_before"] == count["media_after"] == 32  # 128 frames, stride 2, pool 2


@pytest.mark.parametrize(("method", "kept"), [("audio_pool,stride=2", 16)])
def test_audio_methods_record_the_budget(home: Path, tasks: Path, qwen2_audio: Path, none: Run, method: str, kept: int):
    run = lmms_eval(home, tasks, "reproductions", f"pretrained={qwen2_audio},method={method}", "tiny_audio")
    for after, before in zip(run.counts("tiny_audio"), none.counts("tiny_audio"), strict=True):
        assert (after["media_before"], after["media_after"]) == (32, kept)
        assert after["tokens_after"] == before["tokens_before"] - (32 - kept)
