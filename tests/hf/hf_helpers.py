"""Shared pieces of the transformers-integration tests: a tiny llm-stage method, hook counting,
captures of what reaches the language model, a spy on the models' own eager attention maps, a
hand-built reference sequence, and the model, prompt and parameters for one cell of the support
matrix."""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import create_causal_mask

from reproductions import Compression, Method, Tokens
from reproductions.hf.models import adapter_for
from reproductions.hf.support import FAMILIES
from reproductions.hf.tiny import AUDIO, BUILDERS, END, IMAGE, MODALITY, START, VIDEO
from reproductions.hf.tiny.parts import prompts
from reproductions.ops import select, top_k


@dataclass
class LastRowTopK(Method):
    """Test-only llm-stage method: keep the `keep` media tokens that the last prompt row attends
    to most at layer `layer` - 1 (heads averaged), in positional order (FastV's rule)."""

    keep: int = 4
    layer: int = 2

    stage = "llm"
    modality = ("image", "video", "audio")
    needs = ("attention", "text")

    def compress(self, tokens: Tokens) -> Compression:
        k = min(self.keep, tokens.count)
        return select(tokens, top_k(tokens.attention[:, :, -1].float().mean(1), k))


def hook_count(model: nn.Module) -> int:
    """Every forward (pre-)hook on every submodule of `model`."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
    return total


class Capture:
    """Records the keyword arguments of every call of `module` while active (a hook that the
    test registers after compress's own, so it sees what the module really receives)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls: list[dict[str, Any]] = []
        self.handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls.append(dict(kwargs))

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def eager_spy(name: str) -> list[tuple[nn.Module, Tensor]]:
    """Register the attention implementation `name`: each module file's own eager attention,
    recording (module, weights) of every call in the list returned (the maps a test checks the
    integration's signals against)."""
    maps: list[tuple[nn.Module, Tensor]] = []

    def spy(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Any, **kwargs: Any):
        out, weights = sys.modules[type(module).__module__].eager_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )
        maps.append((module, weights))
        return out, weights

    AttentionInterface.register(name, spy)
    return maps


def language_model_inputs(model: nn.Module, inputs: dict) -> dict[str, Any]:
    """What the unpatched model passes to its language model for `inputs`."""
    with Capture(adapter_for(model).language_model) as capture, torch.no_grad():
        model(**inputs)
    return capture.calls[0]


def reference_sequence(
    embeds: Tensor,
    positions: Tensor,
    mask: Tensor,
    replaced: list[tuple[int, int, int, Tensor, Tensor]],
) -> tuple[Tensor, Tensor, Tensor]:
    """Build the compressed LLM input by hand.

    `replaced` lists (row, start, length, features (K, D), kept positions (K,)) per media item:
    the span [start, start + length) of the row is replaced by the K features, each taking the
    position id of placeholder start + position. Rows are left-padded to the longest with zero
    embeddings, mask 0 and position id 1. `positions` is (B, L) or (3, B, L).
    """
    b = embeds.shape[0]
    rows = []
    for r in range(b):
        items = sorted((x for x in replaced if x[0] == r), key=lambda x: x[1])
        vectors, where = [], []
        cursor = 0
        for _, start, length, feats, kept in items:
            for j in range(cursor, start):
                vectors.append(embeds[r, j])
                where.append(j)
            for k in range(feats.shape[0]):
                vectors.append(feats[k])
                where.append(start + int(kept[k]))
            cursor = start + length
        for j in range(cursor, embeds.shape[1]):
            vectors.append(embeds[r, j])
            where.append(j)
        rows.append((torch.stack(vectors), where))
    width = max(len(w) for _, w in rows)
    out = embeds.new_zeros(b, width, embeds.shape[2])
    new_mask = torch.zeros(b, width, dtype=torch.long)
    lead = positions.shape[:-2]
    new_pos = torch.ones(*lead, b, width, dtype=torch.long)
    for r, (vectors, where) in enumerate(rows):
        offset = width - len(where)
        out[r, offset:] = vectors
        idx = torch.tensor(where)
        new_mask[r, offset:] = mask[r, idx]
        new_pos[..., r, offset:] = positions[..., r, idx]
    return out, new_mask, new_pos


def causal_mask(lm: nn.Module, h: Tensor, positions: Tensor) -> Any:
    """The causal mask `lm` builds for the unpadded row `h` (1, L) at `positions`, no cache."""
    return create_causal_mask(
        config=lm.config, inputs_embeds=h, attention_mask=torch.ones(1, h.shape[1]), cache=None,
        position_ids=positions,
    )


