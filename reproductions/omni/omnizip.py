"""OmniZip: audio-guided joint compression of the audio and video tokens of an omni-modal LLM."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_int, check_number
from ..ops import density_peaks, gather, input_sizes, l2_norms, top_k, work_dtype
from ..registry import register

#: the video prune ratio of a time chunk is clamped to this range (official constants)
MIN_VIDEO_RATIO, MAX_VIDEO_RATIO = 0.35, 0.75


@register("omnizip")
@dataclass
class OmniZip(Method):
    """Audio saliency decides how much of the audio and, chunk by chunk, of the video is kept.

    Paper: "OmniZip: Audio-Guided Dynamic Token Compression for Fast Omnimodal Large Language
    Models" (Tao et al., CVPR 2026, arXiv 2511.14582), on Qwen2.5-Omni's interleaved audio-video
    input. Inputs: the video tokens in `features` with layout (T, H, W) (T temporal grid steps of
    H * W LLM tokens), the audio tokens in the `audio` signal (B, Na, D), and the audio saliency in
    the `attention` signal. Output: the kept video tokens, then the kept audio tokens, each in
    positional order; `source` and `positions` index the concatenation [features, audio].

    1. Audio saliency: s_j = the attention audio token j receives, averaged over the heads and
       the query rows: `attention` is (B, heads, M, N + Na) over [features, audio] and only its
       audio columns are read. The official code takes the last audio-encoder layer's
       self-attention over the encoder frames and pools it 2:1 like the encoder's AvgPool1d
       (`pool_saliency` does that pooling).
    2. Audio: the round((1 - audio_ratio) * Na) most salient audio tokens are kept (Python
       rounding, half to even). Of the rest, round(contextual_ratio * Na) evenly spaced anchors
       (every (rest // anchors)-th) are kept too; each remaining token is assigned to its most
       similar anchor (cosine), and each anchor absorbs the g tokens of its group whose maximum
       cosine to any video token is highest: anchor <- (anchor + sum_i w_i a_i) / (1 + sum_i w_i)
       with w = softmax of those scores. All other audio tokens are dropped.
    3. Time chunks, read from Qwen2.5-Omni's interleaved layout (`use_audio_in_video`), as the
       official code reads them from the runs of video and audio token ids. The processor cuts the
       video into chunks of `frames_per_chunk` grid steps and the audio into chunks of
       `audio_per_chunk` tokens (2 s: 2 steps at the default 2 fps, 50 tokens at 25 Hz) and writes
       video chunk j, then audio chunk j. Chunks with nothing between them form one run: when the
       audio lasts longer, its trailing chunks join the last video chunk's audio run; when the video
       lasts longer, its trailing chunks are one run. The first min(#video, #audio runs) runs are
       guided; the video run left over, if any, is unguided.
    4. Video prune ratio of guided run i: clamp(0.75 - 0.4 * r_i, 0.35, 0.75), r_i = the fraction
       of audio run i kept in step 2; with more than two guided chunks the ratios of all but the
       lowest and highest are rescaled (then shifted) so that the guided chunks discard
       video_ratio of their tokens, each clamped again. Unguided chunks use video_ratio.
    5. Video: in each chunk, int(H * W * (1 - ratio)) tokens per frame are kept: on the chunk's
       even frames the top DPC-kNN scores (cosine distance, k = 5 neighbours, density =
       exp(-mean kNN distance), score = density * distance to the nearest denser token), on odd
       frames the tokens least similar (cosine) to the same position in the previous frame.

    Parameters: `audio_ratio` (rho_audio, 0.3), `video_ratio` (rho_video, 0.6),
    `contextual_ratio` (0.05), `g` (3), `frames_per_chunk`, `audio_per_chunk`.

    Differences from the official code:
    - Batches: the official code flattens the batch into one sequence (audio top-k across rows).
      Here each row is compressed on its own, except that the per-chunk audio retention r_i is
      averaged over the batch so every row keeps the same number of tokens (batch of one: the
      official result).
    - Ties in top-k / arg-max go to the lowest index (torch.topk leaves them unspecified).
    - Scores are computed in float32 (float64 for float64 inputs), not the model's bfloat16.
    - Time chunks are rebuilt from `frames_per_chunk` / `audio_per_chunk` and the processor's
      interleaving rule, not read from `input_ids`: the same runs for Qwen2.5-Omni's layout.
    """

    audio_ratio: float = 0.3
    video_ratio: float = 0.6
    contextual_ratio: float = 0.05
    g: int = 3
    frames_per_chunk: int = 2
    audio_per_chunk: int = 50

    paper = "tao2025omnizip"
    stage = "projector"
    modality = ("video", "audio")
    grid = True
    mechanisms = ("attention", "similarity")
    needs = ("audio", "attention")
    batch_independent = False
    special_tokens = (0,)
    example = {"audio_per_chunk": 8}
    benchmark = {"frames_per_chunk": 2, "audio_per_chunk": 50}

    def __post_init__(self) -> None:
        for name in ("audio_ratio", "video_ratio", "contextual_ratio"):
            check_number(name, getattr(self, name), 0.0, 1.0, hint="pass a fraction in [0, 1]")
        for name, lowest in (("g", 0), ("frames_per_chunk", 1), ("audio_per_chunk", 1)):
            check_int(name, getattr(self, name), lowest)

    def check_inputs(self, tokens: Tokens) -> None:
        """Video tokens on a (T, H, W) grid, audio tokens of the same width (`attention` spans
        [features, audio]: `validate_tokens` checks that for every method that needs `audio`)."""
        if len(tokens.grid) != 3:
            raise ValueError(
                f"omnizip compresses video tokens with layout (T, H, W), got layout {tokens.layout}: "
                "pass the video tokens in features and the audio tokens in the audio signal"
            )
        if tokens.audio.shape[2] != tokens.features.shape[2]:
            raise ValueError(
                f"audio tokens have width {tokens.audio.shape[2]} but video tokens "
                f"{tokens.features.shape[2]}: pass both in the LLM embedding space"
            )

    def compress(self, tokens: Tokens) -> Compression:
        x = tokens.features
        b, n, _ = x.shape
        audio = tokens.audio.to(x.dtype)
        na = audio.shape[1]
        dtype = work_dtype(x)
        saliency = tokens.attention[..., n:].to(dtype).mean(dim=(1, 2))  # (B, Na)
        norms = x.to(dtype).norm(dim=-1)  # (B, N), reused by every cosine below
        plans = [self.audio_plan(audio[i].to(dtype), x[i], norms[i], saliency[i]) for i in range(b)]
        video_runs, audio_runs = interleaved_runs(
            tokens.grid[0], na, self.frames_per_chunk, self.audio_per_chunk
        )
        per_frame = math.prod(tokens.grid[1:])
        ratios = self.run_ratios(video_runs, audio_runs, per_frame, [plan[0] for plan in plans])
        video_kept = self.video_keep(x, norms, tokens.grid, video_runs, ratios)  # (B, Kv) ascending
        audio_kept = torch.stack([keep.nonzero().squeeze(1) for keep, _ in plans])  # (B, Ka)
        kv, ka = video_kept.shape[1], audio_kept.shape[1]
        features = torch.cat([gather(x, video_kept), gather(audio, audio_kept)], dim=1)
        source = torch.full((b, n + na), -1, dtype=torch.long, device=x.device)
        positions = torch.cat([video_kept, audio_kept + n], dim=1)
        source.scatter_(1, positions, torch.arange(kv + ka, device=x.device).expand(b, -1))
        sizes = torch.cat(
            [input_sizes(tokens).gather(1, video_kept), torch.ones(b, ka, device=x.device)], dim=1
        )
        for i, (_, absorbed) in enumerate(plans):
            for anchor, (members, w) in absorbed.items():
                slot = int(source[i, n + anchor])
                source[i, n + members] = slot
                merged = audio[i, anchor].to(dtype) + (w.unsqueeze(1) * audio[i, members]).sum(0)
                features[i, slot] = (merged / (1.0 + w.sum())).to(x.dtype)
                sizes[i, slot] += members.numel()
        return Compression(features=features, source=source, positions=positions, sizes=sizes)

    def audio_plan(
        self, audio: Tensor, video: Tensor, video_norms: Tensor, saliency: Tensor
    ) -> tuple[Tensor, dict]:
        """Step 2 for one row: the kept audio mask (Na,) and {anchor: (absorbed tokens, weights)}."""
        na = audio.shape[0]
        keep = torch.zeros(na, dtype=torch.bool, device=audio.device)
        dominant = int(max(0, min(na, round((1.0 - self.audio_ratio) * na))))
        keep[top_k(saliency, dominant)] = True
        remaining = (~keep).nonzero().squeeze(1)
        contextual = int(max(0, round(self.contextual_ratio * na)))
        absorbed: dict[int, tuple[Tensor, Tensor]] = {}
        if remaining.numel() == 0 or contextual == 0 or self.g == 0:
            return keep, absorbed
        contextual = min(contextual, remaining.numel())
        step = max(1, remaining.numel() // contextual)
        picks = torch.arange(0, remaining.numel(), step, device=audio.device)[:contextual]
        anchors = remaining[picks]
        keep[anchors] = True
        rest = torch.ones(remaining.numel(), dtype=torch.bool, device=audio.device)
        rest[picks] = False
        pool = remaining[rest]
        if pool.numel() == 0:
            return keep, absorbed
        # the official code adds 1e-6 to the norms instead of clamping them (`l2_normalize`):
        # kept, as it shifts every cosine slightly and with it near-tied assignments
        a = audio / (audio.norm(dim=-1, keepdim=True) + 1e-6)
        assign = (a[pool] @ a[anchors].T).argmax(dim=1)
        # max cosine to any video token; the video is divided by its norms after the product
        cosine = (a[pool] @ video.to(a.dtype).T) / (video_norms + 1e-6)
        scores = cosine.max(dim=1).values
        for c, anchor in enumerate(anchors.tolist()):
            members = pool[assign == c]
            if members.numel() == 0:
                continue
            group = scores[assign == c]
            best = top_k(group, min(self.g, members.numel()), sorted_by_position=False)
            absorbed[anchor] = (members[best], group[best].softmax(dim=0))
        return keep, absorbed

    def run_ratios(
        self,
        video_runs: list[tuple[int, int]],
        audio_runs: list[tuple[int, int]],
        per_frame: int,
        keeps: list[Tensor],
    ) -> list[float]:
        """Step 4: the video prune ratio of every video run (guided ones first)."""
        guided = min(len(video_runs), len(audio_runs))
        retention = []
        for start, end in audio_runs[:guided]:
            rows = [keep[start:end].float().mean().item() for keep in keeps]
            retention.append(sum(rows) / len(rows))
        low, high = MIN_VIDEO_RATIO, MAX_VIDEO_RATIO
        base = [max(low, min(high, high + (low - high) * r)) for r in retention]
        sizes = [(end - start) * per_frame for start, end in video_runs[:guided]]  # in tokens
        ratios = rebalance(base, sizes, self.video_ratio * sum(sizes), low, high)
        return ratios + [self.video_ratio] * (len(video_runs) - guided)

    def video_keep(
        self,
        x: Tensor,
        norms: Tensor,
        grid: tuple[int, ...],
        runs: list[tuple[int, int]],
        ratios: list[float],
    ) -> Tensor:
        """Step 5: (B, Kv) indices of the kept video tokens, ascending."""
        b, _, d = x.shape
        frames, per_frame = grid[0], math.prod(grid[1:])
        video = x.reshape(b, frames, per_frame, d)
        lengths = norms.reshape(b, frames, per_frame).clamp_min(1e-12)
        chunk_of = [i for i, (start, end) in enumerate(runs) for _ in range(start, end)]
        local = [t - runs[chunk_of[t]][0] for t in range(frames)]
        even = [t for t in range(frames) if local[t] % 2 == 0]
        odd = [t for t in range(frames) if local[t] % 2 == 1]
        scores = torch.empty(b, frames, per_frame, dtype=norms.dtype, device=x.device)
        if even:
            scores[:, even] = density_peak_scores(video[:, even].to(norms.dtype), lengths[:, even])
        if odd:
            previous = [t - 1 for t in odd]
            current, before = video[:, odd].to(norms.dtype), video[:, previous].to(norms.dtype)
            dot = torch.einsum("btpd,btpd->btp", current, before)
            # keep the tokens least similar (cosine) to the same position in the previous frame
            scores[:, odd] = -dot / (lengths[:, odd] * lengths[:, previous])
        kept = []
        for t in range(frames):
            count = int(per_frame * (1.0 - ratios[chunk_of[t]]))
            if count >= per_frame:
                kept.append(torch.arange(per_frame, device=x.device).expand(b, per_frame))
            else:
                kept.append(top_k(scores[:, t], count))
            kept[-1] = kept[-1] + t * per_frame
        return torch.cat(kept, dim=1)


def interleaved_runs(
    frames: int, na: int, frames_per_chunk: int, audio_per_chunk: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The runs of video frames and of audio tokens in Qwen2.5-Omni's interleaved sequence.

    The processor writes video chunk j, then audio chunk j, for every j. Video chunk j ends a run
    only where audio chunk j exists; audio chunk j ends one only where video chunk j + 1 exists.
    So the longer stream's trailing chunks join into one run, which the official code reads as one
    chunk. Returns ([(first frame, end frame)], [(first audio token, end audio token)]).
    """
    video = [(s, min(s + frames_per_chunk, frames)) for s in range(0, frames, frames_per_chunk)]
    audio = [(s, min(s + audio_per_chunk, na)) for s in range(0, na, audio_per_chunk)]
    return join_after(video, len(audio), frames), join_after(audio, len(video) - 1, na)


def join_after(chunks: list[tuple[int, int]], alone: int, end: int) -> list[tuple[int, int]]:
    """The first `alone` chunks as they are, then the rest joined into one run ending at `end`."""
    alone = max(0, alone)
    return chunks[:alone] + ([(chunks[alone][0], end)] if len(chunks) > alone else [])


def rebalance(
    base: list[float], sizes: list[int], target: float, low: float, high: float
) -> list[float]:
    """The official budget normalisation of the guided chunks' video prune ratios.

    With more than two chunks, the ratios other than the (first) lowest and highest are scaled so
    that sum(ratio * size) meets `target` discarded tokens, clamped to [low, high]; a remaining
    gap is spread evenly per token over those chunks (clamped again).
    """
    ratios = list(base)
    count = len(base)
    if count <= 2 or sum(sizes) == 0:
        return ratios
    planned = sum(r * s for r, s in zip(base, sizes, strict=True))
    if abs(planned - target) <= 1e-3 or planned <= 0:
        return ratios
    lowest, highest = base.index(min(base)), base.index(max(base))
    others = [i for i in range(count) if i not in (lowest, highest)]
    other_discard = sum(base[i] * sizes[i] for i in others)
    if not others or other_discard <= 0:
        return ratios
    fixed = base[lowest] * sizes[lowest] + base[highest] * sizes[highest]
    scaling = (target - fixed) / other_discard
    for i in others:
        ratios[i] = max(low, min(high, base[i] * scaling))
    gap = target - sum(r * s for r, s in zip(ratios, sizes, strict=True))
    other_size = sum(sizes[i] for i in others)
    if abs(gap) > 1e-3 and other_size > 0:
        for i in others:
            ratios[i] = max(low, min(high, ratios[i] + gap / other_size))
    return ratios


def density_peak_scores(frames: Tensor, lengths: Tensor | None = None, k: int = 5) -> Tensor:
    """OmniZip's DPC-kNN score (density * delta) of each token of each frame, (..., P, D) -> (..., P).

    Distance = 1 - cosine; density = exp(-mean distance to the k nearest other tokens); delta =
    the distance to the nearest denser token (the largest distance for a token with none denser).
    `lengths` (..., P) are the token norms, when already known.
    """
    if lengths is None:
        lengths = l2_norms(frames)
    gram = frames @ frames.transpose(-1, -2)
    dist = 1 - gram / (lengths.unsqueeze(-1) * lengths.unsqueeze(-2))
    density, delta = density_peaks(
        None, k, dist=dist, squared=False, exclude_self=True, farthest="row"
    )
    return delta * density


def pool_saliency(frame_saliency: Tensor) -> Tensor:
    """(B, Ta) encoder-frame saliency -> (B, Ta // 2) audio-token saliency, as OmniZip pools it.

    Qwen2.5-Omni's audio encoder ends with AvgPool1d(2, 2); the official code averages the
    saliency of each frame pair the same way, dropping an odd last frame.
    """
    pairs = frame_saliency.shape[-1] // 2
    return frame_saliency[..., : 2 * pairs].unflatten(-1, (pairs, 2)).mean(dim=-1)
