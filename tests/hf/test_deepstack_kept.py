"""The llm stage before Qwen3-VL's last DeepStack layer: DeepStack adds each visual token's
features after decoder layers 0 and 1 of the tiny model; once a step has dropped or merged rows,
each kept visual row gets the features of the token it stands at (a merged row: the mean of its
members'), padding and text rows none. Each case is checked against the decoder layers run by
hand on the kept rows, and against the wrong placements it must not equal."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hf_helpers import LastRowTopK, causal_mask, language_model_inputs, tiny
from torch import Tensor

from reproductions import Compression, Method, Tokens, get
from reproductions.hf import compress, why_unsupported
from reproductions.video.framefusion import FrameFusion


@dataclass
class MergeThenDrop(Method):
    """Test-only llm method of two steps before DeepStack's last layer: FrameFusion's merge of
    the two most similar tokens (every frame-1 token counts as similar) before layer 0, then the
    4 tokens the last prompt row attends to most before layer 1; each step reads its own layer's
    attention."""

    stage = "llm"
    modality = ("video",)
    needs = ("attention",)
    grid = True
    attention_from = "own"

    def decoder_layers(self) -> tuple[int, ...]:
        return (0, 1)

    def step(self, index: int, count: int) -> Method:
        return FrameFusion(cost=0.75, similarity=-1.0, layer=0) if index == 0 else LastRowTopK(keep=4, layer=1)

    def compress(self, tokens: Tokens) -> Compression:
        raise NotImplementedError("runs as its steps")


def row_zero(family: str, attn: str) -> tuple[torch.nn.Module, dict]:
    """The tiny model and its first prompt (unpadded), with its own media only."""
    model, inputs = tiny(family, attn)
    key = "video" if "video" in family else "image"
    grid = inputs[f"{key}_grid_thw"][:1]
    pixels = "pixel_values_videos" if key == "video" else "pixel_values"
    one = {k: v[:1] for k, v in inputs.items() if k != pixels}
    one[pixels] = inputs[pixels][: int(grid.prod())]
    return model, one


def hand_run(model: torch.nn.Module, one: dict, method: Method, wrong: str | None = None) -> tuple[Tensor, list[int]]:
    """The logits of the decoder layers run by hand: before each step's layer K, the step on the
    media rows left (layer K's own attention, the last rows' `text`); from then on only the kept
    rows run. After layer j < 2, DeepStack's features: W @ features, W (rows, original tokens)
    each kept row's weights over the tokens it stands for. `wrong`: "skip" (none once rows
    changed), "in_order" (the visual rows left take the first features in order), "anchor" (a
    merged row takes its own token's only). Also returns the media count after each step."""
    lm = model.model.language_model
    got = language_model_inputs(model, one)
    h, visual = got["inputs_embeds"], got["visual_pos_masks"][0]
    n = h.shape[1]
    cos, sin = lm.rotary_emb(h, got["position_ids"])
    full = [torch.zeros(n, s.shape[-1]).index_put((visual.nonzero()[:, 0],), s) for s in got["deepstack_visual_embeds"]]
    grid = (one.get("video_grid_thw", one.get("image_grid_thw"))[0] // torch.tensor([1, 2, 2])).tolist()
    layout = tuple(grid) if "video_grid_thw" in one else tuple(grid[1:])
    ks = method.decoder_layers() or (method.layer,)
    kept, weights, counts = torch.arange(n), torch.eye(n), []
    for j, layer in enumerate(lm.layers):
        pe, mask = (cos[:, kept], sin[:, kept]), causal_mask(lm, h, None)
        if j in ks:
            _, attention = layer.self_attn(layer.input_layernorm(h), position_embeddings=pe, attention_mask=mask)
            media = visual[kept].nonzero()[:, 0]
            rows = torch.arange(int(media.max()) + 1, len(kept))
            tokens = Tokens(features=h[:, media], attention=attention[:, :, rows][..., media], text=h[:, rows],
                            layout=layout if j == ks[0] else None)
            comp = method.step(ks.index(j), int(visual.sum()))(tokens)
            counts.append(comp.count)
            text = torch.tensor([p for p in range(len(kept)) if p not in set(media.tolist())], dtype=torch.long)
            members = (comp.source[0][None] == torch.arange(comp.count)[:, None]).float()
            if wrong == "anchor":
                members = torch.eye(len(media))[comp.positions[0]]
            mixed = members / members.sum(1, keepdim=True) @ weights[media]
            where = torch.cat([text, media[comp.positions[0]]])
            order = where.argsort()
            h = torch.cat([h[0, text], comp.features[0]])[order][None]
            weights, kept = torch.cat([weights[text], mixed])[order], kept[where[order]]
            pe, mask = (cos[:, kept], sin[:, kept]), causal_mask(lm, h, None)
        h = layer(h, attention_mask=mask, position_embeddings=pe)
        if j < len(full):
            add, rows = weights @ full[j], (weights @ visual.float()) > 0
            if wrong == "skip" and len(kept) < n:
                continue
            if wrong == "in_order":
                add = torch.zeros_like(add).index_put((rows.nonzero()[:, 0],), full[j][visual][: int(rows.sum())])
            h = h.clone()
            h[0, rows] = h[0, rows] + add[rows]
    return model.lm_head(lm.norm(h)), counts


CASES = [
    ("qwen3_vl", get("pdrop", layers=(1, 2), ratio=0.5), ("skip", "in_order")),
    ("qwen3_vl_video", get("framefusion", cost=0.75, similarity=-1.0, layer=0), ("skip", "anchor")),
    ("qwen3_vl_video", MergeThenDrop(), ("skip", "in_order", "anchor")),
]


@pytest.mark.parametrize("family,method,wrongs", CASES, ids=["pdrop", "framefusion", "merge_then_drop"])
def test_kept_rows_get_the_deepstack_features_of_their_tokens(family, method, wrongs):
    """Equal to the hand run (eager 1e-5, SDPA 1e-4); the hand run with DeepStack skipped or
    misplaced differs by far more."""
    model, one = row_zero(family, "eager")
    assert why_unsupported(model, method) is None
    media = int(one["mm_token_type_ids"].bool().sum())
    with torch.no_grad():
        expected, counts = hand_run(model, one, method)
        assert counts[0] < media  # the first step, before DeepStack's last layer, changed rows
        for wrong in wrongs:
            other, _ = hand_run(model, one, method, wrong)
            assert (other - expected).abs().max() > 1e-2, wrong
        for attn, tol in (("eager", 1e-5), ("sdpa", 1e-4)):
            model, one = row_zero(family, attn)
            with compress(model, method) as report:
                logits = model(**one).logits
            assert [r.media_after[0] for r in report.records] == counts
            torch.testing.assert_close(logits, expected, rtol=0, atol=tol)


def split_rows(inputs: dict, key: str) -> list[dict]:
    """Each prompt of a tiny batch on its own, with its own media."""
    grids = inputs[f"{key}_grid_thw"]
    pixels = "pixel_values_videos" if key == "video" else "pixel_values"
    sizes = grids.prod(-1).tolist()
    return [
        {**{k: v[r : r + 1] for k, v in inputs.items() if k != pixels}, pixels: part}
        for r, part in enumerate(inputs[pixels].split(sizes))
    ]


@pytest.mark.parametrize("family,method,wrongs", CASES, ids=["pdrop", "framefusion", "merge_then_drop"])
def test_a_padded_batch_equals_its_rows_run_alone(family, method, wrongs):
    """Row 1 of the tiny batch is left-padded: in the batch, each row's visual rows get their own
    tokens' features (DeepStack lists the batch's visual tokens row after row)."""
    model, inputs = tiny(family, "eager")
    with torch.no_grad(), compress(model, method):
        batch = model(**inputs).logits
        alone = [model(**row).logits for row in split_rows(inputs, "video" if "video" in family else "image")]
    for r, logits in enumerate(alone):  # both rows keep as many media tokens: the same padding
        assert logits.shape[1] == batch.shape[1]
        torch.testing.assert_close(batch[r], logits[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,method", [
    ("qwen3_vl", get("pdrop", layers=(1, 2), ratio=1.0)),
    ("qwen3_vl_video", get("framefusion", cost=1.0, layer=0)),
    ("qwen3_vl_video", get("fitprune", recipe=((0, 0), (1, 0)), reference=None)),
])
def test_keeping_every_token_is_bit_identical(family, method):
    model, inputs = tiny(family)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with compress(model, method):
            assert torch.equal(model(**inputs).logits, logits)
            assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), tokens)


def test_the_deepstack_override_leaves_with_the_context():
    """Installed as an instance attribute of the language model for the context only, also when
    the body raises; the model after it is the model before it."""
    model, inputs = tiny("qwen3_vl")
    lm = model.model.language_model
    method = get("pdrop", layers=(1, 2), ratio=0.5)
    with torch.no_grad():
        logits = model(**inputs).logits
        with compress(model, method):
            assert "_deepstack_process" in vars(lm)
        assert "_deepstack_process" not in vars(lm)
        with pytest.raises(RuntimeError), compress(model, method):
            raise RuntimeError("body")
        assert "_deepstack_process" not in vars(lm)
        assert torch.equal(model(**inputs).logits, logits)
    with compress(model, get("pdrop", layers=(2, 3), ratio=0.5)):  # after DeepStack: nothing to follow
        assert "_deepstack_process" not in vars(lm)


def test_the_cache_stage_before_the_last_deepstack_layer_is_still_refused():
    model, _ = tiny("qwen3_vl_video")
    assert "cache stage does not follow" in why_unsupported(model, get("dycoke_cache", layer=1))
    assert why_unsupported(model, get("dycoke_cache", layer=2)) is None
