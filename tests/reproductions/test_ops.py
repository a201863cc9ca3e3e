"""Shared operations of `reproductions.ops` that several methods rest on."""

from __future__ import annotations

import pytest
import torch

from reproductions import ops


@pytest.mark.parametrize("n", [1, 7, 8, 29])
def test_a_self_similarity_built_in_blocks_is_the_whole_product(n, monkeypatch):
    """`cosine_matrix(a)` multiplies the blocks on and above the diagonal and mirrors the rest:
    every entry is the cosine of its two rows, and the matrix is exactly symmetric (DivPrune
    reads each column along its row)."""
    monkeypatch.setattr(ops, "SELF_BLOCK", 8)
    a = torch.randn(2, n, 16, dtype=torch.float64)
    unit = a / a.norm(dim=-1, keepdim=True)
    out = ops.cosine_matrix(a)
    torch.testing.assert_close(out, unit @ unit.transpose(-1, -2), rtol=0, atol=1e-12)
    assert torch.equal(out, out.transpose(-1, -2))
