"""dycoke (TTM): which frames are reduced, against which frame, and what they keep."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression
from reproductions.video.dycoke import pruned_frames


def orthogonal_video(frames: int, per_frame: int = 4) -> torch.Tensor:
    """(1, T * P, T * P) features: every token its own basis vector (all cosines 0)."""
    n = frames * per_frame
    return torch.eye(n, dtype=torch.float64).unsqueeze(0)


def test_pair_keeps_the_tokens_least_similar_to_the_previous_frame():
    x = orthogonal_video(2)
    x[0, 4] = x[0, 0]  # frame 1 position 0 repeats frame 0 position 0
    x[0, 6] = x[0, 2]  # frame 1 position 2 repeats frame 0 position 2
    tokens = Tokens(features=x, layout=(2, 2, 2))
    out = get("dycoke", prune_ratio=0.5)(tokens)
    assert out.positions[0].tolist() == [0, 1, 2, 3, 5, 7]  # frame 0 whole, positional order
    assert torch.equal(out.features, x[:, [0, 1, 2, 3, 5, 7]])
    check_compression(out, tokens)


def test_second_pass_compares_frame_i_plus_2_with_frame_i():
    # T = 6: pairs (0,1) (2,3) (4,5); pass 2 for i = 0 only (range(0, 2, 4)): frame 2 vs frame 0
    x = orthogonal_video(6)
    x[0, 8] = x[0, 0]  # frame 2 pos 0 repeats frame 0 pos 0 -> dropped by pass 2
    x[0, 9] = x[
        0, 5
    ]  # frame 2 pos 1 repeats frame 1 pos 1: irrelevant, frame 1 is not its reference
    tokens = Tokens(features=x, layout=(6, 2, 2))
    out = get("dycoke", prune_ratio=0.75)(tokens)  # keeps int(0.25 * 4) = 1 token per reduced frame
    frame2 = [i - 8 for i in out.positions[0].tolist() if 8 <= i < 12]
    # against frame 0: position 0 has cosine 1, positions 1..3 cosine 0 -> the lowest index, 1
    # (against frame 1 it would have dropped position 1 and kept position 0)
    assert frame2 == [1]
    whole = [i for i in out.positions[0].tolist() if i < 4 or 16 <= i < 20]
    assert whole == [0, 1, 2, 3, 16, 17, 18, 19]  # frames 0 and 4 stay whole


def test_reference_frames_follow_the_paper_not_the_released_off_by_one():
    assert pruned_frames(8) == {1: 0, 3: 2, 5: 4, 7: 6, 2: 0}
    assert pruned_frames(9)[2] == 0 and 8 not in pruned_frames(9)  # odd last frame stays whole
    assert pruned_frames(10) == {1: 0, 2: 0, 3: 2, 5: 4, 6: 4, 7: 6, 9: 8}


@pytest.mark.parametrize("frames", range(1, 10))
def test_short_and_odd_clips_work_and_count_matches(frames):
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(1, 1 + frames * 9, 5, generator=g)
    tokens = Tokens(features=x, layout=(frames, 3, 3), special=1)
    method = get("dycoke", prune_ratio=0.7)
    out = method(tokens)
    kept = int((1 - 0.7) * 9)
    assert out.count == 1 + frames * 9 - len(pruned_frames(frames)) * (9 - kept)
    assert out.count == method.output_count(tokens)
    assert frames < 2 or out.count < tokens.count
    check_compression(out, tokens)


def test_bad_ratio():
    with pytest.raises(ValueError, match="prune_ratio"):
        get("dycoke", prune_ratio=1.0)
