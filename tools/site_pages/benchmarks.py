"""The benchmarks page (`benchmarks.md`) and the results section of a method's page, from the
JSON of `python -m benchmarks` (format 1, documented in benchmarks/README.md)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from .data import SiteData
from .markup import UNSEARCHED, front_matter, heading, href, link, method_page, text

#: (heading, how to read it from a record) of the benchmark tables, in column order
RESULT_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("Modality", lambda r: r.get("modality")),
    ("Budget", lambda r: r.get("budget")),
    ("Parameters", lambda r: ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())),
    ("Tokens", lambda r: f"{r.get('tokens_in')} → {r.get('tokens_out')}" if r.get("tokens_out") is not None else r.get("tokens_in")),
    ("Method (ms)", lambda r: _median_ms(r.get("method_time_s"))),
    ("Prefill (ms)", lambda r: _median_ms(r.get("prefill_time_s"))),
    ("TTFT (ms)", lambda r: _median_ms(r.get("ttft_s"))),
    ("Decode / token (ms)", lambda r: _median_ms(r.get("decode_time_per_token_s"))),
    ("Prefill speed-up", lambda r: _times((r.get("speedup") or {}).get("measured"))),
    ("FLOP speed-up", lambda r: _times((r.get("speedup") or {}).get("flops"))),
    ("Prefill GFLOPs", lambda r: _scaled((r.get("flops") or {}).get("total_prefill"), 1e9)),
    ("KV cache (KiB)", lambda r: _scaled(r.get("kv_cache_bytes"), 1024)),
    ("Peak memory (MiB)", lambda r: _scaled(r.get("peak_memory_bytes"), 2**20)),
    ("Error", lambda r: r.get("error")),
)


def _median_ms(timing: Any) -> str:
    median = timing.get("median") if isinstance(timing, Mapping) else None
    return "" if median is None else f"{1000 * median:.3g}"


def _times(value: Any) -> str:
    return "" if value is None else f"{value:.2f}×"


def _percent(value: Any) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _scaled(value: Any, unit: float) -> str:
    return "" if value is None else f"{value / unit:.3g}"


def method_link(source: str, name: Any, methods: Mapping[str, type]) -> str:
    """A registry name as code, linked to its page where the method is registered."""
    label = f"<code>{text(name)}</code>"
    return link(href(source, method_page(name)), label) if name in methods else label


def latest_run(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest results document of a format this page reads (format 1), or None."""
    readable = [doc for doc in results if doc.get("format") == 1 and isinstance(doc.get("results"), list)]
    return max(readable, key=lambda doc: (str(doc.get("created", "")), doc["file"])) if readable else None


def results_table(
    records: list[dict[str, Any]], source: str, methods: Mapping[str, type], with_method: bool
) -> str:
    """The benchmark records as one HTML table (times are medians over the run's repeats)."""
    columns = list(RESULT_COLUMNS)
    if with_method:
        columns.insert(0, ("Method", None))
    head = "".join(f"<th>{text(name)}</th>" for name, _ in columns)
    rows = []
    for record in records:
        cells = []
        for _, read in columns:
            if read is None:
                cells.append(method_link(source, record.get("method"), methods))
            else:
                cells.append(text(read(record)))
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return (
        f'<div class="results-wrap"><table data-table="results" {UNSEARCHED}>'
        f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>\n"
    )


