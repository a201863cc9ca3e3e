"""PruneVid: spatial-temporal merging before the LLM, question-guided pruning inside it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import (
    density_peaks,
    gather,
    l2_normalize,
    merge,
    pairwise_distance,
    select,
    stack_rows,
    top_k,
    video_grid,
    with_special,
    work_dtype,
)
from ..registry import register


def dpc_knn(x: Tensor, count: int, neighbours: int) -> tuple[Tensor, Tensor]:
    """The released `cluster_dpc_knn` on the rows of `x` (B, M, D): `count` centres, the highest
    density x delta (k = min(`neighbours`, M) nearest rows, itself included, distances /
    sqrt(D)), in score order (ties to the lowest index); every row joins its nearest centre
    (the first in score order on ties), a centre itself. Returns the centres (B, count) and
    each row's cluster (B, M), numbered in score order."""
    dist = pairwise_distance(x.to(work_dtype(x))) / x.shape[-1] ** 0.5
    density, delta = density_peaks(None, min(neighbours, x.shape[1]), dist=dist)
    centres = top_k(density * delta, count, sorted_by_position=False)
    joined = gather(dist, centres).argmin(dim=1)
    joined.scatter_(1, centres, torch.arange(count, device=x.device).expand_as(centres))
    return centres, joined


def refine(labels: list[int]) -> list[int]:
    """The released `refine_clusters`: each cluster keeps its longest runs of consecutive frames
    (every run of that length; none where the longest is one frame); each stretch of frames
    left over joins the neighbouring run that is longer (the left one on ties, cluster 0
    where there is none), left to right."""
    n, out = len(labels), list(labels)
    runs: dict[int, list[tuple[int, int]]] = {}
    start = 0
    for i in range(1, n + 1):
        if i == n or labels[i] != labels[start]:
            runs.setdefault(labels[start], []).append((start, i))
            start = i
    for found in runs.values():
        longest = max(end - begin for begin, end in found)
        for begin, end in found:
            if longest == 1 or end - begin < longest:
                out[begin:end] = [-1] * (end - begin)
    i = 0
    while i < n:
        if out[i] != -1:
            i += 1
            continue
        start = i
        while i < n and out[i] == -1:
            i += 1
        left = right = 0
        if start > 0:
            j = start - 1
            while j >= 0 and out[j] == out[start - 1]:
                j -= 1
            left = start - 1 - j
        if i < n:
            j = i
            while j < n and out[j] == out[i]:
                j += 1
            right = j - i
        label = out[start - 1] if left and left >= right else (out[i] if right else 0)
        out[start:i] = [label] * (i - start)
    return out


def windows(labels: list[int]) -> list[tuple[int, int]]:
    """(first, last) frame of each run of equal labels: the released `segment_lengths`."""
    found, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            found.append((start, i - 1))
            start = i
    return found


