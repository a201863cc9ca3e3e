"""One intra-op thread for the tiny-model tests: faster than two at these sizes, and immune to
OpenMP threads spinning against other processes on a busy machine."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
