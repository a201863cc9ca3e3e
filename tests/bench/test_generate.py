"""`python -m benchmarks generate`: methods run through `compress` + `generate`, and the token
counts the probe reads from the layers are the ones each stage promises. No timing is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main as dispatch


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    out = Path(tmp_path_factory.mktemp("generate")) / "run.json"
    argv = ["generate", "--layers", "3", "--hidden", "64", "--repeats", "2", "--warmup", "0",
            "--decode-tokens", "2", "--methods", "pool,fastv", "--budgets", "64", "--out", str(out)]
    assert dispatch(argv) == 0
    return json.loads(out.read_text())


def test_every_figure_is_recorded_with_median_and_p95(data):
    assert [r["method"] for r in data["results"]] == ["none", "pool", "fastv"]
    for r in data["results"]:
        for clocked in ("prefill_time_s", "ttft_s", "decode_time_per_token_s"):
            assert len(r[clocked]["samples"]) == (2 if clocked != "decode_time_per_token_s" else 4)
            assert 0 < r[clocked]["median"] <= r[clocked]["p95"]
        assert r["peak_memory_bytes"] is None or r["peak_memory_bytes"] >= 0
        assert r["flops"]["llm_prefill"] > 0 and r["kv_cache_bytes"] > 0


def test_schedules_come_from_the_layers_the_model_ran(data):
    none, pool, fastv = data["results"]
    assert none["schedule"] == [576 + 64] * 3 and none["projected"] == 576
    assert none["method_time_s"] is None and pool["method_time_s"]["median"] > 0
    # pool acts before the LLM: 8 x 8 = 64 image tokens in every layer
    assert pool["params"]["stride"] == 3 and pool["schedule"] == [64 + 64] * 3
    # FastV drops at layer 2: the full prompt before it, 64 image tokens from it on
    assert fastv["schedule"] == [640, 640, 128]
    assert fastv["speedup"]["flops"] == pytest.approx(
        none["flops"]["llm_prefill"] / fastv["flops"]["llm_prefill"]
    )
    # the KV cache holds what each layer kept (float32: 4 bytes, keys and values)
    per_token = none["kv_cache_bytes"] / (640 * 3)
    assert pool["kv_cache_bytes"] == pytest.approx(per_token * 128 * 3)
