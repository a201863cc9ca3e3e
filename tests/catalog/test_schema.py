"""schema.json and taxonomy.yaml agree: the schema is generated from the taxonomy."""

from __future__ import annotations

import json

from tools.catalog import CATALOG, load_taxonomy
from tools.schema import schema_text, submechanisms


def test_committed_schema_equals_a_fresh_generation() -> None:
    committed = (CATALOG / "schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(load_taxonomy()), "run `python -m tools schema`"


def test_every_vocabulary_value_has_a_one_line_description() -> None:
    taxonomy = load_taxonomy()
    for vocabulary, values in taxonomy.items():
        for name, entry in values.items():
            if vocabulary == "mechanisms":
                assert len(entry["description"].split(". ")) <= 3, name
                for sub, text in entry["submechanisms"].items():
                    assert isinstance(text, str) and "\n" not in text and text, sub
            else:
                assert isinstance(entry, str) and "\n" not in entry and entry, (vocabulary, name)


def test_schema_enums_are_the_taxonomy_values() -> None:
    taxonomy = load_taxonomy()
    properties = json.loads((CATALOG / "schema.json").read_text())["properties"]
    assert properties["modalities"]["items"]["enum"] == list(taxonomy["modalities"])
    assert properties["mechanisms"]["items"]["enum"] == ["transformation", "similarity", "attention", "query"]
    assert properties["submechanisms"]["items"]["enum"] == submechanisms(taxonomy)
    assert {"pooling", "pixel-unshuffle", "merging", "clustering", "diversity", "encoder-attention",
            "llm-attention", "learned-queries", "text-guided-selection", "optical",
            "learned-scoring"} <= set(submechanisms(taxonomy))
    assert properties["checked"]["required"] == ["date", "sources"]
    assert properties["stage"]["items"]["enum"] == ["input", "encoder", "projector", "llm", "cache"]
    assert properties["kind"]["enum"] == ["method", "benchmark", "survey", "position", "model"]
    venue = properties["venue"]["anyOf"][0]
    assert venue["properties"]["name"]["enum"] == list(taxonomy["venues"])
    assert venue["additionalProperties"] is False and properties["links"]["additionalProperties"] is False
