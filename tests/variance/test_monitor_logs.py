"""The monitor's log files: a new run that replaces one says so as a warning, a resumed run rewrites it atomically,
plot()/figure() after a resume draw the whole run, and the CSV's columns and t-bins are as docs/gradient_variance.md
("Log files") describes them.

Findings of a review of the monitor in plain loops: a restarted loop that forgot ``load_state_dict`` replaced the
previous run's log with only a ``log.info`` notice (not shown by a default logging setup); the resumed file was
rewritten with ``open(path, "w")`` and then its kept rows, so a crash in between lost them; and ``plot()`` after a
resume drew only the resumed process's records (from step 6 of a log holding steps 0–10).
"""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
import torch
from monitor_models import log_rows as _rows

from flowvar.models import MLPField
from flowvar.variance.monitor import GradientVarianceMonitor

F64 = torch.float64


def _loop(path, steps, state=None, t_bins=None, every=2, monitor_kw=None):
    """A plain float64 loop over ``steps`` (a 2-D MLP, B = 16) logging every ``every`` into ``path``; ``state``: a
    resume (load_state_dict). The data of step s depend on s only, so a resumed loop sees the batches the
    interrupted one saw. Returns the monitor (closed)."""
    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1).to(F64)
    monitor = GradientVarianceMonitor(model, every=every, t_bins=t_bins, profile_every=1, log_path=path, warn=False,
                                      **(monitor_kw or {}))
    if state is not None:
        monitor.load_state_dict(state)
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, u = torch.randn(16, 2, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)
        t = torch.rand(16, generator=g, dtype=F64)
        model.zero_grad()
        losses = (model(x, t) - u).pow(2).sum(1)
        losses.mean().backward()
        monitor.step(step, losses, t)
    monitor.close()
    return monitor


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_new_run_replacing_a_log_warns_naming_the_file_and_the_remedy(tmp_path, caplog, suffix):
    path = tmp_path / f"gv{suffix}"
    _loop(path, range(6))
    with caplog.at_level(logging.WARNING, logger="flowvar.variance.monitor"):
        _loop(path, range(3))
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage()
    assert "replaced" in warning.getMessage() and "load_state_dict" in warning.getMessage()
    assert [int(float(r["step"])) for r in _rows(path)] == [0, 2]


