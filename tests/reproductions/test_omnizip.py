"""omnizip: audio-guided audio + video compression (official OmniZip semantics)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.omni.omnizip import (
    density_peak_scores,
    interleaved_runs,
    pool_saliency,
    rebalance,
)


def omni_tokens(
    frames: int = 4,
    side: int = 3,
    na: int = 10,
    dim: int = 8,
    batch: int = 1,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    n = frames * side * side
    video = torch.randn(batch, n, dim, generator=g, dtype=torch.float64)
    audio = torch.randn(batch, na, dim, generator=g, dtype=torch.float64)
    attention = torch.rand(batch, 2, 3, n + na, generator=g, dtype=torch.float64).softmax(-1)
    return Tokens(
        features=video.to(dtype),
        layout=(frames, side, side),
        audio=audio.to(dtype),
        attention=attention.to(dtype),
    )


def with_saliency(tokens: Tokens, saliency: list[float]) -> Tokens:
    n = tokens.count
    attention = torch.zeros(1, 1, 1, n + len(saliency), dtype=tokens.features.dtype)
    attention[0, 0, 0, n:] = torch.tensor(saliency, dtype=tokens.features.dtype)
    return dataclasses.replace(tokens, attention=attention)


def test_audio_keeps_the_salient_tokens_and_anchor_absorbs_the_rest():
    tokens = with_saliency(omni_tokens(), [9, 1, 8, 7, 2, 6, 5, 4, 3, 0.5])
    method = get("omnizip", contextual_ratio=0.1, audio_per_chunk=10)
    out = method(tokens)
    n = tokens.count
    audio_source = out.source[0, n:]
    # round(0.7 * 10) = 7 most salient kept: 0, 2, 3, 5, 6, 7, 8; round(0.1 * 10) = 1 anchor,
    # the first of the rest (1, 4, 9): token 1; it absorbs the other two (g = 3 >= 2)
    kept = [0, 1, 2, 3, 5, 6, 7, 8]
    assert (audio_source[kept] >= 0).all()
    assert audio_source[4] == audio_source[1] and audio_source[9] == audio_source[1]
    a, v = tokens.audio[0], tokens.features[0]
    an, vn = a / (a.norm(dim=-1, keepdim=True) + 1e-6), v / (v.norm(dim=-1, keepdim=True) + 1e-6)
    w = (an[[4, 9]] @ vn.T).max(dim=1).values.softmax(0)
    expected = (a[1] + w[0] * a[4] + w[1] * a[9]) / (1 + w.sum())
    slot = int(audio_source[1])
    assert torch.allclose(out.features[0, slot], expected)
    assert out.sizes[0, slot] == 3 and out.positions[0, slot] == n + 1
    check_compression(out, tokens)


def test_group_members_go_to_their_most_similar_anchor_and_only_the_top_g():
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    audio = torch.stack([base[0], base[0], base[0], base[0], base[1], base[1]]).unsqueeze(0)
    video = base[:1].expand(4, 2).unsqueeze(0).clone()  # 4 video tokens, all along x
    tokens = Tokens(features=video, layout=(1, 2, 2), audio=audio)
    tokens = with_saliency(tokens, [0, 0, 0, 0, 0, 0])
    method = get("omnizip", audio_ratio=1.0, contextual_ratio=0.34, g=1, audio_per_chunk=6)
    out = method(tokens)
    src = out.source[0, 4:].tolist()
    # no dominant tokens; round(0.34 * 6) = 2 anchors at rest positions 0 and 3: tokens 0, 3
    assert src[0] >= 0 and src[3] >= 0
    # tokens 1, 2 go to anchor 0 (same direction); g = 1 absorbs only the first of the tie;
    # tokens 4, 5 are orthogonal to both anchors: argmax picks anchor 0 (first), beyond g: dropped
    assert src[1] == src[0] and src[2] == -1 and src[4] == -1 and src[5] == -1


def test_video_ratio_follows_audio_retention_per_chunk():
    tokens = omni_tokens(frames=4, side=4, na=8)
    # chunk 0 audio (tokens 0-3) fully salient, chunk 1 (4-7) not: audio_ratio 0.5 keeps 4
    tokens = with_saliency(tokens, [9, 8, 7, 6, 1, 1, 1, 1])
    method = get("omnizip", audio_ratio=0.5, contextual_ratio=0.0, audio_per_chunk=4)
    out = method(tokens)
    per_frame = out.source[0, :64].reshape(4, 16).ge(0).sum(dim=1).tolist()
    # retention 1 -> ratio 0.35 -> int(16 * 0.65) = 10; retention 0 -> 0.75 -> int(16 * 0.25) = 4
    assert per_frame == [10, 10, 4, 4]


def test_trailing_audio_chunks_are_one_run_as_in_the_interleaved_sequence():
    # The clip: 4 frames (2 video chunks of 2 s) and 140 audio tokens (3 chunks: 50, 50,
    # 40). Qwen2.5-Omni writes V0 A0 V1 A1 A2, so the official code reads audio runs [0, 50) and
    # [50, 140). Keep 70 = round(0.5 * 140) audio tokens: 30 of [0, 50), 8 of [50, 100), 32 of
    # [100, 140).
    saliency = [1.0] * 140
    for j in [*range(0, 30), *range(50, 58), *range(100, 132)]:
        saliency[j] = 2.0
    tokens = with_saliency(omni_tokens(frames=4, side=3, na=140), saliency)
    method = get("omnizip", audio_ratio=0.5, contextual_ratio=0.0)
    out = method(tokens)
    per_frame = out.source[0, :36].reshape(4, 9).ge(0).sum(dim=1).tolist()
    # run 0: r = 30 / 50 -> ratio 0.75 - 0.4 * 0.6 = 0.51 -> int(9 * 0.49) = 4 per frame;
    # run 1: r = 40 / 90 -> ratio 0.75 - 0.4 * 0.444 = 0.572 -> int(9 * 0.428) = 3 per frame
    # (fixed 50-token chunks gave r = 8 / 50 -> ratio 0.686 -> 2 per frame: 12 tokens, not 14)
    assert per_frame == [4, 4, 3, 3]
    check_compression(out, tokens)


def runs_of(ids: list[str], kind: str) -> list[tuple[int, int]]:
    """The runs of `kind` ids in a sequence, as positions within that kind (the official reading)."""
    runs, count, previous = [], 0, False
    for token in ids:
        if token == kind:
            if not previous:
                runs.append([count, count])
            runs[-1][1] = count = count + 1
        previous = token == kind
    return [tuple(run) for run in runs]


@pytest.mark.parametrize(
    "frames, na, fpc, apc", [(4, 140, 2, 50), (7, 60, 2, 50), (4, 100, 2, 50), (3, 7, 1, 2)]
)
def test_interleaved_runs_match_the_runs_of_the_processor_layout(frames, na, fpc, apc):
    # Qwen2.5-Omni's placeholder, one "v" per frame: video chunk j, then audio chunk j
    ids: list[str] = []
    for j in range(max(math.ceil(frames / fpc), math.ceil(na / apc))):
        ids += ["v"] * max(0, min(fpc, frames - j * fpc)) + ["a"] * max(0, min(apc, na - j * apc))
    assert interleaved_runs(frames, na, fpc, apc) == (runs_of(ids, "v"), runs_of(ids, "a"))


def test_odd_frames_keep_the_tokens_that_changed_since_the_previous_frame():
    tokens = omni_tokens(frames=2, side=4, na=4)
    video = tokens.features.clone()
    video[0, 16:] = video[0, :16] * 2.0  # frame 1 = frame 0 (same directions)
    video[0, 16 + 3] = -video[0, 3]
    video[0, 16 + 9] = torch.randn(8, dtype=torch.float64)
    tokens = with_saliency(dataclasses.replace(tokens, features=video), [1, 1, 1, 1])
    out = get("omnizip", audio_ratio=1.0, contextual_ratio=0.0, audio_per_chunk=4)(tokens)
    # no audio kept -> ratio 0.75 -> int(16 * 0.25) = 4 per frame: 3 and 9 come first
    kept = out.source[0, 16:32].ge(0).nonzero().squeeze(1).tolist()
    assert len(kept) == 4 and {3, 9} <= set(kept)


def reference_dpc(tokens: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The official dpcknn score, written as loops."""
    p = tokens.shape[0]
    normed = tokens / tokens.norm(dim=-1, keepdim=True)
    dist = [[1 - float(normed[i] @ normed[j]) for j in range(p)] for i in range(p)]
    rho = []
    for i in range(p):
        others = sorted(dist[i][j] for j in range(p) if j != i)[: min(k, p - 1)]
        rho.append(math.exp(-sum(others) / len(others)))
    scores = []
    for i in range(p):
        denser = [dist[i][j] for j in range(p) if rho[j] > rho[i]]
        delta = min(denser) if denser else max(dist[i][j] for j in range(p) if j != i)
        scores.append(delta * rho[i])
    return torch.tensor(scores, dtype=torch.float64)


