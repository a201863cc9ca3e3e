"""SALMONN's window-level Q-Former: learned queries summarise each short window of audio frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..interface import Compression, Method, Tokens, check_int
from ..registry import register


class QFormerLayer(nn.Module):
    """One BERT layer of the BLIP-2 Q-Former: self-attention, cross-attention, feed-forward.

    Post-norm residual blocks as in BERT; the cross-attention reads keys and values straight from
    the (wider) audio frames, like BLIP-2's `encoder_width` projections.
    """

    def __init__(self, hidden: int, heads: int, frame_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, batch_first=True
        )
        self.self_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.cross_attention = nn.MultiheadAttention(
            hidden, heads, dropout=dropout, kdim=frame_dim, vdim=frame_dim, batch_first=True
        )
        self.cross_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, 4 * hidden),
            nn.GELU(),
            nn.Linear(4 * hidden, hidden),
            nn.Dropout(dropout),
        )
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, frames: Tensor) -> Tensor:
        attended = self.self_attention(queries, queries, queries, need_weights=False)[0]
        queries = self.self_norm(queries + self.dropout(attended))
        attended = self.cross_attention(queries, frames, frames, need_weights=False)[0]
        queries = self.cross_norm(queries + self.dropout(attended))
        return self.output_norm(queries + self.feed_forward(queries))


class WindowQFormerModule(nn.Module):
    """LayerNorm on the frames, a Q-Former over each window, a linear projection to the LLM."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        out_dim: int,
        num_queries: int,
        layers: int,
        heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.frame_norm = nn.LayerNorm(dim)  # SALMONN's ln_speech
        self.queries = nn.Parameter(torch.randn(1, num_queries, hidden) * 0.02)
        self.query_norm = nn.LayerNorm(hidden, eps=1e-12)  # BERT embeddings' LayerNorm
        self.query_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(hidden, heads, dim, dropout) for _ in range(layers)
        )
        self.projection = nn.Linear(hidden, out_dim)  # SALMONN's speech_llama_proj

    def forward(self, windows: Tensor) -> Tensor:
        """(W, window, dim) frames of W windows -> (W, num_queries, out_dim)."""
        frames = self.frame_norm(windows)
        queries = self.query_dropout(self.query_norm(self.queries.expand(windows.shape[0], -1, -1)))
        for layer in self.layers:
            queries = layer(queries, frames)
        return self.projection(queries)


@register("window_qformer")
@dataclass
class WindowQFormer(Method):
    """Cut the audio frames into windows and let learned queries summarise each window.

    Paper: "SALMONN: Towards Generic Hearing Abilities for Large Language Models" (Tang et al.,
    ICLR 2024, arXiv 2310.13289). The Whisper (+ BEATs) frames are layer-normed and cut with
    `F.unfold` into windows of `window` frames every `stride` frames (SALMONN: 17 frames = 0.33 s
    of the 50 Hz Whisper output, stride = window, so 1500 frames -> 88 windows); frames after the
    last whole window are not read. A 2-layer BERT Q-Former with `num_queries` learned queries
    (SALMONN: 1) cross-attends to each window separately, and a linear layer projects the query
    outputs to the LLM width. Output k * num_queries + q is query q of window k.

    Compression: `features` (B, windows * num_queries, out_dim) are the module's outputs; `source`
    is all -1 (no input token survives as such); `sizes` = `window` (frames summarised);
    `positions` = the centre frame start + window // 2 of each window.

    Parameters: `dim` (input width), `hidden` (Q-Former width, 768), `out_dim` (LLM width),
    `window`, `stride` (None: = window), `num_queries`, `layers`, `heads`, `dropout` (BERT's 0.1;
    active only in `module.train()` mode; the module starts in eval mode), `seed` (initialisation).
    Trainable: train `self.module` (an `nn.Module`) with any optimiser.

    Differences from the official code: the Q-Former is built from its architecture, not
    initialised from BERT-base weights (SALMONN starts from bert-base-uncased). One LayerNorm
    normalises all `dim` input channels; SALMONN layer-norms its Whisper and BEATs streams
    separately (ln_speech, ln_audio) before concatenating them, so pass Whisper-only frames or
    streams normalised that way.
    """

    dim: int = 2048
    hidden: int = 768
    out_dim: int = 4096
    window: int = 17
    stride: int | None = None
    num_queries: int = 1
    layers: int = 2
    heads: int = 12
    dropout: float = 0.1
    seed: int = 0
    module: WindowQFormerModule = field(init=False, repr=False, compare=False)

    paper = "tang2023salmonn"
    stage = "projector"
    modality = ("audio",)
    mechanisms = ("query",)
    copies = False
    trainable = True
    special_tokens = (0,)
    example = {"dim": 32, "hidden": 32, "out_dim": 32, "window": 4, "heads": 4}
    benchmark = {"dim": 1280, "hidden": 768, "out_dim": 4096, "window": 17}

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "out_dim", "window", "num_queries", "layers", "heads"):
            check_int(name, getattr(self, name), 1, "pass a positive int")
        if self.stride is not None:
            check_int("stride", self.stride, 1, "pass a positive int, or None for stride = window")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}: pass a probability in [0, 1)")
        generator_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(self.seed)
            self.module = WindowQFormerModule(
                self.dim,
                self.hidden,
                self.out_dim,
                self.num_queries,
                self.layers,
                self.heads,
                self.dropout,
            ).eval()
        finally:
            torch.random.set_rng_state(generator_state)

    @property
    def step(self) -> int:
        return self.window if self.stride is None else self.stride

    def windows(self, frames: int) -> int:
        """How many whole windows `frames` frames hold (F.unfold without padding)."""
        return 0 if frames < self.window else (frames - self.window) // self.step + 1

    def output_width(self, width: int) -> int:
        return self.out_dim  # it reads tokens of width `dim`

    def output_count(self, tokens: Tokens) -> int:
        return self.windows(tokens.count) * self.num_queries

    def compress(self, tokens: Tokens) -> Compression:
        x = tokens.features
        b, n, d = x.shape
        if d != self.dim:
            raise ValueError(
                f"window_qformer was built for dim={self.dim} features, got D={d}: pass dim={d}"
            )
        count = self.windows(n)
        if count == 0:
            raise ValueError(
                f"window_qformer(window={self.window}) needs at least {self.window} frames, got {n}: "
                "pass a smaller window or a longer clip"
            )
        dtype = self.module.queries.dtype
        windows = x.to(dtype).unfold(1, self.window, self.step)  # (B, count, D, window)
        windows = windows.permute(0, 1, 3, 2).reshape(b * count, self.window, d)
        outputs = self.module(windows).reshape(b, count * self.num_queries, self.out_dim)
        centres = torch.arange(count, device=x.device) * self.step + self.window // 2
        positions = centres.repeat_interleave(self.num_queries).expand(b, -1).clone()
        return Compression(
            features=outputs.to(x.dtype),
            source=torch.full((b, n), -1, dtype=torch.long, device=x.device),
            positions=positions,
            sizes=torch.full((b, count * self.num_queries), float(self.window), device=x.device),
        )
