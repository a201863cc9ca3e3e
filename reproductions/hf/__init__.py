"""Run any registered method inside Hugging Face transformers models.

    from reproductions.hf import compress
    with compress(model, "fastv", keep=64) as report:
        out = model.generate(**inputs, max_new_tokens=32)
    print(report)

Where to find each thing:

- `context.py`: `compress()` and `why_unsupported()`; it picks the adapter and the stage;
- `stages/`: one module per stage (projector, encoder, llm, cache), each a context that
  installs its hooks and removes them in `finally`;
- `models/`: one adapter per model family (where its media tokens are, its grids and positions);
- `attention.py`: attention recomputed from captured queries and keys (the one place);
- `sequence.py`: spans, the rebuilt shorter sequence and its masks;
- `report.py`: what a context did; `tiny/`: tiny random models of each family.

`examples/README.md` shows usage per family.
"""

from .context import compress, support, why_unsupported
from .models import SUPPORTED
from .report import Record, Report

__all__ = ["SUPPORTED", "Record", "Report", "compress", "support", "why_unsupported"]
