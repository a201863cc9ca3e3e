"""`python -m tools eval` on the tiny LLaVA: the controls run beside the method, each row has its
kept tokens, prefill FLOPs, TTFT and gain over the best control, the plot is drawn, and a sweep
run again redoes only what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eval_cli import NOT_INSTALLED, env

pytest.importorskip("lmms_eval", reason=NOT_INSTALLED)

from reproductions.flops import DecoderShape, prefill_flops, token_schedule


def sweep(home: Path, tasks: Path, llava: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tools", "eval", "--models", f"llava={llava}", "--methods",
               "fastv", "--budgets", "4", "--tasks", "tiny_open", "--include-path", str(tasks),
               "--limit", "3", "--out", str(out), *more]
    return subprocess.run(command, env=env(home), capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[2])


@pytest.fixture(scope="module")
def swept(home: Path, tasks: Path, llava: Path) -> Path:
    out = home / "sweep"
    done = sweep(home, tasks, llava, out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def rows(out: Path) -> dict[str, dict]:
    return {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}


def test_the_controls_run_beside_the_method(swept: Path, llava: Path):
    table = rows(swept)
    assert set(table) == {"none", "random", "pool", "fastv"}
    assert table["none"]["kept_tokens"] == 16
    for method in ("random", "pool", "fastv"):
        assert table[method]["budget"] == 4 and table[method]["kept_tokens"] == 4
    assert table["pool"]["params"] == {"stride": 2, "mode": "avg"}  # 4x4 grid -> 2x2
    best = max(table[m]["score"] for m in ("none", "random", "pool"))
    assert table["fastv"]["gain"] == pytest.approx(table["fastv"]["score"] - best)
    assert all(table[m]["ttft_s"] > 0 for m in table)
    assert (swept / "llava-tiny_open.png").stat().st_size > 10_000


def test_prefill_flops_follow_the_method_s_stage(swept: Path, llava: Path):
    import transformers

    shape = DecoderShape.from_config(transformers.AutoConfig.from_pretrained(llava))
    samples = sorted((swept / "runs").glob("llava-fastv-4/*/*_samples_tiny_open.jsonl"))[0]
    counts = [json.loads(line)["token_counts"][0] for line in samples.read_text().splitlines()]
    # each sample records the rows every decoder layer read: FastV's full prompt before layer 2
    assert [c["schedule"] for c in counts] == [token_schedule(4, c["tokens_before"], {2: c["tokens_after"]}) for c in counts]
    fastv = [prefill_flops(shape, token_schedule(4, c["tokens_before"], {2: c["tokens_after"]})) for c in counts]
    pool = [prefill_flops(shape, c["tokens_after"]) for c in counts]  # 12 fewer tokens everywhere
    table = rows(swept)
    assert table["fastv"]["prefill_flops"] == pytest.approx(sum(fastv) / len(fastv))
    assert table["pool"]["prefill_flops"] == pytest.approx(sum(pool) / len(pool))
    assert table["pool"]["prefill_flops"] < table["fastv"]["prefill_flops"] < table["none"]["prefill_flops"]


def test_a_stopped_sweep_redoes_only_the_missing_run(swept: Path, home: Path, tasks: Path, llava: Path):
    table = json.loads((swept / "results.json").read_text())
    before = {r["method"]: r for r in table["rows"]}
    del table["runs"]["llava/pool/4"]  # as if stopped before pool finished
    table["rows"] = [r for r in table["rows"] if r["method"] != "pool"]
    (swept / "results.json").write_text(json.dumps(table))
    done = sweep(home, tasks, llava, swept)
    assert done.returncode == 0, done.stdout + done.stderr
    started = [line for line in done.stdout.splitlines() if line.startswith("eval: llava/")]
    assert started == ["eval: llava/pool/4 {'stride': 2, 'mode': 'avg'}"]
    after = rows(swept)
    assert after["fastv"] == before["fastv"] and after["pool"]["kept_tokens"] == 4


def test_an_unknown_method_stops_before_any_run(home: Path, tasks: Path, llava: Path):
    done = sweep(home, tasks, llava, home / "sweep-bad", "--methods", "fastvv")
    assert done.returncode != 0
    assert "'fastvv' is not a registered method" in done.stderr
    assert not (home / "sweep-bad" / "runs").exists()
