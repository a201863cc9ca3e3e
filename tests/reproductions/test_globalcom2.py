"""GlobalCom²: the thumbnail's [CLS] scores share the budget among the crops, and each crop
keeps its tokens by its own scores plus the thumbnail's resized onto it (official
`llava_arch.py`: `compress_thumbnail`, `generate_scale_for_crop_features`,
`interpolate_and_split_cls_attn_scores`, `select_topk_crop_features`)."""

from __future__ import annotations

import math

import pytest
import torch

from reproductions import Tokens
from reproductions.image.globalcom2 import GlobalCom2
from reproductions.ops import anyres_places

# A 4 x 4 thumbnail and a 1 x 2 grid of 4 x 4 crops, unpadded to tiled rows 1-2 (8 columns),
# a newline after each row: tokens 0-15 the thumbnail, 16-23 row 1, 24 a newline, 25-32 row 2,
# 33 a newline. Thumbnail score a_c + b_r with a = (5, 4.5, 1.5, 1), b = (.3, .2, .1, 0).
A, B = (5.0, 4.5, 1.5, 1.0), (0.3, 0.2, 0.1, 0.0)
PLACES = anyres_places((4, 4), (1, 2), rows=(1, 3))


def scores_of(thumbnail: list[float], crop_rows: list[list[float]]) -> torch.Tensor:
    """(N,) scores in span order: the thumbnail, then each crop row and a 0 for its newline."""
    return torch.tensor(thumbnail + [s for row in crop_rows for s in [*row, 0.0]], dtype=torch.float64)


def tokens_with(scores: torch.Tensor, places: torch.Tensor = PLACES) -> Tokens:
    """One image whose two heads' mean is `scores` (the heads differ: the mean is what counts),
    each token's feature its own index."""
    n = len(scores)
    heads = torch.stack([scores + 0.5, scores - 0.5])[None]
    features = torch.arange(n, dtype=torch.float64)[None, :, None].expand(1, n, 2).clone()
    return Tokens(features=features, cls_attention=heads, anyres=places[None])


THUMBNAIL = [a + b for b in B for a in A]
# crop 0 (columns 0-3): a constant own score, so its global share alone ranks it; crop 1
# (columns 4-7): one token (row 2, column 7) stands out on its own score
CROPS = [[2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 1.0]]


def test_thumbnail_shares_the_budget_and_each_crop_mixes_its_own_and_the_global_scores():
    out = GlobalCom2(ratio=0.5)(tokens_with(scores_of(THUMBNAIL, CROPS)))
    # thumbnail: int(16 * 0.5) = 8 best, in score order: 5.3 (0), 5.2 (4), 5.1 (8), 5.0 (12),
    # 4.8 (1), 4.7 (5), 4.6 (9), 4.5 (13).
    # shares: columns 0-1 of the thumbnail cover crop 0 (sum 4 * 9.5 + 2 * 0.6 = 39.2), columns
    # 2-3 crop 1 (4 * 2.5 + 1.2 = 11.2): softmax((0, -28) / 10) = (0.94267, 0.05733), so the
    # ratios are 0.5 * (1 + p - 0.5) = (0.72134, 0.27866) and crop 0 keeps int(8 * 0.72134) = 5,
    # crop 1 int(8 * 0.27866) = 2.
    # global scores: the thumbnail resized bilinearly (align_corners=False) from 4 x 4 to the
    # unpadded 2 x 8: rows average thumbnail rows (0, 1) -> +0.25 and (2, 3) -> +0.05; columns
    # sample a at 0, 0.25, 0.75, ..., 3.25 (clamped): 5, 4.875, 4.625, 3.75 | 2.25, 1.375,
    # 1.125, 1. Crop 0's own scores are constant, so its 5 best global scores win: 5.25 (16),
    # 5.125 (17), 5.05 (25), 4.925 (26), 4.875 (18). Crop 1: its own scores normalised are
    # one-hot at token 32 (+1, above any normalised global score), then the best global score,
    # 2.5 (20). Then everything in span order, newlines 24 and 33 kept.
    expected = [0, 4, 8, 12, 1, 5, 9, 13] + [16, 17, 18, 20, 24, 25, 26, 32, 33]
    assert out.positions[0].tolist() == expected
    assert out.features[0, :, 0].tolist() == expected
    assert out.count == 17


