"""SA-MAP: merge runs of similar neighbouring audio tokens, then keep a diverse, relevant set of
the merged tokens (a DPP)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interface import Compression, Method, Tokens, check_number
from ..ops import gather, greedy_dpp, identity, l2_norms, merge, stack_rows, work_dtype
from ..registry import register


@register("samap")
@dataclass
class SAMAP(Method):
    """Merge each run of neighbouring tokens that stay similar to the run, weighting them by the
    attention they receive; then keep a budget of the merged tokens by a relevance-weighted DPP.

    "SA-MAP: Similarity-Attention Boosted Token Compression via Merging-and-Pruning for
    Efficient Speech LLMs" (preprint, preprints.org 202606.0741, posted 9 June 2026; its authors
    are not recorded here: the stored copy of its page does not show them; training-free, on
    Qwen2-Audio, Kimi-Audio and GLM-ASR). This follows its Qwen2-Audio code (Tencent/AngelSlim,
    branch SA-MAP, `qwen2_audio_pruner.py`, `method == 'SA-MAP'`), which compresses the
    projected audio tokens of each clip before the LLM:

    - budget T = max(round(ratio * N), 2) tokens (Python's round: halves to even), at most N;
    - merging: S = cosine between the tokens. A run starts at token s; each next token t joins
      it while the mean of S[m, t] over the run's tokens m = s, ..., t - 1 is at least
      `threshold`; the first token that does not starts the next run. A run becomes the mean of
      its tokens weighted by w_j, the attention token j's frames receive in the encoder's last
      layer: the maximum over heads of each attention entry, summed over the P frames the
      encoder pools into token j and averaged over every query frame. A run of one token is
      that token;
    - pruning: each run's relevance is the mean over its tokens of r_i, the attention that
      token i's P frames pay to themselves (the P x P diagonal block, averaged over heads and
      query frames, summed over key frames). With more than T runs, T are kept by the greedy
      MAP inference of the DPP with kernel diag(r) S' diag(r), S' the cosine between the merged
      tokens (`ops.greedy_dpp`, CDPruner's loop); otherwise every run is kept.

    Kept tokens come back in temporal order, each at the position of its run's first token.

    Parameters: `ratio` in (0, 1], the official `remain_token_ratio` (0.6 in the released
    run script and the code README's ASR tables, 0.5 for audio understanding, 0.7 on GLM-ASR);
    `threshold`, the run-mean cosine a token needs to join a run (the released script's 0.85;
    above 1 nothing merges). Signal: `encoder_attention` (B, heads, F, F), the last encoder
    layer's self-attention over the F = P * N frames the N tokens are pooled from (Qwen2-Audio:
    1500 Whisper frames, P = 2).

    Differences from the official code:
    - Fewer runs than T: the official DPP loop still takes T steps, and once the runs are spent
      it continues on -inf and NaN gains and picks runs a second time, so the LLM receives
      duplicated tokens. Here every run is kept once: min(T, runs) tokens, a count that
      depends on the data (rows of a batch that differ raise `ValueError`: one clip at a time).
      T is also capped at N (the official asks for 2 tokens of a 1-token clip).
    - Run means come from float64 prefix sums of the similarities; the official averages the
      run's similarities in the model's dtype. Scores are in float32 (float64 for float64
      input), the official's in the model's dtype: they differ only within rounding of the
      threshold or of a tie. The DPP's cosines come from the tokens' Gram matrix (between the
      runs' exact weighted means; the official's between the merged tokens in the model's
      dtype), with an exact 1 on the diagonal; once a clip's DPP gains vanish the remaining
      picks follow the relevance (`ops.greedy_dpp`), where the official continues on NaN.
    - A run of one token is that token unchanged; the official divides w_j x_j by w_j (equal
      up to the last bit). Cosines normalise with norms clamped at 1e-12 (the official divides
      by the norm: NaN for a zero token).
    - The official reads the attention of a padded batch and averages the merge weights over
      the clip's pooled rows divided by the padded length (a constant factor, which cancels in
      the weighted mean); here `encoder_attention` holds the clip's own F frames, rows and
      columns, each row the softmax over the layer's unmasked keys.
    - Only the Qwen2-Audio port is reproduced. The released GLM-ASR port pools P = 4 frames per
      token (covered by F = 4 * N), takes its budget from the prompt's audio placeholders and
      drops the first and the last run after merging; the Kimi-Audio port was not compared.
    """

    ratio: float = 0.6
    threshold: float = 0.85

    paper = None  # the preprint is not in the catalog yet: no source seen gives its authors
    reference = "https://www.preprints.org/manuscript/202606.0741/v1"
    stage = "projector"
    modality = ("audio",)
    mechanisms = ("similarity", "attention")
    needs = ("encoder_attention",)
    special_tokens = (0,)
    budget_knob = "ratio"
    identity = {"ratio": 1.0, "threshold": math.inf}
    example = {"ratio": 0.5, "threshold": 0.2}
    benchmark = {"ratio": 0.6, "threshold": 0.85}

    def __post_init__(self) -> None:
        hint = "pass the fraction of the tokens to keep, in (0, 1] (the paper's 0.6 for ASR)"
        check_number("ratio", self.ratio, 0.0, 1.0, open_low=True, hint=hint)
        hint = "pass the run-mean cosine similarity needed to merge, in [-1, 1] (above 1: none)"
        check_number("threshold", self.threshold, -1.0, None, hint=hint)

    def budget(self, n: int) -> int:
        """T: the official max(round(ratio * N), 2), at most N."""
        return min(n, max(round(self.ratio * n), 2))

    def output_count(self, tokens: Tokens) -> int | None:
        return None  # min(T, runs): the runs depend on the data

    def compress(self, tokens: Tokens) -> Compression:
        x, n = tokens.features, tokens.count
        budget = self.budget(n)
        work = x.to(work_dtype(x))
        gram = work @ work.transpose(-1, -2)  # one product serves both cosines
        norms = l2_norms(work)
        runs = merge_runs(gram / (norms[:, :, None] * norms[:, None, :]), self.threshold)
        if budget == n and bool((runs[:, -1] == n - 1).all()):
            return identity(tokens)  # nothing merges and everything is kept
        weights, relevance = attention_scores(tokens.encoder_attention, n)
        rows = [self.row(tokens, b, runs[b], weights[b], relevance[b], gram[b], budget) for b in range(tokens.batch)]
        why = " (SA-MAP keeps min(T, runs) tokens, and the runs depend on the data)"
        return stack_rows(tokens, rows, why, item="clip")

    def row(
        self, tokens: Tokens, b: int, runs: Tensor, weights: Tensor, relevance: Tensor, gram: Tensor, budget: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(positions, features, source) of batch row `b`: its runs merged, then pruned."""
        sizes = None if tokens.sizes is None else tokens.sizes[b : b + 1]
        one = Tokens(features=tokens.features[b : b + 1], sizes=sizes)
        count = int(runs[-1]) + 1
        merged = merge(one, runs[None], count, weights=weights[None])
        members = torch.bincount(runs, minlength=count)
        alone = (members == 1)[None, :, None]
        features = torch.where(alone, gather(one.features, merged.positions), merged.features)[0]
        if count > budget:
            scores = relevance.new_zeros(count).scatter_add_(0, runs, relevance) / members
            similarity = merged_cosine(gram, runs, weights.to(gram.dtype), count)
            kernel = scores[:, None] * similarity * scores[None, :]
            kept = greedy_dpp(kernel[None], budget)[0].sort().values
        else:
            kept = torch.arange(count, device=runs.device)
        slot = torch.full((count,), -1, dtype=torch.long, device=runs.device)
        slot[kept] = torch.arange(len(kept), device=runs.device)
        return merged.positions[0, kept], features[kept], slot[runs]


