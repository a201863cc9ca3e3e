"""The shared interface: what every method reads (`Tokens`) and returns (`Compression`).

A method is a dataclass of hyperparameters whose call is a pure function from `Tokens` to a
`Compression`. Where it acts in a model (`stage`) and which signals it reads (`needs`) are
declared as class variables, so the integration layer, the docs and the conformance suite can
read them without running anything. A method that acts at several stages (PruneVid: merging
before the LLM, pruning inside it) declares its single-stage `parts`, one per stage in model
order, each an ordinary method with its own stage, signals and `compress`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from .checks import check_bool as check_bool
from .checks import check_int as check_int
from .checks import check_ints as check_ints
from .checks import check_number as check_number

Stage = Literal["encoder", "projector", "llm", "cache"]
#: the stages in the order a model runs them
STAGE_ORDER: tuple[str, ...] = ("encoder", "projector", "llm", "cache")
Modality = Literal["image", "video", "audio"]
Mechanism = Literal["transformation", "similarity", "attention", "query"]
Budget = int | float

#: Every optional signal a method may read, with the shape it must have and how to supply it.
SIGNALS: dict[str, str] = {
    "cls_attention": "(B, heads, N) attention from the [CLS] query to every token, from an "
    "encoder layer; pass Tokens(cls_attention=...)",
    "keys": "(B, N, Dk) keys of the same tokens (an encoder layer's; at the llm stage layer "
    "K - 1's, after RoPE); pass Tokens(keys=...)",
    "values": "(B, heads, N, Dh) per-head values of the same tokens, from an encoder layer's own "
    "value projection of its normed input (as its attention makes them; at the llm stage layer "
    "K - 1's value states, kv heads repeated to the query heads); pass Tokens(values=...)",
    "scores": "(B, N) per-token scores that the method itself returned (`Compression.scores`) "
    "for these tokens at the previous encoder layer, carried to the next layer by the encoder "
    "stage as it carries `sizes` (FlowCut's cumulative importance); at the llm stage, those its "
    "encoder part returned at its last step (MustDrop's key set), following the media tokens "
    "through the projector and the earlier steps; pass Tokens(scores=...)",
    "attention": "(B, heads, M, N) attention paid to each token by M query rows at an LLM "
    "layer (an encoder layer for an encoder-stage method; for a method that also needs `audio`: (B, heads, M, N + Na), over [features, "
    "audio]); pass Tokens(attention=...)",
    "received": "(B, L, N) the attention each token receives at L encoder layers, averaged over "
    "heads and over every query row ([CLS] row included): one row per layer the method's "
    "`encoder_layers` names, in that order; pass Tokens(received=...)",
    "encoder_attention": "(B, heads, F, F) the self-attention among the F positions of the "
    "encoder layer the tokens come from (softmax rows over its keys), before the model pools "
    "each run of P = F / N consecutive positions into one of the N tokens (an audio encoder's "
    "frames: Whisper's 2:1 average pooling in Qwen2-Audio); pass Tokens(encoder_attention=...)",
    "text": "(B, M, Dt) text / query embeddings; pass Tokens(text=...)",
    "text_keys": "(B, M, Dk) keys of the M `text` rows, in the space of `keys` (DART's text "
    "pivots); pass Tokens(text_keys=...)",
    "text_values": "(B, heads, M, Dh) values of the M `text` rows, in the heads and space of "
    "`values` (FlowCut's last prompt token's value); pass Tokens(text_values=...)",
    "frames": "(B, T, Df) one global feature per video frame; pass Tokens(frames=...)",
    "audio": "(B, Na, Da) audio tokens aligned in time with the video; pass Tokens(audio=...)",
    "anyres": "(B, N, 3) long: where each token of an anyres image (a global thumbnail and a grid "
    "of crops, each crop a tile the size of the thumbnail's token grid: LLaVA-NeXT) lies, as "
    "(view, row, column): view 0 the thumbnail, on its own grid; view 1 a crop, on the grid of "
    "all crops side by side before unpadding (crop (i, j) covers rows i*h to i*h + h - 1 and "
    "columns j*w to j*w + w - 1); (-1, -1, -1) a token that stands for no patch (a row's "
    "newline); pass Tokens(anyres=...), e.g. from `reproductions.ops.anyres_places`",
    "timespan": "(B, N, 2) long: the first and last frame each video token stands for (one "
    "frame, or the frames an earlier stage merged it over), frames numbered across the row's "
    "videos; pass Tokens(timespan=...)",
}


@dataclass(frozen=True)
class Tokens:
    """The candidate tokens of one modality span, plus the signals methods may read.

    `features` is (B, N, D). The first `special` tokens (a [CLS]) lead and are never dropped or
    merged; `layout` is the grid the other N - special tokens fill: (H, W) for an image,
    (T, H, W) frame-major for a video, (T,) for audio. Optional signals are listed in `SIGNALS`.
    `sizes` carries how many original tokens each input token already stands for (ToMe across
    layers); None means one each.
    """

    features: Tensor
    layout: tuple[int, ...] | None = None
    special: int = 0
    cls_attention: Tensor | None = None
    keys: Tensor | None = None
    values: Tensor | None = None
    scores: Tensor | None = None
    attention: Tensor | None = None
    received: Tensor | None = None
    encoder_attention: Tensor | None = None
    text: Tensor | None = None
    text_keys: Tensor | None = None
    text_values: Tensor | None = None
    frames: Tensor | None = None
    audio: Tensor | None = None
    timespan: Tensor | None = None
    sizes: Tensor | None = None
    anyres: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.features.shape[0]

    @property
    def count(self) -> int:
        """N, the number of tokens including special ones."""
        return self.features.shape[1]

    @property
    def grid(self) -> tuple[int, ...]:
        """`layout`, or (N - special,) when none was given."""
        return self.layout if self.layout is not None else (self.count - self.special,)


@dataclass(frozen=True)
class Compression:
    """The result of a method.

    `features` (B, K, D') are the output tokens. `source` (B, N) long gives the output slot each
    input token went to (-1 where dropped); `positions` (B, K) long the original index each output
    token stands at (for RoPE / M-RoPE ids); `sizes` (B, K) float32 how many original tokens each
    output token stands for. Invariants (checked by `check_compression` and the conformance suite):
    `sizes[b, k]` equals the input sizes summed over the tokens with `source[b, i] == k`, and
    `source[b, positions[b, k]] == k`. `scores` (B, K), where the method returns any, are the
    per-token scores it hands its own call at the next encoder layer (`Tokens.scores`).
    """

    features: Tensor
    source: Tensor
    positions: Tensor
    sizes: Tensor
    scores: Tensor | None = None

    @property
    def count(self) -> int:
        return self.features.shape[1]

    def then(self, second: Compression) -> Compression:
        """`second`, computed on this compression's output tokens, as one compression of the
        original tokens: an original token goes to the slot `second` gave its slot (-1 where
        either dropped it), each final token stands at the original index of the token
        `second` kept it at, and its size sums the sizes of the slots `second` merged into it.
        The features and scores are `second`'s."""
        if second.source.shape != (self.features.shape[0], self.count):
            raise ValueError(
                f"the second compression's source is {tuple(second.source.shape)}, but this one "
                f"outputs (B, K) = {(self.features.shape[0], self.count)} tokens: pass a "
                "compression of this one's output"
            )
        kept = self.source >= 0
        slots = second.source.gather(1, self.source.clamp_min(0))
        source = torch.where(kept, slots, self.source)
        positions = self.positions.gather(1, second.positions)
        b, k = second.source.shape[0], second.count
        sizes = self.sizes.new_zeros(b, k + 1).scatter_add_(1, second.source + 1, self.sizes)
        return Compression(second.features, source, positions, sizes[:, 1:], second.scores)


@dataclass
class Method:
    """Base class of every method: a dataclass of hyperparameters with a pure `__call__`.

    Subclasses set the class variables below, validate their fields in `__post_init__`
    (raising `ValueError`), and implement `compress`. `__call__` validates the input first, so
    `compress` may assume shapes and signals are right.
    """

    name: ClassVar[str] = ""
    #: catalog id of the paper this method reproduces (None for baselines)
    paper: ClassVar[str | None] = None
    #: the paper's own page, for a method whose paper the catalog cannot hold yet (no source
    #: names its authors); None otherwise
    reference: ClassVar[str | None] = None
    stage: ClassVar[Stage] = "projector"
    modality: ClassVar[tuple[Modality, ...]] = ("image",)
    mechanisms: ClassVar[tuple[Mechanism, ...]] = ()
    #: the signals of `SIGNALS` that the method reads (each must be given)
    needs: ClassVar[tuple[str, ...]] = ()
    #: the signals of `SIGNALS` that the method reads where given and does without otherwise
    #: (ToMe's `keys`, else the features); checked like `needs` when present
    uses: ClassVar[tuple[str, ...]] = ()
    #: True where the method needs the tokens' grid (`layout`): pooling, frame methods
    grid: ClassVar[bool] = False
    #: at the llm stage, which states of the query rows `text` holds: "layer" (their hidden
    #: states entering layer K) or "embeddings" (their input embeddings: SparseVLM's raters)
    text_from: ClassVar[str] = "layer"
    #: at the llm stage, which states `features` and `text` hold for scoring: "layer" (as they
    #: enter layer K) or "final_norm" (those through the decoder's final norm: DART's
    #: `norm(hidden)`); the stage then keeps the unnormalised rows of the tokens kept, so a
    #: method that reads "final_norm" states must be a pure selection (`copies`)
    hidden_from: ClassVar[str] = "layer"
    #: at the llm stage, whose attention `attention` holds: "previous" (layer K - 1's, FastV's
    #: `last_layer_attention`) or "own" (layer K's own over its input, before it runs: the
    #: rank layers of PyramidDrop)
    attention_from: ClassVar[str] = "previous"
    #: at the llm stage, which query rows `attention` holds: "after" (the M rows after the
    #: media span, the prompt) or "media" (the N media rows themselves, then those M rows:
    #: FitPrune's self- and cross-attention), so M = N + rows after
    attention_rows: ClassVar[str] = "after"
    #: at the projector stage, which [CLS] attention `cls_attention` holds: "feature" (the
    #: softmax attention of the encoder layer the projector reads) or "last_logits" (the
    #: encoder's last layer's pre-softmax scores q k^T / sqrt(d): GlobalCom2's); encoders
    #: without a [CLS] have no "last_logits"
    cls_from: ClassVar[str] = "feature"
    #: at the encoder stage of an encoder without a [CLS] (the Qwen ViTs), which query's attention
    #: `cls_attention` holds instead: "mean" (the mean of each image's queries, its softmax over
    #: the image's tokens: FlowCut's Qwen2-VL port); None: none, so the method cannot run there
    cls_free_query: ClassVar[str | None] = None
    #: at the llm stage, True where `attention` is the softmax of the layer's queries and keys
    #: before the rotary embedding, over every real column with no causal mask (PruneVid's
    #: `attn_weights_wo_pos`); False: the attention the layer computes
    attention_raw: ClassVar[bool] = False
    #: at the llm stage, how `attention`'s heads reach the method: "each" (every head's map) or
    #: "max" (their maximum, one head: a method that takes the head max before anything else,
    #: FitPrune, PruneVid), so that the stage builds the map head by head and never holds every
    #: head's (N + M) x N map at once. Given every head, such a method reduces them itself.
    attention_heads: ClassVar[str] = "each"
    #: at the llm stage, which media rows decoding steps see at each layer (what the official
    #: KV cache holds there after the prefill): "seen" (each layer the rows it saw in the
    #: prefill: all of them before K_1), "kept" (every layer only the rows the last step kept:
    #: PruneVid cuts the cache of the layers before K), "kept_from_read" (those from the first
    #: layer a step reads on, K_1 - 1 (K_1 for "own" attention), all of them before: MustDrop)
    decoding_rows: ClassVar[str] = "seen"
    #: False where the official statistic spans the batch (PruMerge's adaptive ratio)
    batch_independent: ClassVar[bool] = True
    #: True where every output token of size 1 is an input token, unchanged (pure selection)
    copies: ClassVar[bool] = True
    #: False where a pure selection picks from its signals alone (FastV, FitPrune: attention),
    #: so the features are not scanned for NaN and inf: any reach the output unchanged
    reads_features: ClassVar[bool] = True
    #: how many leading special tokens the method accepts: None for any number
    special_tokens: ClassVar[tuple[int, ...] | None] = None
    #: parameters for which the method returns its input unchanged (None: `keep` = N does)
    identity: ClassVar[dict[str, Any] | None] = None
    #: small parameters that run on the conformance inputs and in the docs' usage snippet
    example: ClassVar[dict[str, Any]] = {}
    #: realistic parameters for `benchmarks/methods.py`: one dict, or one per preset name
    benchmark: ClassVar[dict[str, Any] | None] = None
    #: True for trainable `nn.Module` methods (learned queries), which the pure-function
    #: promises do not cover
    trainable: ClassVar[bool] = False
    #: at the encoder stage, where the method acts: "layers" (between a layer's attention and
    #: MLP, in the layers it names: ToMe, A-ToMe, attention pruning) or "pooled" (once, on the
    #: encoder's pooled output before its final norm: FastLongSpeech's fusion)
    encoder_point: ClassVar[str] = "layers"
    #: the hyperparameter that sets the output count of a method without `keep` (a stride, a
    #: merge count, a ratio); None where the count is set by the data (similarity thresholds)
    budget_knob: ClassVar[str | None] = None
    #: a method that acts at several stages: its single-stage methods, one per stage in model
    #: order, each built by `parts()` from this method's hyperparameters of the same names.
    #: Its `stage` (the first), `modality`, `mechanisms`, `needs`, `uses`, `grid`, `copies`,
    #: `batch_independent`, `example` and `identity` follow from them. () for a method of one stage.
    parts_of: ClassVar[tuple[type[Method], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        parts = cls.__dict__.get("parts_of", ())
        if not parts:
            return
        stages = [part.stage for part in parts]
        if len(parts) < 2 or any(part.parts_of for part in parts) or stages != sorted(set(stages), key=STAGE_ORDER.index):
            raise TypeError(
                f"{cls.__name__}.parts_of must list two or more single-stage methods, one per "
                f"stage in model order {STAGE_ORDER}; got stages {stages}"
            )

        def union(attribute: str) -> tuple:
            return tuple(dict.fromkeys(x for part in parts for x in getattr(part, attribute)))

        cls.stage = stages[0]
        cls.modality, cls.mechanisms = union("modality"), union("mechanisms")
        cls.needs, cls.uses = union("needs"), union("uses")
        cls.grid = any(part.grid for part in parts)
        cls.copies = all(part.copies for part in parts)
        cls.batch_independent = all(part.batch_independent for part in parts)
        if "example" not in cls.__dict__:
            cls.example = {k: v for part in parts for k, v in part.example.items()}
        if "identity" not in cls.__dict__ and all(part.identity is not None for part in parts):
            cls.identity = {k: v for part in parts for k, v in part.identity.items()}

    def __call__(self, tokens: Tokens) -> Compression:
        if self.parts_of:
            raise ValueError(
                f"{self.name} acts at the {' and '.join(self.stages())} stages, on different "
                "tokens at each: call each of its parts() on the tokens of its stage (inside a "
                "model, reproductions.hf.compress runs them all)"
            )
        validate_tokens(tokens, self)
        self.check_inputs(tokens)
        return self.compress(tokens)

    def parts(self) -> tuple[Method, ...]:
        """The single-stage methods this method runs, in model order, each built from this
        method's hyperparameters of the same names: (self,) for a method of one stage."""
        if not self.parts_of:
            return (self,)
        mine = {f.name: getattr(self, f.name) for f in fields(self)}
        return tuple(
            part(**{f.name: mine[f.name] for f in fields(part) if f.init and f.name in mine})
            for part in self.parts_of
        )

    @classmethod
    def stages(cls) -> tuple[str, ...]:
        """Every stage the method acts at, in model order."""
        return tuple(part.stage for part in cls.parts_of) or (cls.stage,)

    def check_inputs(self, tokens: Tokens) -> None:
        """Checks of the inputs that only this method makes (after the shared ones of
        `validate_tokens`): raise `ValueError` saying what to pass instead."""

    def compress(self, tokens: Tokens) -> Compression:
        raise NotImplementedError

    def output_width(self, width: int) -> int:
        """The width D' of the output tokens for input tokens of width D: D unless the method
        folds tokens into channels (pixel shuffle, frame stacking), whose output then needs a
        projector trained for D' (the integration reads this instead of running the method)."""
        return width

    def decoder_layers(self) -> tuple[int, ...]:
        """For an llm method that acts at several decoder layers: those layers, increasing; each
        step sees the tokens the earlier ones kept. () (the default): one layer, K."""
        return ()

    def encoder_layers(self, depth: int, feature: int) -> tuple[int, ...]:
        """For a method that reads `received`: the encoder layers (0-based, of an encoder of
        `depth` layers whose layer `feature` feeds the projector) whose attention it reads, one
        row of `received` each, in this order. () (the default): none."""
        return ()

    def encoder_step(self, index: int, count: int, feature: int) -> Method | None:
        """For an encoder-stage method: the single-layer method run inside encoder layer `index`
        (0-based; layer `feature` feeds the projector) on the tokens the earlier layers kept, of
        the `count` tokens the encoder started with; None where the layer runs unchanged. The
        default: this method in every layer (ToMe). The encoder stage asks for it in CLIP,
        SigLIP and InternViT encoders and in the audio encoders (audio_attention_prune's
        `layers`); the Qwen ViTs' packed stage in every block, per image (`count` its merge
        units), with `feature` = depth: the merger reads the last block's output."""
        return self

    def step(self, index: int, count: int) -> Method:
        """The single-layer method run at `decoder_layers()[index]` on a span that held `count`
        media tokens before the first step."""
        return self

    def output_count(self, tokens: Tokens) -> int | None:
        """The number of output tokens for these inputs; None where it depends on the data."""
        keep = getattr(self, "keep", None)
        return None if keep is None else resolve_keep(keep, tokens.count, tokens.special)

    @classmethod
    def at_budget(cls, budget: Budget, tokens: Tokens, **params: Any) -> Method:
        """This method set to output `budget` tokens of `tokens` (an int count or a fraction of
        N, special tokens included), by one rule for every method: `keep` where it has one
        (exact); else the value of `budget_knob` whose output count is nearest the budget, ties
        to more tokens (exact where the knob allows it: a pooling stride gives only some
        counts, and then the nearest one). `params` fix the other hyperparameters. Raises
        `ValueError` for a method whose count the data decides (no knob)."""
        from .budget import fit

        return fit(cls, budget, tokens, params)

    @classmethod
    def parameters(cls) -> list[tuple[str, Any]]:
        """(name, default) of every hyperparameter, for the docs."""
        return [(f.name, f.default) for f in fields(cls)]


def resolve_keep(keep: Budget, n: int, special: int = 0) -> int:
    """Turn a budget into a token count: an int is a count, a float in (0, 1] a fraction of N.

    The one rounding rule of the project: a fraction keeps floor(keep * N) tokens, as the
    official codes do with `int(N * ratio)`. The count includes the special tokens, so it must
    lie in [max(1, special), N]; anything else raises `ValueError`.
    """
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise ValueError(f"keep must be an int count or a float fraction in (0, 1], got {keep!r}")
    if isinstance(keep, float):
        if not math.isfinite(keep) or not 0.0 < keep <= 1.0:
            raise ValueError(
                f"keep={keep!r}: a float budget is a fraction of the tokens in (0, 1]; "
                "pass an int to keep a count of tokens"
            )
        count = math.floor(keep * n)
    else:
        count = keep
    lowest = max(1, special)
    if not lowest <= count <= n:
        raise ValueError(
            f"keep={keep!r} gives {count} tokens, but there are N={n} tokens "
            f"({special} special, which are always kept): pass a budget between {lowest} and {n}"
        )
    return count


def validate_keep(keep: Budget) -> None:
    """Reject budgets that are wrong whatever the input (for `__post_init__`)."""
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise ValueError(f"keep must be an int count or a float fraction in (0, 1], got {keep!r}")
    if isinstance(keep, float) and (not math.isfinite(keep) or not 0.0 < keep <= 1.0):
        raise ValueError(f"keep={keep!r}: a float budget must be a fraction in (0, 1]")
    if isinstance(keep, int) and keep <= 0:
        raise ValueError(f"keep={keep!r}: pass a positive number of tokens to keep")


def validate_tokens(tokens: Tokens, method: Method, values: bool = True) -> None:
    """Check shapes, the layout and the signals `method` needs; raise `ValueError` otherwise.

    `values=False` skips the scans for NaN and inf (a pass over every value): for a method
    called again and again on inputs already checked once (a cache method's decoding steps)."""
    x = tokens.features
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"features must be a (B, N, D) tensor, got {shape}")
    b, n, _ = x.shape
    if n == 0 or b == 0:
        raise ValueError(f"features {tuple(x.shape)} is empty: pass at least one token")
    if not x.is_floating_point():
        raise ValueError(f"features must be floating point, got {x.dtype}")
    if values and method.reads_features and not all_finite(x):
        raise ValueError("features contain NaN or inf: pass finite features")
    if tokens.special < 0 or tokens.special > n:
        raise ValueError(f"special={tokens.special} must lie in [0, N={n}]")
    allowed = method.special_tokens
    if allowed is not None and tokens.special not in allowed:
        raise ValueError(
            f"{method.name} expects special in {allowed} leading tokens, got special={tokens.special}"
        )
    if tokens.layout is not None:
        if any((not isinstance(s, int)) or s <= 0 for s in tokens.layout):
            raise ValueError(f"layout {tokens.layout} must be positive ints")
        if math.prod(tokens.layout) != n - tokens.special:
            raise ValueError(
                f"layout {tokens.layout} holds {math.prod(tokens.layout)} tokens but features "
                f"have N - special = {n} - {tokens.special} = {n - tokens.special}: pass the grid "
                "of the non-special tokens"
            )
        expected = {"image": 2, "video": 3, "audio": 1}
        ranks = {expected[m] for m in method.modality}
        if len(tokens.layout) not in ranks:
            raise ValueError(
                f"{method.name} works on {'/'.join(method.modality)} tokens, whose layout has "
                f"{' or '.join(str(r) for r in sorted(ranks))} dims; got layout {tokens.layout}"
            )
    if tokens.sizes is not None and tuple(tokens.sizes.shape) != (b, n):
        raise ValueError(f"sizes must be (B, N) = {(b, n)}, got {tuple(tokens.sizes.shape)}")
    for signal in method.needs:
        if getattr(tokens, signal) is None:
            raise ValueError(f"{method.name} needs the signal {signal!r}: {SIGNALS[signal]}")
    for signal in (*method.needs, *method.uses):
        value = getattr(tokens, signal)
        if value is not None:
            _check_signal(signal, value, tokens, values, spans_audio="audio" in method.needs)


def _check_signal(
    signal: str, value: Tensor, tokens: Tokens, values: bool = True, spans_audio: bool = False
) -> None:
    """Check one signal's shape (and values); `spans_audio`: `attention` covers [features,
    audio] (an omni method, which reads the attention paid to the audio tokens too)."""
    b, n = tokens.batch, tokens.count
    columns = n + tokens.audio.shape[1] if spans_audio and tokens.audio is not None else n
    shape = tuple(value.shape)
    expected: dict[str, tuple[int, tuple[int | None, ...]]] = {
        "cls_attention": (3, (b, None, n)),
        "keys": (3, (b, n, None)),
        "values": (4, (b, None, n, None)),
        "scores": (2, (b, n)),
        "attention": (4, (b, None, None, columns)),
        "received": (3, (b, None, n)),
        "encoder_attention": (4, (b, None, None, None)),
        "text": (3, (b, None, None)),
        "text_keys": (3, (b, None, None)),
        "text_values": (4, (b, None, None, None)),
        "frames": (3, (b, tokens.grid[0] if tokens.layout else None, None)),
        "audio": (3, (b, None, None)),
        "anyres": (3, (b, n, 3)),
        "timespan": (3, (b, n, 2)),
    }
    rank, dims = expected[signal]
    ok = len(shape) == rank and all(d is None or d == s for d, s in zip(dims, shape, strict=True))
    if not ok:
        want = ", ".join("*" if d is None else str(d) for d in dims)
        raise ValueError(f"{signal} has shape {shape}; expected ({want}): {SIGNALS[signal]}")
    if signal == "encoder_attention" and (shape[2] != shape[3] or shape[3] % n or shape[3] == 0):
        raise ValueError(
            f"encoder_attention has shape {shape}; expected square (F, F) with F a multiple of "
            f"N = {n}: {SIGNALS[signal]}"
        )
    if signal == "anyres" and value.is_floating_point():
        raise ValueError(f"anyres must hold integer places, got {value.dtype}: {SIGNALS[signal]}")
    if values and not all_finite(value):
        raise ValueError(f"{signal} contains NaN or inf: pass finite values")


def all_finite(x: Tensor) -> bool:
    """True when `x` holds no NaN or inf. A finite float32 sum proves it (a NaN or an inf makes
    the sum NaN or inf), in one pass ~3x faster than min/max on CPU; only where the sum is not
    finite (a bad value, or finite values that overflow it) do min/max, which carry both, decide."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(torch.stack(torch.aminmax(x))).all())


class CompressionError(AssertionError, ValueError):
    """A `Compression` that breaks an invariant of the interface (a bug in the method).

    An `AssertionError` for test runners, a `ValueError` for callers that catch bad values;
    raised explicitly, so that `python -O` does not strip the checks as it strips `assert`."""


def _require(ok: bool | Tensor, message: str) -> None:
    if not bool(ok):
        raise CompressionError(message)


def check_compression(out: Compression, tokens: Tokens) -> None:
    """Check the invariants of a `Compression` (used by the tests); raise `CompressionError`
    naming the broken one.

    Omni methods compress the concatenation [features, audio]: their `source` spans both.
    """
    b, n = tokens.batch, tokens.count
    if tokens.audio is not None and out.source.shape[1] == n + tokens.audio.shape[1]:
        n += tokens.audio.shape[1]
    k = out.count
    _require(
        out.source.shape == (b, n) and out.source.dtype == torch.long,
        f"source must be (B, N) = {(b, n)} long, got {tuple(out.source.shape)} {out.source.dtype}",
    )
    _require(
        out.positions.shape == (b, k) and out.positions.dtype == torch.long,
        f"positions must be (B, K) = {(b, k)} long, got {tuple(out.positions.shape)} "
        f"{out.positions.dtype}",
    )
    _require(
        out.sizes.shape == (b, k),
        f"sizes must be (B, K) = {(b, k)}, got {tuple(out.sizes.shape)}",
    )
    low, high = int(out.source.min()), int(out.source.max())
    _require(
        low >= -1 and high < k, f"source holds slots in [{low}, {high}], outside [-1, K={k})"
    )
    weights = torch.ones(b, n) if tokens.sizes is None else tokens.sizes.float()
    if weights.shape[1] != n:  # input sizes cover the features, audio tokens count one each
        weights = torch.cat([weights, torch.ones(b, n - weights.shape[1])], dim=1)
    counted = torch.zeros(b, k + 1).scatter_add_(1, out.source.cpu() + 1, weights.cpu())[:, 1:]
    _require(
        torch.allclose(counted, out.sizes.float().cpu()),
        "sizes disagree with source: each output size must sum the input sizes of its slot",
    )
    _require(
        out.scores is None or tuple(out.scores.shape) == (b, k),
        f"scores must be (B, K) = {(b, k)}, got {None if out.scores is None else tuple(out.scores.shape)}",
    )
    slots = torch.arange(k).expand(b, k).to(out.source)
    _require(
        (out.source.gather(1, out.positions) == slots).all(),
        "positions do not point at tokens of their own slot",
    )
