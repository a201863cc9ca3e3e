"""LLaVA-NeXT (LlavaNextForConditionalGeneration, llava-v1.6): anyres images, each the base
image's grid followed by the unpadded crops with one newline token per row, so an image's tokens
fill no regular grid. The projector stage compresses the rows entering the LLM (one item per
image). Each placed token is one crop's projected patch, unchanged, or the learned newline: it
carries that patch's [CLS] attention and keys from the CLIP feature layer of its crop (the
newline, which stands for no patch, carries zeros)."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Adapter, EncoderTap, Pool, language_parts


def vision_tap(model: nn.Module) -> EncoderTap | None:
    """Every projected patch of the call's crops, each with its own signals; None where the
    projector reads several encoder layers."""
    inner, config = model.model, model.config
    if not isinstance(config.vision_feature_layer, int):
        return None
    tower = inner.vision_tower
    layers = getattr(tower, "vision_model", tower).encoder.layers

    def items(args: tuple, kwargs: dict, output: Tensor) -> list[tuple[Tensor, Pool]]:
        return [(output.flatten(0, 1), lambda x: x)]

    feature = config.vision_feature_layer % (len(layers) + 1) - 1  # hidden_states[k]: layer k - 1's output
    has_cls = getattr(getattr(tower, "embeddings", None), "class_embedding", None) is not None
    special = 1 if config.vision_feature_select_strategy == "default" and has_cls else 0
    return EncoderTap(attention=layers[feature].self_attn, output=inner.multi_modal_projector,
                      special=special, items=items, modalities=("image",),
                      separator=lambda: inner.image_newline)


def build(model: nn.Module) -> Adapter:
    tap = vision_tap(model)
    return Adapter(
        family="llava_next", **language_parts(model), tokens={"image": model.config.image_token_id},
        signals=("cls_attention", "keys") if tap is not None else (), tap=tap,
    )
