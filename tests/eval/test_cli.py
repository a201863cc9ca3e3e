"""The plugin through the real lmms-eval CLI on a tiny LLaVA-1.5 checkpoint: uncompressed it
answers as lmms-eval's own `llava_hf` model does; compressed, every sample records the kept
tokens; two processes give exactly the one-process results."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import transformers
from eval_cli import NOT_INSTALLED, Run, lmms_eval
from PIL import Image

import reproductions

pytest.importorskip("lmms_eval", reason=NOT_INSTALLED)

from reproductions.lmms_eval.inputs import Media, encode, prompt

BOTH = "tiny_open,tiny_choice"
FASTV = "method=fastv,keep=4,layer=2"


@pytest.fixture(scope="module")
def none(home: Path, tasks: Path, llava: Path) -> Run:
    return lmms_eval(home, tasks, "reproductions", f"pretrained={llava},method=none", BOTH)


@pytest.fixture(scope="module")
def fastv(home: Path, tasks: Path, llava: Path) -> Run:
    return lmms_eval(home, tasks, "reproductions", f"pretrained={llava},{FASTV}", BOTH)


def test_uncompressed_answers_as_lmms_evals_own_llava_hf(home: Path, tasks: Path, llava: Path, none: Run):
    # llava_hf's loglikelihood fails on transformers 5 (it calls the processor on a prompt with
    # an <image> token but no image), so the two are compared on generation
    own = lmms_eval(
        home, tasks, "llava_hf", f"pretrained={llava},device_map=cpu", "tiny_open", extra=("--force_simple",)
    )
    assert none.replies("tiny_open") == own.replies("tiny_open")
    assert none.score("tiny_open", "overlap") == own.score("tiny_open", "overlap")
    assert len(set(map(str, own.replies("tiny_open")))) > 1  # the replies differ per image


def test_uncompressed_counts_every_token(none: Run):
    for task in ("tiny_open", "tiny_choice"):
        for count in none.counts(task):
            assert count["media_before"] == count["media_after"] == 16  # 4x4 patches, no [CLS]
            assert count["tokens_before"] == count["tokens_after"] == count["input_tokens"]


def test_fastv_keeps_its_budget_in_every_sample(none: Run, fastv: Run):
    for task in ("tiny_open", "tiny_choice"):
        kept, full = fastv.counts(task), none.counts(task)
        assert len(kept) == len(full) == (8 if task == "tiny_open" else 16)
        for after, before in zip(kept, full, strict=True):
            assert (after["media_before"], after["media_after"]) == (16, 4)
            assert after["tokens_before"] == before["tokens_before"]
            assert after["tokens_after"] == after["input_tokens"] == before["tokens_before"] - 12
    throughput = fastv.results["throughput"]
    assert throughput["avg_generate_until_media_after"] == 4
    assert throughput["avg_loglikelihood_requests"] == 16
    assert "method=fastv,keep=4,layer=2" in fastv.results["config"]["model_args"]
    # every sample carries the run's configuration, the method's parameters resolved
    run = fastv.counts("tiny_open")[0]["run"]
    assert run["method"] == "fastv" and run["stage"] == "llm"
    assert run["params"] == {**dataclasses.asdict(reproductions.get("fastv", keep=4, layer=2))}
    # compression reaches the log-likelihoods (FastV drops tokens from layer 2 on)
    assert fastv.replies("tiny_choice") != none.replies("tiny_choice")


def test_loglikelihood_is_the_continuations_log_probability(none: Run, llava: Path, tasks: Path):
    """The plugin's answer for doc 0, choice " yes", against log-softmax of the model's logits."""
    processor = transformers.AutoProcessor.from_pretrained(llava)
    model = transformers.LlavaForConditionalGeneration.from_pretrained(llava).eval()
    sample = next(s for s in none.samples["tiny_choice"] if s["doc_id"] == 0)
    media = Media.of([Image.open(sample["input_media"][0])])
    text = prompt(processor, sample["input"], media)
    context = encode(processor, text, media, 8)["input_ids"].shape[1]
    full = encode(processor, text + " yes", media, 8)
    with torch.no_grad():
        logits = model(**full).logits[0].double()
    ids = full["input_ids"][0]
    expected = sum(
        torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(context, len(ids))
    )
    logprob, greedy = sample["filtered_resps"][0]
    assert math.isclose(float(logprob), expected, rel_tol=1e-5)
    assert greedy == "False"


def test_two_processes_give_the_one_process_results(home: Path, tasks: Path, llava: Path, fastv: Run):
    split = lmms_eval(home, tasks, "reproductions", f"pretrained={llava},{FASTV}", BOTH, processes=2)
    for task in ("tiny_open", "tiny_choice"):
        assert split.results["results"][task] == fastv.results["results"][task]
        assert split.replies(task) == fastv.replies(task)
        assert split.counts(task) == fastv.counts(task)
        ranks = {c["rank"] for s in split.samples[task] for c in s["token_counts"]}
        assert ranks == {0, 1}  # each process answered a share
    # rank 0 gathered every process's counts, each request once
    assert split.results["throughput"]["avg_generate_until_requests"] == 8
