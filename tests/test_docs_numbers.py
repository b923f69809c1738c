"""Statements of the docstrings and docs that are numbers or cases the code decides: each is checked against the code.

* The normalised variance tr Cov(g) / ‖E g‖² at a zero trace (report.normalised_variance, VarianceReport,
  BatchGradStats.summary, the monitor): 0.0 when trace = 0 < ‖ḡ‖², None (NaN in the monitor) for 0/0.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from flowvar.variance import VarianceAccumulator, normalised_variance
from flowvar.variance.moments import BatchGradStats
from flowvar.variance.monitor import _none_as_nan

F64 = torch.float64


def _identical_gradients(g: list[float], B: int = 3) -> BatchGradStats:
    """A batch of B per-sample gradients all equal to ``g`` (one parameter "w"): trace exactly 0, ‖ḡ‖² = ‖g‖²."""
    w = torch.tensor(g, dtype=F64)
    sq = torch.full((B,), float(w.pow(2).sum()), dtype=F64)
    return BatchGradStats(n=B, sq_norms=sq, param_sq_norms={"w": sq}, mean_grad={"w": w}, sq_sum=None,
                          seg_sq_norms=None, segments=None, n_segments=0, losses=None, rules={}, fallback={})


def test_normalised_is_zero_at_zero_trace_with_a_mean_gradient_and_none_for_zero_over_zero() -> None:
    """report.py, moments.py and monitor.py say: 0.0 when trace = 0 < ‖ḡ‖², None (NaN in the monitor) for 0/0."""
    assert normalised_variance(0.0, 2.0, 10) == 0.0
    assert normalised_variance(0.0, 0.0, 10) is None

    moving = VarianceAccumulator()  # every per-sample gradient (1, 2): no variance around a non-zero mean
    moving.update({"w": torch.tensor([[1.0, 2.0]] * 4, dtype=F64)}, torch.ones(4))
    report = moving.report()
    assert report.trace == 0.0 and report.mean_grad_sq_norm == 5.0 and report.normalised == 0.0
    still = VarianceAccumulator()
    still.update({"w": torch.zeros(4, 2, dtype=F64)}, torch.zeros(4))
    assert still.report().normalised is None

    summary = _identical_gradients([3.0, 4.0]).summary()  # ‖ḡ‖ = 5 exactly
    assert summary["trace"] == 0.0 and summary["mean_grad_sq_norm"] == 25.0 and summary["normalised"] == 0.0
    zero = _identical_gradients([0.0, 0.0]).summary()
    assert zero["trace"] == 0.0 and zero["normalised"] is None
    # the monitor logs the summary's value, None as NaN
    assert _none_as_nan(summary["normalised"]) == 0.0 and math.isnan(_none_as_nan(zero["normalised"]))


# --------------------------------------------------------------------------------------------- exact-OT speed-ups

ROOT = Path(__file__).resolve().parents[1]


def _exact_ot_times() -> dict[tuple[int, int, str, str], float]:
    """BENCHMARKS.md's ``exact_ot`` table: {(n, d, targets, method): seconds}."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    section = text[text.index("<!-- BEGIN exact_ot -->"):text.index("<!-- END exact_ot -->")]
    times = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[0].isdigit() and cells[4].endswith("s"):
            value, unit = cells[4].split()
            times[(int(cells[0]), int(cells[1]), cells[2], cells[3])] = float(value) * (1e-3 if unit == "ms" else 1.0)
    return times


def _speedups(times: dict[tuple[int, int, str, str], float], slow: str, fast: str, ns: tuple[int, ...],
              targets: tuple[str, ...] = ("normal", "mixture")) -> list[float]:
    return [times[(n, d, t, slow)] / times[(n, d, t, fast)] for n in ns for d in (2, 50) for t in targets]


def _span(values: list[float], digits: int) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}×"


def test_exact_ot_speedups_quoted_in_the_docs_are_benchmarks_tables() -> None:
    """README, ot/exact.py and docs/exact_ot.md quote BENCHMARKS.md's exact_ot table (the regenerated source): the
    sparse solve against the dense emd on the same aligned cost, and what the Gaussian alignment buys on mixtures."""
    times = _exact_ot_times()
    sparse = {n: _span(_speedups(times, "flowvar emd", "flowvar sparse", (n,)), 1) for n in (1024, 2048, 4096)}
    sparse_all = _span(_speedups(times, "flowvar emd", "flowvar sparse", (1024, 2048, 4096)), 1)
    align_emd = _span(_speedups(times, "POT emd (1e7)", "flowvar emd", (1024, 2048, 4096), ("mixture",)), 2)
    align_lsa = _span(_speedups(times, "scipy LSA", "flowvar lsa", (1024, 2048, 4096), ("mixture",)), 1)
    assert (sparse[4096], align_emd, align_lsa) == ("2.5–7.4×", "1.27–1.38×", "3.6–8.5×")  # the stored run
    readme = (ROOT / "README.md").read_text()
    exact = (ROOT / "src" / "flowvar" / "ot" / "exact.py").read_text()
    doc = (ROOT / "docs" / "exact_ot.md").read_text()
    assert f"{sparse[4096]} faster than POT's dense `ot.emd`" in readme
    assert (f"{sparse[1024]} faster at 1024 points, {sparse[2048]} at 2048, {sparse[4096]} at 4096"
            in " ".join(line.lstrip("#: ") for line in exact.splitlines()))
    assert f"{sparse_all[:-1]}× faster than `\"emd\"` at 1024–4096 points (BENCHMARKS.md `exact_ot`)" in doc
    assert f"{sparse[1024]} faster at 1024\npoints, {sparse[2048]} at 2048, {sparse[4096]} at 4096" in doc
    assert f"emd is {align_emd} faster" in doc and f"LSA {align_lsa}" in doc
