"""`received` (HiPrune's global attention) at the encoder layers a method names: checked against
the eager attention maps the model itself computes, read through a registered transformers
attention function, averaged over heads and query rows, and pooled as the family pools."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hf_helpers import eager_spy

from reproductions import Compression, Method, Tokens, get
from reproductions.hf import compress, why_unsupported
from reproductions.hf.models import adapter_for
from reproductions.hf.stages.projector import at_projector_input, encoder_depth
from reproductions.hf.tiny import BUILDERS, MODALITY
from reproductions.ops import select

MAPS = eager_spy("eager_received_spy")


@dataclass
class EveryLayer(Method):
    """Test-only projector method: reads `received` at every encoder layer, last first (so the
    order of `encoder_layers` is checked too), keeps every token and records its input."""

    stage = "projector"
    modality = ("image", "video")
    needs = ("received",)

    def __post_init__(self) -> None:
        self.seen: list[Tokens] = []

    def encoder_layers(self, depth: int, feature: int) -> tuple[int, ...]:
        return tuple(reversed(range(depth)))

    def compress(self, tokens: Tokens) -> Compression:
        self.seen.append(tokens)
        return select(tokens, torch.arange(tokens.count).expand(tokens.batch, -1))


def supplied(name: str) -> bool:
    """Families that supply `received`, but not anyres images (packed: test_encoder_signals
    checks the packing of every signal alike)."""
    a = adapter_for(BUILDERS[name]()[0])
    packed = a.tap is not None and a.tap.packer is not None and MODALITY[name] == "image"
    return encoder_depth(a) is not None and "received" in a.signals and not packed


NAMES = [name for name in BUILDERS if MODALITY[name] in ("image", "video") and supplied(name)]


def received(weights: torch.Tensor, special: int) -> torch.Tensor:
    """(B, L - special) the model's eager map averaged over heads, then over query rows."""
    return weights.float().mean(1).mean(1)[:, special:]


@pytest.mark.parametrize("name", NAMES)
def test_received_is_the_models_own_attention_at_each_named_layer(name):
    model, inputs = BUILDERS[name]()
    a = adapter_for(model)
    attentions, _ = encoder_depth(a)
    attentions[0].config._attn_implementation = "eager_received_spy"
    method = type("EveryLayer", (EveryLayer,), {"modality": (MODALITY[name],)})()
    llava = at_projector_input(a, method)
    special = a.encoder_special if llava else a.tap.special
    calls: list[tuple[list, list]] = []

    def output(module, args, kwargs, out) -> None:
        per_layer = [[w for m, w in MAPS if m is module_] for module_ in reversed(attentions)]
        items = [] if llava else a.tap.items(args, kwargs, out)
        calls.append((per_layer, items))
        MAPS.clear()

    hook = (a.projector if llava else a.tap.output).register_forward_hook(output, with_kwargs=True)
    MAPS.clear()
    try:
        with compress(model, method), torch.no_grad():
            method.seen.clear()
            model(**inputs)
    finally:
        hook.remove()
    calls = [call for call in calls if call[0][0]]  # not the stage's own projection of the kept
    assert method.seen and calls
    if llava:  # one projector call per batch of images: the encoder's maps, [CLS] column dropped
        (per_layer, _), = calls
        want = torch.stack([received(maps[0], special) for maps in per_layer], dim=1)
        got = torch.cat([t.received for t in method.seen])
        torch.testing.assert_close(got.float(), want, rtol=1e-4, atol=1e-6)
        return
    # encoder tokens of each call (a flat Qwen sequence: one map per image, frame or window)
    per_call = [
        torch.stack([torch.cat([received(w, special).flatten() for w in maps]) for maps in per_layer])
        for per_layer, _ in calls
    ]
    for tokens in method.seen:
        for row in range(tokens.batch):
            features, parts, at = tokens.features[row], [], 0
            while at < len(features):
                c, placed, pool = next(
                    (c, placed, pool) for c, (_, items) in enumerate(calls) for placed, pool in items
                    if at + len(placed) <= len(features)
                    and torch.equal(placed.to(features.dtype), features[at : at + len(placed)])
                )
                parts.append(pool(per_call[c]))
                at += len(placed)
            torch.testing.assert_close(tokens.received[row].float(), torch.cat(parts, dim=-1), rtol=1e-4, atol=1e-6)


def test_hiprune_reads_the_object_layer_and_the_projectors_layer():
    """On tiny LLaVA (3 CLIP layers, the projector reads index 1): the middle layer 3 // 2 = 1
    (index 0) and index 1; an object layer past the encoder is refused with what to pass."""
    model, _ = BUILDERS["llava"]()

    assert get("hiprune").encoder_layers(*_depth(model)) == (0, 1)
    assert why_unsupported(model, get("hiprune", object_layer=2)) is None
    reason = why_unsupported(model, get("hiprune", object_layer=5))
    assert reason is not None and "object_layer between 1 and 3" in reason


def _depth(model) -> tuple[int, int]:
    attentions, feature = encoder_depth(adapter_for(model))
    return len(attentions), feature


def test_received_in_blocks_equals_the_softmax_map(monkeypatch):
    """Several blocks of query rows (a block budget of 3 rows here) and a mask that hides some
    keys per query give the column means of the full softmax map."""
    from reproductions.hf import attention

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4, generator=g), torch.randn(2, 3, 7, 4, generator=g)
    allowed = torch.rand(2, 1, 7, 7, generator=g) > 0.3
    allowed[..., 0] = True  # every query sees a key
    monkeypatch.setattr(attention, "BLOCK_SCORES", 3 * 3 * 7 * 2)
    expected = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~allowed, float("-inf")).softmax(-1).mean(-2)
    torch.testing.assert_close(attention.received(q, k, 0.5, allowed), expected)
    torch.testing.assert_close(attention.received(q, k, 0.5), (q @ k.transpose(-1, -2) * 0.5).softmax(-1).mean(-2))
