"""Run any registered method inside Hugging Face transformers models.

    from reproductions.hf import compress
    with compress(model, "fastv", keep=64) as report:
        out = model.generate(**inputs, max_new_tokens=32)
    print(report)

See `compress.py` for where each stage acts (and how the integration differs from the methods'
official model code), `encoder.py` for ToMe inside the encoder, `models.py` for the supported
models, `tiny.py` for tiny random models of each family, and `examples/README.md` for usage.
"""

from .compress import Record, Report, compress, why_unsupported
from .models import SUPPORTED

__all__ = ["SUPPORTED", "Record", "Report", "compress", "why_unsupported"]
