"""Shared test setup.

* ``TRITON_INTERPRET=1`` is set before any kernel module is imported (Triton reads it when a kernel is decorated),
  so Triton kernels run on CPU tensors in the interpreter (it is read when a kernel is decorated).
* Every test gets a fixed seed (autouse), and kernel outputs are poisoned before kernels run, so an element a kernel
  forgets to write fails the comparison.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import icfrr_fast  # noqa: E402
from icfrr_fast import ops  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _poison_outputs():
    ops._poison_outputs = True
    yield
    ops._poison_outputs = False


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    icfrr_fast.set_num_threads(None)
