"""`python -m benchmarks` (generate): methods run through `compress` + `generate` on every preset
family, and the token counts the probe reads from the layers are the ones each stage promises,
the KV cache holds what each layer kept, and the document has its documented format. No timing
is checked (the targets are printed figures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import FORMAT
from benchmarks.__main__ import main as dispatch
from benchmarks.families import FAMILIES

LAYERS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    out = Path(tmp_path_factory.mktemp("generate")) / "run.json"
    argv = ["--layers", str(LAYERS), "--hidden", "128", "--repeats", "2", "--warmup", "0",
            "--decode-tokens", "2", "--methods", "random,pool,fastv", "--budgets", "64",
            "--out", str(out)]
    assert dispatch(argv) == 0
    return json.loads(out.read_text())


def test_the_document_has_its_format(data):
    assert data["format"] == FORMAT and data["path"] == "compress+generate"
    for key in ("created", "command", "environment", "model", "settings", "scenarios", "summary"):
        assert key in data
    assert [s["family"] for s in data["scenarios"]] == [
        "llava-1.5", "qwen2.5-vl", "qwen2-vl-video", "qwen2-audio", "qwen2.5-omni-audio"]
    assert len(data["scenarios"]) == len(FAMILIES)
    summary = data["summary"]
    assert summary["thresholds"] == {"efficiency": 0.9, "overhead": 0.03}
    assert {r["family"] for r in summary["rows"]} == {s["family"] for s in data["scenarios"]}
    for r in data["results"]:
        for clocked in ("prefill_time_s", "ttft_s", "overhead_time_s", "own_time_s", "layers_time_s"):
            assert len(r[clocked]["samples"]) == 2 and r[clocked]["median"] <= r[clocked]["p95"]
        assert len(r["decode_time_per_token_s"]["samples"]) == 4
        assert r["peak_memory_bytes"] is None or r["peak_memory_bytes"] >= 0
        assert r["flops"]["llm_prefill"] > 0
        assert set(r["speedup"]) == {"measured", "flops", "efficiency", "ceiling"}
        assert r["layers_time_s"]["median"] > 0
        assert (r["method_time_s"] is None) == (r["method"] == "none")


@pytest.mark.parametrize("family", ["llava-1.5", "qwen2.5-vl", "qwen2-vl-video", "qwen2-audio",
                                    "qwen2.5-omni-audio"])
def test_schedules_and_kv_bytes_per_family(data, family):
    scenario = next(s for s in data["scenarios"] if s["family"] == family)
    rows = {r["method"]: r for r in data["results"] if r["family"] == family}
    prompt = scenario["tokens"] + scenario["text_tokens"]
    none = rows["none"]
    assert none["schedule"] == [prompt] * LAYERS and none["tokens_out"] == scenario["tokens"]
    # random keeps 64 media tokens before the LLM: every layer reads them and the text
    short = 64 + scenario["text_tokens"]
    assert rows["random"]["schedule"] == [short] * LAYERS and rows["random"]["tokens_out"] == 64
    per_token = none["kv_cache_bytes"] / (prompt * LAYERS)  # keys and values of every layer
    assert rows["random"]["kv_cache_bytes"] == pytest.approx(per_token * short * LAYERS)
    assert rows["random"]["speedup"]["flops"] == pytest.approx(
        none["flops"]["llm_prefill"] / rows["random"]["flops"]["llm_prefill"])
    if scenario["modality"] == "image":  # pool: a 3 x 3 stride gives 8 x 8 tokens
        assert rows["pool"]["params"]["stride"] == 3 and rows["pool"]["schedule"] == [short] * LAYERS
    if "fastv" in rows:  # FastV drops at layer 2: the full prompt before it
        assert rows["fastv"]["schedule"] == [prompt, prompt, short]
        kept = 2 * prompt + short
        assert rows["fastv"]["kv_cache_bytes"] == pytest.approx(per_token * kept)
    if family == "llava-1.5":  # the projector reads every image row; its output is compressed
        assert none["projected"] == rows["random"]["projected"] == 576


def test_the_attention_asked_for_is_the_one_that_runs(tmp_path, monkeypatch):
    """`--attention eager` runs every attention module eagerly, the encoders' too (the families
    are built with SDPA), and the run records it."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def refuse(*args, **kwargs):
        raise AssertionError("SDPA ran under --attention eager")

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", refuse)
    out = tmp_path / "eager.json"
    argv = ["--families", "llava,qwen2_5_vl", "--layers", "2", "--hidden", "128", "--repeats", "1",
            "--warmup", "0", "--decode-tokens", "1", "--methods", "random", "--attention", "eager",
            "--out", str(out)]
    assert dispatch(argv) == 0
    assert json.loads(out.read_text())["settings"]["attention"] == "eager"