def test_a_resumed_log_is_not_warned_about(tmp_path, caplog):
    path = tmp_path / "gv.csv"
    first = _loop(path, range(5))
    with caplog.at_level(logging.WARNING, logger="flowvar.variance.monitor"):
        _loop(path, range(5, 9), state={**first.state_dict(), "logged": 2})  # as if checkpointed after step 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class _Crash(BaseException):
    """A crash (not an Exception: nothing in the monitor catches it)."""


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_crash_while_the_resumed_log_is_rewritten_loses_no_kept_row(tmp_path, monkeypatch, suffix):
    """The log of steps 0–8 (every 2); a run resumed after step 4 first logs step 6 and rewrites the file with the rows
    before it. A crash while the rewrite is under way leaves the old file whole; a crash right after it (before step
    6's row is written) leaves the kept rows 0, 2, 4. The rewrite used to be open(path, "w") and then the rows: a
    crash in between left an empty file."""
    path = tmp_path / f"gv{suffix}"
    interrupted = _loop(path, range(9))
    state = {**interrupted.state_dict(), "logged": 3}  # the state after step 4
    old = path.read_bytes()

    import flowvar.variance.monitor as monitor_module

    def crash_in_rewrite(target, text):
        raise _Crash

    with monkeypatch.context() as m:
        m.setattr(monitor_module, "atomic_write_text", crash_in_rewrite)
        with pytest.raises(_Crash):
            _loop(path, range(5, 9), state=state)
    assert path.read_bytes() == old

    calls = []
    real_flat = GradientVarianceMonitor._flat

    def crash_at_the_row(self, record):  # the CSV header's call, then the row's
        calls.append(record["step"])
        if suffix == ".csv" and len(calls) == 2:
            raise _Crash
        return real_flat(self, record)

    def crash_at_the_json_row(record):
        raise _Crash

    with monkeypatch.context() as m:
        m.setattr(GradientVarianceMonitor, "_flat", crash_at_the_row)
        if suffix == ".jsonl":
            m.setattr(monitor_module, "to_jsonable", crash_at_the_json_row)
        with pytest.raises(_Crash):
            _loop(path, range(5, 9), state=state)
    rows = _rows(path)
    assert [int(float(r["step"])) for r in rows] == [0, 2, 4]
    assert [float(r["trace"]) for r in rows] == [r["trace"] for r in interrupted.history[:3]]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_figure_after_a_resume_draws_the_whole_run(tmp_path, suffix):
    """Steps 0–10 logged every 2, resumed after step 4: the resumed process's history holds 6, 8, 10, and figure()
    draws 0–10 — the rows kept from the file, then the history — with the uninterrupted run's traces (the loop is
    deterministic), in all three panels."""
    path = tmp_path / f"gv{suffix}"
    straight = _loop(tmp_path / f"straight{suffix}", range(11), t_bins=4)
    interrupted = _loop(path, range(8), t_bins=4)
    resumed = _loop(path, range(5, 11), state={**interrupted.state_dict(), "logged": 3}, t_bins=4)
    assert [r["step"] for r in resumed.history] == [6, 8, 10]
    fig = resumed.figure()
    loss_line, trace_line = fig.axes[0].get_lines()[:2]
    np.testing.assert_array_equal(loss_line.get_ydata(), [r["loss"] for r in straight.history])
    np.testing.assert_array_equal(trace_line.get_xdata(), [0, 2, 4, 6, 8, 10])
    np.testing.assert_array_equal(trace_line.get_ydata(), [r["trace"] for r in straight.history])
    np.testing.assert_array_equal(fig.axes[1].get_lines()[0].get_xdata(), [0, 2, 4, 6, 8, 10])
    (mesh,) = fig.axes[2].collections
    grid = np.ma.getdata(mesh.get_array()).reshape(4, 6)  # (bins, steps), log10 of the per-bin traces
    expected = np.log10(np.array([r["t_profile"]["trace"] for r in straight.history]).T)
    np.testing.assert_allclose(grid, expected, rtol=1e-12)


def test_without_a_log_file_figure_draws_this_process_records(tmp_path):
    first = _loop(None, range(5))
    resumed = _loop(None, range(5, 9), state={**first.state_dict(), "logged": 3})
    np.testing.assert_array_equal(resumed.figure().axes[0].get_lines()[0].get_xdata(), [6, 8])


def test_the_csv_columns_and_t_bins_are_the_documented_ones(tmp_path):
    """The CSV header is the one docs/gradient_variance.md ("Log files") lists, and bin k holds the samples with
    k/K ≤ t < (k + 1)/K (t = 1 in the last bin): the JSON logs' edges are k/K, and the counts of a batch with t on
    the edges follow."""
    path = tmp_path / "gv.csv"
    monitor = GradientVarianceMonitor(MLPField(2, width=8, depth=1).to(F64), t_bins=4, log_path=path, warn=False)
    x, u = torch.randn(8, 2, dtype=F64), torch.randn(8, 2, dtype=F64)
    t = torch.tensor([0.0, 0.2, 0.25, 0.5, 0.74, 0.75, 0.99, 1.0], dtype=F64)
    losses = (monitor.engine.model(x, t) - u).pow(2).sum(1)
    losses.mean().backward()
    record = monitor.step(0, losses, t)
    monitor.close()
    header = next(csv.reader(path.read_text().splitlines()))
    bins = [f"t_bin{k}_{c}" for k in range(4) for c in ("n", "loss", "sq_norm", "trace")]
    assert header == ["step", "loss", "trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_sq_norm",
                      "batch_size", "memorisation", "seconds", *bins]
    assert record["t_profile"]["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert record["t_profile"]["counts"] == [2, 1, 2, 3]
    (row,) = _rows(path)
    assert [int(row[f"t_bin{k}_n"]) for k in range(4)] == [2, 1, 2, 3]
    assert float(row["t_bin3_loss"]) == pytest.approx(float(losses[5:].detach().mean()), rel=1e-12)
    assert 0 < float(row["seconds"]) < 60 and math.isfinite(float(row["t_bin3_sq_norm"]))
