"""SparseVLM: rater rows, rater-averaged attention scores, and recycling by density peaks."""

from __future__ import annotations

import math

import pytest
import torch

import reproductions
from reproductions.image.sparsevlm import rater_rows, recycled_counts
from reproductions.interface import Tokens, check_compression


def llm_tokens(n=48, dim=8, heads=2, rows=5, seed=0, dtype=torch.float64) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    return Tokens(
        features=torch.randn(1, n, dim, generator=g, dtype=dtype),
        attention=(torch.randn(1, heads, rows, n, generator=g, dtype=dtype) * 2).softmax(-1),
        text=torch.randn(1, rows, dim, generator=g, dtype=dtype),
    )


def official_recycling(x: torch.Tensor, scores: torch.Tensor, kept: list[int], seed: int):
    """The official recycle step for one image, written out: (cluster means, members, centres)."""
    pruned = [i for i in range(x.shape[0]) if i not in kept]
    chosen = int(len(pruned) * 0.3) + 1
    ranked = torch.sort(scores[pruned], descending=True, stable=True).indices[:chosen]
    members = [pruned[i] for i in ranked.tolist()]
    y = x[members]
    clusters = int(len(members) / 10) + 1
    dist = torch.stack([(y - row).norm(dim=-1) for row in y]) / math.sqrt(y.shape[1])
    nearest = torch.sort(dist, dim=-1).values[:, :clusters]
    density = (-(nearest**2).mean(-1)).exp()
    noise = torch.rand((1, len(members)), generator=torch.Generator().manual_seed(seed))[0]
    density = density + noise.to(density) * 1e-6
    delta = torch.empty_like(density)
    for i in range(len(members)):
        denser = [j for j in range(len(members)) if density[j] > density[i]]
        delta[i] = dist[i, denser].min() if denser else dist.max()
    centres = torch.sort(delta * density, descending=True, stable=True).indices[:clusters].tolist()
    assignment = [
        min(range(clusters), key=lambda c, i=i: (dist[centres[c], i], c))
        for i in range(len(members))
    ]
    for c, centre in enumerate(centres):
        assignment[centre] = c
    groups = [
        [members[i] for i in range(len(members)) if assignment[i] == c] for c in range(clusters)
    ]
    means = torch.stack([x[group].mean(0) for group in groups])
    return means, groups, [members[c] for c in centres]


def test_raters_are_the_text_rows_above_average_relevance():
    visual = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    text = torch.tensor([[[4.0, 0.0], [0.0, 4.0], [-4.0, 0.0]]])
    # relevance per text row: mean over visual tokens of softmax over the 3 rows
    probs = (visual @ text.transpose(1, 2)).softmax(-1).mean(1)[0]
    assert probs[0] > probs.mean() and probs[2] < probs.mean()
    assert rater_rows(visual, text).tolist() == [(probs > probs.mean()).tolist()]
    # a single text row is never above its own average: every row rates
    assert rater_rows(visual, text[:, :1]).tolist() == [[True]]


def test_keeps_the_tokens_the_raters_attend_to_most():
    # 3 text rows, 1 head; rows 0 and 1 are raters (aligned with the visual tokens), row 2 not
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [1.0, -0.1], [0.8, 0.0]]])
    text = torch.tensor([[[3.0, 0.0], [3.0, 0.0], [-3.0, 0.0]]])
    assert rater_rows(features, text).tolist() == [[True, True, False]]
    attention = torch.tensor(
        [[[[0.1, 0.5, 0.1, 0.2, 0.1], [0.1, 0.3, 0.1, 0.4, 0.1], [0.9, 0.0, 0.1, 0.0, 0.0]]]]
    )
    tokens = Tokens(features=features, attention=attention, text=text)
    out = reproductions.get("sparsevlm", keep=2, recycle=False)(tokens)
    assert out.positions.tolist() == [[1, 3]]  # row 2 would have picked token 0
    assert torch.equal(out.features, features[:, [1, 3]])


