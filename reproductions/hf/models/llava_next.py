"""LLaVA-NeXT (LlavaNextForConditionalGeneration, llava-v1.6): anyres images, each the base
image's grid followed by the unpadded crops with one newline token per row, so an image's tokens
fill no regular grid. The projector stage compresses the rows entering the LLM (one item per
image)."""

from __future__ import annotations

from torch import nn

from .base import Adapter, language_parts


def build(model: nn.Module) -> Adapter:
    return Adapter(family="llava_next", **language_parts(model), tokens={"image": model.config.image_token_id})
