"""FastVID: segment the video, keep salient tokens, merge the rest into density-peak anchors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import (
    density_peaks,
    gather,
    identity,
    l2_normalize,
    order,
    stack_rows,
    top_k,
    video_grid,
    work_dtype,
)
from ..registry import register


def segment_lengths(frames: Tensor, segments: int, tau: float) -> list[int]:
    """DySeg: frame counts of the temporal segments of one video, from its (T, Df) features.

    A segment ends after frame j when the cosine of frames j and j + 1 is among the
    `segments` - 1 lowest (ties: earlier j) or below `tau`.
    """
    t = frames.shape[0]
    unit = l2_normalize(frames)
    similarity = (unit[:-1] * unit[1:]).sum(dim=-1)
    lowest = order(similarity, descending=False)[: min(segments - 1, t - 1)]
    below = torch.nonzero(similarity < tau).flatten()
    cuts = sorted(set(lowest.tolist()) | set(below.tolist()))
    bounds = [-1, *cuts, t - 1]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def context_counts(lengths: list[int], context: int, period: int) -> list[int]:
    """Context tokens per frame: ceil(L / p) anchor frames per segment, counted back from its
    last frame every p frames, each taking (C * L) // ceil(L / p); other frames take none."""
    counts: list[int] = []
    for length in lengths:
        per_anchor = (context * length) // math.ceil(length / period)
        counts += [per_anchor if (length - 1 - j) % period == 0 else 0 for j in range(length)]
    return counts


