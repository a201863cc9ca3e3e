"""The plugin on tiny Qwen2-VL and Qwen2.5-VL checkpoints through the real CLI: uncompressed it
answers as lmms-eval's own `qwen2_vl` model does; llm- and projector-stage methods record their
budgets in every sample (3-D M-RoPE positions kept), on images and on videos. Without torchvision
the plugin reads images only (transformers' Qwen-VL video processor needs torchvision), and
lmms-eval's own `qwen2_vl` model cannot load: those tests skip, saying why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eval_checkpoints import lacks_torchvision, needs_torchvision
from eval_cli import NOT_INSTALLED, lmms_eval

pytest.importorskip("lmms_eval", reason=NOT_INSTALLED)

from reproductions.lmms_eval.inputs import load_processor


@needs_torchvision
def test_uncompressed_answers_as_lmms_evals_own_qwen2_vl(home: Path, tasks: Path, qwen2_vl: Path):
    ours = lmms_eval(home, tasks, "reproductions", f"pretrained={qwen2_vl},method=none", "tiny_open")
    own = lmms_eval(home, tasks, "qwen2_vl", f"pretrained={qwen2_vl},device_map=cpu", "tiny_open")
    # lmms-eval's qwen2_vl strips each answer; the plugin returns it as decoded
    assert [r.strip() for r in ours.replies("tiny_open")] == own.replies("tiny_open")
    assert ours.score("tiny_open", "overlap") == own.score("tiny_open", "overlap")
    assert len(set(own.replies("tiny_open"))) > 1  # the replies differ per image
    for count in ours.counts("tiny_open"):
        assert count["media_before"] == count["media_after"] == 16  # 112 px: 8x8 patches, 2x2 merged


@pytest.mark.parametrize(("method", "kept"), [("fastv,keep=4,layer=2", 4), ("pool,stride=2", 4), ("random,keep=7", 7)])
def test_qwen2_5_vl_records_the_budget(home: Path, tasks: Path, qwen2_5_vl: Path, method: str, kept: int):
    run = lmms_eval(home, tasks, "reproductions", f"pretrained={qwen2_5_vl},method={method}", "tiny_open")
    counts = run.counts("tiny_open")
    assert len(counts) == 8
    for count in counts:
        assert (count["media_before"], count["media_after"]) == (16, kept)
        assert count["tokens_after"] == count["tokens_before"] - (16 - kept)


@needs_torchvision
def test_videos_go_through_the_processor(home: Path, tasks: Path, qwen2_vl: Path):
    """16-frame clips, 8 frames sampled, 2 per temporal patch, 4x4 merged patches each: 64."""
    none = lmms_eval(home, tasks, "reproductions", f"pretrained={qwen2_vl},method=none", "tiny_video")
    pooled = lmms_eval(home, tasks, "reproductions", f"pretrained={qwen2_vl},method=random,keep=16", "tiny_video")
    for count in none.counts("tiny_video"):
        assert count["media_before"] == count["media_after"] == 64
    for after, before in zip(pooled.counts("tiny_video"), none.counts("tiny_video"), strict=True):
        assert (after["media_before"], after["media_after"]) == (64, 16)
        assert after["tokens_after"] == before["tokens_before"] - 48
    replies = none.replies("tiny_video")
    assert all(replies[i] != replies[i + 4] for i in range(4))  # same question, other clip


@lacks_torchvision
def test_without_torchvision_videos_are_refused_saying_why(qwen2_vl: Path):
    processor = load_processor(str(qwen2_vl))
    assert processor.image_processor is not None and processor.chat_template
    clip = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="video processor cannot be built here.*torchvision"):
        processor(text=["<|video_pad|>"], videos=[clip], return_tensors="pt")
