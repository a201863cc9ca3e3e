"""LLaVA-NeXT (LlavaNextForConditionalGeneration, llava-v1.6): anyres images, each the base
image's grid followed by the unpadded crops with one newline token per row, so an image's tokens
fill no regular grid. The projector stage compresses the rows entering the LLM (one item per
image). Each packed token carries its patch's [CLS] attention and keys from the CLIP feature
layer of its crop, and its `anyres` place (thumbnail or crop, row, column): the model's own
packing runs again on them (the newline, which stands for no patch, carries zeros)."""

from __future__ import annotations

from torch import nn

from .base import Adapter, EncoderTap, language_parts


def vision_tap(model: nn.Module) -> EncoderTap | None:
    """The feature layer's signals, packed like the crops' features; None where the projector
    reads several encoder layers."""
    inner, config = model.model, model.config
    if not isinstance(config.vision_feature_layer, int):
        return None
    tower = inner.vision_tower
    layers = getattr(tower, "vision_model", tower).encoder.layers

    feature = config.vision_feature_layer % (len(layers) + 1) - 1  # hidden_states[k]: layer k - 1's output
    has_cls = getattr(getattr(tower, "embeddings", None), "class_embedding", None) is not None
    special = 1 if config.vision_feature_select_strategy == "default" and has_cls else 0
    return EncoderTap(attention=layers[feature].self_attn, output=None, special=special, items=None, attentions=tuple(layer.self_attn for layer in layers),
                      modalities=("image",), packer=(inner, "pack_image_features"))


def build(model: nn.Module) -> Adapter:
    tap = vision_tap(model)
    return Adapter(
        family="llava_next", **language_parts(model), tokens={"image": model.config.image_token_id},
        signals=("cls_attention", "keys", "received", "anyres") if tap is not None else (), tap=tap,
    )