def merged_cosine(gram: Tensor, runs: Tensor, weights: Tensor, count: int) -> Tensor:
    """(count, count) cosine between the runs' weighted means, from the tokens' (N, N) Gram
    matrix: each mean is sum_i s_i x_i with shares s_i = w_i / (the run's sum of w), so its dot
    products are the Gram matrix summed by run over rows and columns with those shares (no
    second product over the feature width). The diagonal is exactly 1, so that ties are ties."""
    totals = weights.new_zeros(count).index_add_(0, runs, weights)
    shares = weights / totals[runs]
    rows = gram.new_zeros(count, gram.shape[1]).index_add_(0, runs, gram * shares[:, None])
    dots = gram.new_zeros(count, count).index_add_(1, runs, rows * shares[None, :])
    norms = dots.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
    cosine = dots / (norms[:, None] * norms[None, :])
    return cosine.fill_diagonal_(1.0)


def merge_runs(similarity: Tensor, threshold: float) -> Tensor:
    """(B, N) long: the run of each token, runs numbered 0, 1, ... in order, from the (B, N, N)
    similarities: a run starting at s takes each next token t while mean(S[s:t, t]) >= threshold.

    The sum S[s:t, t] for every (start s, token t) pair comes from prefix sums down each column
    (float64), so the first token that leaves each possible start is found at once; the runs
    then follow start by start.
    """
    s = similarity.double()
    b, n, _ = s.shape
    above = torch.cat([s.new_zeros(b, 1, n), s.cumsum(dim=1)], dim=1)  # [i, t]: sum S[:i, t]
    index = torch.arange(n, device=s.device, dtype=s.dtype)
    steps = index[None, :] - index[:, None]  # [start, t]: t - start
    needed = torch.where(steps > 0, threshold * steps, -math.inf)  # what a joining t's sum needs
    leaves = above.diagonal(dim1=1, dim2=2)[:, None, :] - above[:, :n] < needed
    never = torch.ones(b, n, 1, dtype=torch.uint8, device=s.device)  # a last column: no leaver
    first = torch.cat([leaves.to(torch.uint8), never], dim=-1).argmax(dim=-1).tolist()
    starts = torch.zeros(b, n, dtype=torch.long)
    for row, ends in enumerate(first):
        start = 0
        while start < n:
            starts[row, start] = 1
            start = ends[start]
    return (starts.cumsum(dim=1) - 1).to(similarity.device)


def attention_scores(attention: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """SA-MAP's (B, N) merge weights and (B, N) relevance from the (B, heads, F, F) attention
    over the frames pooled P = F / N at a time into the N tokens.

    Weight of token j: the maximum over heads of each entry, averaged over the query frames
    and summed over token j's frames (the official's mean over pooled rows of
    mean_a sum_b max_h A[P i + a, P j + b], up to the constant factor of its padded length).
    Relevance of token i: the head-mean attention of its frames to themselves, averaged over
    its query frames and summed over its key frames (the diagonal of the same pooling of the
    head-mean attention)."""
    b, heads, f, _ = attention.shape
    p, dtype = f // n, work_dtype(attention)
    peak = attention.amax(dim=1)  # (B, F, F); a maximum rounds nothing, in any dtype
    weights = peak.mean(dim=1, dtype=dtype).view(b, n, p).sum(dim=-1)
    blocks = attention.view(b, heads, n, p, n, p).diagonal(dim1=2, dim2=4)  # (B, h, P, P, N)
    relevance = blocks.to(dtype).mean(dim=1).sum(dim=2).mean(dim=1)
    return weights, relevance