def test_density_peak_scores_match_the_official_formula():
    frames = torch.randn(3, 12, 6, dtype=torch.float64)
    scores = density_peak_scores(frames)
    for f in range(3):
        assert torch.allclose(scores[f], reference_dpc(frames[f]))


def test_rebalance_matches_a_hand_computation():
    base, sizes = [0.35, 0.5, 0.6, 0.75], [10, 10, 10, 10]
    ratios = rebalance(base, sizes, target=0.6 * 40, low=0.35, high=0.75)
    # fixed: 0.35 and 0.75 chunks discard 11; others must discard 13 of their planned 11
    assert ratios[0] == 0.35 and ratios[3] == 0.75
    assert ratios[1] == pytest.approx(0.5 * 13 / 11) and ratios[2] == pytest.approx(0.6 * 13 / 11)
    assert rebalance([0.4, 0.5], [10, 10], 12.0, 0.35, 0.75) == [0.4, 0.5]  # <= 2 chunks: as is


def test_unguided_video_after_the_audio_ends_uses_video_ratio():
    tokens = with_saliency(omni_tokens(frames=6, side=2, na=4), [1, 2, 3, 4])
    out = get("omnizip", video_ratio=0.5, audio_per_chunk=4)(tokens)
    per_frame = out.source[0, :24].reshape(6, 4).ge(0).sum(dim=1).tolist()
    assert per_frame[2:] == [2, 2, 2, 2]  # int(4 * 0.5)


