"""HoliTom: global temporal segmentation and merging before the LLM, similarity merging in it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import (
    cosine_matrix,
    density_peaks,
    gather,
    l2_norms,
    merge,
    pairwise_distance,
    stack_rows,
    top_k,
    video_grid,
    work_dtype,
)
from ..registry import register


def static_counts(static: Tensor) -> list[list[int]]:
    """counts[s][e]: how many positions stay static over frames s..e (e > s), from (T - 1, P)
    `static` (position p static between frames t and t + 1); 0 where e <= s."""
    t = static.shape[0] + 1
    counts = [[0] * t for _ in range(t)]
    for s in range(t - 1):
        runs = torch.cumprod(static[s:].to(torch.int32), dim=0).sum(dim=-1).tolist()
        counts[s][s + 1 :] = runs
    return counts


def segment(counts: list[list[int]], max_window: int) -> tuple[list[tuple[int, int]], int]:
    """The partition of the frames into windows (first, last) that saves the most tokens, and
    that saving: a window of L frames with S static positions saves (L - 1) * S tokens. Dynamic
    programming over the last frame, windows of 2 ... `max_window` frames tried shortest first,
    a longer one taken only when strictly better (one frame alone wins ties), as released."""
    t = len(counts)
    best = [0] * t
    first = [0] * t
    for i in range(t):
        value, start = (best[i - 1] if i > 0 else 0), i
        for size in range(2, min(i + 1, max_window) + 1):
            j = i - size
            candidate = (best[j] if j >= 0 else 0) + counts[j + 1][i] * (size - 1)
            if candidate > value:
                value, start = candidate, j + 1
        best[i], first[i] = value, start
    windows, i = [], t - 1
    while i >= 0:
        windows.append((first[i], i))
        i = first[i] - 1
    return windows[::-1], best[-1]


def cluster(x: Tensor, count: int, neighbours: int, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """DPC-kNN clustering of the rows of `x` (B, M, D) into `count` clusters.

    Centres: the `count` highest density x delta (k = min(`neighbours`, count) nearest rows,
    itself included, distances / sqrt(D)), in positional order; every other row joins its
    nearest centre (the first on ties). Returns the centres (B, count), each row's cluster
    (B, M) and the merged rows (B, count, D): beta x centre + (1 - beta) x mean of the rows that
    joined it, or the centre alone where none did."""
    dist = pairwise_distance(x) / x.shape[-1] ** 0.5
    density, delta = density_peaks(None, min(neighbours, count), dist=dist)
    centres = top_k(density * delta, count)
    to_centre = dist.gather(2, centres.unsqueeze(1).expand(-1, x.shape[1], -1))
    joined = to_centre.argmin(dim=-1)
    joined.scatter_(1, centres, torch.arange(count, device=x.device).expand_as(centres))
    member = torch.nn.functional.one_hot(joined, count).to(x.dtype)
    member.scatter_(
        1, centres.unsqueeze(-1).expand(-1, -1, count), 0.0
    )  # a centre is not its own member
    sizes = member.sum(dim=1).unsqueeze(-1)
    mean = (member.transpose(1, 2) @ x) / sizes.clamp_min(1)
    centre = gather(x, centres)
    merged = torch.where(sizes > 0, beta * centre + (1 - beta) * mean, centre)
    return centres, joined, merged


class Kept:
    """The output tokens of one video as they are chosen: their original indices, features, and
    the original index of the output token every input token went to (`owner`, -1: dropped)."""

    def __init__(self, x: Tensor, special: int) -> None:
        self.owner = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        self.owner[:special] = torch.arange(special, device=x.device)
        self.index, self.features = [self.owner[:special].clone()], [x[:special]]

    def add(self, index: Tensor, features: Tensor, members: Tensor, owners: Tensor) -> None:
        """Output tokens at `index` (K,) with `features` (K, D); `members` go to `owners`."""
        self.owner[members] = owners
        self.index.append(index)
        self.features.append(features)


@dataclass
class HoliTomOuter(Method):
    """HoliTom's outer-LLM merging: global temporal segmentation, temporal and spatial merging.

    Part 1 of HoliTom (see `holitom`), on one video's projected tokens (T frames x P = H * W,
    after LLaVA-OneVision / LLaVA-Video's 2D pooling). The released code runs this part alone
    when `HOLITOM_k` / `HOLITOM_r` are unset ("HoliTom (w/o M)", the paper's ablation row).

    1. Segmentation: a position is static between frames t and t + 1 when the cosine of its
       tokens exceeds `tau`. Frames are partitioned into windows of consecutive frames (at most
       `max_window`) maximising the saved tokens sum (L - 1) x S over windows of L frames with S
       positions static through the whole window (dynamic programming; ties keep frames alone).
    2. The ratio r is raised to r' = min(r / ((T P - saved) / (T P)), 1), so the budget counts
       the tokens that temporal merging already removed.
    3. Temporal merging: in a window, each static position becomes one token, the mean over the
       window's frames. Those S tokens are clustered (DPC-kNN, `cluster`) into round(S r')
       tokens (Python `round`, halves to even), each beta x centre + (1 - beta) x mean(members).
    4. Each frame keeps, of its L dynamic (non-static) tokens, ceil(L r') tokens: the
       round(ceil(L r') (1 - d)) most attended (dominant, unchanged), and the rest as DPC-kNN
       cluster tokens of the remaining ones (d = `contextual`, 0 as released: attention only).
    Output tokens are sorted by original index; a window's static tokens stand at its first
    frame (LLaVA-Video's grid order). Special tokens pass through in front.

    Parameters (the released defaults): `retention` r (`RETAIN_RATIO`, 0.1; the scripts run
    0.10 to 0.25), `tau` (`T`, 0.8; 0.65 in one script), `beta` (`BETA`, 0.6), `contextual` d
    (`D`, 0.0), `neighbours` K (`K`, 7), `max_window` (`MAX_WINDOW_SIZE`, 1024). Needs
    `cls_attention`, averaged over heads: the released code reads the attention every token
    receives at the SigLIP layer the projector reads, averaged over heads and query rows, and
    pools it like the features, which is what `reproductions.hf` supplies for SigLIP models.

    Bookkeeping: a static position's tokens in every frame of its window go to their cluster's
    token; a contextual token's members to it; dropped dynamic tokens are -1. The count depends
    on the segmentation, so rows of a batch must segment alike (else a ValueError asks for one
    video at a time, as the released code takes one).

    Official: `holitom/llava_arch.py`.

    Differences from the official code:
    - The released code adds unseeded uniform noise (1e-6) to the densities and leaves `topk`
      ties unspecified; here ties go to the lowest index (attention and density scores alike).
      Where a window keeps one static token, k = min(K, 1) = 1 makes every density equal, so
      the released centre is a random static position; here it is the first.
    - `D` > 0 crashes the released code (it selects the contextual positions with a mask of
      the wrong rank); here the contextual tokens are the DPC-kNN clusters it describes, with
      positions at their centres. At the released `D = 0` the path is never taken.
    - Similarities, means and clustering run in float32 (float64 for float64 input); the
      released code takes the cosines, the temporal means and the merges in the model dtype.
    - LLaVA-OneVision's `one_token` layout puts a window's static tokens before its first
      frame's dynamic ones; here every token is in original-index order (as in `grid` mode).
      Newline tokens are the integration's business.
    - Where every token of a video ends up dropped (all static, round(S r') = 0), the released
      code returns no video token; here a ValueError asks for a larger retention.
    """

    retention: float = 0.1
    tau: float = 0.8
    beta: float = 0.6
    contextual: float = 0.0
    neighbours: int = 7
    max_window: int = 1024

    stage = "projector"
    modality = ("video",)
    budget_knob = "retention"
    grid = True
    mechanisms = ("similarity", "attention")
    needs = ("cls_attention",)
    paper = "shao2025holitom"
    copies = False  # a static token is a temporal mean
    identity = {"retention": 1.0, "max_window": 1}
    example = {"retention": 0.5, "tau": 0.8}
    benchmark = {"retention": 0.1, "tau": 0.8}

    def __post_init__(self) -> None:
        check_number(
            "retention",
            self.retention,
            0.0,
            1.0,
            open_low=True,
            hint="pass the fraction of the video's tokens to keep, in (0, 1]",
        )
        check_number(
            "tau",
            self.tau,
            -1.0,
            1.0,
            hint="pass the cosine above which a position is static, in [-1, 1]",
        )
        check_number("beta", self.beta, 0.0, 1.0, hint="pass the centre's weight, in [0, 1]")
        check_number(
            "contextual",
            self.contextual,
            0.0,
            1.0,
            hint="pass the share of a frame's kept tokens that are clusters, in [0, 1]",
        )
        check_int("neighbours", self.neighbours, 1, hint="pass the DPC-kNN k, an int >= 1")
        check_int("max_window", self.max_window, 1, hint="pass the longest window, an int >= 1")

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # depends on the segmentation of each video

    def compress(self, tokens: Tokens) -> Compression:
        grid = video_grid(tokens, self.name)
        x = tokens.features
        dtype = work_dtype(x)
        attention = tokens.cls_attention.to(dtype).mean(dim=1)
        rows = [
            self._row(x[b].to(dtype), attention[b], grid, tokens.special)
            for b in range(tokens.batch)
        ]
        return stack_rows(tokens, rows, " (their segmentations differ)")

    def _row(
        self, x: Tensor, attention: Tensor, grid: tuple[int, int, int], special: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One video: (kept indices ascending, their features, (N,) source by index)."""
        t, h, w = grid
        p, d = h * w, x.shape[-1]
        video = x[special:].reshape(t, p, d)
        scores = attention[special:].reshape(t, p)
        norms = l2_norms(video)  # cosines without a unit copy of the video
        cosine = torch.linalg.vecdot(video[:-1], video[1:]) / (norms[:-1] * norms[1:])
        static = cosine > self.tau
        windows, saved = segment(static_counts(static), self.max_window)
        total = t * p
        ratio = min(self.retention / ((total - float(saved)) / total), 1)

        index = torch.arange(total, device=x.device).reshape(t, p) + special
        out = Kept(x, special)
        for first, last in windows:
            fixed = static[first:last].all(dim=0)  # all True for one frame: no pair to test
            frames = slice(first, last + 1)
            if first < last:
                self._static(video[frames], index[frames], fixed, ratio, out)
            else:
                fixed = torch.zeros_like(fixed)
            self._dynamic(video[frames], scores[frames], index[frames], ~fixed, ratio, out)

        kept = torch.cat(out.index)
        if kept.shape[0] == special:
            raise ValueError(
                f"retention={self.retention} keeps no token of this video (every position is "
                "static and its clusters round to 0): pass a larger retention"
            )
        ranked = torch.argsort(kept)
        kept, features = kept[ranked], torch.cat(out.features)[ranked]
        slot_of = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        slot_of[kept] = torch.arange(kept.shape[0], device=x.device)
        source = torch.where(out.owner >= 0, slot_of[out.owner.clamp_min(0)], out.owner)
        return kept, features, source

    def _static(self, video: Tensor, index: Tensor, fixed: Tensor, ratio: float, out: Kept) -> None:
        """A window's static positions: their temporal means, clustered into round(S r')."""
        positions = fixed.nonzero().squeeze(1)
        count = round(positions.shape[0] * ratio)
        if count == 0:
            return  # every static token of the window is dropped, as released
        means = video[:, positions].mean(dim=0).unsqueeze(0)
        centres, joined, merged = cluster(means, count, self.neighbours, self.beta)
        centre_index = index[0, positions[centres[0]]]
        out.add(centre_index, merged[0], index[:, positions], centre_index[joined[0]])

    def _dynamic(
        self, video: Tensor, scores: Tensor, index: Tensor, moving: Tensor, ratio: float, out: Kept
    ) -> None:
        """Each frame of a window: its ceil(L r') dynamic tokens, dominant then contextual."""
        positions = moving.nonzero().squeeze(1)
        retained = math.ceil(positions.shape[0] * ratio)
        if retained == 0:
            return
        dominant = round(retained * (1 - self.contextual))
        tokens, where = video[:, positions], index[:, positions]
        top = top_k(scores[:, positions], dominant)
        picked = where.gather(1, top)
        chosen = gather(tokens, top)
        out.add(picked.flatten(), chosen.flatten(0, 1), picked, picked)
        if retained == dominant:
            return
        rest = torch.ones_like(where, dtype=torch.bool).scatter_(1, top, False)
        rest_tokens = tokens[rest].reshape(where.shape[0], -1, tokens.shape[-1])
        rest_index = where[rest].reshape(where.shape[0], -1)
        centres, joined, merged = cluster(
            rest_tokens, retained - dominant, self.neighbours, self.beta
        )
        centre_index = rest_index.gather(1, centres)
        out.add(
            centre_index.flatten(), merged.flatten(0, 1), rest_index, centre_index.gather(1, joined)
        )


@dataclass
class HoliTomInner(Method):
    """HoliTom's inner-LLM merging: at decoder layer K, each video token the last prompt token
    attends to least is averaged into the kept token it is most similar to.

    Part 2 of HoliTom (see `holitom`). The scores are layer K - 1's attention from the last
    prompt row to the video tokens, averaged over heads. The round(N (1 - `r`)) best-scored
    tokens stay (Python `round`); every other one is merged into the kept token of highest
    cosine similarity between the layer-K input states (the first in score order on ties):
    the released code folds them in one at a time in index order, h = (h + x) / 2, so a kept
    token with members x_1 < ... < x_j becomes h / 2^j + sum_i x_i / 2^(j - i + 1). Layers >= K
    see the kept tokens, at their own positions.

    Parameters (the released runs, `scripts/*.sh`): `layer` K (`HOLITOM_k`) 18, `r`
    (`HOLITOM_r`, the share merged away) 0.5; the code's own defaults, where the variables are
    set empty, are 3 and 0.5. Official: `Qwen2Model_holitom.forward` in
    `holitom/modeling_qwen2.py`.

    Differences from the official code:
    - The sequential in-place averages are computed as the weighted mean they amount to (equal
      up to rounding), in float32 (float64 for float64 input).
    - Ties in the attention go to the lowest index (`topk` leaves them unspecified); at least
      one token stays (round(N (1 - r)) = 0 leaves the released code nothing to merge into).
    - The released code takes the span of the first image of the first row for every row, with
      LLaVA-OneVision's trailing newline token of the video among the candidates; here each
      row's own video tokens (all of them, several videos alike), the newline staying text.
    - The attention is recomputed in float32; the released code reads the eager weights in the
      model dtype.
    """

    layer: int = 18
    r: float = 0.5

    stage = "llm"
    paper = "shao2025holitom"
    modality = ("video",)
    mechanisms = ("attention", "similarity")
    needs = ("attention",)
    copies = False  # a kept token absorbs the ones merged into it
    identity = {"r": 0.0}
    example = {"layer": 2, "r": 0.5}

    def __post_init__(self) -> None:
        check_int("layer", self.layer, 0, hint="pass the decoder layer K the merging happens at, an int >= 0")
        check_number("r", self.r, 0.0, 1.0, open_high=True, hint="pass the share of the video tokens merged away, in [0, 1)")

    def output_count(self, tokens: Tokens) -> int | None:
        return tokens.special + max(1, round((tokens.count - tokens.special) * (1 - self.r)))

    def compress(self, tokens: Tokens) -> Compression:
        b, n, special = tokens.batch, tokens.count, tokens.special
        kept = self.output_count(tokens) - special
        scores = tokens.attention[:, :, -1, special:].float().mean(dim=1)
        top = top_k(scores, kept, sorted_by_position=False) + special  # score order
        x = tokens.features.to(work_dtype(tokens.features))
        rest = torch.ones(b, n, dtype=torch.bool, device=x.device)
        rest[:, :special] = False
        rest.scatter_(1, top, False)
        others = rest.nonzero()[:, 1].view(b, -1)  # ascending: the order they are folded in
        target = cosine_matrix(gather(x, others), gather(x, top)).argmax(dim=-1)  # into `top`
        grouped = target.sort(dim=-1, stable=True)  # members by target, each in index order
        first = torch.searchsorted(grouped.values, grouped.values)  # where its group starts
        at = torch.arange(target.shape[1], device=x.device).expand_as(target)
        rank = torch.empty_like(target).scatter_(1, grouped.indices, at - first + 1)  # 1 .. j
        count = torch.zeros(b, kept, dtype=torch.long, device=x.device).scatter_add_(1, target, torch.ones_like(target))
        order = top.sort(dim=-1)
        slot = torch.empty_like(order.indices).scatter_(1, order.indices, torch.arange(kept, device=x.device).expand(b, -1))
        source = torch.full((b, n), -1, dtype=torch.long, device=x.device)
        source[:, :special] = torch.arange(special, device=x.device)
        source.scatter_(1, top, slot + special)
        source.scatter_(1, others, slot.gather(1, target) + special)
        weights = torch.ones(b, n, dtype=x.dtype, device=x.device)
        weights.scatter_(1, top, 0.5 ** count.to(x.dtype))
        weights.scatter_(1, others, 0.5 ** (count.gather(1, target) - rank + 1).to(x.dtype))
        positions = torch.cat([source.new_tensor(range(special)).expand(b, -1), order.values], dim=1)
        return merge(tokens, source, special + kept, weights=weights, positions=positions)


@register("holitom")
@dataclass
class HoliTom(Method):
    """HoliTom: merge the video's tokens over time and space before the LLM, then merge the
    least attended ones into their most similar neighbours inside it.

    "HoliTom: Holistic Token Merging for Fast Video Large Language Models" (Shao et al.,
    NeurIPS 2025, arXiv 2505.21334), as released (`cokeshao/HoliTom`). Two parts, one per
    stage: `holitom.projector` (`HoliTomOuter`: global temporal segmentation, temporal and
    density-peak spatial merging) and `holitom.llm` (`HoliTomInner`: at decoder layer K,
    similarity merging of the tokens the last prompt token attends to least). The
    hyperparameters are the parts' own; `r` = 0 runs the outer part alone, the paper's
    "HoliTom (w/o M)".

    Differences from the official code: those of its parts (see each).
    """

    retention: float = 0.1
    tau: float = 0.8
    beta: float = 0.6
    contextual: float = 0.0
    neighbours: int = 7
    max_window: int = 1024
    layer: int = 18
    r: float = 0.5

    paper = "shao2025holitom"
    parts_of = (HoliTomOuter, HoliTomInner)
    benchmark = {"retention": 0.1, "tau": 0.8}

    def __post_init__(self) -> None:
        self.parts()  # each part checks its own hyperparameters


__all__ = ["HoliTom", "HoliTomInner", "HoliTomOuter", "Kept", "cluster", "segment", "static_counts"]
