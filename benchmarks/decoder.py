"""A LLaMA-style decoder run layer by layer, so that an LLM-stage method can drop rows at its
layer K during prefill."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Decoder:
    """The parts of a transformers decoder LLM that a layer-by-layer prefill needs."""

    model: torch.nn.Module
    layers: Sequence[torch.nn.Module]
    rotary: torch.nn.Module
    norm: torch.nn.Module
    head: torch.nn.Module
    embed: torch.nn.Module
    config: Any

    @classmethod
    def wrap(cls, model: torch.nn.Module) -> Decoder:
        inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        needed = ("layers", "rotary_emb", "norm", "embed_tokens")
        missing = [name for name in needed if not hasattr(inner, name)]
        if missing or not hasattr(model, "lm_head"):
            raise ValueError(
                f"{type(model).__name__} lacks {missing or ['lm_head']}: the bench runs LLaMA-style "
                "decoders (LLaMA, Qwen2, Mistral, LLaVA's language model); pass one of those"
            )
        config = model.config.get_text_config()
        return cls(
            model,
            inner.layers,
            inner.rotary_emb,
            inner.norm,
            model.lm_head,
            inner.embed_tokens,
            config,
        )

    def prefill(
        self, embeds: torch.Tensor, positions: torch.Tensor, drops: dict[int, torch.Tensor]
    ):
        """Run the prompt through every layer, keeping only the rows `drops[K]` from layer K on;
        returns (the KV cache, the first generated token id)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        hidden = embeds
        for index, layer in enumerate(self.layers):
            if index in drops:
                hidden, positions = hidden[:, drops[index]], positions[:, drops[index]]
            rotary = self.rotary(hidden, positions)
            hidden = layer(
                hidden, position_embeddings=rotary, past_key_values=cache, use_cache=True
            )
        logits = self.head(self.norm(hidden[:, -1:]))
        return cache, logits.argmax(-1)

    def decode(self, cache: Any, token: torch.Tensor, position: int) -> torch.Tensor:
        """One decode step on `cache`; returns the next token id."""
        hidden = self.embed(token)
        positions = torch.full_like(token, position)
        rotary = self.rotary(hidden, positions)
        for layer in self.layers:
            hidden = layer(
                hidden, position_embeddings=rotary, past_key_values=cache, use_cache=True
            )
        return self.head(self.norm(hidden)).argmax(-1)


def cache_bytes(cache: Any) -> int:
    """Bytes held by the keys and values of a transformers cache."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