def merge_into(
    members: Tensor, members_unit: Tensor, targets: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """FastVID's density token merge of `members` (..., M, D) into `targets` (..., C, D), C >= 1.

    Every member joins its most cosine-similar target (ties: the first target); a target with
    n members becomes w * target + (1 - w) * mean(members), w = max(1 / (n + 1), beta).
    Returns the merged targets and each member's target (..., M). Leading dims are batched.
    """
    target_unit = l2_normalize(targets)
    assign = (members_unit @ target_unit.transpose(-1, -2)).argmax(dim=-1)
    one_hot = torch.nn.functional.one_hot(assign, targets.shape[-2]).to(targets.dtype)
    counts = one_hot.sum(dim=-2).unsqueeze(-1)
    mean = (one_hot.transpose(-1, -2) @ members) / counts.clamp_min(1)
    weight = (1 / (counts + 1)).clamp_min(beta)
    return weight * targets + (1 - weight) * mean, assign


def frames_of(x: Tensor, frames: list[int]) -> Tensor:
    """x[frames] along the first dim, without a copy when `frames` are all of them in order."""
    return x if frames == list(range(x.shape[0])) else x[frames]


@register("fastvid")
@dataclass
class FastVID(Method):
    """FastVID: dynamic temporal segmentation, then salient + density-peak context tokens.

    "FastVID: Dynamic Density Pruning for Fast Video Large Language Models" (Shen et al.,
    NeurIPS 2025, arXiv 2503.11187), applied to the video tokens at the LLM input. Needs one
    global feature per frame (`frames`, the SigLIP pooling-head output in the released code)
    and the pooling head's attention to every token (`cls_attention`, averaged over heads; the
    released code resizes it bilinearly to the pooled token grid, as the integration must).

    1. DySeg: cut the video after frame j when the cosine of the global features of frames j
       and j + 1 is among the `segments` - 1 lowest or below `tau`.
    2. Per frame of P = H * W tokens keep R = int(P * retention): the R - int(R * d) most
       attended tokens (salient, unchanged), and C = int(R * d) context tokens per frame on
       average, chosen among the other tokens by density-peak score (DPC-kNN, k = 4 with the
       token itself, distance / sqrt(D), density = exp(-mean d^2), score = density x distance
       to the nearest denser token), computed within each frame.
    3. DTM: in each segment of L frames, ceil(L / p) anchor frames counted back from its last
       frame every p frames each pick (C * L) // ceil(L / p) context tokens; every non-salient
       token of the segment is merged into its most cosine-similar context token of each
       anchor frame, the context token becoming w * itself + (1 - w) * mean(merged tokens),
       w = max(1 / (n + 1), beta) for n merged tokens (itself included). A one-frame segment
       merges within its frame.
    Output tokens are sorted by original index; special tokens pass through in front.

    Parameters: `retention` (0.10), `segments` c (8), `tau` (0.9), `salient_ratio` d (0.4),
    `anchor_period` p (4), `beta` (0.6). `retention=1.0, salient_ratio=0.0` keeps everything.

    Bookkeeping: with several anchor frames in a segment a token feeds one context token per
    anchor frame; `source` books it to the most cosine-similar context token over all of the
    segment's anchors (the one it joins when there is a single anchor); context and salient
    tokens are booked to themselves, `sizes` count booked tokens. The token count depends on
    the segmentation, so rows of a batch must segment alike (else a ValueError asks for one
    video at a time; the released code takes one video).

    Differences from the official code:
    - The released code adds unseeded uniform noise (1e-6) to the densities; here ties break
      deterministically (lowest index), like every top-k of this method.
    - Fewer than `segments` frames crash the released DySeg (`topk` of c - 1 out of T - 1
      similarities); here every gap is a cut then. An anchor asked for more context tokens than
      its frame has non-salient tokens crashes the released code; here it takes them all.
    - The released code keeps the quirk that an anchor frame whose share equals C (e.g. C = 1,
      L = 3, p = 2) is treated as a one-frame segment, so its segment's other frames lose their
      non-salient tokens; kept here, as released.
    - When the context tokens per frame come out as 0 (`salient_ratio=0`, or a retained count so
      small that int(retained * salient_ratio) is 0), the released code crashes; here the frames
      keep their salient tokens only, and every non-salient token is dropped.
    - Inside `reproductions.hf` (LLaVA-OneVision, the Qwen-VL families) `cls_attention` is the
      attention each token receives at the encoder layer the projector reads, pooled onto the
      LLM tokens as the model pools them (bilinearly on OneVision, as released); the released
      code reads the SigLIP pooling head's attention instead, which those models do not run.
    - The density peaks use the released k = 4 nearest neighbours, which assumes a frame has 4
      non-salient tokens; here a frame with fewer uses all it has.
    """

    retention: float = 0.10
    segments: int = 8
    tau: float = 0.9
    salient_ratio: float = 0.4
    anchor_period: int = 4
    beta: float = 0.6

    stage = "projector"
    modality = ("video",)
    budget_knob = "retention"
    grid = True
    mechanisms = ("similarity", "attention")
    needs = ("cls_attention", "frames")
    paper = "shen2025fastvid"
    copies = False  # a context token that merged only itself is w x + (1 - w) x, not bit-exact
    identity = {"retention": 1.0, "salient_ratio": 0.0}
    example = {"retention": 0.5, "segments": 2, "tau": -1.0, "anchor_period": 4}
    benchmark = {"retention": 0.10, "segments": 8, "tau": 0.9}

    def __post_init__(self) -> None:
        check_number("retention", self.retention, 0.0, 1.0, open_low=True)
        check_number("tau", self.tau, -1.0, 1.0)
        check_number("salient_ratio", self.salient_ratio, 0.0, 1.0)
        check_number("beta", self.beta, 0.0, 1.0)
        check_int("segments", self.segments, 1, "pass a positive int")
        check_int("anchor_period", self.anchor_period, 1, "pass a positive int")

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # depends on the segmentation of each video

    def compress(self, tokens: Tokens) -> Compression:
        grid = video_grid(tokens, self.name)
        per_frame = grid[1] * grid[2]
        retained = int(per_frame * self.retention)
        if retained == 0:
            raise ValueError(
                f"retention={self.retention} keeps int({per_frame} * {self.retention}) = 0 of "
                f"the {per_frame} tokens per frame: pass a larger retention"
            )
        if retained == per_frame and int(retained * self.salient_ratio) == 0:
            return identity(tokens)
        x = tokens.features
        dtype = work_dtype(x)
        attention = tokens.cls_attention.to(dtype).mean(dim=1)
        rows = [
            self._row(
                x[b].to(dtype), attention[b], tokens.frames[b].to(dtype), grid, tokens.special
            )
            for b in range(tokens.batch)
        ]
        return stack_rows(tokens, rows, " (their segmentations differ)")

    def _row(
        self, x: Tensor, attention: Tensor, frames: Tensor, grid: tuple[int, int, int], special: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One video: (kept indices ascending, their features, (N,) source slots)."""
        t, h, w = grid
        per_frame = h * w
        device = x.device
        retained = int(per_frame * self.retention)
        context = int(retained * self.salient_ratio)
        salient_count = retained - context
        lengths = segment_lengths(frames, self.segments, self.tau)
        shares = context_counts(lengths, context, self.anchor_period)

        video = x[special:].reshape(t, per_frame, -1)
        frame_index = torch.arange(t * per_frame, device=device).reshape(t, per_frame) + special
        salient = top_k(attention[special:].reshape(t, per_frame), salient_count)
        rest_mask = torch.ones(t, per_frame, dtype=torch.bool, device=device)
        rest_mask.scatter_(1, salient, False)
        rest = torch.arange(per_frame, device=device).expand(t, -1)[rest_mask].reshape(t, -1)
        rest_tokens = gather(video, rest)
        rest_unit = l2_normalize(rest_tokens)
        rest_index = frame_index.gather(1, rest)
        # density-peak scores, per frame; only anchor frames pick context tokens, so only
        # theirs are computed (the released code scores every frame and uses these)
        score = torch.zeros(rest.shape, dtype=x.dtype, device=device)
        anchors = [f for f, share in enumerate(shares) if share > 0]
        if anchors:
            density, delta = density_peaks(frames_of(rest_tokens, anchors), k=4)
            score[anchors] = density * delta

        owner = torch.full((x.shape[0],), -1, dtype=torch.long, device=device)
        owner[:special] = torch.arange(special, device=device)
        kept = [torch.arange(special, device=device), frame_index.gather(1, salient).flatten()]
        owner[kept[1]] = kept[1]
        feats = [x[:special], gather(video, salient)]
        feats[1] = feats[1].reshape(-1, x.shape[-1])

        singles = [f for f, share in enumerate(shares) if share == context and context > 0]
        if singles:  # one-frame DTM, all such frames at once (and the equal-share quirk)
            tokens_s, index_s = frames_of(rest_tokens, singles), frames_of(rest_index, singles)
            picks = order(frames_of(score, singles))[:, :context]
            targets = gather(tokens_s, picks)
            merged, assign = merge_into(tokens_s, frames_of(rest_unit, singles), targets, self.beta)
            picked_index = index_s.gather(1, picks)
            owner[index_s.flatten()] = picked_index.gather(1, assign).flatten()
            owner[picked_index.flatten()] = picked_index.flatten()
            kept.append(picked_index.flatten())
            feats.append(merged.reshape(-1, x.shape[-1]))

        start = 0
        for length in lengths:
            frames_here = range(start, start + length)
            start += length
            if context == 0:
                continue
            segment_anchors = [f for f in frames_here if shares[f] > context]
            if length == 1 or not segment_anchors:
                continue
            span = slice(frames_here.start, frames_here.stop)
            members = rest_tokens[span].reshape(-1, x.shape[-1])
            members_unit = rest_unit[span].reshape(-1, x.shape[-1])
            members_index = rest_index[span].flatten()
            targets_unit, targets_index = [], []
            for f in segment_anchors:
                picks = order(score[f])[: min(shares[f], rest.shape[1])]
                merged, _ = merge_into(members, members_unit, rest_tokens[f][picks], self.beta)
                kept.append(rest_index[f][picks])
                feats.append(merged)
                targets_unit.append(rest_unit[f][picks])
                targets_index.append(rest_index[f][picks])
            union_index = torch.cat(targets_index)
            nearest = (members_unit @ torch.cat(targets_unit).T).argmax(dim=-1)
            owner[members_index] = union_index[nearest]
            owner[union_index] = union_index

        kept_index = torch.cat(kept)
        features = torch.cat(feats)
        ranked = torch.argsort(kept_index)
        kept_index, features = kept_index[ranked], features[ranked]
        slot_of = torch.full((x.shape[0],), -1, dtype=torch.long, device=device)
        slot_of[kept_index] = torch.arange(kept_index.shape[0], device=device)
        source = torch.where(owner >= 0, slot_of[owner.clamp_min(0)], owner)
        return kept_index, features, source
