"""LLaVA (LlavaForConditionalGeneration: CLIP or SigLIP encoder, MLP projector).

The projector stage compresses the encoder features the projector reads (as the official
LLaVA code of VisionZip, PruMerge, DivPrune, ... does), with [CLS] attention (on SigLIP, which
has no [CLS], the attention each token receives) and keys from that encoder layer; the encoder
stage merges inside the encoder's layers. Every image fills a square grid of patches_per_side²
placeholders."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import Adapter, language_parts, square


@dataclass
class LlavaAdapter(Adapter):
    patches_per_side: int = 0
    #: the encoder leads with a [CLS] token (CLIP); SigLIP has none
    has_cls: bool = False

    def item_size(self, modality: str) -> int | None:
        return self.patches_per_side**2 if modality == "image" else None

    def layout(self, modality, length, positions):
        return square(length) if modality == "image" else super().layout(modality, length, positions)


def build(model: nn.Module) -> LlavaAdapter:
    config, inner = model.config, model.model
    vision = inner.vision_tower
    layers = getattr(vision, "vision_model", vision).encoder.layers
    feature_layer = config.vision_feature_layer
    # hidden_states[k] is the output of layer k - 1 (hidden_states[0] the embeddings); a list of
    # layers (concatenated features) names no single layer for signals or merging
    one = isinstance(feature_layer, int)
    has_cls = getattr(getattr(vision, "embeddings", None), "class_embedding", None) is not None
    vc = config.vision_config
    return LlavaAdapter(
        family="llava",
        **language_parts(model),
        tokens={"image": config.image_token_id},
        projector=inner.multi_modal_projector,
        encoder_layers=layers if one else None,
        feature_layer=feature_layer % (len(layers) + 1) - 1 if one else None,
        signals=("cls_attention", "keys", "received") if one else (),
        encoder_special=1 if config.vision_feature_select_strategy == "default" else 0,
        patches_per_side=vc.image_size // vc.patch_size,
        has_cls=has_cls,
        gridded=("image",),
    )
