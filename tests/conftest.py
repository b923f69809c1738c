"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A torch.Generator seeded with 0: every test draws its own reproducible randomness."""
    return torch.Generator().manual_seed(0)
