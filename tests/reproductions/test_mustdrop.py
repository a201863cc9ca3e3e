"""MustDrop's parts on hand-built inputs: the window merge and the key set (encoder) and the
dual-attention filter (llm), with the answers worked out from the released `conditional_pooling`,
`custom_forward`'s layer-23 branch and `dual_attention_filter`."""

from __future__ import annotations

import pytest
import torch

import reproductions
from reproductions.image.mustdrop import MustDrop, MustDropFilter, MustDropKeys, MustDropMerge
from reproductions.interface import Tokens, check_compression

E, F = [1.0, 0.0], [0.0, 1.0]


def on_grid(features: torch.Tensor, **kwargs) -> Tokens:
    """A [CLS] + 4x4 grid batch, with a [CLS] attention the merge does not read."""
    b, n = features.shape[:2]
    return Tokens(features=features, layout=(4, 4), special=1, cls_attention=torch.zeros(b, 2, n, dtype=features.dtype), **kwargs)


def grid_row(cell2_odd: bool = True) -> torch.Tensor:
    """[CLS] + a 4x4 grid of 2-d tokens, 2x2 cells (cell c holds tokens listed in CELLS[c]):
    cell 1 all parallel (mean cosine 1), cell 2 three parallel and one orthogonal (6 of 12
    ordered pairs at 1: mean 0.5), cells 0 and 3 the four directions (mean -1/3)."""
    grid = torch.zeros(16, 2)
    directions = torch.tensor([E, F, [-1.0, 0.0], [0.0, -1.0]])
    for cell in (CELLS[0], CELLS[3]):
        grid[cell] = directions
    grid[CELLS[1]] = torch.tensor([2.0, 0.0])
    grid[CELLS[2]] = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 4.0] if cell2_odd else [4.0, 0.0]])
    return torch.cat([torch.tensor([[9.0, 9.0]]), grid])


