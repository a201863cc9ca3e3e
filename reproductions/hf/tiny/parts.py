"""What the tiny builders share: token ids, the small decoder config, left-padded prompts."""

from __future__ import annotations

from typing import Any

import torch

#: token ids shared by the tiny models (all below the vocabulary size)
VOCAB = 160
PAD, IMAGE, VIDEO, AUDIO, START, END = 0, 150, 151, 152, 153, 154
#: every placeholder and marker id: tests keep a random model from generating them
SPECIAL = [IMAGE, VIDEO, AUDIO, START, END, 155, 156]

Built = tuple[torch.nn.Module, dict[str, Any]]


def text_config(**override: Any) -> dict[str, Any]:
    """A 4-layer decoder with grouped-query attention, small enough for CPU tests."""
    config = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
    )
    config.update(override)
    return config


def prompts(
    spans: list[list[tuple[int | list[int], int]]], lengths: list[int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids: row b is `lengths[b]` random text tokens with, after token 3, the
    spans `(token_id, count)` of `spans[b]` separated by one text token (a span given as a list
    of ids is placed as it is: a block of tokens that must stay adjacent)."""
    rows = []
    for row_spans, length in zip(spans, lengths, strict=True):
        text = torch.randint(3, 100, (length,), generator=generator).tolist()
        ids = text[:3]
        for token, count in row_spans:
            block = token if isinstance(token, list) else [token] * count
            ids += block + [text[len(ids) % length]]
        ids += text[3:]
        rows.append(ids)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, ids in enumerate(rows):
        input_ids[b, width - len(ids) :] = torch.tensor(ids)
        mask[b, width - len(ids) :] = 1
    return input_ids, mask




#: a small ViT: 4x4 patches of a 32x32 image
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
