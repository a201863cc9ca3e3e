"""Every promise of the shared interface, checked over every registered method, and over each
part of a method that acts at several stages (its `parts()`: `prunevid.projector`, ...).

The promises are listed in the README ("Use a method") and in `reproductions/interface.py`.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import reproductions
from reproductions.examples import example_tokens
from reproductions.interface import Tokens, check_compression

#: the registered method each single-stage method is (or is a part of), by its name
WHOLE = {
    type(part).name: whole
    for whole in reproductions.methods().values()
    for part in whole(**whole.example).parts()
}
METHODS = {
    type(part).name: type(part)
    for whole in reproductions.methods().values()
    if not whole.trainable
    for part in whole(**whole.example).parts()
}
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def build(cls, **override):
    return cls(**{**cls.example, **override})


def has_keep(cls) -> bool:
    return any(f.name == "keep" for f in dataclasses.fields(cls))


def tokens_for(cls, **kwargs) -> Tokens:
    return example_tokens(cls, **kwargs)


@pytest.fixture(params=sorted(METHODS))
def cls(request):
    return METHODS[request.param]


def methods_where(declares) -> pytest.MarkDecorator:
    """Parametrize `cls` over the methods whose declarations make a promise apply (cases built
    from what each method declares, not generated and then skipped)."""
    names = sorted(name for name, cls in METHODS.items() if declares(cls))
    return pytest.mark.parametrize("cls", [METHODS[name] for name in names], ids=names)


def test_registry_metadata(cls):
    assert cls.name and cls.stage in ("encoder", "projector", "llm", "cache")
    assert set(cls.modality) <= {"image", "video", "audio"} and cls.modality
    assert set(cls.mechanisms) <= {"transformation", "similarity", "attention", "query"}
    assert cls.__doc__ and len(cls.__doc__.strip()) > 40, "document what the method computes"
    whole = WHOLE[cls.name]
    assert reproductions.get(whole.name, **whole.example) == whole(**whole.example)
    assert cls in [type(part) for part in whole(**whole.example).parts()]
    assert cls.paper == whole.paper and cls.stage in whole.stages()


def test_the_grid_is_needed_exactly_where_declared(cls):
    """`grid = True` methods refuse tokens without a layout, naming it; the others run on them
    (the integration offers such methods only where a model's spans have grids)."""
    tokens = dataclasses.replace(tokens_for(cls), layout=None)
    if cls.grid:
        with pytest.raises(ValueError, match="layout"):
            build(cls)(tokens)
    else:
        check_compression(build(cls)(tokens), tokens)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_output_shape_dtype_and_invariants(cls, dtype):
    tokens = tokens_for(cls, dtype=dtype)
    out = build(cls)(tokens)
    expected = build(cls).output_count(tokens)
    if expected is not None:
        assert out.count == expected
    assert out.features.dtype == dtype and out.features.device == tokens.features.device
    assert out.features.shape[0] == tokens.batch
    assert out.features.shape[-1] == build(cls).output_width(tokens.features.shape[-1])
    assert not out.features.isnan().any()
    check_compression(out, tokens)
    if cls.copies:  # output tokens standing for one input token are that token, unchanged
        single = out.sizes == 1
        if tokens.audio is None:
            picked = torch.stack([tokens.features[b, out.positions[b]] for b in range(tokens.batch)])
            assert torch.equal(picked[single], out.features[single])


@methods_where(lambda cls: tokens_for(cls).special > 0)
def test_special_tokens_survive(cls):
    tokens = tokens_for(cls)
    out = build(cls)(tokens)
    slots = out.source[:, : tokens.special]
    assert (slots >= 0).all()
    for b in range(tokens.batch):
        assert (out.sizes[b, slots[b]] == 1).all()
        assert torch.equal(out.features[b, slots[b]], tokens.features[b, : tokens.special])


@methods_where(lambda cls: has_keep(cls) or cls.identity is not None)
def test_budget_that_keeps_everything_is_identity(cls):
    tokens = tokens_for(cls)
    method = build(cls, keep=tokens.count) if has_keep(cls) else build(cls, **cls.identity)
    out = method(tokens)
    assert torch.equal(out.features, tokens.features)
    assert torch.equal(out.source[0], torch.arange(tokens.count))
    assert torch.equal(out.positions[0], torch.arange(tokens.count))


def test_deterministic(cls):
    tokens = tokens_for(cls)
    a, b = build(cls)(tokens), build(cls)(tokens)
    assert torch.equal(a.features, b.features) and torch.equal(a.source, b.source)


@methods_where(lambda cls: cls.batch_independent)  # the others' official statistic spans the batch
def test_batched_equals_one_by_one(cls):
    tokens = tokens_for(cls, batch=3, dtype=torch.float64)
    out = build(cls)(tokens)
    for b in range(tokens.batch):
        row = Tokens(
            **{
                f.name: (v[b : b + 1] if isinstance(v, torch.Tensor) else v)
                for f in dataclasses.fields(Tokens)
                for v in [getattr(tokens, f.name)]
            }
        )
        one = build(cls)(row)
        assert torch.allclose(one.features[0], out.features[b], atol=1e-10)
        assert torch.equal(one.source[0], out.source[b])
        assert torch.equal(one.positions[0], out.positions[b])


def test_inputs_are_not_modified(cls):
    tokens = tokens_for(cls)
    before = {f.name: getattr(tokens, f.name) for f in dataclasses.fields(Tokens)}
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in before.items()}
    build(cls)(tokens)
    for name, value in before.items():
        now = getattr(tokens, name)
        assert (torch.equal(now, value) if isinstance(value, torch.Tensor) else now == value), name


