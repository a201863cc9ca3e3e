"""What every model-family adapter tells the stages: where the prompt enters, the language model
and its layers, the placeholder token of each modality, and how media spans are cut into items
and laid out on grids. Each family subclasses `Adapter` in a module of its own."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

#: pools a signal given per encoder token of one encoder call (C, tokens) onto the n tokens of
#: one placed item (C, n), as the family's merger or projector pools the encoder's tokens
Pool = Callable[[Tensor], Tensor]
#: (the output module's args, kwargs, output) -> per media item placed into the LLM input: its
#: features (n, D) and the Pool onto them
Items = Callable[[tuple, dict, Any], list[tuple[Tensor, Pool]]]
#: a stage's map of per-token features at the decoder input's positions (B, n, D), and which
#: positions are visual (B, n), onto the rows a layer now holds: (B, n', D) and (B, n') bool, or
#: None while every row is in place
RowMap = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor] | None"]


@dataclass
class Undo:
    """A change that is not a torch hook, removed as a hook handle is (`Stage.hook`)."""

    remove: Callable[[], Any]


def shadow(obj: Any, name: str, value: Any) -> Undo:
    """`obj.name` replaced by `value` on this one instance (its class untouched), until the
    returned handle's `remove()` puts back what the instance had: its own attribute where it had
    one (accelerate's wrapped `forward` under `device_map`), else none."""
    own = vars(obj)
    had, before = name in own, own.get(name)
    setattr(obj, name, value)
    return Undo(lambda: setattr(obj, name, before) if had else own.pop(name, None))


@dataclass
class EncoderTap:
    """Where a family whose projector stage compresses LLM-input rows reads its encoder signals:
    the attention of the encoder layer whose output the merger or projector pools, carried onto
    each LLM token as the mean over the encoder tokens it is pooled from."""

    #: the attention module of that encoder layer
    attention: nn.Module
    #: the module whose output is placed into the LLM input (merger or projector); None where
    #: only the packer places items
    output: nn.Module | None
    #: leading tokens of each encoder sequence that the model drops: a [CLS], whose attention row
    #: is then `cls_attention` (without one, each token's attention received, as the ports do)
    special: int
    #: each placed item and how it pools the call's encoder tokens (over the call's batch, [CLS]
    #: left out)
    items: Items | None
    #: the modalities whose items these are
    modalities: tuple[str, ...] = ("image", "video")
    #: grid families: the encoder tokens each placed token of an item pools (n, k), the same for
    #: every item; the encoder stage merges these units whole (ToMe), so each leaves one token
    units: Tensor | None = None
    #: every encoder layer's attention module, in order (`attention` among them): where
    #: `received` is read at the layers a method names
    attentions: tuple[nn.Module, ...] = ()
    #: anyres families: the module and the name of its method that packs each image's crops
    #: (LLaVA-NeXT / OneVision `pack_image_features`: unpadding, resizing, newlines), which the
    #: stage runs again on the signals, so each packed token gets its own patch's (a newline: 0)
    packer: tuple[nn.Module, str] | None = None


@dataclass
class AudioTower:
    """Where the encoder stage compresses inside a Whisper-style audio encoder: its layers, after
    the last of which the encoder average-pools every two frames of a clip into one LLM token,
    and the module whose output the model places: Qwen2-Audio's projector, (clips, tokens, D),
    each clip's first floor(real frames / 2) tokens; Qwen2.5-Omni's encoder, every clip's tokens
    packed (tokens, D). The projector stage reads audio methods' `cls_attention` from its last
    layer (`stages/signals.py`, `AudioTap`)."""

    layers: nn.ModuleList
    output: nn.Module
    #: Qwen2.5-Omni: the mel frames of each chunk its encoder attends within (2 * n_window), over
    #: the clips' frames packed in one sequence; 0: a batch of clips, each one window
    chunk: int = 0


@dataclass
class Adapter:
    """The facts of one model that the stages need; a family's module fills them in."""

    family: str
    #: the module that receives input_ids (its pre-hook reads them)
    outer: nn.Module
    language_model: nn.Module
    layers: nn.ModuleList
    #: modality -> placeholder token id in input_ids
    tokens: dict[str, int]
    #: the projector whose *input* the projector stage compresses (LLaVA, as the official
    #: methods do); None: the stage compresses the media rows of the LLM input
    projector: nn.Module | None = None
    #: vision encoder layers, and the index of the one whose output the projector reads
    encoder_layers: nn.ModuleList | None = None
    feature_layer: int | None = None
    #: the Qwen ViT (flat per-image sequences cut by `cu_seqlens`, a merger over each merge
    #: unit), in whose blocks the encoder stage merges (`stages/packed.py`)
    packed: nn.Module | None = None
    #: signals the projector stage can give from the encoder (LLaVA: [CLS] attention, keys,
    #: attention received at any encoder layer)
    signals: tuple[str, ...] = ()
    #: where the projector stage reads those signals when it compresses LLM-input rows
    tap: EncoderTap | None = None
    #: the audio encoder the encoder stage compresses in (audio methods); None: not handled
    audio_tower: AudioTower | None = None
    #: leading encoder tokens ([CLS]) that the model drops before its projector
    encoder_special: int = 0
    #: trailing tokens of each video span that are not frame tokens (OneVision's newline)
    video_trailer: int = 0
    #: position ids are 3-D M-RoPE (t, h, w) ids (Qwen-VL), not 1-D
    mrope: bool = False
    #: the modalities whose spans come with a grid (`layout`), which grid methods need
    gridded: tuple[str, ...] = ()
    #: decoder layers after which DeepStack adds ViT features to the visual tokens (Qwen3-VL);
    #: a family with any implements `follow_rows`
    deepstack_layers: int = 0
    #: each decoder layer's attention type where the family gives layers of different types
    #: masks and position embeddings of their own (Gemma 3: "full_attention" /
    #: "sliding_attention"; `prefill_mask` then returns one mask per type); empty: one for all
    layer_types: tuple[str, ...] = ()
    #: modalities the model reads that this integration does not handle yet, with the reason
    unsupported: dict[str, str] = field(default_factory=dict)
    #: stages that cannot run in this family yet, with the reason
    unsupported_stages: dict[str, str] = field(default_factory=dict)

    def follow_rows(self, rows: RowMap) -> Undo:
        """Make the features the family adds to each visual token after its first
        `deepstack_layers` decoder layers land on the rows a stage left (`rows` maps them);
        returns the Undo. Families without such features: nothing to follow."""
        return Undo(lambda: None)

    def refuse_call(self, kwargs: dict) -> str | None:
        """Why a call with these arguments cannot be compressed in this family, or None."""
        return None

    def prefill_mask(self, valid: Tensor, index: Tensor, input_ids: Tensor | None, embeds: Tensor,
                     positions: Tensor, cache: Any) -> Any:
        """The attention mask the language model gets for a shortened prompt (`valid`: which rows
        are real, `index`: the original index of each): a 2-D mask from which it builds its
        causal masks, unless the family's own semantics need more (Gemma 3: one mask per layer
        type, which the llm stage also takes, with no cache, for its layers >= K)."""
        return valid.long()

    def item_size(self, modality: str) -> int | None:
        """Tokens per item of `modality` where the model fixes them, else None (one item per run
        of placeholders)."""
        return None

    def item_runs(
        self, modality: str, found: list[list[tuple[int, int]]], kwargs: dict[str, Any]
    ) -> list[list[tuple[list[tuple[int, int]], tuple[int, ...] | None]]]:
        """Per row, each item's runs of placeholders (start, length) and its grid (None: `layout`
        finds it): one run per item, unless the family writes an item as several runs
        (Qwen3-VL's video frames). `kwargs`: the model call's arguments (its grids)."""
        return [[([run], None) for run in row] for row in found]

    def layout(self, modality: str, length: int, positions: Tensor | None) -> tuple[int, ...] | None:
        """The grid a span of `length` placeholders fills: (H, W), (T, H, W) or (T,); None where
        the model packs the tokens irregularly. `positions` (3, length) are the span's M-RoPE ids
        where the model has them (they spell out the grid)."""
        if modality == "audio":
            return (length,)
        if positions is not None and positions.dim() == 2 and positions.shape[0] == 3:
            t, h, w = (int(row.unique().numel()) for row in positions)
            if t * h * w == length:
                return (h, w) if modality == "image" and t == 1 else (t, h, w)
        return None


def language_parts(model: nn.Module, name: str = "language_model") -> dict[str, nn.Module]:
    """outer, language_model and layers of a `...ForConditionalGeneration` whose `model` holds
    the language model under `name` (every supported family)."""
    inner = model.model
    language = getattr(inner, name)
    return {"outer": inner, "language_model": language, "layers": language.layers}


def square(length: int) -> tuple[int, int] | None:
    """(side, side) where `length` tokens fill a square grid."""
    side = math.isqrt(length)
    return (side, side) if side * side == length else None


def pooled_groups(index: Tensor) -> Tensor:
    """(n, k) long from a pooling function's output on encoder-token indices given as features:
    the k encoder tokens each of the n pooled tokens is made from."""
    return index.reshape(-1, index.shape[-1]).round().long()


def group_mean(groups: Tensor) -> Pool:
    """The Pool of a merger that makes each placed token from a group of encoder tokens (n, k):
    the mean over the group (LightCompress' Qwen2.5-VL ports average the 2x2 merged patches)."""
    return lambda x: x[:, groups.to(x.device)].mean(-1)


def grid_tap(
    attention: nn.Module, output: nn.Module, special: int, units: Tensor, attentions: tuple[nn.Module, ...] = ()
) -> EncoderTap:
    """The tap of a family that pools each item's encoder tokens in fixed `units` (n, k): one
    item per batch row of the output module's (B, n, D) output."""
    per_item = units.numel()

    def items(args: tuple, kwargs: dict, out: Tensor) -> list[tuple[Tensor, Pool]]:
        return [(out[i], group_mean(units + i * per_item)) for i in range(out.shape[0])]

    return EncoderTap(attention=attention, output=output, special=special, items=items, units=units,
                      attentions=attentions)


def arange_features(count: int, device: torch.device | None = None) -> Tensor:
    """Encoder-token indices 0..count-1 as one-wide float features (exact below 2**24)."""
    return torch.arange(count, dtype=torch.float32, device=device)
