"""GlobalCom2 inside LLaVA-NeXT: what it keeps of each packed image reaches the language model
in its output order (the thumbnail's tokens by score, then the crops' kept tokens and every
newline), each at its own placeholder's position id, for an unpadded image too."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hf_helpers import Capture, language_model_inputs, llava_next_at, reference_sequence

from reproductions import Compression, Tokens
from reproductions.hf import compress
from reproductions.hf.tiny import IMAGE
from reproductions.image.globalcom2 import GlobalCom2


@dataclass
class Seen(GlobalCom2):
    """GlobalCom2 recording the tokens it is handed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seen: list[Tokens] = []

    def compress(self, tokens: Tokens) -> Compression:
        self.seen.append(tokens)
        return super().compress(tokens)


@pytest.mark.parametrize("size", [(32, 64), (16, 64)], ids=["whole", "unpadded"])
def test_the_language_model_gets_globalcom2s_tokens_in_its_order(size):
    model, inputs = llava_next_at(*size)
    method = Seen(ratio=0.5)
    lm = language_model_inputs(model, inputs)
    with compress(model, method) as report, torch.no_grad():
        method.seen.clear()  # compress() probes the method on example tokens
        with Capture(model.model.language_model) as capture:
            model(**inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    replaced, counts = [], []
    for row, tokens in enumerate(method.seen):
        span = (ids[row] == IMAGE).nonzero().flatten()
        start, length = int(span[0]), len(span)
        assert torch.equal(tokens.features[0], lm["inputs_embeds"][row, start : start + length])
        comp = GlobalCom2(ratio=0.5)(tokens)
        thumbnail = comp.positions[0, :8].tolist()  # int(16 * 0.5), in score order
        assert max(thumbnail) < 16 and thumbnail != sorted(thumbnail)
        replaced.append((row, start, length, tokens.features[0, comp.positions[0]], comp.positions[0]))
        counts.append(comp.count)
    assert len(replaced) == 2
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    embeds, new_mask, new_pos = reference_sequence(lm["inputs_embeds"], positions, mask, replaced)
    got = capture.calls[0]
    valid = new_mask.bool()
    assert torch.equal(got["inputs_embeds"][valid], embeds[valid])
    assert torch.equal(got["position_ids"][valid], new_pos[valid])
    assert report.records[0].media_after == counts
