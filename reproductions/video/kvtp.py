"""KVTP: soft keyframe selection (per-frame keep rates from query relevance), then in-frame pruning."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import (
    Budget,
    Compression,
    Method,
    Tokens,
    check_int,
    check_number,
    resolve_keep,
    validate_keep,
)
from ..ops import (
    cosine_matrix,
    gather,
    identity,
    l2_normalize,
    order,
    stack_rows,
    video_grid,
    work_dtype,
)
from ..registry import register

#: the in-frame pruners of the released code that need no encoder signal
PRUNERS = ("tome", "random")


def relevance(text: Tensor, frames: Tensor, chunk: int, scale: float) -> Tensor:
    """(B, T) float64 relevance of each frame to the query: `scale` x the highest cosine, over
    the chunks of `chunk` consecutive `text` rows (each chunk's query the mean of its rows),
    between the chunk's query and the frame's global feature."""
    text = text.to(work_dtype(text))
    queries = torch.stack([part.mean(dim=1) for part in text.split(chunk, dim=1)], dim=1)
    return scale * cosine_matrix(queries, frames).amax(dim=1).double()


def frame_counts(logits: Tensor, budget: int, per_frame: int) -> Tensor:
    """(T,) long: how many of its `per_frame` tokens each frame keeps, `budget` in all.

    Frame t's share is softmax(logits)_t of the budget; a share above `per_frame` is capped and
    its excess goes to the other frames in proportion to their own shares (water-filling), and
    the real-valued shares are rounded by largest remainder (ties: the more relevant frame,
    then the earlier one), so the counts sum to `budget` exactly.
    """
    t = logits.shape[0]
    rank = order(logits)  # most relevant first; ties: the earlier frame
    ranked = logits[rank].double()
    tail = torch.logcumsumexp(ranked.flip(0), dim=0).flip(0)  # log sum of the shares from j on
    first = torch.arange(t, dtype=torch.float64, device=logits.device)
    # frame j's share if the j more relevant frames are full: the rest x w_j / sum_{i>=j} w_i
    quota = (budget - first * per_frame) * (ranked - tail).exp()
    below = quota < per_frame
    full = int(below.int().argmax()) if bool(below.any()) else t
    shares = torch.full_like(ranked, float(per_frame))
    if full < t:
        shares[full:] = (budget - full * per_frame) * (ranked[full:] - tail[full]).exp()
    counts = shares.floor().clamp(0, per_frame)
    while (short := budget - int(counts.sum())) > 0:  # one pass, but for float round-off
        room = counts < per_frame
        remainder = torch.where(room, shares - counts, -1.0)
        given = order(remainder)[: min(short, int(room.sum()))]
        counts[given] += 1
    out = torch.empty(t, dtype=torch.long, device=logits.device)
    out[rank] = counts.long()
    return out


def tome_frames(x: Tensor, keep: list[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """KVTP's in-frame ToMe on frames `x` (F, P, D): frame f merges until `keep[f]` >= 1 remain.

    Each round splits a frame's current tokens into destinations (even places) and sources
    (odd places); every source finds its most cosine-similar destination (ties: the first),
    the min(r, sources) best-matched sources (ties: the first) merge into theirs, r being how
    many still have to go, and a merged token is the plain mean of the destination and its
    sources, rescaled to the largest norm among them. The sequence becomes [destinations,
    unmerged sources] and the rounds repeat. Per frame: the kept tokens in positional order of
    their destination token (features (keep, D), that token's index (keep,)) and the output
    slot of each of the P tokens. Frames still merging after a round took every source, so
    they share one length and each round runs on all of them at once.
    """
    f, p, d = x.shape
    device = x.device
    results: list[tuple[Tensor, Tensor, Tensor]] = [None] * f  # type: ignore[list-item]
    left = p - torch.tensor(keep, dtype=torch.long, device=device)
    everything = torch.arange(p, device=device)
    for frame in (left <= 0).nonzero().flatten().tolist():
        results[frame] = (x[frame], everything, everything)
    active = (left > 0).nonzero().flatten()
    if active.numel() < f:
        x, left = x[active], left[active]
    norms = x.norm(dim=-1)
    unit = l2_normalize(x)  # kept along: the cosines need no renorm
    index = everything.expand(active.numel(), p).clone()  # original index of current tokens
    owner = index.clone()  # current place of each original token
    while active.numel():
        count, n = x.shape[:2]
        even, odd = x[:, 0::2], x[:, 1::2]
        sides, sources = even.shape[1], odd.shape[1]
        similarity = unit[:, 1::2] @ unit[:, 0::2].transpose(1, 2)  # (F, sources, sides)
        best, partner = similarity.max(dim=-1)  # the first destination on ties
        ranks = torch.empty_like(partner)
        ranks.scatter_(1, order(best), torch.arange(sources, device=device).expand_as(ranks))
        chosen = ranks < left.clamp(max=sources).unsqueeze(1)
        # merge: sum each destination with its chosen sources, rescale the sum to the largest
        # norm among them (the mean's direction is the sum's)
        picked = chosen.flatten().nonzero().flatten()  # chosen sources, frame-major
        target = picked // sources * sides + partner.flatten()[picked]
        incoming = odd.reshape(-1, d).index_select(0, picked)
        total = torch.index_add(even.reshape(-1, d), 0, target, incoming)
        incoming_norms = norms[:, 1::2].reshape(-1)[picked]
        peak = norms[:, 0::2].reshape(-1).scatter_reduce(0, target, incoming_norms, "amax")
        rows = target.unique()
        direction = total.index_select(0, rows)
        direction = l2_normalize(direction)
        total.index_copy_(0, rows, direction * peak[rows].unsqueeze(-1))
        kept_unit = unit[:, 0::2].reshape(-1, d).index_copy(0, rows, direction)
        even, even_unit = total.reshape(count, sides, d), kept_unit.reshape(count, sides, d)
        # place of every current token in [destinations, unmerged sources]
        stays = ~chosen
        place = torch.empty(count, n, dtype=torch.long, device=device)
        place[:, 0::2] = torch.arange(sides, device=device)
        place[:, 1::2] = torch.where(chosen, partner, sides + stays.long().cumsum(1) - 1)
        owner = place.gather(1, owner)
        goes_on = left > sources
        done = (~goes_on).nonzero().flatten()
        if done.numel():
            # finished frames: [destinations, unmerged sources] (owner's places), then sorted
            # into positional order; merged sources (and padding) sort last, at index p
            sorted_sources = order(stays[done].int())  # unmerged first, in order
            arranged = torch.cat(
                [index[done, 0::2], index[done, 1::2].gather(1, sorted_sources)], 1
            )
            arranged[:, sides:] = torch.where(
                stays[done].gather(1, sorted_sources), arranged[:, sides:], p
            )
            spread = sorted_sources.unsqueeze(-1).expand(-1, -1, d)
            features = torch.cat([even[done], odd[done].gather(1, spread)], dim=1)
            ranked = torch.sort(arranged, dim=1).indices
            slots = torch.empty_like(ranked)
            slots.scatter_(1, ranked, torch.arange(n, device=device).expand_as(ranked))
            features = gather(features, ranked)
            positions = arranged.gather(1, ranked)
            for row, frame in enumerate(active[done].tolist()):
                kept = n - int(left[done[row]])
                slot = slots[row].gather(0, owner[done[row]])
                results[frame] = (features[row, :kept], positions[row, :kept], slot)
        left = left - sources
        if done.numel():
            rows = goes_on.nonzero().flatten()
            even, even_unit = even.index_select(0, rows), even_unit.index_select(0, rows)
            norms = peak.reshape(count, sides).index_select(0, rows)
            owner, left, active, index = owner[rows], left[rows], active[rows], index[rows]
        else:
            norms = peak.reshape(count, sides)
        x, unit, index = even, even_unit, index[:, 0::2]
    return results


def tome_frame(x: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """`tome_frames` on one frame's tokens `x` (P, D)."""
    return tome_frames(x.unsqueeze(0), [keep])[0]


@register("kvtp")
@dataclass
class KVTP(Method):
    """KVTP: per-frame keep rates from the frames' relevance to the query, then in-frame pruning.

    "Keyframe-oriented Vision Token Pruning: Enhancing Efficiency of Large Vision Language
    Models on Long-Form Video Processing" (Yudong Liu, Jingwei Sun, Yueqian Lin, Jianyi Zhang,
    Jingyang Zhang, Ming Yin, Qinsi Wang, Guangzhi Su, Hai Li, Yiran Chen; ICCV 2025, arXiv
    2503.10742), on the projected video tokens of a (T, H, W) grid, P = H * W per frame.

    1. Relevance: the `text` rows (B, M, Dt) are cut into chunks of `chunk` rows (the last may
       be shorter); each chunk's query is the mean of its rows. Frame t scores
       s_t = `scale` x max over chunks of cos(query, frames_t), `frames` (B, T, Df), Df = Dt.
    2. Soft keyframe selection: the K - special ordinary tokens the budget keeps (K from `keep`)
       are shared among the frames in proportion to softmax(s / `temperature`); with a float
       `keep` frame t's share is about P * r_t, r_t = T * keep * softmax(s / temperature)_t the
       released per-frame rate. A share is capped at P and the excess goes to the other frames
       in proportion to their shares; shares are rounded by largest remainder (ties: the more
       relevant frame, then the earlier), so exactly K tokens come out. A frame given no token
       is dropped whole.
    3. In-frame pruning of each frame to its count, by `pruner`:
       - "tome" (the released ToMe variant): rounds of bipartite matching on the frame's tokens,
         destinations at even places and sources at odd places of the current sequence; each
         source finds its most cosine-similar destination, the best-matched sources (as many as
         still need to go, at most all of them) merge in, and a merged token is the plain mean
         of its members rescaled to their largest norm; the sequence becomes [destinations,
         remaining sources] and the rounds repeat until the count is reached.
       - "random": the count tokens a seeded random permutation of the frame picks first (one
         permutation per frame, in frame order, from a generator seeded with `seed` per video).
    Output: special tokens, then each frame's kept tokens, frames in temporal order and tokens
    in positional order. A merged token's `positions` entry is its destination token's index;
    `source` books every merged source token to it.

    Parameters: `keep` (the budget, an int count or a float fraction of N with the project's
    rounding; 0.2, the released base rate; N keeps everything), `temperature` (2.0, released),
    `scale` (100.0: the logit scale on the cosines; 0 gives every frame the same share),
    `chunk` (64 rows, the released chunk of SigLIP text tokens), `pruner` ("tome" or
    "random"), `seed` (0, for "random"). Signals: `text`, `frames`.

    Differences from the official code (github.com/1999Lyd/KVTP: `calculate_relevance`,
    `tome`, `add_token_per_grid_random` and `add_token_per_grid_prune` in
    llava/model/llava_arch.py):
    - Relevance: the released code scores frames with a fine-tuned SigLIP (the "predictor"):
      its text tower embeds each 64-token chunk of the question and `logits_per_text` =
      exp(logit_scale) x cosine + logit_bias against each frame's SigLIP image embedding, the
      maximum over chunks taken per frame, minus its mean over frames. Here the chunks are of
      the `text` rows, each embedded as their mean, and the frames are the given `frames`; the
      bias and the mean do not change the softmax. The released predictor's weights (and its
      logit scale) are not in the repository, so `scale` = 100 is a choice, not a released value.
      The released evaluation takes the query text from a precomputed `skvqa.json`
      ("debiased" questions); here it is whatever `text` holds.
    - Budget: the released code keeps int(P * min(1, r_t)) tokens of frame t with PruMerge or
      random pruning and min(P, P - int(P * (1 - r_t))) with ToMe; rates above 1 are clipped
      and their excess is lost, so with peaked relevance it keeps well under its base rate.
      Here the budget follows the project's rule (floor(keep * N) tokens, special ones
      included) and is met exactly: clipped excess is redistributed and shares are rounded by
      largest remainder; where no frame is capped, each frame's count is within one token of
      the released one.
    - A frame given no token is dropped whole, as the released PruMerge path does; the
      released ToMe path keeps at least one token per frame (and loops forever on a rate of 0).
    - In-frame pruner: the released default (`kvtp_infer.sh`) is PruMerge on the attention and
      keys of SigLIP's pooling head, which video models cannot supply at this stage; the
      released ToMe and random pruners are offered. ToMe here matches on the tokens' own
      features (the released code on the pooling head's keys, carried along with the same
      merge rule); ties go to the lower index (torch's max and topk leave them unspecified); a
      merged mean of zero stays zero (the released code divides by its norm); the cosines
      come from unit vectors carried along the rounds (the released code renormalises the
      keys each round: the same directions). Random uses a seeded generator (the released
      `torch.randperm` draws from the global generator).
    - Order: the released ToMe leaves each frame's tokens in its [destinations, remaining
      sources] order, where its row-newline insertion (which assumes row order) puts newlines
      between most tokens; here kept tokens keep their positional order. Newline tokens are the
      integration's business and not produced.
    - The released hard selection (`if_hard=True`: full rate for the top 10% of frames, 0 for
      the others) computes its mask and then overwrites it with the soft rates, so it has no
      effect; it is not reproduced (`frame_select` is a hard frame-selection baseline).
    - Batching: the released code takes one video; here each row of the batch has its own
      relevance, counts and generator. Scores run in float32 / float64, the allocation in
      float64 (the released code in float16).
    """

    keep: Budget = 0.2
    temperature: float = 2.0
    scale: float = 100.0
    chunk: int = 64
    pruner: str = "tome"
    seed: int = 0

    stage = "projector"
    modality = ("video",)
    grid = True
    mechanisms = ("query", "similarity")
    needs = ("text", "frames")
    paper = "liu2025keyframe"
    copies = False  # ToMe's merged tokens
    example = {"keep": 0.5}
    benchmark = {"keep": 0.2}

    def __post_init__(self) -> None:
        validate_keep(self.keep)

        # an open upper end at inf: finite numbers only
        hint = "pass a finite number > 0.0"
        check_number(
            "temperature", self.temperature, 0.0, math.inf, open_low=True, open_high=True, hint=hint
        )
        hint = "pass a finite number >= 0.0"
        check_number("scale", self.scale, 0.0, math.inf, open_high=True, hint=hint)
        check_int("chunk", self.chunk, 1, "pass a positive int (text rows per query)")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner={self.pruner!r}: pass one of {', '.join(PRUNERS)}")
        check_int("seed", self.seed, hint="pass an int (the random pruner's seed)")

    def output_count(self, tokens: Tokens) -> int:
        return resolve_keep(self.keep, tokens.count, tokens.special)

    def counts(self, tokens: Tokens) -> Tensor:
        """(B, T) long: the tokens each frame keeps."""
        t, h, w = video_grid(tokens, self.name)
        if tokens.text.shape[-1] != tokens.frames.shape[-1]:
            raise ValueError(
                f"text has dim {tokens.text.shape[-1]} but frames have {tokens.frames.shape[-1]}: "
                "pass text and frame embeddings from the same embedding space"
            )
        budget = self.output_count(tokens) - tokens.special
        logits = relevance(tokens.text, tokens.frames, self.chunk, self.scale) / self.temperature
        return torch.stack([frame_counts(row, budget, h * w) for row in logits])

    def compress(self, tokens: Tokens) -> Compression:
        counts = self.counts(tokens)
        if self.output_count(tokens) == tokens.count:
            return identity(tokens)
        t, h, w = video_grid(tokens, self.name)
        rows = [self._row(tokens, b, counts[b].tolist(), h * w) for b in range(tokens.batch)]
        return stack_rows(tokens, rows)

    def _row(
        self, tokens: Tokens, b: int, counts: list[int], per_frame: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One video: (kept indices ascending, their features, (N,) source slots)."""
        s = tokens.special
        x = tokens.features[b]
        device = x.device
        video = x[s:].to(work_dtype(x)).reshape(len(counts), per_frame, -1)
        if self.pruner == "random":
            generator = torch.Generator().manual_seed(self.seed)
            frames = []
            for frame, count in enumerate(counts):
                picked = torch.randperm(per_frame, generator=generator)[:count]
                index = picked.sort().values.to(device)
                slot = torch.full((per_frame,), -1, dtype=torch.long, device=device)
                slot[index] = torch.arange(count, device=device)
                frames.append((video[frame, index], index, slot))
        else:
            kept = [frame for frame, count in enumerate(counts) if count > 0]
            chosen = video if len(kept) == len(counts) else video[kept]
            merged = iter(tome_frames(chosen, [counts[frame] for frame in kept]))
            frames = [next(merged) if count > 0 else None for count in counts]
        source = torch.full((x.shape[0],), -1, dtype=torch.long, device=device)
        source[:s] = torch.arange(s, device=device)
        positions = [torch.arange(s, device=device)]
        features = [x[:s].to(video.dtype)]
        slots = s
        for frame, result in enumerate(frames):
            if result is None:
                continue
            merged_features, index, slot = result
            offset = s + frame * per_frame
            source[offset : offset + per_frame] = torch.where(slot >= 0, slot + slots, -1)
            positions.append(index + offset)
            features.append(merged_features)
            slots += index.numel()
        return torch.cat(positions), torch.cat(features), source
