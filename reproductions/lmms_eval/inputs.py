"""A request's text and media, made into model inputs by the family's own processor.

The processor of the checkpoint (`AutoProcessor`) decides everything family-specific: the chat
template, how many placeholder tokens each image, video or audio clip expands to, resizing and
the frames' layout. lmms-eval hands media as PIL images, video file paths, and audio dicts
(`{"array", "sampling_rate"}`); each goes to the processor argument of its kind, and the prompt
lists the media before the question, as lmms-eval's own HF models do. Videos are decoded here,
`max_frames` frames spread evenly over the clip (as lmms-eval's `llava_hf` samples them), with
decord: transformers' own loader of video files needs torchcodec. Where the checkpoint's video
processor cannot be built (transformers' need torchvision), `load_processor` builds the family's
processor from its other parts, and that processor refuses videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import transformers
from PIL import Image
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING


@dataclass
class Media:
    """A request's media, sorted by kind."""

    images: list[Image.Image] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    audios: list[np.ndarray] = field(default_factory=list)
    sampling_rate: int | None = None

    @classmethod
    def of(cls, visuals: list[Any] | None) -> Media:
        """Sort lmms-eval's `doc_to_visual` output; a ValueError names an unknown kind."""
        media = cls()
        for item in _flat(visuals or []):
            if isinstance(item, Image.Image):
                media.images.append(item.convert("RGB"))
            elif isinstance(item, str):
                media.videos.append(item)
            elif isinstance(item, dict) and "array" in item:
                media.audios.append(np.asarray(item["array"], dtype=np.float32))
                media.sampling_rate = item.get("sampling_rate")
            else:
                raise ValueError(
                    f"a request's visual of type {type(item).__name__} is neither a PIL image, a "
                    "video path nor an audio dict with 'array' and 'sampling_rate'"
                )
        return media

    def content(self) -> list[dict[str, str]]:
        """The chat-template content items of the media, in the order images, videos, audio."""
        kinds = ["image"] * len(self.images) + ["video"] * len(self.videos) + ["audio"] * len(self.audios)
        return [{"type": kind} for kind in kinds]


def load_processor(pretrained: str) -> Any:
    """The checkpoint's `AutoProcessor`; where that fails because its video processor cannot be
    built, the family's processor class from the parts that load (image processor, tokenizer, chat
    template), which refuses videos with the reason."""
    try:
        return transformers.AutoProcessor.from_pretrained(pretrained)
    except ImportError as failure:
        try:
            transformers.AutoVideoProcessor.from_pretrained(pretrained)
        except ImportError as error:
            reason = " ".join(str(error).split()).split(". ")[0]  # its first sentence
        except Exception:
            raise failure from None
        else:
            raise
    family = PROCESSOR_MAPPING[type(transformers.AutoConfig.from_pretrained(pretrained))]

    class WithoutVideos(family):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return [name for name in super().get_attributes() if name != "video_processor"]

        def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
            if videos is not None:
                raise ValueError(
                    f"this checkpoint's video processor cannot be built here ({reason}): "
                    "install a torchvision that loads beside this torch to evaluate videos"
                )
            return super().__call__(images=images, text=text, **kwargs)

    WithoutVideos.__name__ = WithoutVideos.__qualname__ = family.__name__
    return WithoutVideos.from_pretrained(pretrained)


def _flat(items: list[Any]) -> list[Any]:
    """Nested lists of visuals (several `doc_to_visual` calls) as one list."""
    out: list[Any] = []
    for item in items:
        out.extend(_flat(item) if isinstance(item, (list, tuple)) else [item])
    return out


def prompt(processor: Any, context: str, media: Media) -> str:
    """The prompt text: the checkpoint's chat template over one user turn (media, then the
    question) with the assistant's turn opened; where the checkpoint has no template, the
    tokenizer's placeholder for each item on a line, then the question."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [*media.content(), {"type": "text", "text": context}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    tokens = []
    for kind in ("image", "video", "audio"):
        token = getattr(processor, f"{kind}_token", None)
        count = len(getattr(media, f"{kind}s"))
        if count and token is None:
            raise ValueError(f"the processor has no chat template and no {kind} token to place the {kind}s")
        tokens += [token] * count
    return (" ".join(tokens) + "\n" if tokens else "") + context


def frames(path: str, count: int) -> np.ndarray:
    """`count` frames of the video at `path`, evenly spaced from the first to the last, as a
    (frames, height, width, 3) uint8 array (fewer where the clip has fewer)."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    picked = np.unique(np.linspace(0, len(reader) - 1, count).round().astype(int))
    return reader.get_batch(picked.tolist()).asnumpy()


def encode(processor: Any, text: str, media: Media, max_frames: int) -> dict[str, Any]:
    """`processor(...)` on one prompt and its media, as PyTorch tensors."""
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if media.images:
        kwargs["images"] = media.images
    if media.videos:
        kwargs["videos"] = [frames(path, max_frames) for path in media.videos]
    if media.audios:
        kwargs["audio"] = media.audios
        kwargs["sampling_rate"] = media.sampling_rate
    return dict(processor(**kwargs))
