"""The encoder signals the projector stage supplies where it compresses LLM-input rows (and on
LLaVA with SigLIP): checked against the eager attention maps the model itself computes, read
through a registered transformers attention function, and against the family's own pooling."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pytest
import torch
from hf_helpers import llava_next_at
from transformers import AttentionInterface

from reproductions import Compression, Method, Tokens
from reproductions.hf import compress
from reproductions.hf.models import adapter_for
from reproductions.hf.tiny import BUILDERS, MODALITY
from reproductions.ops import anyres_places, select

#: tiny builders whose family reads encoder signals through a tap, and the image-only LLaVA
#: (SigLIP) whose projector stage reads them at its feature layer
TAPPED = [
    name for name in BUILDERS
    if (tap := adapter_for(BUILDERS[name]()[0]).tap) is not None and MODALITY[name] in tap.modalities
]
WEIGHTS: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []


def eager_spy(module, query, key, value, attention_mask, **kwargs):
    """The module file's own eager attention, recording (module, weights, keys) of each call."""
    out, weights = sys.modules[type(module).__module__].eager_attention_forward(
        module, query, key, value, attention_mask, **kwargs
    )
    WEIGHTS.append((module, weights, key))
    return out, weights


AttentionInterface.register("eager_spy", eager_spy)


@dataclass
class Recorder(Method):
    """Test-only projector method: keeps every token and records what it was handed."""

    stage = "projector"
    modality = ("image", "video")
    needs = ("cls_attention", "keys")

    def __post_init__(self) -> None:
        self.seen: list[Tokens] = []

    def compress(self, tokens: Tokens) -> Compression:
        self.seen.append(tokens)
        return select(tokens, torch.arange(tokens.count).expand(tokens.batch, -1))


def run(name: str):
    """The model run under a Recorder with the eager spy on its vision encoder: the tokens each
    span was handed, and per vision call the spy's (weights, keys) of the tapped layer (one map,
    or one per image / frame of a flat Qwen sequence) with the call's placed items and groups."""
    model, inputs = BUILDERS[name]()
    tap = adapter_for(model).tap
    tap.attention.config._attn_implementation = "eager_spy"
    calls = []
    # anyres images: every projected patch is an item row of its own, to find packed tokens by
    module, items = tap.output, tap.items
    if packed(name, tap):
        module, items = model.model.multi_modal_projector, lambda a, k, o: [(o.flatten(0, 1), lambda x: x)]

    def output(module, args, kwargs, out) -> None:
        maps = [(w, k) for m, w, k in WEIGHTS if m is tap.attention]
        calls.append((maps, items(args, kwargs, out)))
        WEIGHTS.clear()

    hook = module.register_forward_hook(output, with_kwargs=True)
    WEIGHTS.clear()
    method = type("Recorder", (Recorder,), {"modality": (MODALITY[name],)})()
    try:
        with compress(model, method), torch.no_grad():
            method.seen.clear()  # compress() probes the method on example tokens
            model(**inputs)
    finally:
        hook.remove()
    return model, tap, method.seen, calls


def packed(name: str, tap) -> bool:
    """Anyres images, whose tokens the family's own packing places (LLaVA-NeXT, OneVision)."""
    return tap.packer is not None and MODALITY[name] == "image"


def items_of(calls, features: torch.Tensor) -> list[tuple[int, object]]:
    """(the vision call, the pool) of each placed item that the span's features are made of
    (one, or a video's frames one after another)."""
    found, at = [], 0
    while at < len(features):
        hit = [
            (c, placed, pool) for c, (_, items) in enumerate(calls) for placed, pool in items
            if at + len(placed) <= len(features)
            and torch.equal(placed.to(features.dtype), features[at : at + len(placed)])
        ]
        assert hit, "a span's features match no placed item"
        c, placed, pool = hit[0]
        found.append((c, pool))
        at += len(placed)
    return found


def check_packed(tokens: Tokens, row: int, calls, per_call, newline: torch.Tensor) -> None:
    """LLaVA-NeXT: each token carries the signals of the projected patch it equals; the
    newline tokens carry zeros."""
    patches = 0
    for token, attention, keys in zip(tokens.features[row], tokens.cls_attention[row].T, tokens.keys[row], strict=True):
        if torch.equal(token, newline.to(token.dtype)):
            assert not attention.any() and not keys.any()
            continue
        (c, j), = [
            (c, j) for c, (_, items) in enumerate(calls) for placed, _ in items
            for j in (placed == token).all(-1).nonzero().flatten().tolist()
        ][:1]
        torch.testing.assert_close(attention.float(), per_call[c][0][:, j].float())
        torch.testing.assert_close(keys.float(), per_call[c][1][j].float())
        patches += 1
    assert patches > 0


def pooling_matrix(pool, tokens: int) -> torch.Tensor:
    """(tokens, n): the weight of each encoder token of the call in each placed token."""
    return pool(torch.eye(tokens))


