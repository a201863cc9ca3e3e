"""FitPrune inside transformers: layer L's deletions, ranked by layer L's attention from the media
rows and the rows after them, run before layer L + 1; layers <= L see every token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from hf_helpers import causal_mask, language_model_inputs

from reproductions import Compression, Method, Tokens, get
from reproductions.hf import compress
from reproductions.hf.tiny import BUILDERS, IMAGE
from reproductions.ops import identity


def test_fitprune_equals_its_deletions_run_by_hand():
    """Row 1 of the tiny LLaVA batch, 3 tokens deleted after layer 0 and 2 after layer 1: each
    layer's attention (eager weights) is reduced by the head max; cross = its sum over the rows
    after the last media token, self = its sum over the media rows / their count; the lowest
    cross x self go before the next layer. The queries are scaled up so that the attention is
    peaked: the tiny model's near-uniform attention ranks by position alone."""
    method = get("fitprune", recipe=((0, 3), (1, 2)), reference=None)
    eager, inputs = BUILDERS["llava"](attn="eager")  # its own copy: the weights change
    one = {key: value[1:] for key, value in inputs.items()}
    lm = eager.model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.q_proj.weight.mul_(40)
        h = language_model_inputs(eager, one)["inputs_embeds"]
        kept = torch.arange(h.shape[1])
        cos, sin = lm.rotary_emb(h, kept[None])
        media = set((one["input_ids"][0] == IMAGE).nonzero()[:, 0].tolist())
        for layer, delete in zip(lm.layers, (3, 2, 0, 0), strict=True):
            pe, mask = (cos[:, kept], sin[:, kept]), causal_mask(lm, h, kept[None])
            if delete:
                _, weights = layer.self_attn(layer.input_layernorm(h), position_embeddings=pe, attention_mask=mask)
                top = weights[0].amax(0)
                is_media = torch.tensor([int(j) in media for j in kept])
                where = is_media.nonzero()[:, 0]
                after = top[int(where.max()) + 1 :, where].sum(0)
                own = top[where][:, where].sum(0) / len(where)
                gone = where[(after * own).argsort()[:delete]]
            h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=kept[None])
            if delete:
                stay = torch.ones(len(kept), dtype=torch.bool)
                stay[gone] = False
                h, kept = h[:, stay], kept[stay]
        expected = eager.lm_head(lm.norm(h))
    with compress(eager, method) as report, torch.no_grad():
        logits = eager(**one).logits
    n = len(media)
    assert [r.media_after for r in report.records] == [[n - 3], [n - 5]]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


@dataclass
class ReadsEveryHead(Method):
    """Keeps everything; records the attention (media rows, then the rows after) it is handed."""

    layer: int = 2
    seen: list[torch.Tensor] = field(default_factory=list, compare=False)

    stage = "llm"
    needs = ("attention",)
    attention_rows = "media"
    attention_heads: ClassVar[str] = "each"

    def compress(self, tokens: Tokens) -> Compression:
        self.seen.append(tokens.attention)
        return identity(tokens)


@dataclass
class ReadsTheHeadMax(ReadsEveryHead):
    attention_heads: ClassVar[str] = "max"


def test_a_head_max_method_is_handed_the_head_max_of_the_same_attention():
    """FitPrune's and PruneVid's declaration: the stage builds the map head by head and hands
    over their maximum (one head), equal to the maximum of every head's map."""
    model, inputs = BUILDERS["llava"](attn="sdpa")
    each, top = ReadsEveryHead(), ReadsTheHeadMax()
    for method in (each, top):
        with compress(model, method), torch.no_grad():
            model(**inputs)
    assert len(each.seen) == len(top.seen) == inputs["input_ids"].shape[0]
    for full, reduced in zip(each.seen, top.seen, strict=True):
        heads = model.config.text_config.num_attention_heads
        assert full.shape[1] == heads > 1 and reduced.shape[1] == 1
        assert torch.equal(reduced, full.amax(dim=1, keepdim=True))
