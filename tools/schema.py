"""`python -m tools schema`: write catalog/schema.json, the JSON Schema of one paper file.

The enums come from catalog/taxonomy.yaml, so the two cannot drift apart: this module is the only
place that turns vocabularies into schema, and a test fails when the committed schema.json differs
from a fresh generation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .catalog import CATALOG, load_taxonomy, write_atomic

ARXIV_PATTERN = r"^[0-9]{4}\.[0-9]{4,5}$"
ID_PATTERN = r"^[a-z]+[0-9]{4}[a-z0-9]+$"
DOI_PATTERN = r"^10\.[0-9]{4,9}/\S+$"
#: the longest `notes` a paper may carry: every visitor downloads them with the search index
NOTES_LIMIT = 600


def _enum(values: list[str], description: str) -> dict[str, Any]:
    return {"type": "string", "enum": values, "description": description}


def _unique_list(values: list[str], description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "enum": values},
        "uniqueItems": True,
        "description": description,
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "description": schema.pop("description", "")}


def submechanisms(taxonomy: dict[str, Any]) -> list[str]:
    """Every sub-mechanism name, in taxonomy order."""
    return [
        name for mechanism in taxonomy["mechanisms"].values() for name in mechanism["submechanisms"]
    ]


def build_schema(taxonomy: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a paper file, enums taken from `taxonomy`."""
    url = {"type": "string", "format": "uri"}
    nullable_url = {"anyOf": [url, {"type": "null"}]}
    properties: dict[str, Any] = {
        "id": {
            "type": "string",
            "pattern": ID_PATTERN,
            "description": "family name + year + first significant title word; = file name",
        },
        "title": {"type": "string", "minLength": 1},
        "method": {"type": ["string", "null"], "minLength": 1, "description": "short name"},
        "authors": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "year": {"type": "integer", "minimum": 1990, "maximum": 2100},
        "month": {"type": ["integer", "null"], "minimum": 1, "maximum": 12},
        "venue": _nullable(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "year", "track", "presentation"],
                "properties": {
                    "name": _enum(list(taxonomy["venues"]), "venue abbreviation"),
                    "year": {"type": "integer", "minimum": 1990, "maximum": 2100},
                    "track": _enum(list(taxonomy["track"]), "main, findings or workshop"),
                    "presentation": _nullable(
                        _enum(list(taxonomy["presentation"]), "oral, highlight, ...")
                    ),
                },
                "description": "where it was published; null for arXiv-only papers",
            }
        ),
        "arxiv": {"type": ["string", "null"], "pattern": ARXIV_PATTERN},
        "doi": {"type": ["string", "null"], "pattern": DOI_PATTERN},
        "links": {
            "type": "object",
            "additionalProperties": False,
            "required": ["paper", "code", "project", "model", "dataset"],
            "properties": {
                "paper": url,
                "code": nullable_url,
                "project": nullable_url,
                "model": nullable_url,
                "dataset": nullable_url,
            },
        },
        "modalities": {
            **_unique_list(list(taxonomy["modalities"]), "data modalities"),
            "minItems": 1,
        },
        "mechanisms": _unique_list(list(taxonomy["mechanisms"]), "compression mechanisms"),
        "submechanisms": _unique_list(submechanisms(taxonomy), "finer mechanisms"),
        "cost": _nullable(_enum(list(taxonomy["cost"]), "training cost")),
        "architecture": _unique_list(list(taxonomy["architecture"]), "model families"),
        "stage": _unique_list(list(taxonomy["stage"]), "where the method acts"),
        "tasks": _unique_list(list(taxonomy["tasks"]), "application settings"),
        "kind": _enum(list(taxonomy["kind"]), "paper type"),
        "reproductions": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
            "uniqueItems": True,
            "description": "registry names of the reference implementations",
        },
        "notes": {"type": ["string", "null"], "maxLength": NOTES_LIMIT},
        "checked": {
            "type": "object",
            "additionalProperties": False,
            "required": ["date", "sources"],
            "properties": {
                "date": {"type": "string", "format": "date", "description": "YYYY-MM-DD"},
                "sources": {"type": "array", "items": url, "minItems": 1, "uniqueItems": True},
            },
            "description": "when the facts were checked, and the pages they were read from",
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/multimodal-token-compression/catalog/schema.json",
        "title": "A paper of the multimodal token compression catalog",
        "description": "Generated from catalog/taxonomy.yaml by `python -m tools schema`; do not edit.",
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


def schema_text(taxonomy: dict[str, Any]) -> str:
    """The text of schema.json."""
    return json.dumps(build_schema(taxonomy), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Regenerate `schema.json` from `taxonomy.yaml`."""
    parser = argparse.ArgumentParser(prog="python -m tools schema", description=__doc__)
    parser.add_argument("--root", type=Path, default=CATALOG, help="catalog folder")
    args = parser.parse_args(argv)
    write_atomic(args.root / "schema.json", schema_text(load_taxonomy(args.root)))
    print(f"wrote {args.root / 'schema.json'}")
    return 0
