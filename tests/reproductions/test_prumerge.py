"""PruMerge and PruMerge+: the official algorithm, token by token, against the vectorised one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reproductions
from reproductions.image.prumerge import outlier_ratio
from reproductions.interface import Tokens, check_compression


def random_tokens(
    batch=1, n=40, dim=8, key_dim=6, special=1, seed=0, dtype=torch.float64, sharpness=2.0
) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    total = n + special
    features = torch.randn(batch, total, dim, generator=g, dtype=dtype)
    keys = torch.randn(batch, total, key_dim, generator=g, dtype=dtype)
    cls = (torch.randn(batch, 1, total, generator=g, dtype=dtype) * sharpness).softmax(-1)
    return Tokens(features=features, special=special, cls_attention=cls, keys=keys)


def official_loop(tokens: Tokens, kept: list[int], neighbors: int) -> torch.Tensor:
    """The official merge for one image, written as its loop over kept tokens (batch row 0)."""
    s = tokens.special
    x = tokens.features[0, s:]
    keys = torch.nn.functional.normalize(tokens.keys[0, s:], dim=-1)
    score = tokens.cls_attention[0, 0, s:]
    pruned = [j for j in range(x.shape[0]) if j not in kept]
    rows = []
    for i, token in enumerate(kept):
        rest = kept[:i] + kept[i + 1 :] + pruned
        sim = keys[rest] @ keys[token]
        near = torch.sort(sim, descending=True, stable=True).indices[:neighbors]
        chosen = [rest[j] for j in near.tolist()]
        rows.append(x[token] + (x[chosen] * score[chosen, None]).sum(0))
    rows.append((x[pruned] * score[pruned, None]).sum(0))
    return torch.stack(rows)


def test_outlier_ratio_is_numpy_iqr_rule_over_the_whole_batch():
    scores = torch.rand(3, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 6
    flat = scores.numpy().flatten()
    q1, q3 = np.percentile(flat, 25), np.percentile(flat, 75)
    expected = (flat > q3 + 1.5 * (q3 - q1)).sum() / flat.size
    assert outlier_ratio(scores) == pytest.approx(expected, abs=0)
    assert 0 < expected < 0.5


def test_hand_built_example_keeps_the_outlier_and_sums_its_neighbours():
    # four ordinary tokens; token 2 is the only [CLS]-attention outlier among the scores
    features = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]]])
    keys = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]]])
    cls = torch.tensor([[[0.5, 0.1, 0.1, 0.9, 0.1]]])
    scores = torch.tensor([0.1, 0.1, 0.9, 0.1])
    assert outlier_ratio(scores[None]) == 0.25  # one of four
    tokens = Tokens(features=features, special=1, cls_attention=cls, keys=keys)
    out = reproductions.get("prumerge", neighbors=1)(tokens)
    # kept: ordinary token 2 (index 3); its nearest key is ordinary token 0 (index 1)
    assert out.positions.tolist() == [[0, 3, 1]]
    assert torch.allclose(out.features[0, 1], torch.tensor([2.0 + 0.1, 0.0]))
    # extra token: score-weighted sum of the three pruned tokens
    assert torch.allclose(out.features[0, 2], torch.tensor([0.1, 0.1 + 0.3]))
    assert torch.equal(out.features[0, 0], features[0, 0])
    assert out.source.tolist() == [[0, 2, 2, 1, 2]] and out.sizes.tolist() == [[1, 1, 3]]


@pytest.mark.parametrize("neighbors", [1, 5, 32])
def test_matches_the_official_loop(neighbors):
    tokens = random_tokens(n=48, seed=neighbors)
    out = reproductions.get("prumerge", neighbors=neighbors)(tokens)
    scores = tokens.cls_attention[0, 0, 1:]
    k = int(48 * outlier_ratio(scores[None]))
    kept = torch.sort(scores, descending=True, stable=True).indices[:k].tolist()
    assert k > 0 and out.count == 1 + k + 1
    assert out.positions[0, 1 : k + 1].tolist() == [i + 1 for i in kept]  # score order
    assert torch.allclose(out.features[0, 1:], official_loop(tokens, kept, neighbors), atol=1e-12)
    check_compression(out, tokens)


def test_fixed_ratio_counts_and_keeping_everything_drops_the_empty_extra_token():
    tokens = random_tokens(n=40)
    method = reproductions.get("prumerge", adaptive=False, ratio=0.25)
    assert method(tokens).count == method.output_count(tokens) == 1 + 10 + 1
    full = reproductions.get("prumerge", adaptive=False, ratio=1.0)
    out = full(tokens)
    assert out.count == full.output_count(tokens) == 41
    assert (out.source >= 0).all() and out.sizes.sum() == 41


def test_adaptive_ratio_spans_the_batch():
    a, b = random_tokens(seed=3), random_tokens(seed=4, sharpness=0.3)
    both = Tokens(
        **{
            f: torch.cat([getattr(a, f), getattr(b, f)])
            for f in ("features", "cls_attention", "keys")
        },
        special=1,
    )
    method = reproductions.get("prumerge")
    scores = both.cls_attention[:, 0, 1:]
    expected = int(40 * outlier_ratio(scores))
    assert method(both).count == 1 + expected + 1
    alone = [int(40 * outlier_ratio(t.cls_attention[:, 0, 1:])) for t in (a, b)]
    assert alone != [expected, expected]  # one-by-one differs: hence batch_independent = False
    assert not method.batch_independent


def test_works_without_special_tokens_and_in_every_dtype():
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        tokens = random_tokens(special=0, dtype=dtype)
        out = reproductions.get("prumerge")(tokens)
        assert out.features.dtype == dtype and not out.features.isnan().any()
        check_compression(out, tokens)


def test_plus_appends_spatial_samples_not_already_kept():
    tokens = random_tokens(n=48, seed=7)
    scores = tokens.cls_attention[0, 0, 1:]
    ratio = outlier_ratio(scores[None])
    k = int(48 * ratio)
    kept = torch.sort(scores, descending=True, stable=True).indices[:k].tolist()
    stride = int(int(1 / ratio) / 3)
    samples = [i for i in range(0, 47, stride) if i not in kept]
    out = reproductions.get("prumerge_plus")(tokens)
    assert out.positions[0, 1:-1].tolist() == [i + 1 for i in kept + samples]
    assert torch.allclose(
        out.features[0, 1:], official_loop(tokens, kept + samples, 32), atol=1e-12
    )


def test_plus_without_outliers_samples_index_zero_alone():
    flat = Tokens(
        features=torch.randn(1, 17, 4, dtype=torch.float64),
        special=1,
        cls_attention=torch.full((1, 1, 17), 1 / 17, dtype=torch.float64),
        keys=torch.randn(1, 17, 4, dtype=torch.float64),
    )
    out = reproductions.get("prumerge_plus")(flat)  # the official divides by zero here
    assert out.positions.tolist() == [[0, 1, 2]]  # [CLS], sample 0, extra token
    assert reproductions.get("prumerge")(flat).count == 2  # [CLS] and the extra token


def test_plus_high_ratio_uses_stride_one():
    tokens = random_tokens(n=12)
    out = reproductions.get("prumerge_plus", adaptive=False, ratio=0.5)(tokens)  # official: step 0
    kept = torch.sort(tokens.cls_attention[0, 0, 1:], descending=True, stable=True).indices[:6]
    samples = [i for i in range(11) if i not in kept.tolist()]
    assert out.positions[0, 1 : 7 + len(samples)].tolist() == [
        i + 1 for i in kept.tolist() + samples
    ]
    assert out.count == 1 + 6 + len(samples) + (1 if 6 + len(samples) < 12 else 0)
    check_compression(out, tokens)


def test_plus_batch_rows_skip_samples_kept_by_any_row():
    a, b = random_tokens(n=40, seed=11), random_tokens(n=40, seed=12)
    both = Tokens(
        **{
            f: torch.cat([getattr(a, f), getattr(b, f)])
            for f in ("features", "cls_attention", "keys")
        },
        special=1,
    )
    out = reproductions.get("prumerge_plus", adaptive=False, ratio=0.125)(both)
    kept = [
        set(
            torch.sort(both.cls_attention[r, 0, 1:], descending=True, stable=True)
            .indices[:5]
            .tolist()
        )
        for r in range(2)
    ]
    expected = [i for i in range(0, 39, 2) if i not in kept[0] | kept[1]]
    assert out.positions[0, 6:-1].tolist() == [i + 1 for i in expected]
    assert out.positions[1, 6:-1].tolist() == [i + 1 for i in expected]


@pytest.mark.parametrize(
    "params",
    [{"ratio": 0.0}, {"ratio": 1.5}, {"neighbors": 0}, {"neighbors": 2.5}, {"adaptive": "yes"}],
)
def test_bad_parameters_raise(params):
    for name in ("prumerge", "prumerge_plus"):
        with pytest.raises(ValueError, match=next(iter(params))):
            reproductions.get(name, **params)
