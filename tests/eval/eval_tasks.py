"""A tiny local lmms-eval task suite, written into a test's directory.

Three tasks over the same 8 synthetic questions (a JSON dataset; PNG images and 1 s audio clips
made with numpy; each clip a tone of its own pitch): `tiny_open` asks about the image for generated answers (`generate_until`),
scored by the share of the answer's characters that the reply contains, so that a random model
scores something and two runs that differ by one character differ in score; `tiny_choice` asks
yes/no as a multiple choice (`loglikelihood`), scored by accuracy; `tiny_audio` asks about the
clip, handed over as lmms-eval's audio tasks do (`{"array", "sampling_rate"}`); `tiny_video`
about a 16-frame MP4 (written with PyAV), handed over as a file path as lmms-eval's video tasks
do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

QUESTIONS = 8

UTILS = '''
import numpy as np
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_audio(doc):
    return [{"array": np.load(doc["audio"]), "sampling_rate": 16000}]


def doc_to_video(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_choice(doc):
    return ["yes", "no"]


def doc_to_target(doc):
    return doc["answer"]


def doc_to_choice_target(doc):
    return 0 if doc["yes"] else 1


def overlap(doc, results):
    reply, answer = set(results[0]), set(doc["answer"])
    return {"overlap": len(reply & answer) / len(answer)}
'''

COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
metadata:
  - version: 0.0
"""

OPEN = """task: tiny_open
output_type: generate_until
doc_to_target: !function utils.doc_to_target
generation_kwargs:
  max_new_tokens: 6
  temperature: 0
  do_sample: false
  until: ["ZZZZ"]
process_results: !function utils.overlap
metric_list:
  - metric: overlap
    aggregation: mean
    higher_is_better: true
"""

CHOICE = """task: tiny_choice
output_type: multiple_choice
doc_to_choice: !function utils.doc_to_choice
doc_to_target: !function utils.doc_to_choice_target
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def video(path: Path, rng: np.random.Generator, frames: int = 16, side: int = 112) -> Path:
    """An MP4 of `frames` grey-block frames, each frame's blocks drifting one step."""
    import av

    levels = rng.integers(0, 256, (side // 8, side // 8, 1), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            pixels = np.kron(np.roll(levels, t, axis=1), np.ones((8, 8, 3), dtype=np.uint8))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def write(directory: Path, sizes: tuple[int, int] = (112, 112)) -> Path:
    """Write the suite into `directory` (for `--include_path`); images of `sizes` (height,
    width) made of random grey 8x8 blocks: LLaVA's processor brings them to 32x32, Qwen's keeps
    112x112. Grey 8x8 blocks come back unchanged from JPEG at quality 85, which lmms-eval's own
    `qwen2_vl` model applies to every image, so it sees the pixels the plugin sees."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    docs = []
    for i in range(QUESTIONS):
        levels = rng.integers(0, 256, (sizes[0] // 8, sizes[1] // 8, 1), dtype=np.uint8)
        pixels = np.kron(levels, np.ones((8, 8, 3), dtype=np.uint8))
        path = directory / f"image{i}.png"
        Image.fromarray(pixels).save(path)
        clip = directory / f"clip{i}.npy"
        tone = np.sin(2 * np.pi * 250 * (i + 1) * np.arange(16000) / 16000)  # 1 s at 16 kHz
        np.save(clip, (0.5 * tone + 0.05 * rng.standard_normal(16000)).astype(np.float32))
        colour = ["red", "green", "blue", "black"][i % 4]
        docs.append({
            "id": i,
            "image": str(path),
            "audio": str(clip),
            "video": str(video(directory / f"video{i}.mp4", rng)),
            "question": f"Is the picture mostly {colour}?",
            "answer": colour,
            "yes": i % 2 == 0,
        })
    data = directory / "questions.json"
    data.write_text(json.dumps(docs))
    (directory / "utils.py").write_text(UTILS)
    common = COMMON.format(data=data)
    (directory / "tiny_open.yaml").write_text(OPEN + common)
    (directory / "tiny_choice.yaml").write_text(CHOICE + common)
    for kind in ("audio", "video"):
        # an open question over that kind of media: tiny_open's task with its own visuals
        media = OPEN.replace("tiny_open", f"tiny_{kind}") + common.replace("utils.doc_to_visual", f"utils.doc_to_{kind}")
        (directory / f"tiny_{kind}.yaml").write_text(media)
    return directory