def test_pool_saliency_averages_frame_pairs_and_drops_the_odd_one():
    assert pool_saliency(torch.tensor([[1.0, 3.0, 5.0, 7.0, 100.0]])).tolist() == [[2.0, 6.0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_invariants_batch_and_determinism(dtype):
    tokens = omni_tokens(frames=4, side=4, na=16, batch=3, dtype=dtype)
    before = tokens.features.clone(), tokens.audio.clone()
    method = get("omnizip", audio_per_chunk=8)
    out = method(tokens)
    check_compression(out, tokens)
    assert out.features.dtype == dtype and not out.features.isnan().any()
    assert torch.equal(method(tokens).features, out.features)
    assert torch.equal(tokens.features, before[0]) and torch.equal(tokens.audio, before[1])
    single = out.sizes == 1  # kept, unmerged tokens are copied unchanged
    both = torch.cat([tokens.features, tokens.audio], dim=1)
    picked = torch.stack([both[b, out.positions[b]] for b in range(3)])
    assert torch.equal(picked[single], out.features[single])


def test_batch_of_one_is_independent_of_the_rest_when_retention_agrees():
    tokens = omni_tokens(frames=4, side=3, na=10, batch=2)
    attention = tokens.attention.clone()
    attention[1] = attention[0]  # same saliency -> same retention in both rows
    tokens = dataclasses.replace(tokens, attention=attention)
    out = get("omnizip", audio_per_chunk=5)(tokens)
    row = Tokens(
        features=tokens.features[1:],
        layout=tokens.layout,
        audio=tokens.audio[1:],
        attention=attention[1:],
    )
    one = get("omnizip", audio_per_chunk=5)(row)
    assert torch.equal(one.positions[0], out.positions[1])
    assert torch.allclose(one.features[0], out.features[1])


def test_bad_inputs_raise():
    tokens = omni_tokens()
    method = get("omnizip")
    with pytest.raises(ValueError, match="N \\+ Na"):
        method(dataclasses.replace(tokens, attention=tokens.attention[..., : tokens.count]))
    with pytest.raises(ValueError, match="audio"):
        method(dataclasses.replace(tokens, audio=None))
    with pytest.raises(ValueError, match="attention"):
        method(dataclasses.replace(tokens, attention=None))
    with pytest.raises(ValueError, match="width"):
        method(dataclasses.replace(tokens, audio=tokens.audio[..., :4]))
    with pytest.raises(ValueError, match="audio_ratio"):
        get("omnizip", audio_ratio=1.5)
    with pytest.raises(ValueError, match="g="):
        get("omnizip", g=-1)


def test_audio_layout_in_features_is_rejected():
    tokens = omni_tokens()
    flat = dataclasses.replace(tokens, layout=(tokens.count,))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        get("omnizip")(flat)
