"""FrameFusion: merge tokens that repeat the same patch of the previous frame, then prune by attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import identity, l2_norms, order, stack_rows, video_grid, work_dtype
from ..registry import register

#: similarity given to a token without an earlier token of its patch (the released IGNORE_TOKEN)
NO_PREVIOUS = -2.0


def pruning_ratio(sparsities: list[float], cost: float, layers: int) -> float:
    """The sparsity the remaining layers need so the average cost over `layers` is `cost`.

    FrameFusion's budget rule: merge step i leaves s_i = prod_{j <= i} (1 - r_j) of the visual
    tokens and costs s_i layer-equivalents; the remaining layers share layers * cost - sum s_i.
    """
    kept, spent = 1.0, 0.0
    for sparsity in sparsities:
        kept *= 1 - sparsity
        spent += kept
    remaining = layers * cost - spent
    if remaining < 0:
        raise ValueError(
            f"cost={cost} is too small for the {len(sparsities)} layers already run (full-cost "
            "layers before K and merge steps; the released code raises too): pass a larger cost"
        )
    share = remaining / ((layers - len(sparsities)) * kept)
    return 0.0 if share > 1 else 1 - share


def previous_alive(alive: Tensor) -> Tensor:
    """(T, P) frame of the latest earlier alive token of the same patch, -1 where none."""
    frames = torch.arange(alive.shape[0], device=alive.device).unsqueeze(1)
    latest = torch.where(alive, frames, -1).cummax(dim=0).values
    return torch.cat([torch.full_like(latest[:1], -1), latest[:-1]])


@register("framefusion")
@dataclass
class FrameFusion(Method):
    """FrameFusion: merge runs of tokens similar to the same patch one frame earlier, then prune.

    "FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large Visual
    Language Models" (Fu et al., ICCV 2025, arXiv 2501.01986), on the video tokens inside the
    LLM (hidden states entering decoder layer `layer`, `attention` from the layer before it).

    Merging: each token's similarity is its cosine to the latest earlier remaining token of the
    same patch (spatial position); a run of consecutive tokens of a patch whose similarity is
    at least `similarity` merges into the token just before the run, as a uniform average of
    the current features. The budget rule: with r_i the fraction of tokens merged by step i,
    `pruning_ratio` gives the sparsity still needed for an average cost of `cost` over
    `layers` layers; if more tokens are similar than that bound, only the bound's worth of the
    most similar merge and nothing is pruned; else all similar tokens merge, and once a step
    merges under `min_ratio` the remaining tokens are pruned to round(n * (1 - ratio)) by the
    attention of the last query row (the last prompt token), averaged over heads.

    Parameters: `cost` (0.3; 1.0 returns the input), `similarity` (0.6), `min_ratio` (0.1),
    `layers` (28, the depth the released code assumes, Qwen2-7B's), `layer` (K, the decoder
    layer it acts at; 0, the released code's first merge, before layer 0). The K layers before K
    run on every token, so the budget counts them as full-cost steps (sparsity 0) before the
    merge steps: the later K, the more the remaining layers must prune.

    Bookkeeping: `source` maps each merged token to the token it merged into; `positions` are
    the surviving tokens' own indices; special tokens pass through in front. The count depends
    on the data, so rows of a batch must compress alike (else a ValueError asks for one video
    at a time; the released code takes batch size 1).

    Differences from the official code:
    - The released code runs one merge step per layer (before layer 0 and after each layer's
      attention) on that layer's hidden states and prunes at the next layer with that layer's
      attention over the merged sequence. One call here sees one set of features and one
      attention: its merge steps repeat on the given features until a step merges under
      `min_ratio` (or nothing, or only one layer would be left for pruning), and the attention
      of a merged token is the mean of its members' attention. In `reproductions.hf` at the
      default K = 0 the features are the decoder's input embeddings (the released first merge)
      and the attention is layer 0's own over the full input, not a later layer's over the
      merged sequence.
    - The released code averages in place (`index_add_` on the hidden states); the input is
      never modified here.
    - Ties in the budget-capped top-k and in pruning go to the lower index (patch order for
      merging, as released), where `torch.topk` leaves them unspecified.
    """

    cost: float = 0.3
    similarity: float = 0.6
    min_ratio: float = 0.1
    layers: int = 28
    layer: int = 0

    stage = "llm"
    modality = ("video",)
    budget_knob = "cost"
    grid = True
    mechanisms = ("similarity", "attention")
    needs = ("attention",)
    paper = "fu2025framefusion"
    identity = {"cost": 1.0}
    example = {"cost": 0.3, "similarity": 0.6, "min_ratio": 0.1}
    benchmark = {"cost": 0.3, "similarity": 0.6, "min_ratio": 0.1}

    def __post_init__(self) -> None:
        for name, low, high in (
            ("cost", 0.0, 1.0),
            ("similarity", -1.0, 1.0),
            ("min_ratio", 0.0, 1.0),
        ):
            check_number(name, getattr(self, name), low, high)
        if self.cost == 0:
            raise ValueError("cost=0 leaves no computation: pass a cost in (0, 1]")
        check_int("layers", self.layers, 2, "pass the number of decoder layers (>= 2)")
        hint = (
            f"pass the decoder layer K it acts at, an int in [0, {self.layers - 2}] "
            "(layers - 2: one merge step and one layer to prune at)"
        )
        check_int("layer", self.layer, 0, hint, high=self.layers - 2)
        if self.cost * self.layers <= self.layer:
            raise ValueError(
                f"cost={self.cost} is spent by the {self.layer} full-cost layers before "
                f"layer={self.layer} (cost * layers = {self.cost * self.layers:g}): pass a larger "
                "cost or an earlier layer"
            )

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # depends on how many tokens merge

    def compress(self, tokens: Tokens) -> Compression:
        grid = video_grid(tokens, self.name)
        x = tokens.features
        dtype = work_dtype(x)
        attention = tokens.attention[:, :, -1, :].to(dtype).mean(dim=1)
        rows = [
            self._row(x[b].to(dtype), attention[b], grid, tokens.special)
            for b in range(tokens.batch)
        ]
        out = stack_rows(tokens, rows)
        return identity(tokens) if out.count == tokens.count else out  # exactly the input

    def _row(
        self, x: Tensor, attention: Tensor, grid: tuple[int, int, int], special: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One video: (kept indices ascending, their features, (N,) source slots)."""
        t, h, w = grid
        p = h * w
        device = x.device
        current = x[special:].reshape(t, p, -1)  # the input itself until a merge must be written
        owned = False
        alive = torch.ones(t, p, dtype=torch.bool, device=device)
        owner = torch.arange(t * p, device=device)  # ordinary token -> the token it merged into
        sparsities = [0.0] * self.layer  # the layers before K run on every token (full cost)
        prune = True
        while True:
            bound = pruning_ratio(sparsities, self.cost, self.layers)
            cosine = similarity_to_previous(current, alive)
            remaining = int(alive.sum())
            similar = alive & (cosine >= self.similarity)
            ratio = int(similar.sum()) / remaining
            if ratio < bound:
                sparsities.append(ratio)
                # (the last guard keeps a layer for pruning: the budget divides by the layers left)
                done = ratio < self.min_ratio or ratio == 0 or len(sparsities) >= self.layers - 1
            else:  # budget reached by merging alone: the most similar bound's worth, no pruning
                by_patch = cosine.T.flatten()  # the released code ranks in patch order
                chosen = order(by_patch)[: int(bound * remaining)]
                similar = torch.zeros_like(by_patch, dtype=torch.bool)
                similar[chosen] = True
                similar = similar.reshape(p, t).T
                done, prune = True, False
            merged, alive, owner = self._merge(current, alive, owner, similar)
            if done:
                break
            if merged is not None:  # the next step compares merged tokens: write them
                current = current if owned else current.clone()
                owned = True
                current.view(t * p, -1)[merged[0]] = merged[1]
        kept = alive.flatten().nonzero().flatten()
        if prune:
            ratio = pruning_ratio(sparsities, self.cost, self.layers)
            keep = round(kept.shape[0] * (1 - ratio))
            scores = torch.zeros(t * p, dtype=attention.dtype, device=device)
            scores.index_add_(0, owner, attention[special:])
            members = torch.bincount(owner, minlength=t * p).clamp_min(1)
            kept = kept[order(scores[kept] / members[kept])[:keep].sort().values]
        slot_of = torch.full((t * p,), -1, dtype=torch.long, device=device)
        slot_of[kept] = torch.arange(kept.shape[0], device=device)
        features = x.new_empty(special + kept.shape[0], x.shape[-1])
        features[:special] = x[:special]
        torch.index_select(current.reshape(t * p, -1), 0, kept, out=features[special:])
        if merged is not None:  # the last step's merged tokens, where they survived pruning
            anchors, values = merged
            slots = slot_of[anchors]
            features[special + slots[slots >= 0]] = values[slots >= 0]
        lead = torch.arange(special, device=device)
        source = torch.cat([lead, torch.where(slot_of >= 0, slot_of + special, -1)[owner]])
        return torch.cat([lead, kept + special]), features, source

    @staticmethod
    def _merge(
        current: Tensor, alive: Tensor, owner: Tensor, merging: Tensor
    ) -> tuple[tuple[Tensor, Tensor] | None, Tensor, Tensor]:
        """Merge each run of `merging` tokens into the alive token before it (uniform mean).

        Returns the merged tokens as (their flat indices, their new features), not written into
        `current` (which may be the caller's input), the new alive mask and the new owners."""
        if not merging.any():
            return None, alive, owner
        t, p, d = current.shape
        frames = torch.arange(t, device=current.device).unsqueeze(1)
        anchor_frame = torch.where(alive & ~merging, frames, -1).cummax(dim=0).values
        target = torch.where(merging, anchor_frame, frames) * p + torch.arange(
            p, device=current.device
        )
        flat = current.reshape(t * p, d)
        into = target.flatten()[merging.flatten()]
        anchors, slot = torch.unique(into, return_inverse=True)
        sums = flat[anchors].index_add_(0, slot, flat[merging.flatten()])  # own + members' sum
        members = torch.bincount(slot, minlength=anchors.shape[0]).to(flat.dtype)
        values = sums / (members + 1).unsqueeze(-1)
        return (anchors, values), alive & ~merging, target.flatten()[owner]


def similarity_to_previous(current: Tensor, alive: Tensor) -> Tensor:
    """(T, P) cosine of each alive token to the latest earlier alive token of its patch;
    NO_PREVIOUS where there is none (or the token is gone)."""
    norms = l2_norms(current)
    cosine = torch.full(alive.shape, NO_PREVIOUS, dtype=current.dtype, device=current.device)
    if bool(alive.all()):  # the previous token of a patch is one frame earlier
        dot = (current[1:].unsqueeze(-2) @ current[:-1].unsqueeze(-1)).flatten(-3)
        cosine[1:] = dot / (norms[1:] * norms[:-1])
        return cosine
    prev = previous_alive(alive)
    frames, patches = (alive & (prev >= 0)).nonzero(as_tuple=True)
    before = prev[frames, patches]
    dot = current[frames, patches].unsqueeze(-2) @ current[before, patches].unsqueeze(-1)
    cosine[frames, patches] = dot.flatten() / (norms[frames, patches] * norms[before, patches])
    return cosine