@dataclass
class PruneVidMerge(Method):
    """PruneVid's merging before the LLM: static tokens over time, then clusters in space.

    Part 1 of PruneVid (see `prunevid`), on one video's projected tokens (T frames x P = H * W):
    1. Segments: the frames' mean tokens are clustered by DPC-kNN into int(T x
       `temporal_ratio`) clusters (at least 1); each cluster keeps its longest runs of
       consecutive frames and the frames left over join the longer neighbouring run
       (`refine`); the runs are the windows.
    2. In a window of W frames, a position is static where the mean cosine of its tokens over
       the W (W - 1) ordered pairs of distinct frames exceeds `tau`; its tokens become one,
       their mean over the window.
    3. The S static tokens, and each frame's dynamic tokens, are clustered by DPC-kNN
       (k = `neighbours`) into int(S x `cluster_ratio`) tokens, each the mean of its
       cluster, where there are more than `cluster_above` of them (else kept as they are).
    Output order, as released: per window its static tokens, then each frame's dynamic ones;
    clusters in the order of their centres' scores. A cluster stands at its centre (a static
    one at the window's first frame); it holds the mean of every original token in it.
    Special tokens pass through in front.

    Parameters (the released defaults, `scripts/eval.sh`): `tau` 0.8, `temporal_ratio`
    (`temporal_segment_ratio`) 0.25, `cluster_ratio` 0.5, `neighbours` 7 and `cluster_above`
    14 (both fixed in the released code). Official: `merge_frames_dynamic`, `cluster_dpc_knn`
    and `refine_clusters` in `models/pllava/modeling_pllava.py`.

    Differences from the official code:
    - The released DPC-kNN adds unseeded uniform noise (1e-6) to the densities and leaves
      `topk` ties unspecified; here ties go to the lowest index.
    - The released code segments every video of a batch as its first one and needs the same
      static count in each; here each row is its own (rows that end with different counts
      raise a ValueError asking for one video at a time).
    - Counts that the released code takes as 0 (int(T r) or int(S r) below 1) crash it; here
      they are 1. A one-frame window (T = 1) divides by zero there; here it has no static
      token. k = min(`neighbours`, M): the released `topk` crashes with fewer rows.
    - The mean cosine is computed as |sum of unit tokens|^2 less W over W (W - 1) (the released
      sums the W x W matrix and subtracts 1 per frame: equal up to rounding) and capped at 1,
      so that `tau` = 1 marks nothing static. Means and distances run in float32 (float64 for
      float64 input); the released code averages in the model dtype.
    - `positions`: a merged token stands at its centre; PLLaVA renumbers the shortened
      sequence, which the integration does with positions="renumbered".
    """

    tau: float = 0.8
    temporal_ratio: float = 0.25
    cluster_ratio: float = 0.5
    neighbours: int = 7
    cluster_above: int = 14

    stage = "projector"
    paper = "huang2024prunevid"
    modality = ("video",)
    mechanisms = ("similarity",)
    grid = True
    copies = False  # merged tokens are means
    identity = {"tau": 1.0, "cluster_above": 1 << 30}
    example = {"tau": 0.5, "cluster_above": 4}

    def __post_init__(self) -> None:
        check_number("tau", self.tau, -1.0, 1.0, hint="pass the cosine above which a position is static, in [-1, 1]")
        for name in ("temporal_ratio", "cluster_ratio"):
            check_number(name, getattr(self, name), 0.0, 1.0, open_low=True, hint="pass a fraction in (0, 1]")
        check_int("neighbours", self.neighbours, 1, hint="pass the DPC-kNN k, an int >= 1")
        check_int("cluster_above", self.cluster_above, 0, hint="pass the count above which tokens are clustered, an int >= 0")

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # the segmentation and the static positions decide

    def compress(self, tokens: Tokens) -> Compression:
        grid = video_grid(tokens, self.name)
        rows = []
        for b in range(tokens.batch):
            row = Tokens(features=tokens.features[b : b + 1], special=tokens.special,
                         sizes=None if tokens.sizes is None else tokens.sizes[b : b + 1])
            source, positions = self._slots(row.features[0], grid, tokens.special)
            ones = torch.ones_like(source, dtype=torch.float32)
            out = merge(row, source[None], len(positions), weights=ones[None], positions=positions[None])
            rows.append((positions, out.features[0], source))
        return stack_rows(tokens, rows, " (their segmentations differ)")

    def _slots(self, x: Tensor, grid: tuple[int, int, int], special: int) -> tuple[Tensor, Tensor]:
        """One video: each token's output slot (N,), and each slot's original index (K,)."""
        t, h, w = grid
        p = h * w
        video = x[special:].to(work_dtype(x)).reshape(t, p, -1)
        index = torch.arange(t * p, device=x.device).reshape(t, p) + special
        source = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        source[:special] = torch.arange(special, device=x.device)
        positions = [torch.arange(special, device=x.device)]
        segments = max(1, int(t * self.temporal_ratio))
        labels = dpc_knn(video.mean(dim=1)[None], segments, self.neighbours)[1][0]

        def add(members: Tensor, slots: Tensor, at: Tensor) -> None:
            """Tokens `members` go to new slots numbered `slots` (0-based), standing at `at`."""
            base = sum(len(q) for q in positions)
            source[members] = slots + base
            positions.append(at)

        for first, last in windows(refine(labels.tolist())):
            frames = video[first : last + 1]
            static = self._static(frames)
            fixed, moving = static.nonzero().squeeze(1), (~static).nonzero().squeeze(1)
            if len(fixed):
                means = frames[:, fixed].mean(dim=0)[None]
                slots, centres = self._clusters(means)
                add(index[first : last + 1, fixed], slots.expand(last - first + 1, -1), index[first, fixed[centres[0]]])
            if len(moving):
                slots, centres = self._clusters(frames[:, moving])
                for f in range(last - first + 1):
                    add(index[first + f, moving], slots[f], index[first + f, moving[centres[f]]])
        return source, torch.cat(positions)

    def _static(self, frames: Tensor) -> Tensor:
        """(P,) bool: positions whose mean cosine over pairs of distinct frames exceeds tau."""
        w = frames.shape[0]
        if w < 2:
            return torch.zeros(frames.shape[1], dtype=torch.bool, device=frames.device)
        total = l2_normalize(frames).sum(dim=0)
        mean = ((total * total).sum(dim=-1) - w) / (w * (w - 1))
        return mean.clamp(max=1.0) > self.tau

    def _clusters(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of `x` (F, M, D): each token's slot (F, M) and each slot's token (F, K), slots
        in output order: DPC-kNN clusters where M > `cluster_above`, else every token its own."""
        f, m = x.shape[:2]
        if m <= self.cluster_above:
            own = torch.arange(m, device=x.device).expand(f, m)
            return own, own
        count = max(1, int(m * self.cluster_ratio))
        centres, joined = dpc_knn(x, count, self.neighbours)
        return joined, centres


@dataclass
class PruneVidPrune(Method):
    """PruneVid's pruning inside the LLM: keep the video tokens the question attends to most.

    Part 2 of PruneVid (see `prunevid`), at decoder layer K = `layer`: each video token's score
    is the highest attention any head and any query row after the video (the question) pays it
    at layer K - 1, computed from that layer's queries and keys before the rotary embedding,
    softmax over every column without the causal mask (the released `attn_weights_wo_pos`);
    inside transformers the stage hands it the head maximum only (`attention_heads`).
    The tokens are grouped by the frames they stand for (`timespan`: a window's static tokens,
    then each frame's dynamic tokens, as part 1 left them); each group keeps its int(n x
    `alpha`) best-scored tokens, in their order. Layers >= K see the kept tokens only, and so
    does every decoding step at every layer (the released code cuts the KV cache of layers
    < K too).

    Parameters (the released defaults): `alpha` 0.4; `layer` K = 11: the released
    `selected_layer` 10 is the layer whose attention is read, the tokens leave after it.
    Official: `VTPWindowCache` in `models/pllava/elastic_cache.py`, `LlamaModelVTP` and
    `LlamaAttention` in `models/pllava/llama.py`.

    Differences from the official code:
    - Groups come from `timespan` (the frames each token stands for) instead of the static and
      dynamic sizes part 1 passes along; the groups are the same. Without part 1, every token
      stands for its own frame and each frame is a group.
    - Ties go to the lowest index (`topk` leaves them unspecified); batch rows are scored on
      their own (the released code asserts one row) and padding columns are left out of the
      softmax. Grouped-query keys are repeated to every query head.
    - The dropped tokens' cache entries of layers < K are hidden from the decoding steps
      rather than removed (the same attention).
    """

    alpha: float = 0.4
    layer: int = 11

    stage = "llm"
    paper = "huang2024prunevid"
    modality = ("video",)
    mechanisms = ("attention",)
    needs = ("attention", "timespan")
    attention_raw = True
    attention_heads = "max"
    reads_features = False
    decoding_rows = "kept"
    identity = {"alpha": 1.0}
    example = {"alpha": 0.5, "layer": 2}

    def __post_init__(self) -> None:
        check_number("alpha", self.alpha, 0.0, 1.0, hint="pass the fraction of each group to keep, in [0, 1]")
        check_int("layer", self.layer, 0, hint="pass the decoder layer K the kept tokens start at, an int >= 0")

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # the groups of `timespan` decide

    def compress(self, tokens: Tokens) -> Compression:
        scores = tokens.attention.float().amax(dim=(1, 2))[:, tokens.special :]
        spans = tokens.timespan[:, tokens.special :]
        kept = []
        for b in range(tokens.batch):
            groups = torch.unique(spans[b], dim=0, return_inverse=True)[1]
            picked = []
            for g in range(int(groups.max()) + 1 if len(groups) else 0):
                members = (groups == g).nonzero().squeeze(1)
                picked.append(members[top_k(scores[b, members], int(len(members) * self.alpha))])
            kept.append(torch.cat(picked).sort().values if picked else groups.new_zeros(0))
        counts = sorted({len(k) for k in kept})
        if len(counts) > 1:
            raise ValueError(f"the rows of this batch keep different counts {counts}: pass one video at a time")
        return select(tokens, with_special(tokens, torch.stack(kept) + tokens.special))


@register("prunevid")
@dataclass
class PruneVid(Method):
    """PruneVid: merge static and similar video tokens before the LLM, then keep inside it the
    video tokens the question attends to.

    "PruneVid: Visual Token Pruning for Efficient Video Large Language Models" (Huang, Zhou and
    Han, Findings of ACL 2025, arXiv 2412.16117), as released for PLLaVA (`Visual-AI/PruneVid`;
    the LLaVA-OneVision and ST-LLM code is not released). Two parts, one per stage:
    `prunevid.projector` (`PruneVidMerge`: temporal segments, static tokens merged over time,
    DPC-kNN clusters in space) and `prunevid.llm` (`PruneVidPrune`: at decoder layer K, each
    group of tokens standing for the same frames keeps its share `alpha` most attended by
    the question, also in the KV cache). The hyperparameters are the parts' own; each part's
    docstring lists its differences from the official code.

    Differences from the official code: those of its parts (see each).
    """

    tau: float = 0.8
    temporal_ratio: float = 0.25
    cluster_ratio: float = 0.5
    neighbours: int = 7
    cluster_above: int = 14
    alpha: float = 0.4
    layer: int = 11

    paper = "huang2024prunevid"
    parts_of = (PruneVidMerge, PruneVidPrune)
    benchmark = {"tau": 0.8, "alpha": 0.4}  # the released settings

    def __post_init__(self) -> None:
        self.parts()  # each part checks its own hyperparameters


__all__ = ["PruneVid", "PruneVidMerge", "PruneVidPrune", "dpc_knn", "refine", "windows"]
