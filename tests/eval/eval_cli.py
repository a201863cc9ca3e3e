"""Run the real lmms-eval CLI in a subprocess and read back what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: why the tests of this folder skip where lmms-eval is missing (each module skips itself)
NOT_INSTALLED = "lmms-eval is not installed: pip install -e '.[eval]' (make setup does)"


@dataclass
class Run:
    """What one CLI run wrote: the results JSON, the sample logs by task, and its output."""

    results: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]]
    log: str

    def score(self, task: str, metric: str) -> float:
        return self.results["results"][task][f"{metric},none"]

    def replies(self, task: str) -> list[Any]:
        return [s["filtered_resps"] for s in sorted(self.samples[task], key=lambda s: s["doc_id"])]

    def counts(self, task: str) -> list[dict[str, Any]]:
        """Per-request counts in doc order, without the timings and the rank (which differ
        between runs of the same configuration)."""
        timing = {"prefill_s", "ttft_s", "total_s", "rank"}
        ordered = sorted(self.samples[task], key=lambda s: s["doc_id"])
        return [{k: v for k, v in c.items() if k not in timing} for s in ordered for c in s["token_counts"]]


def env(home: Path) -> dict[str, str]:
    """Offline, with every cache under the test's directory, one thread per process."""
    return {
        **os.environ,
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def lmms_eval(
    home: Path, tasks: Path, model: str, model_args: str, task_names: str, processes: int = 1,
    extra: tuple[str, ...] = (),
) -> Run:
    """`python -m lmms_eval ...` (under `accelerate launch` for several processes); the run's
    results, or an AssertionError with the tail of its output where it wrote none (lmms-eval
    logs an error and still exits 0)."""
    out = home / f"out-{len(list(home.glob('out-*')))}"
    command = [
        "-m", "lmms_eval", "--model", model, "--model_args", model_args, "--tasks", task_names,
        "--include_path", str(tasks), "--device", "cpu", "--batch_size", "1",
        "--output_path", str(out), "--log_samples", "--verbosity", "WARNING", *extra,
    ]
    variables = env(home)
    if processes > 1:
        # `accelerate launch` is accelerate.commands.launch; the `accelerate` script itself
        # imports timm, which fails where torchvision cannot load (see the Makefile's setup).
        # `--cpu` alone runs one process (several need mpirun); the multi-process launcher
        # with ACCELERATE_USE_CPU starts them and joins them in a gloo group
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command = launch + command
        variables["ACCELERATE_USE_CPU"] = "1"
    done = subprocess.run(
        [sys.executable, *command], env=variables, capture_output=True, text=True, timeout=600
    )
    log = done.stdout + done.stderr
    found = list(out.glob("*/*_results.json"))
    assert found, f"lmms-eval wrote no results (exit {done.returncode}):\n{log[-4000:]}"
    samples = {}
    for path in out.glob("*/*_samples_*.jsonl"):
        task = path.stem.split("_samples_", 1)[1]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return Run(json.loads(found[0].read_text()), samples, log)