def test_the_shares_follow_the_official_softmax_and_clip_at_one():
    method = GlobalCom2(ratio=0.5)
    thumbnail = torch.tensor(THUMBNAIL, dtype=torch.float64).view(4, 4)
    p = 1 / (1 + math.exp(-2.8))
    assert method.shares(thumbnail, (1, 2)) == pytest.approx([0.5 * (0.5 + p), 0.5 * (1.5 - p)], abs=1e-8)
    # a 2 x 2 crop grid: regions are the thumbnail's quadrants; one of them dominates, and at
    # ratio 0.9 its share 0.9 * (1 + 1 - 0.25) is clipped to 1 (the crop is kept whole)
    quadrant = torch.zeros(4, 4, dtype=torch.float64)
    quadrant[2:, :2] = 100.0
    shares = GlobalCom2(ratio=0.9).shares(quadrant, (2, 2))
    assert shares[2] == 1.0 and shares[0] == shares[1] == shares[3] == pytest.approx(0.9 * 0.75)
    # a 5-wide thumbnail over 2 crop columns: regions are columns 0-1 and 2-4 (the last takes
    # the rest), so a score in column 4 counts for the second crop
    last = torch.zeros(5, 5, dtype=torch.float64)
    last[:, 4] = 100.0
    assert GlobalCom2(ratio=0.5).shares(last, (1, 2))[1] > 0.74


def test_a_whole_crop_is_kept_where_its_share_reaches_one():
    scores = scores_of(THUMBNAIL, CROPS)
    out = GlobalCom2(ratio=1.0)(tokens_with(scores))
    # shares (1.0 clipped, 1 * (0.5 + 0.05733)): all 8 of crop 0, int(8 * 0.55733) = 4 of crop 1
    crop0 = [16, 17, 18, 19, 25, 26, 27, 28]
    assert set(crop0) <= set(out.positions[0].tolist())
    assert out.count == 16 + 8 + 4 + 2


def test_an_image_without_crops_is_kept_whole():
    places = anyres_places((4, 4))  # the thumbnail and its newline (LLaVA-NeXT's single view)
    tokens = tokens_with(torch.rand(17, dtype=torch.float64), places)
    out = GlobalCom2()(tokens)
    assert out.positions[0].tolist() == list(range(17))


def test_the_temperature_flattens_the_allocation():
    crop0 = {16, 17, 18, 19, 25, 26, 27, 28}
    for temperature, counts in ((10.0, (6, 2)), (1e9, (4, 4))):  # int(8 * 0.6) = 4 when flat
        kept = set(GlobalCom2(ratio=0.6, temperature=temperature)(tokens_with(scores_of(THUMBNAIL, CROPS))).positions[0].tolist())
        assert (len(kept & crop0), len(kept - crop0) - 9 - 2) == counts


def test_a_batch_runs_image_by_image_and_refuses_images_of_different_counts():
    one = tokens_with(scores_of(THUMBNAIL, CROPS))
    other = scores_of([a + b for b in B for a in reversed(A)], CROPS)  # crop 1 wins now
    two = Tokens(
        features=one.features.expand(2, -1, -1),
        cls_attention=torch.cat([one.cls_attention, tokens_with(other).cls_attention]),
        anyres=PLACES[None].expand(2, -1, -1),
    )
    out = GlobalCom2(ratio=0.5)(two)  # 8 + 5 + 2 + 2 and 8 + 2 + 5 + 2 tokens
    assert out.positions[0].tolist() == GlobalCom2(ratio=0.5)(one).positions[0].tolist()
    assert out.positions[1].tolist() == GlobalCom2(ratio=0.5)(tokens_with(other)).positions[0].tolist()
    assert out.positions[1, 8:].tolist() != out.positions[0, 8:].tolist()
    single = torch.cat([anyres_places((4, 4), newline=False), torch.full((18, 3), -1)])
    uneven = Tokens(features=two.features, cls_attention=two.cls_attention, anyres=torch.stack([PLACES, single]))
    with pytest.raises(ValueError, match="one image at a time"):
        GlobalCom2(ratio=0.5)(uneven)


@pytest.mark.parametrize(
    "places, match",
    [
        (PLACES.index_fill(0, torch.tensor([3]), 0), "thumbnail"),
        (PLACES.index_copy(0, torch.tensor([20]), torch.tensor([[1, 1, 2]])), "rectangle"),
        (torch.where(PLACES[:, :1] == 0, -1, PLACES), "no thumbnail"),
        (PLACES.index_copy(0, torch.tensor([0]), torch.tensor([[2, 0, 0]])), "views"),
    ],
    ids=["thumbnail-hole", "crop-twice", "no-thumbnail", "bad-view"],
)
def test_places_that_describe_no_anyres_image_are_refused(places, match):
    with pytest.raises(ValueError, match=match):
        GlobalCom2()(tokens_with(scores_of(THUMBNAIL, CROPS), places))


def test_float_places_and_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="integer"):
        GlobalCom2()(tokens_with(scores_of(THUMBNAIL, CROPS), PLACES.double()))
    for bad in ({"ratio": 0.0}, {"ratio": 1.5}, {"temperature": 0.0}, {"temperature": math.inf}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GlobalCom2(**bad)


def test_at_budget_sets_the_ratio_to_the_nearest_count():
    tokens = tokens_with(scores_of(THUMBNAIL, CROPS))
    method = GlobalCom2.at_budget(17, tokens)
    assert method(tokens).count == 17 and method.temperature == 10.0
