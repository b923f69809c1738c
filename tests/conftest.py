"""Shared fixtures.

The test suite runs single-threaded: its tensors are small, and on a 2-core machine intra-op threading of
small convolutions and matmuls costs more than it gains (5–25× slower under load, measured). The cores are used by
running tests side by side instead (`make test`: one pytest-xdist worker per core, whole files per worker).
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test starts on one torch thread and leaves the count as it found it, whatever the code under test
    (the CLI's --threads, reproduce's workers) set in between."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def fixed_global_streams() -> None:
    """Every test starts from the same global random state, whichever tests ran before it in its worker: a model
    built with ``nn.Linear(...)`` draws from torch's global stream, and pytest-xdist hands each worker a different
    sequence of files on every run (a factory's untrained network fitted a convention on 1 run in ~100)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(autouse=True)
def restored_signal_handlers() -> Iterator[None]:
    """Every test leaves SIGINT's and SIGTERM's handlers as it found them: a handler left behind by one test (a
    trainer's deferral, a library's own) changes what the next test of the same xdist worker sees when it signals
    itself — an interrupt test once failed on a SIGTERM handler an earlier test had installed."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def restored_threads_env() -> Iterator[None]:
    """Every test leaves $FLOWVAR_THREADS as it found it: an in-process `flowvar ... --threads T` passes T on there
    (for the experiments that pick their own count when none is chosen), which would change the default thread
    count of every later test of its xdist worker."""
    before = os.environ.get("FLOWVAR_THREADS")
    yield
    if before is None:
        os.environ.pop("FLOWVAR_THREADS", None)
    else:
        os.environ["FLOWVAR_THREADS"] = before


@pytest.fixture
def gen() -> torch.Generator:
    """A torch.Generator seeded with 0: every test draws its own reproducible randomness."""
    return torch.Generator().manual_seed(0)