@pytest.mark.parametrize("name", TAPPED)
def test_signals_are_the_models_own_attention_pooled_as_its_merger_pools(name):
    """Each placed token's `cls_attention` is the mean, over the encoder tokens it is pooled
    from, of the [CLS] row (InternViT) or of the attention each token receives averaged over the
    query rows (SigLIP, Qwen ViTs: VisPruner's `attentions[-1].mean(dim=-2)`), per image or frame;
    its `keys` the same mean of the keys averaged over heads."""
    model, tap, seen, calls = run(name)
    s = tap.special
    per_call = []
    for maps, _ in calls:
        attention = torch.cat(
            [(w[:, :, 0] if s else w.mean(-2))[..., s:].transpose(0, 1).reshape(w.shape[1], -1) for w, _ in maps], -1
        )
        keys = torch.cat([k.mean(1)[:, s:].reshape(-1, k.shape[-1]) for _, k in maps], dim=0)
        per_call.append((attention, keys))
    assert seen and calls
    for tokens in seen:
        for row in range(tokens.batch):
            if packed(name, tap):  # anyres packing: each token is a patch, or the newline
                check_packed(tokens, row, calls, per_call, model.model.image_newline)
                continue
            parts = items_of(calls, tokens.features[row])
            want_attention = torch.cat([pool(per_call[c][0]) for c, pool in parts], dim=-1)
            want_keys = torch.cat([pool(per_call[c][1].T).T for c, pool in parts])
            torch.testing.assert_close(tokens.cls_attention[row].float(), want_attention.float())
            torch.testing.assert_close(tokens.keys[row].float(), want_keys.float())


GROUPED = [name for name in TAPPED if "onevision" not in name and "next" not in name]  # resized, packed


@pytest.mark.parametrize("name", GROUPED)
def test_each_placed_token_pools_the_encoder_tokens_the_tap_names(name):
    """The groups agree with the model's own pooling: the Qwen merger applied to the named
    patches' hidden states gives the placed tokens; the pixel-shuffle and average-pool families
    pool square blocks of each tile's patch grid, in row-major order; each group's tokens
    weigh equally."""
    model, tap, seen, calls = run(name)
    hidden: list[torch.Tensor] = []
    if hasattr(tap.output, "merger"):  # a Qwen ViT: its last block's output, to re-run the merger on
        hook = tap.output.blocks[-1].register_forward_hook(lambda m, a, o: hidden.append(o))
        try:
            with torch.no_grad():
                tap.output(*_vision_call(name))
        finally:
            hook.remove()
    for maps, items in calls:
        tokens = sum(w.shape[0] * (w.shape[-1] - tap.special) for w, _ in maps)
        groups = []
        for _, pool in items:
            matrix = pooling_matrix(pool, tokens)
            for column in matrix.T:
                members = column.nonzero().flatten()
                torch.testing.assert_close(column[members], torch.full((len(members),), 1 / len(members)))
                groups.append(members)
        calls_groups = torch.stack(groups)
        if hidden:
            with torch.no_grad():
                merged = tap.output.merger(hidden[0][calls_groups.flatten()])
            torch.testing.assert_close(merged, torch.cat([p for p, _ in items]))
            continue
        per_item = tokens // len(items)
        for i, (placed, _) in enumerate(items):
            side, grid = math.isqrt(placed.shape[0]), math.isqrt(per_item)
            k = grid // side
            blocks = [
                sorted(i * per_item + (r * k + a) * grid + c * k + b for a in range(k) for b in range(k))
                for r in range(side)
                for c in range(side)
            ]
            mine = calls_groups[i * side * side : (i + 1) * side * side]
            assert mine.tolist() == blocks


def _vision_call(name: str) -> tuple:
    """The Qwen vision encoder's arguments for the tiny prompt's media (images or videos)."""
    inputs = BUILDERS[name]()[1]
    if "pixel_values" in inputs:
        return inputs["pixel_values"], inputs["image_grid_thw"]
    return inputs["pixel_values_videos"], inputs["video_grid_thw"]


@dataclass
class LastLogits(Recorder):
    """Test-only: records what a method reading the last layer's [CLS] logits and the anyres
    places is handed (GlobalCom2's signals)."""

    modality = ("image",)
    needs = ("cls_attention", "anyres")
    cls_from = "last_logits"


#: image size -> its crop grid and what unpadding keeps of the tiled grid (rows, columns)
UNPADDED = {(32, 64): ((1, 2), {}), (16, 64): ((1, 2), {"rows": (1, 3)}), (32, 16): ((1, 1), {"columns": (1, 3)})}


@pytest.mark.parametrize("size", UNPADDED, ids=[f"{h}x{w}" for h, w in UNPADDED])
def test_anyres_places_and_last_layer_logits_on_llava_next(size):
    """Each packed token of a LLaVA-NeXT image carries its place as the model packed it (the
    4 x 4 thumbnail, then the crops' tiled grid as unpadding left it, a newline per row) and the
    [CLS] logits of the last CLIP layer (not the feature layer) for its own view: their softmax
    is the model's own attention row, so logits minus log weights is one constant per view and
    head."""
    model, inputs = llava_next_at(*size)
    grid, cut = UNPADDED[size]
    views = 1 + grid[0] * grid[1]
    last = adapter_for(model).tap.attentions[-1]
    last.config._attn_implementation = "eager_spy"
    method = LastLogits()
    WEIGHTS.clear()
    with compress(model, method), torch.no_grad():
        method.seen.clear()
        model(**inputs)
    weights = torch.cat([w for m, w, _ in WEIGHTS if m is last])  # (images x views, heads, 17, 17)
    assert weights.shape[0] == 2 * views and len(method.seen) == 2
    for image, tokens in enumerate(method.seen):
        places = tokens.anyres[0]
        assert places.dtype == torch.long and torch.equal(places, anyres_places((4, 4), grid, **cut))
        drift = {}
        for place, logit in zip(places.tolist(), tokens.cls_attention[0].T, strict=True):
            view, r, c = place
            if view < 0:
                assert not logit.any()
                continue
            crop = 0 if view == 0 else 1 + (r // 4) * grid[1] + c // 4
            seq = image * views + crop
            offset = logit.double() - weights[seq, :, 0, 1 + (r % 4) * 4 + c % 4].double().log()
            torch.testing.assert_close(offset, drift.setdefault(seq, offset))
        assert len(drift) == views