def run_description(run: dict[str, Any]) -> str:
    """Where and how a run was measured: model, device, settings, command."""
    env = run.get("environment") or {}
    model = run.get("model") or {}
    decoder = model.get("decoder") or {}
    settings = run.get("settings") or {}
    facts = [
        ("File", f"<code>benchmarks/results/{text(run['file'])}</code>"),
        ("Created", text(run.get("created"))),
        ("Model", text(f"{model.get('name')} ({model.get('source')}): " + ", ".join(f"{k} {v}" for k, v in decoder.items()))),
        ("Device", text(f"{env.get('device')} ({env.get('device_name')}), {env.get('threads')} threads, {env.get('dtype')}")),
        ("Software", text(f"torch {env.get('torch')}, transformers {env.get('transformers')}, Python {env.get('python')}")),
        ("Settings", text(", ".join(f"{k} {v}" for k, v in settings.items()))),
        ("Command", f"<code>{text(run.get('command'))}</code>"),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    return f'<table data-table="run">{rows}</table>\n'


def summary_table(run: dict[str, Any], source: str, methods: Mapping[str, type]) -> str:
    """The held figure: per family, each method at the summary budget, its efficiency (with the
    ceiling the shortened layers reach with no hook, where the run has it) and its overhead."""
    summary = run.get("summary") or {}
    thresholds = summary.get("thresholds") or {}
    rows = summary.get("rows") or []
    by_family = any("family" in r for r in rows)

    def number(value: Any) -> str:
        return "" if value is None else format(value, ".3f")

    cells = "".join(
        "<tr>" + (f"<td>{text(r.get('family'))}</td>" if by_family else "")
        + f"<td>{method_link(source, r.get('method'), methods)}</td>"
        f"<td>{text(r.get('stage'))}</td><td>{text(r.get('tokens_out'))}</td>"
        f"<td>{_times(r.get('measured_speedup'))}</td><td>{_times(r.get('flops_speedup'))}</td>"
        f"<td>{number(r.get('efficiency'))}</td><td>{number(r.get('ceiling'))}</td>"
        f"<td>{_percent(r.get('overhead'))}</td></tr>"
        for r in rows
    )
    verdict = {True: "holds", False: "does not hold"}.get(summary.get("holds"), "was not evaluated")
    return (
        f"<p>At a budget of {text(summary.get('budget'))} tokens, the efficiency of methods before "
        f"the LLM (measured prefill speed-up / FLOP-ratio speed-up) should be at least "
        f"{text(thresholds.get('efficiency'))}, and the overhead (the time <code>compress</code> adds "
        f"beyond the method's call and the shortened forward) at most "
        f"{_percent(thresholds.get('overhead'))} of the uncompressed prefill. The ceiling is the "
        f"efficiency of the decoder layers rerun directly on their shortened inputs, with no hook: "
        f"what the hardware allows. In this run the figure <strong>{verdict}</strong>.</p>\n"
        '<table data-table="summary"><thead><tr>' + ("<th>Family</th>" if by_family else "")
        + "<th>Method</th><th>Stage</th><th>Tokens</th><th>Measured speed-up</th>"
        "<th>FLOP speed-up</th><th>Efficiency</th><th>Ceiling</th><th>Overhead</th></tr>"
        f"</thead><tbody>{cells}</tbody></table>\n"
    )


def method_results(data: SiteData, name: str) -> str | None:
    """The benchmark section of a method page, from the latest run, or None without results."""
    run = latest_run(data.results)
    records = [r for r in run["results"] if r.get("method") == name] if run else []
    if not records:
        return None
    source = method_page(name)
    return (
        f"<p>From the latest run ({text(run.get('created'))}, {text((run.get('model') or {}).get('name'))} "
        f"on {text((run.get('environment') or {}).get('device'))}); times are medians. See "
        f"{link(href(source, 'benchmarks.md'), 'Benchmarks')} for the setup.</p>\n"
        + results_table(records, source, data.methods, with_method=False)
    )


def accuracy_section(data: SiteData, plots: Iterable[str], source: str) -> str:
    """Accuracy against cost: the newest committed sweep of `python -m tools eval`, its plots
    and one row per (model, task, method, budget) with the gain over the best control."""
    out = ["## Accuracy\n\n"]
    if not data.accuracy:
        out.append(
            "No accuracy sweep is committed yet. `python -m tools eval ... --out "
            "benchmarks/accuracy/<name>` runs methods, budgets and tasks through lmms-eval with the "
            f"controls beside them; see {link(href(source, 'evaluate.md'), 'Evaluate a method')}. "
            "The next site build shows the newest sweep here.\n"
        )
        return "".join(out)
    sweep = data.accuracy[-1]
    out.append(f"The sweep <code>{text(sweep['name'])}</code>: each method's gain is its score minus "
               "the best control's (uncompressed, `random` and `pool` at its budget).\n\n")
    images = [p for p in plots if posixpath.basename(p).startswith("accuracy-")]
    if images:
        out.append("".join(f'<p><img src="{href(source, p)}" alt="{text(posixpath.basename(p))}"></p>\n'
                           for p in images) + "\n")
    head = ("model", "task", "method", "budget", "score", "kept tokens", "TTFT (ms)", "gain over best control")
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in (
            text(r.get("model")), text(r.get("task")), method_link(source, r.get("method"), data.methods),
            text(r.get("budget")), _number(r.get("score")), _number(r.get("kept_tokens"), 1),
            _median_ms({"median": r["ttft_s"]}) if r.get("ttft_s") is not None else "–",
            _number(r.get("gain"), signed=True),
        )) + "</tr>"
        for r in sweep.get("rows") or []
    )
    out.append('<table class="accuracy"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
               + f"</tr></thead><tbody>{body}</tbody></table>\n")
    return "".join(out)


def _number(value: Any, digits: int = 3, signed: bool = False) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def benchmarks_page(data: SiteData, plots: Iterable[str] = ()) -> str:
    """`benchmarks.md`: the latest run in full (setup, plots, the held figure, every record),
    then accuracy against cost (the newest committed sweep)."""
    source = "benchmarks.md"
    plots = list(plots)
    out = [front_matter("Benchmarks", hide=["navigation", "toc"]), "# Benchmarks\n\n"]
    run = latest_run(data.results)
    if run is None:
        out.append(
            "No benchmark results are committed yet. Run `make bench` (or `python -m benchmarks`): "
            "it writes JSON under `benchmarks/results/`, and the next site build shows it here and "
            "on each method's page.\n"
        )
        out.append(accuracy_section(data, plots, source))
        return "\n".join(out)
    out.append(
        "Every registered method on the same footing: its own time, the LLM prefill, time to first "
        "token, decode time per token, KV cache and FLOPs, with warm-up runs and medians over "
        "repeats (`python -m benchmarks`; the JSON format is documented in `benchmarks/README.md`). "
        "Measured on one machine: compare rows of one run, not runs on different machines.\n"
    )
    out.append("## Setup\n\n" + run_description(run))
    shown = [p for p in plots if not posixpath.basename(p).startswith("accuracy-")]
    if shown:
        images = "\n".join(
            f'<p><img src="{href(source, path)}" alt="{text(posixpath.basename(path))}"></p>' for path in shown
        )
        out.append(heading("Plots", searched=False) + f"{images}\n")
    out.append("## The held figure\n\n" + summary_table(run, source, data.methods))
    out.append("## Every measurement\n\n" + results_table(run["results"], source, data.methods, with_method=True))
    earlier = [doc for doc in data.results if doc is not run]
    if earlier:
        items = "".join(
            f"<li><code>{text(doc['file'])}</code> ({text(doc.get('created'))}, "
            f"{text((doc.get('environment') or {}).get('device_name'))})</li>"
            for doc in sorted(earlier, key=lambda d: str(d.get("created", "")), reverse=True)
        )
        out.append(f"## Earlier runs\n\n<ul>{items}</ul>\n")
    out.append(accuracy_section(data, plots, source))
    return "\n".join(out)
