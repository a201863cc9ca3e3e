"""IDPruner: keep tokens by Maximal Marginal Relevance, important yet unlike those kept."""

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
from ..ops import cosine_matrix, order, select, with_special, work_dtype
from ..registry import register

#: the official min-max normalisation's offset on the denominator
IMPORTANCE_EPS = 1e-6


def min_max(scores: Tensor) -> Tensor:
    """(B, N) scores scaled per row to (s - min) / (max - min + 1e-6), the official `Imp`."""
    low = scores.amin(dim=-1, keepdim=True)
    return (scores - low) / (scores.amax(dim=-1, keepdim=True) - low + IMPORTANCE_EPS)


def mmr_select(
    importance: Tensor, similarity: Tensor, k: int, lam: float, per_step: int = 1
) -> Tensor:
    """(B, k) indices picked by IDPruner's greedy MMR, in pick order.

    The first step takes the `per_step` most important tokens; every next step takes the
    `per_step` unpicked tokens of highest lam * importance - (1 - lam) * m_i, where m_i is the
    largest cosine (`similarity`, (B, N, N)) between token i and any picked token. The last step
    takes what remains of the budget. Ties go to the lowest index.
    """
    b, n = importance.shape
    rows = torch.arange(b, device=importance.device)
    picks = torch.empty(b, k, dtype=torch.long, device=importance.device)
    picked = torch.zeros(b, n, dtype=torch.bool, device=importance.device)
    nearest = torch.empty_like(importance)  # m_i, defined once a token is picked
    relevance = lam * importance
    done = 0
    while done < k:
        step = min(per_step, k - done)
        score = importance.clone() if done == 0 else relevance - (1 - lam) * nearest
        score.masked_fill_(picked, -math.inf)
        best = score.argmax(dim=1, keepdim=True) if step == 1 else order(score)[:, :step]
        picks[:, done : done + step] = best
        picked[rows[:, None], best] = True
        if step == 1:
            columns = similarity[rows, best[:, 0]]  # a row: the matrix is symmetric
        else:
            columns = similarity.gather(2, best[:, None, :].expand(b, n, step)).amax(dim=2)
        nearest = columns if done == 0 else torch.maximum(nearest, columns)
        done += step
    return picks


@register("idpruner")
@dataclass
class IDPruner(Method):
    """IDPruner (Tan et al., "IDPruner: Harmonizing Importance and Diversity in Visual Token
    Pruning for MLLMs", arXiv 2602.13315).

    Maximal Marginal Relevance over the visual tokens: importance Imp is the token scores
    min-max normalised, (w - min) / (max - min + 1e-6); similarity Sim is the cosine of
    `features`. The first token kept is the most important; then each step keeps
    argmax over unkept v of lam * Imp(v) - (1 - lam) * max over kept u of Sim(v, u), `per_step`
    tokens at a time (the official `parallel_k`: the top `per_step` by that score), until
    `keep` - special are kept. Ties go to the lowest index. Output: special tokens, then the kept
    tokens in positional order (the official applies a boolean keep mask).

    Parameters: `keep` (int count or fraction of N, special tokens included; official config:
    `ratio: 0.75` pruned, so 0.25), `mmr_lambda` (0.5), `per_step` (1). Signal: `cls_attention`,
    averaged over heads, as the token scores w (see the differences). The only released code is
    AngelSlim's (`token_compressor/algorithm/idpruner.py`), the code the paper points to.

    Differences from the official code:
    - The official scores w come from a trained "Vision Selector" (a small scorer network whose
      weights AngelSlim downloads from the Hugging Face Hub per model, e.g.
      AngelSlim/Qwen2.5-VL-7B-Instruct-Selector) applied to the visual embeddings. This
      project downloads no weights: w is the attention each token gets (`cls_attention` averaged
      over heads: the [CLS] row on CLIP, the attention received elsewhere). To use a scorer,
      pass its (B, N) scores as `cls_attention` of shape (B, 1, N). The min-max normalisation
      makes any positive scale of w irrelevant.
    - Similarity divides by norms clamped at 1e-12, not by norm + 1e-8 (equal for non-tiny
      norms); scores are computed in float32 (float64 kept), as the official `.float()`.
    - The official `similarity_func` / `importance_func` strings (code run with `exec`) are not
      taken.
    - The official counts the tokens of all images in a prompt together (one budget over the
      sequence); the integration calls the method once per image or video span.
    - On LLaVA the integration hands the method the encoder features the projector reads; the
      official scores and compares the projected LLM-input embeddings.
    - The budget rule is the project's: a fraction keeps floor(keep * N); the official keeps
      round(N * (1 - ratio)), at least one.
    """

    keep: Budget = 0.25
    mmr_lambda: float = 0.5
    per_step: int = 1

    paper = "tan2026idpruner"
    stage = "projector"
    modality = ("image", "video")
    mechanisms = ("attention", "similarity")
    needs = ("cls_attention",)
    example = {"keep": 16}

    def __post_init__(self) -> None:
        validate_keep(self.keep)
        hint = "pass the weight of importance against diversity, a float in [0, 1] (official: 0.5)"
        check_number("mmr_lambda", self.mmr_lambda, 0, 1, hint=hint)
        hint = "pass how many tokens each greedy step keeps, an int >= 1 (official parallel_k: 1)"
        check_int("per_step", self.per_step, 1, hint)

    def compress(self, tokens: Tokens) -> Compression:
        s = tokens.special
        k = resolve_keep(self.keep, tokens.count, s) - s
        if k == 0:
            none = torch.zeros(tokens.batch, 0, dtype=torch.long, device=tokens.features.device)
            return select(tokens, with_special(tokens, none))
        similarity = cosine_matrix(tokens.features[:, s:])
        attention = tokens.cls_attention[:, :, s:]
        importance = min_max(attention.to(work_dtype(attention)).mean(dim=1).to(similarity.dtype))
        idx = mmr_select(importance, similarity, k, self.mmr_lambda, self.per_step)
        return select(tokens, with_special(tokens, idx.sort(dim=1).values + s))
