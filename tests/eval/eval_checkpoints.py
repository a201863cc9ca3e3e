"""Tiny random checkpoints saved as a real one is: weights, config, tokenizer, processor.

`AutoProcessor.from_pretrained(dir)` and `AutoConfig.from_pretrained(dir)` then load them exactly
as they load a downloaded checkpoint, so the plugin and lmms-eval's own models take the same path
they take on a GPU machine. The tokenizer is character level over printable ASCII, with each
family's special tokens at the ids the tiny models use (`reproductions.hf.tiny.parts`).
"""

from __future__ import annotations

import string
from pathlib import Path

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
    "<audio>": AUDIO,
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

#: Qwen2-VL's ChatML format with its vision start / pad / end tokens
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for c in m.content %}{% if c.type == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c.type == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}"
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


def _llava_processor() -> tf.ProcessorMixin:
    """LLaVA-1.5's processor at the tiny model's size: 32x32 images, 8x8 patches, [CLS] dropped."""
    images = tf.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return tf.LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer("<image>"),
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )


def _qwen_processor() -> tf.ProcessorMixin:
    """Qwen2-VL's processor at the tiny model's size: 4x4 patches merged 2x2, images resized to
    at most 32x32 pixels (at most 16 tokens)."""
    images = tf.Qwen2VLImageProcessorPil(
        patch_size=4, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 8 * 8, "longest_edge": 32 * 32},
    )
    return tf.Qwen2VLProcessor(
        image_processor=images, tokenizer=tokenizer("<|image_pad|>"), chat_template=QWEN_TEMPLATE
    )


#: family -> its processor at the tiny model's size
PROCESSORS = {
    "llava": _llava_processor,
    "qwen2_vl": _qwen_processor,
    "qwen2_5_vl": _qwen_processor,
}


def save(family: str, directory: Path, seed: int = 0) -> Path:
    """Save the tiny `family` model with its processor into `directory` (a checkpoint dir)."""
    model, _ = BUILDERS[family](seed=seed)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = 2
    model.save_pretrained(directory)
    PROCESSORS[family]().save_pretrained(directory)
    return directory
