"""A smoke run of `python -m benchmarks` on the tiny preset, and the harness's own pieces.

Speed targets live in the printed figures of a real run, never here: these tests check what is
recorded (token counts, schedules, FLOPs, the JSON format), not how fast anything was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import reproductions
from benchmarks import FORMAT, budgets, presets, report, sweep, timing
from benchmarks.__main__ import main as dispatch
from reproductions.flops import ModelShape
from reproductions.interface import Tokens, check_compression

#: one method per stage: projector (keep, and a stride knob), encoder (per-layer r), llm, cache
METHODS = ["random", "pool", "tome", "fastv", "dycoke_cache"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--model",
        "tiny",
        "--methods",
        ",".join(METHODS),
        "--repeats",
        "1",
        "--decode-tokens",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--plots",
    ]
    assert dispatch(["sweep", *argv]) == 0  # `python -m benchmarks sweep ...`
    files = sorted(out.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    data["_out"] = out
    return data


def test_json_format_and_environment(run):
    assert run["format"] == FORMAT
    assert {"torch", "device", "threads", "dtype", "transformers"} <= set(run["environment"])
    assert run["environment"]["threads"] == 1 and run["environment"]["device"] == "cpu"
    assert run["model"]["decoder"]["layers"] == 2 and run["model"]["encoder"]["layers"] == 2
    assert run["settings"]["clock"] == "process"
    assert [s["modality"] for s in run["scenarios"]] == ["image", "video", "audio"]


def test_every_method_runs_on_each_of_its_modalities(run):
    registry = reproductions.methods()
    for name in METHODS:
        for modality in registry[name].modality:
            records = [
                r for r in run["results"] if r["method"] == name and r["modality"] == modality
            ]
            assert records, f"{name} has no {modality} record"
            assert all(r["error"] is None for r in records), records


def test_records_agree_with_budgets_and_flops(run):
    baselines = {s["modality"]: s["baseline"] for s in run["scenarios"]}
    layers = run["model"]["decoder"]["layers"]
    for r in run["results"]:
        base = baselines[r["modality"]]
        assert 0 < r["tokens_out"] <= r["tokens_in"]
        assert len(r["schedule"]) == layers
        assert r["flops"]["llm_prefill"] <= base["flops"]["llm_prefill"]
        assert r["speedup"]["flops"] == pytest.approx(
            base["flops"]["llm_prefill"] / r["flops"]["llm_prefill"]
        )
        for clocked in ("method_time_s", "prefill_time_s", "ttft_s", "decode_time_per_token_s"):
            assert r[clocked]["median"] >= 0 and r[clocked]["p95"] >= r[clocked]["median"]
        if r["stage"] == "projector":  # the LLM sees the kept tokens in every layer
            assert r["schedule"] == [r["tokens_out"] + run["settings"]["text_tokens"]] * layers
            assert r["kv_cache_bytes"] < base["kv_cache_bytes"]


def test_budget_fitting_and_stage_schedules(run):
    def records(method):
        return [r for r in run["results"] if r["method"] == method and r["modality"] == "image"]

    assert [r["tokens_out"] for r in records("random")] == [48, 16]
    # pooling has no `keep`: the stride whose output lands nearest to 48 and 16 of 12 x 12
    assert {r["params"]["stride"]: r["tokens_out"] for r in records("pool")} == {2: 36, 3: 16}
    fastv = records("fastv")[0]
    text = run["settings"]["text_tokens"]
    assert fastv["schedule"] == [144 + text] * 1 + [fastv["tokens_out"] + text]
    cache = [r for r in run["results"] if r["method"] == "dycoke_cache"][0]
    assert cache["schedule"][0] == cache["tokens_in"] + text  # prefill keeps everything
    assert cache["flops"]["decode_per_token"] < baselines_decode(run, "video")


def baselines_decode(run, modality):
    return next(s for s in run["scenarios"] if s["modality"] == modality)["baseline"]["flops"][
        "decode_per_token"
    ]


def test_summary_plots_and_report(run):
    summary = run["summary"]
    assert summary["budget"] == 16 and summary["thresholds"] == {
        "efficiency": 0.85,
        "overhead": 0.03,
    }
    at_budget = {
        r["method"] for r in run["results"] if r["modality"] == "image" and r["budget"] == 16
    }
    assert {r["method"] for r in summary["rows"]} == at_budget
    # ToMe merges at most half the tokens per layer: two layers cannot come near 16 of 145, so
    # it is not measured at that budget
    assert at_budget == {"random", "pool", "fastv"}
    text = report.report({k: v for k, v in run.items() if k != "_out"})
    assert "efficiency" in text and "random" in text
    plots = sorted(Path(run["_out"]).glob("*.png"))
    assert [p.name.rsplit("-", 1)[1] for p in plots] == ["overhead.png", "speedup.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_summary_statistics():
    stats = timing.summary([3.0, 1.0, 2.0, 10.0])
    assert (
        stats["median"] == 2.5
        and stats["p95"] == 10.0
        and stats["samples"] == [3.0, 1.0, 2.0, 10.0]
    )
    assert timing.summary([]) is None


def test_per_layer_passes_compose_into_one_compression():
    """ToMe applied once per encoder layer: the composed result maps the original tokens."""
    tome = reproductions.get("tome", r=5)
    tokens = Tokens(features=torch.randn(1, 37, 8), layout=(6, 6), special=1)
    out = budgets.apply(tome, tokens, passes=3)
    assert out.count == 37 - 15
    check_compression(out, tokens)


@pytest.mark.parametrize("flag", ["--config", "--checkpoint"])
def test_any_config_or_local_checkpoint(tmp_path, flag):
    """A model given by a config directory (random weights) or a saved checkpoint (its weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=64,
    )
    source = tmp_path / "my-model"
    if flag == "--config":
        config.save_pretrained(source)
    else:
        LlamaForCausalLM(config).save_pretrained(source)
    argv = [
        "--model",
        "tiny",
        flag,
        str(source),
        "--methods",
        "random",
        "--modalities",
        "image",
        "--repeats",
        "1",
        "--decode-tokens",
        "1",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert sweep.main(argv) == 0
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    # no PNG unless asked (the site draws its plots from the JSON); no staging file left over
    assert {p.suffix for p in tmp_path.iterdir() if p.is_file()} == {".json"}
    assert data["model"]["name"] == "my-model" and data["model"]["source"].startswith(flag[2:])
    assert data["model"]["decoder"]["kv_heads"] == 1 and data["model"]["encoder"] is None
    baseline = data["scenarios"][0]["baseline"]
    # grouped-query attention: 1 key/value head of 8 dims, 3 layers, float32
    assert baseline["kv_cache_bytes"] == 2 * 3 * 1 * 8 * 4 * (144 + 8)


def llava_image() -> tuple[presets.Scenario, ModelShape]:
    preset = presets.PRESETS["llava-cpu"]
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**preset.vision), text_config=LlamaConfig(**preset.text)
    )
    return preset.scenarios[0], ModelShape.from_config(config)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("random", [({"keep": 192}, 192), ({"keep": 128}, 128), ({"keep": 64}, 64)]),
        # 24 x 24 pooled by 2 (144 tokens: nearest to 192 and 128) and by 3 (64)
        ("pool", [({"stride": 2}, 144), ({"stride": 3}, 64)]),
        # ToMe merges r tokens in each of CLIP-L's 24 layers, [CLS] kept: 577 - 24 r
        ("tome", [({"r": 16}, 193), ({"r": 19}, 121), ({"r": 21}, 73)]),
    ],
)
def test_budgets_fit_on_the_default_image_scenario(name, expected):
    scenario, shape = llava_image()
    cls = reproductions.methods()[name]
    tokens = budgets.bench_tokens(
        cls(**budgets.declared(cls, "image")),
        scenario,
        budgets.special_tokens(cls, shape),
        4,
        2,
        8,
        torch.device("cpu"),
        torch.float32,
    )
    fits = budgets.fit_budgets(
        cls, tokens, scenario.budgets, budgets.passes_for(cls, scenario), "image"
    )
    got = [({k: v for k, v in f.params.items() if k != "mode"}, f.count) for f in fits]
    assert got == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "no_such_method"], "unknown methods"),
        (["--threads", "2"], "--clock process sums CPU time"),
    ],
)
def test_bad_options_say_what_to_pass(tmp_path, capsys, argv, message):
    assert sweep.main(["--model", "tiny", "--out", str(tmp_path), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_one_program_with_commands(capsys):
    """`python -m benchmarks --help` lists every command; an unknown one says what exists."""
    assert dispatch(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("methods", "prefill", "plot"))
    assert dispatch(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_a_later_part_is_timed_on_what_the_earlier_part_left():
    """`python -m benchmarks methods` times holitom.llm on the tokens holitom.projector kept (in
    use it never sees the whole video), not on the preset's full 32 x 14 x 14."""
    from benchmarks import methods as method_bench

    rows = {r["method"]: r for r in method_bench.run(["video"], ["holitom"], repeats=1)}
    outer, inner = rows["holitom.projector"], rows["holitom.llm"]
    assert outer["n"] == 32 * 14 * 14
    kept = reproductions.get("holitom", **method_bench.parameters(reproductions.methods()["holitom"], "video")[0])
    first = kept.parts()[0]
    assert inner["n"] == first(method_bench.preset_tokens(type(first), method_bench.PRESETS["video"])).count
    assert inner["n"] < outer["n"]


def test_audio_methods_get_the_tokens_of_their_stage():
    """The audio preset gives an encoder-stage method Whisper's 1500 frames x 1280, and a later
    one what Qwen2-Audio feeds its LLM: 750 pooled, projected tokens x 4096, whose encoder map
    still spans the 1500 frames."""
    from benchmarks import methods as method_bench

    audio = [cls for cls in reproductions.methods().values() if "audio" in cls.modality and not cls.trainable]
    assert {cls.stage for cls in audio} >= {"encoder", "projector"}
    for cls in audio:
        tokens = method_bench.preset_tokens(cls, method_bench.PRESETS["audio"])
        expected = (1500, 1280) if cls.stage == "encoder" else (750, 4096)
        assert (tokens.count, tokens.features.shape[-1]) == expected, cls.name
        if "encoder_attention" in cls.needs:
            assert tokens.encoder_attention.shape[-1] == 1500
