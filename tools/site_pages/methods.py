"""The reproductions: one page per registered method (`reproductions/<name>.md`), their index,
and the support matrix page."""

from __future__ import annotations

import dataclasses
import inspect
import posixpath
import re
import textwrap
from collections.abc import Mapping

from .benchmarks import method_results
from .data import SiteData
from .markup import (
    UNSEARCHED,
    fence,
    front_matter,
    heading,
    href,
    link,
    method_page,
    paper_page,
    text,
)
from .papers import tags

#: the docstring heading every method uses for its deviations
DIFFERENCES = "Differences from the official code"
#: the stage a method acts at, in words (site/architecture.md; reproductions/hf/stages/)
STAGES = {
    "encoder": "inside the vision / audio encoder, layer by layer",
    "projector": "on the encoder output, before the LLM",
    "llm": "inside the LLM, at a decoder layer during prefill",
    "cache": "on the KV cache during decoding",
}


def docstring_parts(cls: type) -> tuple[str, str | None]:
    """(what the method computes, its "Differences from the official code" section or None)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = doc.splitlines()
    heading = re.compile(rf"^#*\s*{re.escape(DIFFERENCES)}\s*:?\s*$", re.IGNORECASE)
    for i, line in enumerate(lines):
        if heading.match(line.strip()):
            rest = lines[i + 1 :]
            if rest and re.fullmatch(r"[-=~]{3,}", rest[0].strip()):
                rest = rest[1:]
            return "\n".join(lines[:i]).strip(), textwrap.dedent("\n".join(rest)).strip() or None
        inline = re.match(rf"^{re.escape(DIFFERENCES)}\s*:\s*(\S.*)$", line.strip(), re.IGNORECASE)
        if inline:
            rest = [inline.group(1), *lines[i + 1 :]]
            return "\n".join(lines[:i]).strip(), textwrap.dedent("\n".join(rest)).strip()
    return doc.strip(), None


def method_summary(cls: type) -> str:
    """The first sentence-paragraph of a method's docstring."""
    body, _ = docstring_parts(cls)
    first = body.split("\n\n", 1)[0]
    return " ".join(first.split())


def usage_snippet(cls: type) -> str:
    """A snippet that runs: the method built from its `example` params on `example_tokens` (a
    method of several stages: each of its parts on tokens of its own stage)."""
    params = ", ".join(f"{name}={value!r}" for name, value in dict(cls.example).items())
    arguments = f"{cls.name!r}, {params}" if params else repr(cls.name)
    if cls.parts_of:
        return (
            "from reproductions import get\n"
            "from reproductions.examples import example_tokens\n"
            "\n"
            f"method = get({arguments})\n"
            "for part in method.parts():  # one method per stage, in model order\n"
            "    tokens = example_tokens(part)  # random tokens of its stage, plus its signals\n"
            "    out = part(tokens)\n"
            '    print(tokens.features.shape, "->", out.features.shape, part.name, part.stage)\n'
        )
    return (
        "from reproductions import get\n"
        "from reproductions.examples import example_tokens\n"
        "\n"
        f"method = get({arguments})\n"
        "tokens = example_tokens(method)  # random tokens, plus every signal it needs\n"
        "out = method(tokens)\n"
        'print(tokens.features.shape, "->", out.features.shape)\n'
        "print(out.positions[0])  # the original index each output token stands at\n"
    )


def method_markdown(
    cls: type,
    data: SiteData,
    figure: str | None,
    figure_note: str | None,
    signals: Mapping[str, str],
) -> str:
    """`reproductions/<name>.md`: one method from its registry entry and its docstring."""
    name = cls.name
    source = method_page(name)
    body, differences = docstring_parts(cls)
    if cls.parts_of:  # each part says what it computes and how it differs, under its name
        parts = [(part, *docstring_parts(part)) for part in cls.parts_of]
        body += "".join(f"\n\n**`{part.name}`** ({part.stage} stage): {text_of}" for part, text_of, _ in parts)
        differences = "\n\n".join(f"**`{part.name}`**:\n\n{diff}" for part, _, diff in parts if diff)
    paper = data.by_id.get(cls.paper) if cls.paper else None
    if paper:
        paper_cell = link(href(source, paper_page(paper["id"])), text(paper["title"]))
    else:
        paper_cell = (link(cls.reference, "its paper", external=True) + " (not in the catalog: no source names its authors)"
                      if cls.reference else text(cls.paper or "a baseline, not from one paper"))
    needs = "".join(
        f"<li><code>{text(s)}</code>: {text(signals.get(s, ''))}</li>" for s in cls.needs
    ) or "<li>none: the token features alone</li>"
    facts = [
        ("Registry name", f"<code>{text(name)}</code>"),
        ("Paper", paper_cell),
        ("Stage" if not cls.parts_of else "Stages", stages_cell(cls)),
        ("Modalities", text(", ".join(cls.modality))),
        ("Mechanisms", tags(source, "mechanisms", list(cls.mechanisms), data) or "none (baseline)"),
        ("Signals it needs", f"<ul>{needs}</ul>"),
        ("Output tokens", "an output token that stands for one input token is that token, unchanged"
         if cls.copies else "new vectors (pooled, projected or otherwise recomputed)"),
        ("Batch rows", "independent" if cls.batch_independent else "one statistic spans the batch"),
    ]
    if cls.trainable:
        facts.append(("Trainable", "yes: an <code>nn.Module</code> with learned weights"))
    rows = "\n".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in facts)
    parameters = "\n".join(f"| `{param}` | `{default}` |" for param, default in parameter_defaults(cls))
    out = [
        front_matter(f"{name}: reproduction"),
        f"# `{name}`\n",
        searched_first(textwrap.dedent(body)),
        f'<table data-table="method-facts" {UNSEARCHED}>\n{rows}\n</table>\n',  # the docstring says it in prose
        heading("Parameters", searched=False) + "| Parameter | Default |\n| --- | --- |\n" + parameters + "\n",
        heading("Usage", searched=False) + fence(usage_snippet(cls), "python"),
    ]
    if figure:
        out.append(
            heading("On a photograph", searched=False)
            + f"![{name} on scikit-image's astronaut photograph]({posixpath.basename(figure)})\n\n"
            f"{figure_note or ''}\n"
        )
    elif figure_note:
        out.append(heading("On a photograph", searched=False) + f"{figure_note}\n")
    # found on the method page; the index, which every visitor downloads, keeps what names it
    out.append(heading(DIFFERENCES, searched=False) + (differences or "None stated in the docstring.") + "\n")
    results = method_results(data, name)
    if results:
        out.append(heading("Benchmarks", searched=False) + results)
    return "\n".join(out)


