"""An explicit thread count reaches the experiments that pick their own when none is chosen (cliR, session 33):
table2, table3 and sigma_tradeoff (``_imaging.resolve_threads``: 1 for CPU images <= 16 px) ran on one thread
whatever ``--threads`` said, and their results recorded 1."""

from __future__ import annotations

import os

import pytest
import torch

from flowvar.cli import _set_threads
from flowvar.experiments._imaging import resolve_threads
from flowvar.experiments.base import THREADS_ENV
from flowvar.runner import torch_threads

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_threads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)


def test_nothing_chosen_keeps_the_small_image_default() -> None:
    assert resolve_threads(0, 8, CPU) == 1
    assert resolve_threads(3, 8, CPU) == 3  # the config's own threads key wins


def test_the_clis_threads_reach_the_small_image_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", dict(os.environ))  # _set_threads writes the choice for this process
    _set_threads(2)
    assert resolve_threads(0, 8, CPU) == 2 and os.environ[THREADS_ENV] == "2"
    assert torch.get_num_threads() == 2


def test_a_runners_thread_count_reaches_the_rule_and_is_undone() -> None:
    with torch_threads(2):
        assert resolve_threads(0, 16, CPU) == 2
    assert THREADS_ENV not in os.environ and resolve_threads(0, 16, CPU) == 1