#: the tokens of each 2x2 cell of a 4x4 grid, row-major inside the cell
CELLS = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_cells_at_threshold_merge_best_first_into_their_last_token():
    tokens = on_grid(grid_row()[None].double())
    out = MustDropMerge(threshold=0.5, window=2)(tokens)
    check_compression(out, tokens)
    # [CLS]; cell 1 (score 1) at its last token 7, cell 2 (score 0.5 >= 0.5) at 13; then the
    # tokens of cells 0 and 3 in index order (+1 for the [CLS])
    assert out.positions[0].tolist() == [0, 8, 14, 1, 2, 5, 6, 11, 12, 15, 16]
    assert torch.equal(out.features[0, 1], torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert torch.allclose(out.features[0, 2], torch.tensor([1.5, 1.0], dtype=torch.float64))
    assert out.sizes[0].tolist() == [1, 4, 4] + [1] * 8
    assert torch.equal(out.features[0, 3:], tokens.features[0, out.positions[0, 3:]])


def test_merge_weights_by_sizes_and_r_is_the_batch_minimum():
    rows = torch.stack([grid_row(), grid_row(cell2_odd=True)]).double()
    rows[1, 1 + 13] = torch.tensor([-4.0, 0.0])  # row 1's cell 2: mean cosine 0, below 0.5
    sizes = torch.ones(2, 17)
    sizes[0, 1 + 2] = 3.0  # token 2 of row 0 already stands for 3 tokens of [6, 0]
    rows[0, 1 + 2] = torch.tensor([6.0, 0.0])
    tokens = on_grid(rows, sizes=sizes)
    out = MustDropMerge(threshold=0.5, window=2)(tokens)
    check_compression(out, tokens)
    # row 1 has one cell >= 0.5, so both rows merge r = 1 cell: their best, cell 1
    assert out.count == 1 + 1 + 12
    assert out.positions[:, 1].tolist() == [8, 8]
    assert out.sizes[0, 1] == 6 and out.sizes[1, 1] == 4
    # (3 x 6 + 3 x 2) / 6 = 4: the size-weighted mean (`merge_wavg`), not the plain 3
    assert torch.allclose(out.features[0, 1], torch.tensor([4.0, 0.0], dtype=torch.float64))
    cell2 = [1 + i for i in CELLS[2]]
    assert (out.source[:, cell2] >= 2).all() and out.sizes[:, 2:].eq(1).all()


def test_no_cell_at_threshold_is_identity_and_bad_grids_raise():
    tokens = on_grid(grid_row()[None])
    out = MustDropMerge(threshold=1.01, window=2)(tokens)
    assert torch.equal(out.features, tokens.features) and out.positions[0].tolist() == list(range(17))
    with pytest.raises(ValueError, match="multiples of window"):
        MustDropMerge(window=3)(tokens)
    with pytest.raises(ValueError, match="window"):
        MustDropMerge(window=1)


def attention_rows(swap: bool = False) -> torch.Tensor:
    """(2 heads, 2 rows, 4 tokens) whose head mean is A: token totals (1.1, 0.19, 0.21, 0.1) of
    1.6, token maxima (0.6, 0.19, 0.11, 0.05); `swap` exchanges tokens 2 and 3."""
    a = torch.tensor([[0.5, 0.0, 0.10, 0.05], [0.6, 0.19, 0.11, 0.05]], dtype=torch.float64)
    if swap:
        a = a[:, [0, 1, 3, 2]]
    d = torch.tensor([[0.1, 0.0, 0.05, 0.0], [-0.2, 0.1, 0.0, 0.02]], dtype=torch.float64)
    return torch.stack([a + d, a - d])


def test_filter_drops_only_tokens_low_in_both_total_and_peak():
    x = torch.arange(8.0, dtype=torch.float64).reshape(1, 4, 2)
    tokens = Tokens(features=x, attention=attention_rows()[None], scores=torch.zeros(1, 4, dtype=torch.float64))
    # cutoff 0.125 x 1.6 = 0.2: token 1 (0.19) is low in total but peaks at 0.19 >= 0.12,
    # token 2 peaks at 0.11 < 0.12 but totals 0.21; only token 3 is low in both
    out = MustDropFilter(layers=(1,), global_threshold=0.125, individual_threshold=0.12)(tokens)
    check_compression(out, tokens)
    assert out.positions.tolist() == [[0, 1, 2]] and torch.equal(out.features, x[:, :3])
    loose = MustDropFilter(layers=(1,), global_threshold=0.125, individual_threshold=0.2)(tokens)
    assert loose.positions.tolist() == [[0, 2]]  # token 1's peak is now below too


def test_filter_drops_a_token_only_where_every_row_drops_it():
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    none = torch.zeros(2, 4, dtype=torch.float64)
    same = Tokens(features=x, attention=torch.stack([attention_rows(), attention_rows()]), scores=none)
    swapped = Tokens(features=x, attention=torch.stack([attention_rows(), attention_rows(swap=True)]), scores=none)
    method = MustDropFilter(layers=(1,), global_threshold=0.125, individual_threshold=0.12)
    assert method(same).positions.tolist() == [[0, 1, 2]] * 2
    assert method(swapped).positions.tolist() == [[0, 1, 2, 3]] * 2


def test_the_key_set_is_the_ceil_of_the_fraction_by_head_mean_cls_attention():
    # [CLS] + 9 tokens, 2 heads: head 0 favours tokens 1, 2, 3, head 1 tokens 7, 8, 9; their
    # mean ranks 8 (0.45), 2 (0.4), 5 (0.3) first; ceil(0.25 x 9) = 3 (floor or round: 2)
    heads = torch.zeros(1, 2, 10, dtype=torch.float64)
    heads[0, 0, 1:] = torch.tensor([0.5, 0.6, 0.4, 0.0, 0.3, 0.0, 0.0, 0.2, 0.0])
    heads[0, 1, 1:] = torch.tensor([0.0, 0.2, 0.0, 0.0, 0.3, 0.0, 0.55, 0.7, 0.58])
    heads[0, :, 0] = 5.0  # the [CLS] itself is never a key token
    x = torch.randn(1, 10, 3, dtype=torch.float64)
    tokens = Tokens(features=x, special=1, cls_attention=heads, sizes=torch.full((1, 10), 2.0))
    out = MustDropKeys(key_fraction=0.25)(tokens)
    check_compression(out, tokens)
    assert out.scores[0].nonzero().flatten().tolist() == [2, 5, 8]
    assert torch.equal(out.features, x) and out.sizes.eq(2).all()  # the tokens pass unchanged
    assert MustDropKeys(key_fraction=0.08)(tokens).scores[0].nonzero().flatten().tolist() == [8]  # ceil(0.72)


def test_key_tokens_survive_a_filter_that_would_drop_them():
    x = torch.arange(8.0, dtype=torch.float64).reshape(1, 4, 2)
    method = MustDropFilter(layers=(1,), global_threshold=0.125, individual_threshold=0.2)
    plain = Tokens(features=x, attention=attention_rows()[None], scores=torch.zeros(1, 4, dtype=torch.float64))
    assert method(plain).positions.tolist() == [[0, 2]]  # tokens 1 and 3 are low in both
    keyed = Tokens(features=x, attention=attention_rows()[None], scores=torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64))
    out = method(keyed)
    check_compression(out, keyed)
    assert out.positions.tolist() == [[0, 2, 3]]  # token 3 is in the key set: it stays, in order


def test_parts_stages_and_layers():
    method = reproductions.get("mustdrop")
    merge, filter_ = method.parts()
    assert (merge.stage, filter_.stage) == ("encoder", "llm") and MustDrop.stages() == ("encoder", "llm")
    assert (merge.threshold, merge.window, merge.merge_layer) == (0.8, 3, 0)
    assert filter_.decoder_layers() == (3, 7, 11, 15)  # the released pruning layers 2, 6, 10, 14 + 1
    assert merge.encoder_step(0, 577, 22) is merge and merge.encoder_step(1, 577, 22) is None
    assert merge.encoder_step(23, 577, 22) == MustDropKeys(0.08)  # CLIP-L's last layer picks the key set
    assert filter_.decoding_rows == "kept_from_read"  # the released cache cut from layer 2 on
    with pytest.raises(ValueError, match="key_layer"):
        MustDrop(key_layer=0)
    with pytest.raises(ValueError, match="layers"):
        MustDrop(layers=(7, 3))
    with pytest.raises(ValueError, match="call each of its parts"):
        method(Tokens(features=torch.randn(1, 4, 2)))
