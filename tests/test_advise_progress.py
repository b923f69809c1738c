"""``flowvar advise-sigma`` is not silent without progress bars (newcomer review F, finding 2): with ``--quiet`` or
stderr not a terminal (``advise_sigma(progress=False)``) it prints one plain line per finished training — σ, seed,
seconds, and how many of the run's trainings are done — as reproduce/sweep print one per experiment/point; with
bars it prints none of them; and the lines change nothing in the result."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from flowvar.advise import PROGRESS_LOGGER, advise_sigma, plain_progress
from flowvar.experiments.sigma_tradeoff import training_line

LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] σ = ([0-9.e-]+), seed (\d+): trained and scored in \d+\.\d s$")
TINY = {"quick": True, "n_train": 12, "n_eval": 16, "min_heldout": 8, "steps": 2, "width": 8, "depth": 2,
        "euler_steps": 2, "null_repeats": 2, "n_seeds": 2}


def test_training_line_names_sigma_seed_time_and_count() -> None:
    assert training_line(0.05, 1, 5, 21, 12.34) == "[ 5/21] σ = 0.05, seed 1: trained and scored in 12.3 s"
    assert training_line(0.5, 2, 21, 21, 3.0, diverged=True) == "[21/21] σ = 0.5, seed 2: diverged after 3.0 s"


def test_quiet_run_prints_one_line_per_training_and_the_same_result(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32))
    logger = logging.getLogger(PROGRESS_LOGGER)
    handlers, level = list(logger.handlers), logger.level

    quiet = advise_sigma(tmp_path / "v.npy", sigmas=[0.0, 0.5], progress=False, **TINY)
    lines = [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
    found = [LINE.match(line).groups() for line in lines]  # type: ignore[union-attr]
    # 2 seeds × 2 σ, in the order trained (seed by seed, σ ascending), counted 1..4 of 4
    assert [(int(d), int(t), float(s), int(seed)) for d, t, s, seed in found] == [
        (1, 4, 0.0, 0), (2, 4, 0.5, 0), (3, 4, 0.0, 1), (4, 4, 0.5, 1)]
    assert logger.handlers == handlers and logger.level == level  # the handler and level are undone

    bars = advise_sigma(tmp_path / "v.npy", sigmas=[0.0, 0.5], progress=True, **TINY)
    assert not [line for line in capsys.readouterr().err.splitlines() if LINE.match(line)]
    def scores(table: list[dict[str, float]]) -> str:  # all but the wall time (as JSON: NaN equals NaN)
        return json.dumps([{k: v for k, v in row.items() if k != "runtime_s"} for row in table], sort_keys=True)

    assert scores(quiet.table) == scores(bars.table) and quiet.reason == bars.reason  # nothing computed changes


def test_plain_progress_prints_the_message_alone_and_only_inside_the_block() -> None:
    import io

    stream = io.StringIO()
    logger = logging.getLogger(PROGRESS_LOGGER)
    with plain_progress(stream):
        logger.info("%s", "[1/4] σ = 0, seed 0: trained and scored in 0.1 s")
    logger.info("after the block")
    assert stream.getvalue() == "[1/4] σ = 0, seed 0: trained and scored in 0.1 s\n"
