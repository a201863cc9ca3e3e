"""The support matrix: every registered method against every supported family, each cell
"runs", "inherent" (the modality does not fit, the method changes the token width, or it needs
anyres crops the model does not make) or
"missing" (a signal or a stage this integration does not supply there yet), with the reason.

Each family is stood for by its tiny model (`tiny/`), which has the real family's structure;
the README table (`python -m tools support`) and the site page are generated from here, and
`tests/hf/test_support.py` runs every "runs" cell.
"""

from __future__ import annotations

from ..registry import methods
from .context import support
from .tiny import BUILDERS

#: the matrix's columns: family -> the tiny model that stands for it
FAMILIES: dict[str, str] = {
    "LLaVA-1.5": "llava",
    "LLaVA (SigLIP)": "llava_siglip",
    "LLaVA-NeXT": "llava_next",
    "LLaVA-OneVision": "llava_onevision",
    "Qwen2-VL": "qwen2_vl",
    "Qwen2.5-VL": "qwen2_5_vl",
    "Qwen3-VL": "qwen3_vl",
    "Qwen2-Audio": "qwen2_audio",
    "Idefics3 / SmolVLM": "idefics3",
    "InternVL": "internvl",
    "Gemma 3": "gemma3",
    "Qwen2.5-Omni": "qwen2_5_omni",
}
SYMBOLS = {"runs": "✓", "inherent": "·", "missing": "✗"}

Cell = tuple[str, str | None]


def matrix() -> dict[str, dict[str, Cell]]:
    """method name -> family -> (kind, reason), for every registered method."""
    models = {family: BUILDERS[tiny]()[0] for family, tiny in FAMILIES.items()}
    return {
        name: {family: support(model, cls(**cls.example)) for family, model in models.items()}
        for name, cls in sorted(methods().items())
    }


def coverage(cells: dict[str, dict[str, Cell]]) -> tuple[int, int, int]:
    """(cells that run, cells whose modality fits (runs or missing), all cells)."""
    kinds = [kind for row in cells.values() for kind, _ in row.values()]
    return kinds.count("runs"), kinds.count("runs") + kinds.count("missing"), len(kinds)


def markdown(cells: dict[str, dict[str, Cell]]) -> str:
    """The matrix as a Markdown table, with its coverage line."""
    runs, fitting, total = coverage(cells)
    lines = [
        f"{runs} of the {fitting} cells whose modality fits run ({100 * runs // max(fitting, 1)}%); "
        f"{total - fitting} of {total} cells are inherent. ✓ runs, · inherent (modality, token "
        "width or anyres crops), ✗ missing (a signal or stage not supplied there yet; `why_unsupported` says which).",
        "",
        "| method | " + " | ".join(FAMILIES) + " |",
        "| --- | " + " | ".join(":---:" for _ in FAMILIES) + " |",
    ]
    for name, row in cells.items():
        lines.append(f"| `{name}` | " + " | ".join(SYMBOLS[kind] for kind, _ in row.values()) + " |")
    return "\n".join(lines) + "\n"
