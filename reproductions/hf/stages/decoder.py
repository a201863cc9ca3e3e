"""The stages that act inside the language model at decoder layer K (llm and cache): the input
of layer K - 1's attention is captured (its attention to the media tokens is recomputed from it,
so SDPA works), layer K does the stage's work, and layers after K run with the mask, position
embeddings and ids that go with the kept tokens (`group`). At K = 0 (the llm stage only) no
layer has run: the attention is the one layer 0 computes over the full input (`own_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ...interface import Method
from ..models import Adapter
from ..sequence import take
from .base import Stage, argument

#: the decoder layer K of llm / cache methods that declare none (FastV's and SparseVLM's first
#: pruning layer)
DEFAULT_LAYER = 2


def decoder_layer(method: Method, layer: int | None = None) -> int:
    """K for an llm / cache method: its own `layer` field, else `layer`, else DEFAULT_LAYER."""
    own = getattr(method, "layer", None)
    return own if own is not None else (layer if layer is not None else DEFAULT_LAYER)


@dataclass
class Group:
    """The kwargs of the layers that see one set of rows, per layer type (None: the family has
    one); at a prefill, `index` (B, L), where each layer's own position embeddings are gathered
    (None at a decoding step: the step's own)."""

    kwargs: dict[str | None, dict[str, Any]]
    index: Tensor | None = None

    def apply(self, kind: str | None, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """A layer's call of type `kind` with these kwargs, its own position embeddings gathered
        at `index`."""
        own = dict(self.kwargs[kind])
        if self.index is not None and kwargs.get("position_embeddings") is not None:
            cos, sin = kwargs["position_embeddings"]
            own["position_embeddings"] = (take(cos, self.index, dim=1), take(sin, self.index, dim=1))
        return args, {**kwargs, **own}


class DecoderStage(Stage):
    signals = ("attention", "text")

    def __init__(self, model: nn.Module, method: Method, adapter: Adapter, layer: int | None = None) -> None:
        super().__init__(model, method, adapter)
        self.layer = decoder_layer(method, layer)
        #: kwargs that layers >= K run with (None: as they are)
        self.group: dict[str, Any] | None = None
        self.embeds: Tensor | None = None
        #: layer K - 1's attention module, its input hidden states and position embeddings
        self.attention_input: tuple[nn.Module, Tensor, tuple[Tensor, Tensor]] | None = None
        #: the attention mask that layer got (its own type's, where the family has several)
        self.attention_mask: Any = None

    def install_hooks(self) -> None:
        layers, k = self.adapter.layers, self.layer
        if k > 0:
            attention = layers[k - 1].self_attn
            self.hook(attention.register_forward_pre_hook(self._capture, with_kwargs=True))
        self.hook(layers[k].register_forward_pre_hook(self._layer_k, with_kwargs=True))
        for later in layers[k + 1 :]:
            self.hook(later.register_forward_pre_hook(self._later, with_kwargs=True))

    def prefill(self, args: tuple, kwargs: dict, embeds: Tensor) -> None:
        self.group = None
        self.embeds = embeds  # the decoder's input, for methods whose `text` comes from it
        return None

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.attention_input = (module, argument(args, kwargs, "hidden_states"), kwargs.get("position_embeddings"))
        self.attention_mask = kwargs.get("attention_mask")

    def own_input(self, layer: nn.Module, args: tuple, kwargs: dict) -> None:
        """At K = 0: layer 0's attention module, the input it will get (the layer's input
        normalised as the layer does) and its position embeddings, as `_capture` keeps them."""
        hidden = argument(args, kwargs, "hidden_states")
        self.attention_input = (layer.self_attn, layer.input_layernorm(hidden), kwargs.get("position_embeddings"))
        self.attention_mask = kwargs.get("attention_mask")

    def _layer_k(self, module: nn.Module, args: tuple, kwargs: dict):
        """Layer K's call: the stage's work (`at_layer_k`), then the group's kwargs."""
        raise NotImplementedError

    def _later(self, module: nn.Module, args: tuple, kwargs: dict):
        return self.apply_group(args, kwargs)

    def apply_group(self, args: tuple, kwargs: dict):
        if self.group is None:
            return None
        return args, {**kwargs, **self.group}
