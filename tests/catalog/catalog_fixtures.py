"""Valid paper data and helpers the catalog tests share (a module of its own, importable by name)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

VALID = {
    "id": "chen2024image",
    "title": "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration",
    "method": "FastV",
    "authors": ["Liang Chen", "Haozhe Zhao"],
    "year": 2024,
    "month": 3,
    "venue": {"name": "ECCV", "year": 2024, "track": "main", "presentation": "oral"},
    "arxiv": "2403.06764",
    "doi": None,
    "links": {
        "paper": "https://arxiv.org/abs/2403.06764",
        "code": "https://github.com/pkunlp-icler/FastV",
        "project": None,
        "model": None,
        "dataset": None,
    },
    "modalities": ["image"],
    "mechanisms": ["attention"],
    "submechanisms": ["llm-attention"],
    "cost": "training-free",
    "architecture": ["mllm"],
    "stage": ["llm"],
    "tasks": [],
    "kind": "method",
    "reproductions": [],
    "notes": None,
    "checked": {
        "date": "2026-11-30",
        "sources": ["https://arxiv.org/abs/2403.06764", "https://github.com/pkunlp-icler/FastV"],
    },
}
SECOND = {
    **copy.deepcopy(VALID),
    "id": "bolya2022token",
    "title": "Token Merging: Your ViT But Faster",
    "method": "ToMe",
    "authors": ["Daniel Bolya", "Cheng-Yang Fu"],
    "year": 2022,
    "month": 10,
    "venue": {"name": "ICLR", "year": 2023, "track": "main", "presentation": "oral"},
    "arxiv": "2210.09461",
    "links": {
        "paper": "https://arxiv.org/abs/2210.09461",
        "code": "https://github.com/facebookresearch/ToMe",
        "project": None,
        "model": None,
        "dataset": None,
    },
    "mechanisms": ["similarity"],
    "submechanisms": ["merging"],
    "architecture": ["vision-transformer"],
    "stage": ["encoder"],
}


def paper(**changes) -> dict:
    """A valid paper with `changes` applied (a deep copy: tests may edit it)."""
    return {**copy.deepcopy(VALID), **changes}


def snapshot(root: Path) -> dict[str, str]:
    """Name -> content hash of every file under `root`: to prove a command changed nothing."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