def searched_first(body: str) -> str:
    """The docstring's first paragraph, searched, and the rest shown but left out of the search
    index (which every visitor downloads): the summary names the method; the paper page and this
    page hold the details."""
    first, _, rest = body.partition("\n\n")
    if not rest.strip():
        return first + "\n"
    return f"{first}\n\n<div {UNSEARCHED} markdown>\n\n{rest}\n\n</div>\n"


def stages_cell(cls: type) -> str:
    """Where the method acts: its stage, or each stage of its parts with the part's name."""
    parts = cls.parts_of or (cls,)
    return "<br>".join(
        f"<code>{text(part.stage)}</code>: {text(STAGES.get(part.stage, ''))}"
        + (f" (<code>{text(part.name)}</code>)" if cls.parts_of else "")
        for part in parts
    )


def parameter_defaults(cls: type) -> list[tuple[str, str]]:
    """(name, default as code) of each hyperparameter in `cls.parameters()`; factories are called,
    fields the caller cannot set (init=False) are left out."""
    settable = {f.name: f for f in dataclasses.fields(cls) if f.init}
    rows = []
    for name, default in cls.parameters():
        spec = settable.get(name)
        if spec is None:
            continue
        if default is dataclasses.MISSING and spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        rows.append((name, "required" if default is dataclasses.MISSING else repr(default)))
    return rows


def reproductions_index(data: SiteData) -> str:
    source = "reproductions/index.md"
    rows = []
    for name, cls in data.methods.items():
        paper = data.by_id.get(cls.paper) if cls.paper else None
        paper_cell = (link(href(source, paper_page(paper["id"])), text(paper["title"])) if paper
                      else link(cls.reference, "preprint", external=True) if cls.reference else text(cls.paper or "baseline"))
        rows.append(
            f"<tr><td>{link(href(source, method_page(name)), f'<code>{text(name)}</code>')}</td>"
            f"<td>{text(', '.join(cls.modality))}</td><td>{text(', '.join(cls.mechanisms) or '-')}</td>"
            f"<td>{text(', '.join(cls.stages()))}</td><td>{text(', '.join(cls.needs) or '-')}</td><td>{paper_cell}</td></tr>"
        )
    table = (
        f'<table data-table="methods" {UNSEARCHED}><thead><tr><th>Method</th><th>Modalities</th><th>Mechanisms</th>'
        "<th>Stage</th><th>Needs</th><th>Paper</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n"
    )
    return (
        front_matter("Reproductions", hide=["navigation", "toc"])
        + "# Reproductions\n\n"
        + "Small, readable reimplementations of the methods behind one interface: a method is a "
        "dataclass of hyperparameters whose call maps `Tokens` to a `Compression`. Each page says "
        "what the method computes, its parameters, the signals it reads, where it acts, a snippet "
        "that runs, and where it departs from the authors' code.\n\n"
        + f"{len(data.methods)} methods are registered. Which of them run in which transformers "
        f"model family: the {link(href(source, 'reproductions/support.md'), 'support matrix')}.\n\n"
        + table
    )


def support_page(table: str) -> str:
    """`reproductions/support.md`: the method x model-family matrix (`reproductions.hf.support`),
    the same table as the README's."""
    return (
        front_matter("Support matrix", hide=["navigation", "toc"])
        + "# Support matrix\n\n"
        + "Every registered method against every model family that `reproductions.hf.compress` "
        "supports, each family stood for by its tiny model (same structure, random weights). "
        "The tests run every cell marked ✓ and check that every other cell is refused with the "
        "reason `why_unsupported(model, method)` gives.\n\n"
        + table
    )
