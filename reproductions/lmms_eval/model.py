"""`--model reproductions`: any supported transformers model, with any registered method.

Each request runs alone (batch size 1) inside its own `compress` context, so its `Report` holds
exactly its own records; `method=none` runs the model as it is. Under `accelerate launch`
each process holds a whole copy of the model on its own device and lmms-eval hands it its share
of the requests, as with its own HF models.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger

from ..hf import Report, compress
from ..hf.models import adapter_for
from .counts import CompressionCounts, from_report, summarize
from .inputs import Media, encode, load_processor, prompt
from .options import Options, architecture, check, parse


class Reproductions(lmms):
    """lmms-eval model: a transformers checkpoint of a supported family, compressed by a method."""

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        self.options: Options = parse(model_args)
        self.method = check(self.options)  # every refusal happens here, before any weight loads
        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        device = self.options.device
        if device.startswith("cuda") and self._world_size > 1:
            device = f"cuda:{self.accelerator.local_process_index}"
        self._device = torch.device(device)
        cls, _ = architecture(self.options.pretrained)
        dtype = self.options.dtype if self.options.dtype == "auto" else getattr(torch, self.options.dtype)
        self._model = cls.from_pretrained(
            self.options.pretrained, dtype=dtype, attn_implementation=self.options.attn_implementation
        ).to(self._device).eval()
        self.processor = load_processor(self.options.pretrained)
        self.tokenizer = self.processor.tokenizer
        adapter = adapter_for(self._model)
        self.media_ids = list(adapter.tokens.values())
        self._layers = adapter.layers  # the decoder layers whose rows each prefill records
        #: the run's configuration, every method parameter resolved: logged, and in every sample
        self.record = self.options.record(self.method)
        logger.info(f"reproductions: {self.record}")

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return 1

    @contextlib.contextmanager
    def _compressing(self) -> Iterator[Report | None]:
        if self.method is None:
            yield None
            return
        with compress(self._model, self.method, **self.options.stage_args(self.method)) as report:
            yield report

    def _inputs(self, request: Instance, continuation: str | None = None) -> tuple[dict, int]:
        """The model inputs of a request (with `continuation` appended to the prompt), and the
        prompt's length in tokens."""
        context, doc_to_visual, doc_id, task, split = (
            request.args[0], request.args[2], request.args[3], request.args[4], request.args[5]
        )
        media = Media.of(doc_to_visual(self.task_dict[task][split][doc_id]))
        text = prompt(self.processor, context, media)
        inputs = encode(self.processor, text, media, self.options.max_frames)
        length = inputs["input_ids"].shape[1]
        if continuation is not None:
            inputs = encode(self.processor, text + continuation, media, self.options.max_frames)
        dtype = self._model.dtype
        moved = {k: v.to(self._device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        for key, value in moved.items():
            if torch.is_tensor(value) and value.is_floating_point():
                moved[key] = value.to(dtype)
        return moved, length

    def _run(self, request: Instance, call: Any) -> tuple[Any, CompressionCounts]:
        """`call()` on the model inside a compress context, timed; the request's counts."""
        timer = _PrefillTimer(self._model, self._layers)
        start = time.perf_counter()
        with timer, torch.inference_mode(), self._compressing() as report:
            result, inputs, generated = call()
        total = time.perf_counter() - start
        ids = inputs["input_ids"]
        media = int(sum((ids == i).sum().item() for i in self.media_ids))
        found = from_report(report, int(inputs["attention_mask"].sum().item()), media)
        counts = CompressionCounts(
            input_tokens=found["tokens_after"],  # what the LLM read
            output_tokens=generated,
            **found,
            schedule=timer.schedule,
            prefill_s=timer.prefill_s,
            ttft_s=timer.first_output_s,
            total_s=total,
            rank=self._rank,
            run=self.record,
        )
        return result, counts

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Greedy (or the task's sampling) generation, cut at the task's stop strings."""
        results, counts = [], {}
        for request in requests:
            kwargs = dict(request.args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)

            def call(request: Instance = request, kwargs: dict = kwargs) -> tuple:
                inputs, length = self._inputs(request)
                out = self._model.generate(**inputs, **_generation(kwargs, self.options.max_new_tokens, self.tokenizer))
                new = out[0, length:]
                return self.tokenizer.decode(new, skip_special_tokens=True), inputs, len(new)

            text, counted = self._run(request, call)
            for stop in until:
                text = text.split(stop)[0]
            results.append(GenerationResult(text=text, token_counts=counted))
            counts[_key(request)] = counted
        summarize("generate_until", counts, self._world_size, self._rank)
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Log-probability of each continuation after its prompt, and whether greedy decoding
        would produce it: the model's loss with `labels=` on the continuation only (under
        compress: over the kept positions, which include every text token).

        Each answer is a `GenerationResult` whose text is the `(logprob, greedy)` pair: lmms-eval
        0.7.3's `unwrap_generation_output` turns a bare pair into its string, which the
        multiple-choice scoring cannot read; wrapped, the pair passes through unchanged, with the
        request's compression counts beside it."""
        results, counts = [], {}
        for request in requests:
            doc = self.task_dict[request.task_name][request.args[5]][request.args[3]]
            target = request.args[1]
            continuation = target if isinstance(target, str) else target(doc)

            def call(request: Instance = request, continuation: str = continuation) -> tuple:
                inputs, length = self._inputs(request, continuation)
                labels = inputs["input_ids"].clone()
                labels[:, :length] = -100
                out = self._model(**inputs, labels=labels)
                n = inputs["input_ids"].shape[1] - length
                greedy = out.logits[0, -n - 1 : -1].argmax(-1)
                exact = bool((greedy == inputs["input_ids"][0, -n:]).all())
                return (-float(out.loss) * n, exact), inputs, 0

            pair, counted = self._run(request, call)
            results.append(GenerationResult(text=pair, token_counts=counted))
            counts[_key(request)] = counted
        summarize("loglikelihood", counts, self._world_size, self._rank)
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "--model reproductions answers generate_until and loglikelihood requests; multi-round "
            "tasks are not supported yet"
        )


def _key(request: Instance) -> tuple:
    """A request's identity across ranks (lmms-eval pads ranks with copies of a request)."""
    return request.task_name, request.doc_id, request.idx


def _generation(kwargs: dict[str, Any], max_new_tokens: int, tokenizer: Any) -> dict[str, Any]:
    """transformers `generate` arguments from a task's generation kwargs: greedy unless the
    task samples (temperature > 0), the tokenizer's end-of-sequence token ending it."""
    temperature = float(kwargs.get("temperature") or 0)
    sample = temperature > 0 or bool(kwargs.get("do_sample"))
    out: dict[str, Any] = {
        "max_new_tokens": int(kwargs.get("max_new_tokens", max_new_tokens)),
        "do_sample": sample,
        "num_beams": int(kwargs.get("num_beams") or 1),
        "pad_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if sample:
        out["temperature"] = temperature or 1.0
        out["top_p"] = kwargs.get("top_p")
    return out


class _PrefillTimer:
    """Times the model's first forward call in a block (the prefill), and the time from the
    block's start (before the processor runs) to that call's end (time to first token). On a
    GPU it waits for the device at both ends, so that queued kernels are counted. `schedule`:
    the rows each decoder layer read in that call, as the compress context left them (a method
    acting at several layers or stages shortens the sequence more than once)."""

    def __init__(self, model: torch.nn.Module, layers: Any) -> None:
        self.model, self.layers = model, layers
        self.prefill_s = self.first_output_s = 0.0
        self.schedule: list[int] = []
        self._start = self._call_start = 0.0
        self._calls = 0

    def _rows(self, _: torch.nn.Module, args: tuple, output: Any) -> None:
        """A layer's output rows: the rows it ran on, after any hook shortened its input."""
        if self._calls == 0 and len(self.schedule) < len(self.layers):
            hidden = output[0] if isinstance(output, tuple) else output
            self.schedule.append(int(hidden.shape[-2]))

    def _sync(self) -> None:
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def _before(self, *_: Any, **__: Any) -> None:
        if self._calls == 0:
            self._sync()
            self._call_start = time.perf_counter()

    def _after(self, *_: Any, **__: Any) -> None:
        if self._calls == 0:
            self._sync()
            now = time.perf_counter()
            self.prefill_s, self.first_output_s = now - self._call_start, now - self._start
        self._calls += 1

    def __enter__(self) -> _PrefillTimer:
        self._start = time.perf_counter()
        self._handles = [
            self.model.register_forward_pre_hook(self._before),
            self.model.register_forward_hook(self._after),
            *(layer.register_forward_hook(self._rows) for layer in self.layers),
        ]
        return self

    def __exit__(self, *_: Any) -> None:
        for handle in self._handles:
            handle.remove()
