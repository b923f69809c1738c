"""Shared fixtures.

The test suite runs single-threaded: its tensors are small, and on a 2-core machine intra-op threading of
small convolutions and matmuls costs more than it gains (5–25× slower under load, measured).
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    """A torch.Generator seeded with 0: every test draws its own reproducible randomness."""
    return torch.Generator().manual_seed(0)
