"""dycoke_cache: per-step pruning decided by the change of the attention scores."""

from __future__ import annotations

import pytest
import torch

from reproductions import Tokens, get
from reproductions.interface import check_compression


def step(scores: list[float], heads: int = 2, rows: int = 1, batch: int = 1) -> Tokens:
    """Tokens whose last query row pays `scores` in every head; earlier rows are noise."""
    n = len(scores)
    keys = torch.arange(batch * n * 3, dtype=torch.float32).reshape(batch, n, 3)
    g = torch.Generator().manual_seed(n)
    attention = torch.rand(batch, heads, rows, n, generator=g)
    attention[:, :, -1] = torch.tensor(scores)
    return Tokens(features=keys, attention=attention)


SCORES = [0.1, 0.4, 0.05, 0.3, 0.12, 0.03]


def test_first_step_keeps_the_most_attended_entries_of_the_last_row():
    method = get("dycoke_cache", prune_ratio=0.5)
    tokens = step(SCORES, rows=3)
    out = method(tokens)
    assert out.positions[0].tolist() == [1, 3, 4]  # top int(6 * 0.5) = 3, positional order
    assert torch.equal(out.features, tokens.features[:, [1, 3, 4]])
    assert out.source[0].tolist() == [-1, 0, -1, 1, 2, -1]
    check_compression(out, tokens)


def test_head_mean_decides():
    tokens = step(SCORES, heads=2)
    attention = tokens.attention.clone()
    attention[0, 0, -1] = torch.tensor([0.9, 0.0, 0.0, 0.0, 0.0, 0.0])
    attention[0, 1, -1] = torch.tensor([0.0, 0.5, 0.45, 0.0, 0.0, 0.3])
    out = get("dycoke_cache", prune_ratio=0.5)(
        Tokens(features=tokens.features, attention=attention)
    )
    assert out.positions[0].tolist() == [0, 1, 2]  # means 0.45, 0.25, 0.225, 0, 0, 0.15


def test_similar_step_prunes_nothing_and_a_changed_step_prunes_again():
    method = get("dycoke_cache", prune_ratio=0.5, threshold=0.9)
    assert method(step(SCORES)).count == 3
    same = method(step([s * 1.01 for s in SCORES]))  # cosine 1 >= 0.9: attend to everything
    assert same.count == 6 and same.source[0].tolist() == list(range(6))
    changed = method(step(list(reversed(SCORES))))  # cosine well under 0.9
    assert changed.positions[0].tolist() == [1, 2, 4]


def test_reset_forgets_the_previous_scores():
    method = get("dycoke_cache", prune_ratio=0.5)
    method(step(SCORES))
    assert method.output_count(step(SCORES)) is None  # now depends on the scores
    method.reset()
    assert method.output_count(step(SCORES)) == 3
    assert method(step(SCORES)).count == 3  # pruned again, as on a first step


def test_a_new_span_without_reset_raises():
    method = get("dycoke_cache")
    method(step(SCORES))
    with pytest.raises(ValueError, match="reset"):
        method(step(SCORES + [0.2]))


def test_batch_prunes_when_any_row_changed():
    method = get("dycoke_cache", prune_ratio=0.5)
    first = step(SCORES, batch=2)
    method(first)
    attention = first.attention.clone()
    attention[1, :, -1] = torch.tensor(list(reversed(SCORES)))  # only row 1 changed
    out = method(Tokens(features=first.features, attention=attention))
    assert out.count == 3
    assert out.positions.tolist() == [[1, 3, 4], [1, 2, 4]]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"layer": 0}, "layer"),
        ({"prune_ratio": 1.0}, "prune_ratio"),
        ({"threshold": 2}, "threshold"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        get("dycoke_cache", **params)


def test_values_are_scanned_once_per_generate_and_the_read_row_at_every_step():
    method = get("dycoke_cache", prune_ratio=0.5)
    bad_keys = step(SCORES)
    bad_keys.features[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="features contain NaN"):
        method(bad_keys)  # the first step after reset checks every value
    method.reset()
    method(step(SCORES))
    later = step(SCORES)
    later.attention[0, 1, -1, 3] = float("inf")
    with pytest.raises(ValueError, match="last row"):
        method(later)  # later steps check the scores they read
    unchanged = step(SCORES)
    same = method(unchanged)
    assert same.count == 6 and same.features is unchanged.features  # read-only, not copied
    with pytest.raises(ValueError, match="attention has shape"):
        method(Tokens(features=step(SCORES).features, attention=torch.rand(1, 2, 1, 5)))