def logits_from(model: nn.Module, embeds: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """Run the plain language model + head of a multimodal model on prepared embeddings."""
    with torch.no_grad():
        hidden = adapter_for(model).language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        return model.lm_head(hidden)


@functools.cache
def tiny(family: str, attn: str = "sdpa") -> tuple[nn.Module, dict[str, Any]]:
    """One tiny model per (family, attention) for the whole session: compress leaves models
    unchanged on exit, which the identity tests check, so sharing them is safe. One unpatched
    generate first: transformers installs its own output-recording hooks on first use, which
    must not count as hooks compress left behind."""
    model, inputs = BUILDERS[family](attn=attn)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    return model, inputs


#: per family, the placed tokens of its two clips in `padded_clips`: the second padded
#: (Qwen2-Audio: 102 of 128 mel frames, 51 frames; Qwen2.5-Omni: 54 of 64, chunks of 8, 8, 8
#: and 3 frames)
PLACED = {"qwen2_audio": [32, 25], "qwen2_5_omni": [16, 13]}


def padded_clips(family: str, attn: str = "sdpa", fresh: bool = False) -> tuple[nn.Module, dict]:
    """The family's tiny model (`fresh`: a new one, not the session's) and prompt, its second
    clip's last mel frames padding."""
    model, inputs = BUILDERS[family](attn=attn) if fresh else tiny(family, attn)
    g = torch.Generator().manual_seed(1)
    frames = inputs["input_features"].shape[-1]
    feature_mask = torch.ones(2, frames, dtype=torch.long)
    if family == "qwen2_audio":
        ids, mask = prompts([[(AUDIO, n)] for n in PLACED[family]], [7, 5], g)
        feature_mask[1, 102:] = 0
    else:
        blocks = [[([155] + [AUDIO] * n + [156], 1), ([START] + [VIDEO] * 8 + [END], 1)] for n in PLACED[family]]
        ids, mask = prompts(blocks, [7, 5], g)
        feature_mask[1, 54:] = 0
    features = inputs["input_features"] * feature_mask[:, None]
    return model, {**inputs, "input_ids": ids, "attention_mask": mask, "input_features": features,
                   "feature_attention_mask": feature_mask}


def cell_prompts(family: str, cls: type[Method]) -> list[str]:
    """The tiny prompts of the support-matrix family in a modality the method takes (for grid
    methods, only those with a grid: OneVision's anyres images fill none)."""
    base = FAMILIES[family]
    gridded = adapter_for(tiny(base)[0]).gridded
    prompts = [
        name
        for name in MODALITY
        if name in (base, f"{base}_image", f"{base}_video", f"{base}_audio")
        and MODALITY[name] in cls.modality
        and (not cls.grid or MODALITY[name] in gridded)
    ]
    assert prompts, f"no tiny prompt of {cls.modality} for {family}"
    return prompts


def cell_method(cls: type[Method], model: nn.Module, **overrides: Any) -> Method:
    """The example parameters with budgets for 8-16-token spans (an int `keep` becomes a half,
    VisionZip keeps 3 + 1),
    a layer inside the 4-layer decoder, and (trainable methods) the width of the features the
    stage hands them; `overrides` last."""
    params = dict(cls.example)
    names = {f.name for f in dataclasses.fields(cls)}
    if "dim" in names:
        config = model.config
        params["dim"] = (config.vision_config if adapter_for(model).projector is not None else config.get_text_config()).hidden_size
        if "out_dim" in names:
            params["out_dim"] = params["dim"]
    if "keep" in names and isinstance(params.get("keep", getattr(cls, "keep", None)), int):
        params["keep"] = 0.5
    if "layer" in names:
        params["layer"] = 2
    if "dominant" in names:  # VisionZip's counts, split as officially, for an 8-token span
        params |= {"dominant": 3, "contextual": 1}
    return cls(**{**params, **overrides})


def llava_next_at(height: int, width: int) -> tuple[nn.Module, dict[str, Any]]:
    """The tiny LLaVA-NeXT with both images of size (height, width), its placeholders counted by
    the model's own packing (unpadding included)."""
    model, inputs = BUILDERS["llava_next"]()
    sizes = torch.tensor([[height, width]] * 2)
    with torch.no_grad():
        count = len(model.model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=sizes).pooler_output[0])
    ids, mask = prompts([[(IMAGE, count)]] * 2, [7, 5], torch.Generator().manual_seed(0))
    return model, {**inputs, "input_ids": ids, "attention_mask": mask, "image_sizes": sizes}


def run_layers(lm: nn.Module, h: Tensor, positions: Tensor, layers: Any, allowed: Tensor) -> Tensor:
    """Decoder `layers` of the language model `lm` run by hand on `h` (1, n, D) at `positions`,
    each row seeing the columns `allowed` (n, n) gives it."""
    pe = lm.rotary_emb(h, positions)
    mask = torch.where(allowed, 0.0, torch.finfo(h.dtype).min)[None, None]
    for layer in layers:
        h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=positions)
    return h
