"""Tiny random checkpoints saved as a real one is: weights, config, tokenizer, processor.

`AutoProcessor.from_pretrained(dir)` and `AutoConfig.from_pretrained(dir)` then load them exactly
as they load a downloaded checkpoint, so the plugin and lmms-eval's own models take the same path
they take on a GPU machine. Where torchvision cannot load, a Qwen-VL checkpoint holds its
processor's parts but the video processor (which needs torchvision): the plugin then builds the
processor from them, for images only. The tokenizer is character level over printable ASCII, with each
family's special tokens at the ids the tiny models use (`reproductions.hf.tiny.parts`).
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, decoders
from tokenizers.models import BPE

from reproductions.hf.tiny import BUILDERS
from reproductions.hf.tiny.parts import AUDIO, END, IMAGE, PAD, START, VIDEO, VOCAB

#: special tokens at fixed ids (the tiny models' config ids)
SPECIAL = {
    "<pad>": PAD,
    "<s>": 1,
    "</s>": 2,
    "<|video_pad|>": VIDEO,
    "<|AUDIO|>": AUDIO,
    "<|audio_bos|>": 156,
    "<|audio_eos|>": 159,
    "<|vision_start|>": START,
    "<|vision_end|>": END,
    "<|im_start|>": 157,
    "<|im_end|>": 158,
}

BASIC = ("<pad>", "<s>", "</s>")

#: LLaVA-1.5's conversation format; one image placeholder per image item, then the text
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}USER: {% else %} ASSISTANT: {% endif %}"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<image>\n{% else %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)

#: Qwen2-VL's ChatML format with its vision start / pad / end tokens, and its default system turn
QWEN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m.role != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for c in m.content %}{% if c.type == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c.type == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif c.type == 'audio' %}"
    "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% else %}{{ c.text }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


def tokenizer(image_token: str) -> tf.PreTrainedTokenizerFast:
    """Character-level tokenizer: printable ASCII from id 3, the special tokens at their ids.

    `image_token` is the family's placeholder, which the model's `image_token_id` (150) means;
    Qwen's `<|image_pad|>` takes 150 and LLaVA's `<image>` does."""
    other = "<image>" if image_token == "<|image_pad|>" else "<|image_pad|>"
    special = {**SPECIAL, image_token: IMAGE, other: 155}
    vocab = dict(special)
    free = (i for i in range(VOCAB) if i not in special.values())
    for char in string.printable:
        vocab[char] = next(free)
    for i in free:
        vocab[f"<extra_{i}>"] = i
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=None))
    backend.decoder = decoders.Fuse()
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.add_special_tokens({"additional_special_tokens": [t for t in special if t not in BASIC]})
    return fast


def _llava_processor() -> list:
    """LLaVA-1.5's processor at the tiny model's size: 32x32 images, 8x8 patches, [CLS] dropped."""
    images = tf.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = tf.LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer("<image>"),
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return [processor]


def _qwen_processor() -> list:
    """Qwen2-VL's processor with its real patch size (14, merged 2x2: sides are multiples of 28,
    as lmms-eval's `qwen2_vl` model resizes them), images and video frames of at most 112x112
    pixels (at most 16 tokens per image or frame pair). Its video processor needs torchvision,
    as transformers' Qwen2-VL processor does: without it, the image processor and the tokenizer
    (holding the chat template) alone."""
    grid = dict(patch_size=PATCH, temporal_patch_size=2, merge_size=2)
    size = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    images = tf.Qwen2VLImageProcessorPil(**grid, size=size)
    text = tokenizer("<|image_pad|>")
    if _torchvision() is not None:
        text.chat_template = QWEN_TEMPLATE
        return [images, text]
    videos = tf.Qwen2VLVideoProcessor(**grid, size=size)
    return [tf.Qwen2VLProcessor(images, text, videos, chat_template=QWEN_TEMPLATE)]


def _qwen_audio_processor() -> list:
    """Qwen2-Audio's processor at the tiny model's size: 16 mel bins, a 1 s window of 128
    frames at 16 kHz (hop 125), which the encoder's stride and pooling make 32 tokens."""
    features = tf.WhisperFeatureExtractor(
        feature_size=16, sampling_rate=16000, hop_length=125, chunk_length=1, n_fft=400
    )
    processor = tf.Qwen2AudioProcessor(
        feature_extractor=features, tokenizer=tokenizer("<image>"), chat_template=QWEN_TEMPLATE
    )
    return [processor]


#: family -> its processor at the tiny model's size (or the parts of it that can be built here)
PROCESSORS = {
    "llava": _llava_processor,
    "qwen2_vl": _qwen_processor,
    "qwen2_5_vl": _qwen_processor,
    "qwen2_audio": _qwen_audio_processor,
}


#: Qwen2-VL's real patch side; the tiny builders' 4 would make lmms-eval's own `qwen2_vl` model
#: (which rounds image sides to multiples of 28) resize images differently from the processor
PATCH = 14


def _model(family: str, seed: int) -> torch.nn.Module:
    """The tiny model of `family`, its weights at 10x the default scale for the Qwen families
    (replies then depend on the media and the question); Qwen-VL's with the real patch side
    (and a window that holds whole merged patches, for Qwen2.5-VL's windowed attention)."""
    model, _ = BUILDERS[family](seed=seed)
    if not family.startswith("qwen"):
        return model
    config = model.config
    config.initializer_range = config.text_config.initializer_range = 0.2
    media = getattr(config, "vision_config", None) or config.audio_config
    media.initializer_range = media.init_std = 0.2
    if family in ("qwen2_vl", "qwen2_5_vl"):
        media.patch_size = PATCH
        if hasattr(media, "window_size"):
            media.window_size = 4 * PATCH * 2
    torch.manual_seed(seed)
    return type(model)(config).eval()


def save(family: str, directory: Path, seed: int = 0) -> Path:
    """Save the tiny `family` model with its processor into `directory` (a checkpoint dir)."""
    model = _model(family, seed)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = 2
    model.save_pretrained(directory)
    for part in PROCESSORS[family]():
        part.save_pretrained(directory)
    return directory


def _torchvision() -> str | None:
    """Why transformers' Qwen2-VL processor cannot be built here, or None."""
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # PyPI's CUDA build beside a CPU torch raises RuntimeError
        return (
            "transformers' Qwen2-VL processor needs torchvision (its video processor), which "
            f"cannot be imported here ({type(error).__name__}: {error}); PyPI's torchvision "
            "wheels are CUDA builds that do not load beside the CPU torch 2.13 wheel (make setup "
            "removes it): set TORCH_INDEX to a CPU wheel index, or use torch 2.14.1 with "
            "torchvision 0.29.1"
        )
    return None


#: skips a test that needs a Qwen processor's video processor (or lmms-eval's own `qwen2_vl`
#: model, which loads the whole processor), saying why
needs_torchvision = pytest.mark.skipif(_torchvision() is not None, reason=str(_torchvision()))

#: skips a test of what happens without torchvision where it loads
lacks_torchvision = pytest.mark.skipif(
    _torchvision() is None, reason="torchvision loads here: Qwen-VL processors read videos"
)
