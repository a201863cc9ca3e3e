"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: images and videos merged 2x2 by the vision encoder, 3-D
M-RoPE position ids that spell out each span's (t, h, w) grid. The projector stage compresses
the rows entering the LLM; kept tokens keep their 3-D ids. Qwen3-VL's DeepStack adds features of
early ViT layers to the visual tokens after its first decoder layers: the projector stage
compresses them with the tokens (`stages/input.py`); an llm stage acting before the last of those
layers has them follow the rows it kept (`follow_rows`).
The encoder stage merges whole 2x2 merge units inside the ViT's blocks (`stages/packed.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
from torch import Tensor, nn
from transformers.vision_utils import get_vision_window_index

from .base import Adapter, EncoderTap, Pool, RowMap, Undo, group_mean, language_parts, shadow

FAMILIES = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
}


def vision_tap(visual: nn.Module) -> EncoderTap:
    """The Qwen ViT's last block, whose output the merger reads: its attention within each image
    or frame, carried onto each merged token as the mean over its spatial_merge_size² patches
    (as LightCompress' Qwen2.5-VL VisionZip does); Qwen2.5-VL's blocks see the patches in window
    order, which the merged tokens leave."""

    def items(args: tuple, kwargs: dict, output) -> list[tuple[Tensor, Pool]]:
        grid, merged = kwargs.get("grid_thw", args[1] if len(args) > 1 else None), output.pooler_output
        unit = visual.spatial_merge_size**2
        groups = torch.arange(merged.shape[0] * unit, device=merged.device).view(-1, unit)
        if hasattr(visual, "window_size"):  # the blocks' order: windows of merge units
            window, _ = get_vision_window_index(
                grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
                patch_size=visual.patch_size,
            )
            groups = groups[torch.argsort(window.to(merged.device))]
        sizes = (grid.prod(-1) // unit).tolist()
        return [(placed, group_mean(g)) for placed, g in zip(merged.split(sizes), groups.split(sizes), strict=True)]

    return EncoderTap(attention=visual.blocks[-1].attn, output=visual, special=0, items=items,
                      attentions=tuple(block.attn for block in visual.blocks))


def vision_encoder(visual: nn.Module) -> dict:
    """The ViT's blocks, in which the encoder stage merges (`stages/packed.py`)."""
    return {"encoder_layers": visual.blocks, "feature_layer": len(visual.blocks) - 1, "packed": visual}


@dataclass
class Qwen3VLAdapter(Adapter):
    """Qwen3-VL writes a video frame by frame, a timestamp and vision start / end tokens around
    each frame: a clip is as many consecutive runs of placeholders as its features have tokens,
    laid out (T, H, W) by the M-RoPE ids of its frames."""

    spatial_merge_size: int = 2

    def item_runs(self, modality, found, kwargs):
        if modality != "video" or not any(found):
            return super().item_runs(modality, found, kwargs)
        lengths = iter(clip_lengths(kwargs, self.spatial_merge_size))
        out = []
        for row in found:
            items, pending = [], list(row)
            while pending:
                want, totals = next(lengths, None), list(accumulate(run for _, run in pending))
                if want not in totals:
                    raise ValueError(
                        "Qwen3-VL's video placeholders do not add up to its clips' features (one "
                        "run of tokens per frame): pass input_ids as the processor makes them"
                    )
                count = totals.index(want) + 1
                items.append((pending[:count], None))
                pending = pending[count:]
            out.append(items)
        return out

    def follow_rows(self, rows: RowMap) -> Undo:
        """The language model's `_deepstack_process(hidden, visual_pos_masks, features)`, which
        adds each visual token's features at its position in the full sequence, shadowed by an
        instance attribute that adds them at the rows `rows` says they now stand at."""
        lm = self.language_model
        own = lm._deepstack_process

        def process(hidden: Tensor, mask: Tensor, features: Tensor) -> Tensor:
            mask = mask.to(hidden.device)
            full = features.new_zeros(*mask.shape, features.shape[-1]).to(hidden.device)
            full[mask] = features.to(hidden.device)
            moved = rows(full, mask)
            if moved is None:
                return own(hidden, mask, features)
            full, visual = moved
            return own(hidden, visual, full[visual])

        return shadow(lm, "_deepstack_process", process)

    def layout(self, modality, length, positions):
        """A clip's frames each take one M-RoPE time id; the first frame's height and width ids
        give its grid."""
        if modality != "video" or positions is None:
            return super().layout(modality, length, positions)
        first = positions[:, positions[0] == positions[0].min()]
        t, h, w = positions[0].unique().numel(), first[1].unique().numel(), first[2].unique().numel()
        return (t, h, w) if t * h * w == length else None


def clip_lengths(kwargs: dict, merge: int) -> list[int]:
    """Tokens of each video clip of a Qwen3-VL call: from video_grid_thw, or (generate() encodes
    the clips once and passes them on) from the encoded features."""
    grids = kwargs.get("video_grid_thw")
    if grids is not None:
        return [t * h * w // merge**2 for t, h, w in grids.tolist()]
    encoded = (kwargs.get("mm_encoder_outputs") or {}).get("video")
    if encoded is not None:
        return [len(clip) for clip in encoded.pooler_output]
    raise ValueError(
        "Qwen3-VL's video frames come as separate runs of placeholders, grouped into clips by "
        "video_grid_thw: pass pixel_values_videos and video_grid_thw with input_ids"
    )


def build(model: nn.Module) -> Adapter:
    config = model.config
    qwen3 = type(model).__name__.startswith("Qwen3")
    return (Qwen3VLAdapter if qwen3 else Adapter)(
        family=FAMILIES[type(model).__name__],
        **language_parts(model),
        tokens={"image": config.image_token_id, "video": config.video_token_id},
        mrope=True,
        gridded=("image", "video"),  # M-RoPE ids spell out each grid
        signals=("cls_attention", "keys", "received"),
        tap=vision_tap(model.model.visual),
        **vision_encoder(model.model.visual),
        deepstack_layers=len(getattr(config.vision_config, "deepstack_visual_indexes", ())),
        **({"spatial_merge_size": config.vision_config.spatial_merge_size} if qwen3 else {}),
    )