@pytest.mark.parametrize("keep", [5, 16, 30])
def test_recycling_matches_the_official_steps(keep):
    tokens = llm_tokens(seed=keep)
    method = reproductions.get("sparsevlm", keep=keep, seed=3)
    out = method(tokens)
    raters = rater_rows(tokens.features, tokens.text)[0]
    scores = tokens.attention[0].mean(0)[raters].mean(0)
    kept = sorted(torch.sort(scores, descending=True, stable=True).indices[:keep].tolist())
    means, groups, centres = official_recycling(tokens.features[0], scores, kept, seed=3)
    assert out.count == method.output_count(tokens) == keep + len(groups)
    assert out.positions[0].tolist() == kept + centres
    assert torch.allclose(out.features[0, keep:], means, atol=1e-12)
    assert torch.equal(out.features[0, :keep], tokens.features[0, kept])
    for slot, group in enumerate(groups):
        assert (out.source[0, group] == keep + slot).all()
    check_compression(out, tokens)


def test_output_count_follows_the_official_rounding():
    assert recycled_counts(512) == (154, 16)  # LLaVA-1.5, keep 64: top 30% + 1, /10 + 1
    assert recycled_counts(1) == (1, 1)
    tokens = llm_tokens(n=64)
    assert reproductions.get("sparsevlm", keep=64).output_count(tokens) == 64
    assert reproductions.get("sparsevlm", keep=16).output_count(tokens) == 16 + 2


def test_special_tokens_lead_and_survive():
    tokens = llm_tokens(n=33)
    tokens = Tokens(**{**tokens.__dict__, "special": 1})
    out = reproductions.get("sparsevlm", keep=9)(tokens)
    assert out.positions[0, 0] == 0 and torch.equal(out.features[0, 0], tokens.features[0, 0])
    assert out.count == 9 + recycled_counts(24)[1]


def test_the_seed_only_breaks_density_ties():
    tokens = llm_tokens()
    a = reproductions.get("sparsevlm", keep=8, seed=0)(tokens)
    b = reproductions.get("sparsevlm", keep=8, seed=1)(tokens)
    assert torch.equal(a.features, b.features)  # no ties in random data
    # four recycled tokens at the corners of a square: equal densities, one cluster
    features = torch.zeros(1, 14, 4, dtype=torch.float64)
    features[0, 0], features[0, 1] = 5.0, -5.0
    features[0, 2:6, :2] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    score = torch.tensor([0.9, 0.8] + [0.5] * 4 + [0.1] * 8, dtype=torch.float64)
    tied = Tokens(
        features=features,
        attention=score.expand(1, 1, 2, 14),
        text=torch.ones(1, 2, 4, dtype=torch.float64),
    )
    method = reproductions.get("sparsevlm", keep=2)
    assert method.output_count(tied) == 3  # 12 pruned -> 4 recycled -> 1 cluster
    centres = set()
    for seed in range(8):
        out = reproductions.get("sparsevlm", keep=2, seed=seed)(tied)
        assert out.source[0, 2:6].tolist() == [2] * 4 and out.sizes[0, 2] == 4
        centres.add(int(out.positions[0, 2]))
    assert len(centres) > 1 and centres <= {2, 3, 4, 5}  # the seeded noise picks the centre


def test_text_width_must_match_the_features():
    tokens = llm_tokens()
    bad = Tokens(**{**tokens.__dict__, "text": torch.randn(1, 5, 3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="text"):
        reproductions.get("sparsevlm", keep=8)(bad)


@pytest.mark.parametrize("params", [{"recycle": 1}, {"seed": 0.5}, {"keep": 0}])
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        reproductions.get("sparsevlm", **params)


def test_the_official_first_sparsification_is_the_default():
    """SparseVLM's first sparse layer scores with layer 2's attention and prunes from layer 3:
    K = 3; inside a model its raters come from the query rows' input embeddings."""
    from reproductions import get

    method = get("sparsevlm")
    assert method.layer == 3 and method.text_from == "embeddings"
    with pytest.raises(ValueError, match="layer"):
        get("sparsevlm", layer=0)