def test_missing_signal_is_named(cls):
    for signal in cls.needs:
        tokens = dataclasses.replace(tokens_for(cls), **{signal: None})
        with pytest.raises(ValueError, match=signal):
            build(cls)(tokens)


@methods_where(has_keep)
@pytest.mark.parametrize("keep", [0, -3, 10_000, math.nan, 0.0, 1.5, math.inf])
def test_bad_budget_raises(cls, keep):
    tokens = tokens_for(cls)
    with pytest.raises(ValueError, match="keep"):
        build(cls, keep=keep)(tokens)


def test_bad_shapes_raise(cls):
    tokens = tokens_for(cls)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        build(cls)(dataclasses.replace(tokens, features=tokens.features[0]))
    bad = tuple(s + 1 for s in tokens.layout)
    with pytest.raises(ValueError, match="layout"):
        build(cls)(dataclasses.replace(tokens, layout=bad))


@methods_where(lambda cls: cls.reads_features)
def test_features_with_nan_raise(cls):
    tokens = tokens_for(cls)
    nan = tokens.features.clone()
    nan[0, -1, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        build(cls)(dataclasses.replace(tokens, features=nan))


@methods_where(lambda cls: not cls.reads_features)
def test_a_method_that_reads_no_features_picks_the_same_whatever_they_hold(cls):
    """`reads_features = False`: a pure selection by its signals, so other features (NaN and
    inf among them: not scanned) change no position and reach the output as they are."""
    assert cls.copies
    tokens = tokens_for(cls)
    other = torch.randn_like(tokens.features) * 100
    other[0, -1, 0], other[-1, 0, -1] = math.nan, math.inf
    first, second = build(cls)(tokens), build(cls)(dataclasses.replace(tokens, features=other))
    assert torch.equal(first.positions, second.positions)
    kept = torch.gather(other, 1, second.positions[..., None].expand(-1, -1, other.shape[-1]))
    assert torch.equal(second.features.nan_to_num(), kept.nan_to_num())


@methods_where(lambda cls: cls.attention_heads == "max")
def test_head_max_attention_is_what_a_head_max_method_reads(cls):
    """A method that declares `attention_heads = "max"` is handed the head maximum inside
    transformers: on it, the method returns exactly what it returns on every head's map."""
    tokens = tokens_for(cls, dtype=torch.float64)
    reduced = dataclasses.replace(tokens, attention=tokens.attention.amax(dim=1, keepdim=True))
    full, one = build(cls)(tokens), build(cls)(reduced)
    assert torch.equal(full.positions, one.positions) and torch.equal(full.features, one.features)


def test_attention_heads_declarations_are_known():
    assert {cls.attention_heads for cls in METHODS.values()} <= {"each", "max"}
    assert all(cls.attention_heads == "each" or "attention" in cls.needs for cls in METHODS.values())
