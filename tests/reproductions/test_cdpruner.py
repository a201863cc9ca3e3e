"""CDPruner: the DPP picks on hand-built kernels, the negated relevance, and the official loop
restated."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.image.cdpruner import greedy_dpp, instruction_relevance


def official_cdpruner(image: torch.Tensor, text: torch.Tensor, t: int) -> list[int]:
    """A plain restatement of the official `encode_images` on one image: projected features
    (N, D) for the similarity, the same features against the text rows (M, D) for the
    relevance, then the fast greedy MAP loop; returns the sorted picks."""
    x = image / image.norm(dim=-1, keepdim=True)
    similarity = x @ x.t()
    y = text / text.norm(dim=-1, keepdim=True)
    relevance = (-(x @ y.t())).mean(dim=-1)
    relevance = (relevance - relevance.min() + 1e-6) / (relevance.max() - relevance.min())
    kernel = relevance[:, None] * similarity * relevance[None, :]
    n = kernel.shape[0]
    cis = torch.zeros(t, n, dtype=kernel.dtype)
    di2s = torch.diagonal(kernel).clone()
    picks = []
    for i in range(t):
        j = int(torch.argmax(di2s))
        picks.append(j)
        eis = (kernel[j] - cis[:i, j] @ cis[:i]) / torch.sqrt(di2s[j])
        cis[i] = eis
        di2s -= eis**2
        di2s[j] = -math.inf
    return sorted(picks)


def test_dpp_prefers_a_diverse_pair_to_two_relevant_near_duplicates():
    # tokens 0 and 1 point almost the same way (cos 0.99), token 2 is orthogonal to both;
    # qualities 1, 0.9, 0.5. Top quality would keep {0, 1}; the DPP keeps 0, then the token of
    # largest residual gain: token 1 adds 0.81 * (1 - 0.99^2) = 0.016, token 2 adds 0.25.
    similarity = torch.tensor(
        [[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    quality = torch.tensor([1.0, 0.9, 0.5], dtype=torch.float64)
    kernel = (quality[:, None] * similarity * quality[None, :]).unsqueeze(0)
    assert greedy_dpp(kernel, 2)[0].tolist() == [0, 2]
    assert greedy_dpp(kernel, 3)[0].tolist() == [0, 2, 1]
    # {0, 2} is also the pair of largest determinant (0.25 against 0.0162 and 0.2025)
    dets = {p: torch.det(kernel[0][list(p)][:, list(p)]).item() for p in [(0, 1), (0, 2), (1, 2)]}
    assert max(dets, key=dets.get) == (0, 2)


def test_relevance_is_the_negated_cosine_min_max_normalised():
    # orthogonal tokens e1, e2, e3 and the instruction (1, 0.5, 0): cosines 0.894, 0.447, 0.
    # The released code negates them, so the token least like the text is the most relevant:
    # r = (0, 0.5, 1) plus 1e-6 / 0.894.
    features = torch.eye(3, dtype=torch.float64).unsqueeze(0)
    text = torch.tensor([[[1.0, 0.5, 0.0]]], dtype=torch.float64)
    r = instruction_relevance(features, text)[0]
    span = 1 / math.sqrt(1.25)
    expected = torch.tensor([0.0, 0.5 * span, span], dtype=torch.float64) + 1e-6
    assert torch.allclose(r, expected / span)
    # orthogonal tokens do not interact: the DPP keeps the most relevant, e3 then e2
    out = get("cdpruner", keep=1)(Tokens(features=features, text=text))
    assert out.positions[0].tolist() == [2]
    out = get("cdpruner", keep=2)(Tokens(features=features, text=text))
    assert out.positions[0].tolist() == [1, 2]
    assert torch.equal(out.features[0], features[0, [1, 2]])


def test_the_instruction_changes_the_selection():
    # directions 0, 10, 90 and 100 degrees in the plane. Text along 0 degrees: relevance
    # -cos, normalised, is (0, 0.013, 0.85, 1), so 100 degrees, then 90 (gain 0.85^2 * (1 -
    # cos^2 10) = 0.022 against 0.013^2 for 10 degrees). Text along 180 degrees: the reverse,
    # (1, 0.99, 0.15, 0), so 0 then 10 degrees (gain 0.99^2 * 0.03 = 0.029 against 0.15^2 =
    # 0.022). Text orthogonal to the plane: relevance constant, pure diversity: 0 (a tie, the
    # lowest index), then 90 degrees, the orthogonal one.
    rad = torch.tensor([0.0, 10.0, 90.0, 100.0], dtype=torch.float64) * math.pi / 180
    features = torch.stack([rad.cos(), rad.sin(), torch.zeros(4, dtype=torch.float64)], -1)[None]
    keep = get("cdpruner", keep=2)
    for text, kept in [
        ((1.0, 0.0, 0.0), [2, 3]),
        ((-1.0, 0.0, 0.0), [0, 1]),
        ((0.0, 0.0, 1.0), [0, 2]),
    ]:
        t = torch.tensor([[text]], dtype=torch.float64)
        assert keep(Tokens(features=features, text=t)).positions[0].tolist() == kept


@pytest.mark.parametrize("keep", [1, 5, 12, 24])
def test_matches_the_official_loop(keep):
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        image = torch.randn(1, 30, 24, generator=g, dtype=torch.float64)
        text = torch.randn(1, 4, 24, generator=g, dtype=torch.float64)
        out = get("cdpruner", keep=keep)(Tokens(features=image, text=text))
        assert out.positions[0].tolist() == official_cdpruner(image[0], text[0], keep)


def test_float32_matches_the_official_loop():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 64, 48, generator=g)
    text = torch.randn(1, 8, 48, generator=g)
    out = get("cdpruner", keep=32)(Tokens(features=image, text=text))
    assert out.positions[0].tolist() == official_cdpruner(image[0].double(), text[0].double(), 32)


def test_theta_weights_relevance_exponentially_and_zero_ignores_the_instruction():
    g = torch.Generator().manual_seed(2)
    image = torch.randn(2, 20, 16, generator=g, dtype=torch.float64)
    text = torch.randn(2, 3, 16, generator=g, dtype=torch.float64)
    r = instruction_relevance(image, text)
    assert torch.allclose(instruction_relevance(image, text, 0.5), torch.exp(0.5 * r))
    plain = get("cdpruner", keep=6, theta=0.0)
    a = plain(Tokens(features=image, text=text)).positions
    b = plain(Tokens(features=image, text=-text)).positions
    assert torch.equal(a, b)  # relevance exp(0) = 1: a pure diversity DPP


def test_constant_relevance_is_no_nan_and_picks_by_diversity():
    # every token is orthogonal to the text: the raw relevance is constant (official: 0 / 0)
    features = torch.tensor([[[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 1.0, 0.0]]])
    text = torch.tensor([[[0.0, 0.0, 1.0]]])
    assert torch.equal(instruction_relevance(features, text), torch.ones(1, 3))
    out = get("cdpruner", keep=2)(Tokens(features=features, text=text))
    assert out.positions[0].tolist() == [0, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_duplicates_and_a_budget_above_the_rank_pick_distinct_tokens(dtype):
    # directions 0, 0, 30, 60, 90, 90 degrees in the plane (rank 2); text (-1, -0.2) gives
    # relevance (1, 1, 0.96, 0.59, ~0, ~0). The DPP keeps 0 degrees (the first of the tie),
    # then 60 (gain 0.59^2 * 0.75 = 0.26 against 0.96^2 * 0.25 = 0.23 for 30); then no gain is
    # left and the rest follow the relevance: 0 (the duplicate), 30, 90, 90
    rad = torch.tensor([0.0, 0.0, 30.0, 60.0, 90.0, 90.0], dtype=dtype) * math.pi / 180
    features = torch.stack([rad.cos(), rad.sin()], -1)[None]
    text = torch.tensor([[[-1.0, -0.2]]], dtype=dtype)
    r = instruction_relevance(features, text)
    kernel = r[:, :, None] * (features @ features.transpose(1, 2)) * r[:, None, :]
    assert greedy_dpp(kernel, 6)[0].tolist() == [0, 3, 1, 2, 4, 5]
    out = get("cdpruner", keep=5)(Tokens(features=features, text=text))
    assert not out.features.isnan().any() and out.positions[0].tolist() == [0, 1, 2, 3, 4]


def test_special_tokens_are_kept_and_take_no_part():
    features = torch.cat([torch.full((1, 1, 3), 5.0), torch.eye(3).unsqueeze(0)], dim=1)
    text = torch.tensor([[[1.0, 0.5, 0.0]]])
    out = get("cdpruner", keep=2)(Tokens(features=features, text=text, special=1))
    assert out.positions[0].tolist() == [0, 3]  # [CLS], then e3 (the most relevant)
    assert out.source[0].tolist() == [0, -1, -1, 1]
    only = get("cdpruner", keep=1)(Tokens(features=features, text=text, special=1))
    assert only.positions[0].tolist() == [0]


def test_bad_theta_and_text_raise():
    for theta in (1.0, -0.1, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match="theta"):
            get("cdpruner", theta=theta)
    features = torch.randn(1, 8, 4)
    with pytest.raises(ValueError, match="width"):
        get("cdpruner", keep=2)(Tokens(features=features, text=torch.randn(1, 3, 5)))
    # (empty signals are refused before `compress` by the shared validation; checked here too)
    with pytest.raises(ValueError, match="no rows"):
        get("cdpruner", keep=2).compress(Tokens(features=features, text=torch.randn(1, 0, 4)))
