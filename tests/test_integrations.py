"""The monitor in users' training loops: the Lightning callback, and the torchcfm / Meta flow_matching examples.

* Lightning: a tiny float64 LightningModule trains 40 steps on the CPU with ``GradientVarianceCallback(every=10)``;
  the trace and per-bin traces its logger received at a logged step equal the monitor's own numbers, and those
  equal a torch.func per-sample-gradient reference computed from a snapshot of that step's model and batch
  (1e-9 relative in float64). A module that breaks the contract fails at ``fit`` start with one line. With
  ``every`` not a multiple of ``log_every_n_steps``, or a larger multiple, ``metrics.csv`` holds each measurement
  once, at its own step (``self.log`` made Lightning write stale copies at later logging steps). Manual
  optimisation with two optimizers (``global_step`` advances by 2 per batch) measures every ``every``-th batch
  (it measured nothing for an even ``every``). ``own_grads=False`` reaches the monitor: a float32 conv net's fit
  with the callback ends bit-identical to one without it (the default: apart by rounding). Gradient accumulation
  and hand-written micro-batches: tests/test_lightning_accumulation.py.
* examples/: both scripts run with tiny settings as subprocesses, exit 0 and print finite traces.

Everything is built locally from small configs; nothing is downloaded.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError

L = pytest.importorskip("lightning", reason="the Lightning callback needs `pip install lightning` (make setup)")
from flowvar.integrations.lightning import GradientVarianceCallback  # noqa: E402
from lightning_checks import Flow, loader, per_sample_gradients  # noqa: E402

# Lightning 2.6 on torch 2.13: a deprecation inside Lightning's own pytree helper, nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`")
F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
EVERY, T_BINS, SNAPSHOT_STEP = 10, 3, 20


class Snapshot(L.Callback):
    """Keeps a copy of the model and the batch of one training batch (counted from 1 by its own counter), taken after
    backward (before the optimizer step)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.batches = 0
        self.taken: dict[str, Any] | None = None

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches += 1
        if self.batches == self.step:
            self.taken = {"model": copy.deepcopy(pl_module.model), "batch": pl_module.last}


def _trainer(tmp_path: Path, callbacks: list[L.Callback], steps: int = 40, log_every: int = EVERY,
             **kw: Any) -> L.Trainer:
    return L.Trainer(max_steps=steps, callbacks=callbacks, log_every_n_steps=log_every, accelerator="cpu",
                     devices=1, precision="64-true", logger=L.pytorch.loggers.CSVLogger(tmp_path),
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)


def _reference(model: nn.Module, xt: Tensor, t: Tensor, ut: Tensor) -> dict[str, Any]:
    """tr Cov(g) and the unbiased per-bin traces from torch.func per-sample gradients of ‖v(x_t, t) − u_t‖²."""
    g = per_sample_gradients(model, xt, t, ut)
    bins = (t * T_BINS).long().clamp(max=T_BINS - 1)
    per_bin = []
    for k in range(T_BINS):
        gk = g[bins == k]
        per_bin.append(float((gk - gk.mean(0)).pow(2).sum() / (gk.shape[0] - 1)) if gk.shape[0] >= 2 else math.nan)
    return {"trace": float((g - g.mean(0)).pow(2).sum(1).mean()), "bins": per_bin}


def test_lightning_callback_logs_the_monitor_trace(tmp_path: Path) -> None:
    callback, snapshot = GradientVarianceCallback(every=EVERY, t_bins=T_BINS), Snapshot(SNAPSHOT_STEP)
    module = Flow()
    trainer = _trainer(tmp_path, [callback, snapshot])
    trainer.fit(module, loader())
    history = callback.monitor.history
    assert [r["step"] for r in history] == [10, 20, 30, 40]
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("gradvar/trace")]
    # Lightning's logger step is global_step, the monitor's step global_step + 1 (optimizer steps including this one)
    logged = {int(r["step"]) + 1: r for r in rows}
    assert sorted(logged) == [10, 20, 30, 40]
    for record in history:
        row = logged[record["step"]]
        assert float(row["gradvar/trace"]) == pytest.approx(record["trace"], rel=1e-6)
        assert float(row["gradvar/loss"]) == pytest.approx(record["loss"], rel=1e-6)
        assert float(row["gradvar/normalised"]) == pytest.approx(record["normalised"], rel=1e-6)
        for k, value in enumerate(record["t_profile"]["trace"]):  # profile_every=1: every bin trace is logged
            assert float(row[f"gradvar/t_bin{k}_trace"]) == pytest.approx(value, rel=1e-6)
    record = history[1]
    assert snapshot.taken is not None and record["step"] == SNAPSHOT_STEP
    ref = _reference(snapshot.taken["model"], *snapshot.taken["batch"])
    assert record["trace"] == pytest.approx(ref["trace"], rel=1e-9)
    assert float(logged[SNAPSHOT_STEP]["gradvar/trace"]) == pytest.approx(ref["trace"], rel=1e-6)
    for got, want in zip(record["t_profile"]["trace"], ref["bins"]):
        assert got == pytest.approx(want, rel=1e-9, nan_ok=True)
    # after fit: the method wrapper and the hooks are gone
    assert "per_sample_losses" not in vars(module)
    module.model(torch.zeros(4, 2, dtype=F64), torch.zeros(4, dtype=F64)).sum().backward()
    assert not callback.monitor.engine.has_records


def _logged_rows(trainer: L.Trainer) -> list[dict[str, str]]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("gradvar/trace")]


@pytest.mark.parametrize(("every", "log_every"), [(3, 2), (4, 2), (5, 4)])
def test_lightning_logger_gets_each_measurement_once_at_its_own_step(tmp_path: Path, every: int,
                                                                     log_every: int) -> None:
    """Whatever ``log_every_n_steps`` is, metrics.csv has one gradvar row per measurement, under the measured
    batch's step and with its numbers; ``callback_metrics`` holds the latest measurement."""
    callback = GradientVarianceCallback(every=every, t_bins=T_BINS, warn=False)
    trainer = _trainer(tmp_path, [callback], steps=20, log_every=log_every)
    trainer.fit(Flow(), loader())
    history = callback.monitor.history
    assert [r["step"] for r in history] == list(range(every, 21, every))
    rows = _logged_rows(trainer)
    assert [int(r["step"]) + 1 for r in rows] == [r["step"] for r in history]
    for row, record in zip(rows, history):
        assert float(row["gradvar/trace"]) == pytest.approx(record["trace"], rel=1e-12)
        assert float(row["gradvar/t_bin0_trace"]) == pytest.approx(record["t_profile"]["trace"][0], rel=1e-12)
    # (self.log keeps a Python float as a float32 tensor)
    assert float(trainer.callback_metrics["gradvar/trace"]) == pytest.approx(history[-1]["trace"], rel=1e-6)


class TwoOptimizers(Flow):
    """Manual optimisation stepping two optimizers per batch: ``trainer.global_step`` advances by 2 per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: list[Tensor], batch_idx: int) -> None:
        first, second = self.optimizers()
        losses, _ = self.per_sample_losses(batch)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(losses.mean())
        first.step()
        second.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:  # type: ignore[override]
        params = list(self.model.parameters())
        half = len(params) // 2
        return [torch.optim.Adam(params[:half], lr=1e-2), torch.optim.SGD(params[half:], lr=1e-2)]


def test_lightning_manual_optimisation_with_two_optimizers_measures_every_every_th_batch(tmp_path: Path) -> None:
    """16 batches, two optimizer steps each (global_step ends at 32), every=2: batches 2, 4, ..., 16 are measured,
    logged under their own batch's step, and batch 4's trace equals the torch.func reference of that batch."""
    callback, snapshot = GradientVarianceCallback(every=2, t_bins=T_BINS, warn=False), Snapshot(4)
    trainer = _trainer(tmp_path, [callback, snapshot], steps=32, log_every=2)
    trainer.fit(TwoOptimizers(), loader())
    assert trainer.global_step == 32
    history = callback.monitor.history
    assert [r["step"] for r in history] == list(range(2, 17, 2))
    assert [int(r["step"]) + 1 for r in _logged_rows(trainer)] == [r["step"] for r in history]
    assert snapshot.taken is not None
    ref = _reference(snapshot.taken["model"], *snapshot.taken["batch"])
    assert history[1]["step"] == 4 and history[1]["trace"] == pytest.approx(ref["trace"], rel=1e-9)


class NoModel(Flow):
    def __init__(self) -> None:
        super().__init__()
        self.net = self.model
        del self.model

    def per_sample_losses(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        (x1,) = batch
        t = torch.rand(x1.shape[0], dtype=x1.dtype)
        return (self.net(x1, t) - x1).pow(2).sum(1), t


class NoLosses(Flow):
    per_sample_losses = None  # type: ignore[assignment]

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        (x1,) = batch
        return self.model(x1, torch.rand(x1.shape[0], dtype=x1.dtype)).pow(2).mean()


@pytest.mark.parametrize(("module", "kw", "match"), [
    (NoModel, {}, r"NoModel\.model is not an nn\.Module"),
    (NoLosses, {}, "has no method per_sample_losses"),
    (lambda: Flow(calls=2), {}, "called per_sample_losses\\(\\) 2 times"),
])
def test_lightning_contract_errors_are_one_line(tmp_path: Path, module: Any, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        _trainer(tmp_path, [GradientVarianceCallback(every=1, t_bins=T_BINS)], steps=2, log_every=1,
                 **kw).fit(module(), loader())
    assert "\n" not in str(err.value)


TRACE = re.compile(r"^step +(\d+) +loss (\S+) +trace (\S+)", re.M)


def test_examples_run_and_print_finite_traces() -> None:
    """Both examples, tiny settings, run concurrently (each is mostly interpreter and library start-up)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    commands = {
        "torchcfm": [sys.executable, str(ROOT / "examples" / "monitor_torchcfm.py"), "--steps", "40", "--every", "10",
                     "--batch-size", "32", "--n-train", "64", "--width", "32"],
        "flow_matching": [sys.executable, str(ROOT / "examples" / "monitor_flow_matching.py"), "--steps", "40",
                          "--every", "10", "--batch-size", "32", "--n-train", "64", "--width", "32"],
    }
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, cmd in commands.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {out[-3000:]}"
        found = TRACE.findall(out)
        assert [int(s) for s, _, _ in found] == [10, 20, 30, 40], f"{name}: {out[-3000:]}"
        assert all(math.isfinite(float(loss)) and math.isfinite(float(tr)) and float(tr) > 0 for _, loss, tr in found)
        assert "tr Cov(g | t-bin) at step 40" in out


def test_lightning_resume_from_a_checkpoint_restores_the_monitor_state(tmp_path: Path) -> None:
    """fit 20 steps with a checkpoint, then fit(ckpt_path=...) to 40: the callback's monitor state (detector peaks,
    records logged) comes back from Lightning's checkpoint, so the resumed monitor ends where a 40-step run ends."""
    straight = GradientVarianceCallback(every=EVERY, t_bins=T_BINS, profile_every=3, warn=False)
    _trainer(tmp_path / "a", [straight]).fit(Flow(), loader())

    first = GradientVarianceCallback(every=EVERY, t_bins=T_BINS, profile_every=3, warn=False)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=20)
    trainer = L.Trainer(max_steps=20, callbacks=[first, saver], log_every_n_steps=EVERY, accelerator="cpu",
                        devices=1, precision="64-true", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Flow(), loader())
    assert first.monitor is not None and first.monitor.state_dict()["logged"] == 2
    resumed = GradientVarianceCallback(every=EVERY, t_bins=T_BINS, profile_every=3, warn=False)
    _trainer(tmp_path / "b", [resumed]).fit(Flow(), loader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.monitor is not None and [r["step"] for r in resumed.monitor.history] == [30, 40]
    state = resumed.monitor.state_dict()
    assert state["logged"] == straight.monitor.state_dict()["logged"] == 4
    profiled = [not math.isnan(r["t_profile"]["trace"][0]) for r in resumed.monitor.history]
    assert profiled == [False, True]  # records 3 and 4 of the run (every 3rd profiled: 1 and 4), not 1 and 2


def test_lightning_resume_continues_the_log_and_a_new_run_replaces_it(tmp_path: Path) -> None:
    """log_path under Lightning: fit(ckpt_path=...) restores the monitor's state (load_state_dict), so the log keeps
    the rows up to the checkpoint and adds the resumed run's; a new fit into the same file starts it afresh (it kept
    the old run's rows before its first log)."""
    log_path = tmp_path / "gv.csv"

    def callback(every: int = EVERY) -> GradientVarianceCallback:
        return GradientVarianceCallback(every=every, t_bins=None, warn=False, log_path=log_path)

    def steps() -> list[int]:
        with open(log_path, newline="") as fh:
            return [int(float(r["step"])) for r in csv.DictReader(fh)]

    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=20)
    L.Trainer(max_steps=20, callbacks=[callback(), saver], accelerator="cpu", devices=1, precision="64-true",
              logger=False, enable_progress_bar=False, enable_model_summary=False).fit(Flow(), loader())
    assert steps() == [10, 20]
    _trainer(tmp_path / "b", [callback()]).fit(Flow(), loader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert steps() == [10, 20, 30, 40]
    _trainer(tmp_path / "c", [callback(every=15)]).fit(Flow(), loader())
    assert steps() == [15, 30]


class ConvFlow(L.LightningModule):
    """CFM (σ = 0) on 1×8×8 float32 images with a small conv net whose 8×8-map convolutions the engine owns."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = _ConvField()

    def per_sample_losses(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        (x1,) = batch
        x0 = torch.randn_like(x1)  # the global generator, seeded in __init__: the same draws in every fit
        t = torch.rand(x1.shape[0])
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
        return (self.model(xt, t) - (x1 - x0)).pow(2).flatten(1).sum(1), t

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return self.per_sample_losses(batch)[0].mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class _ConvField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = torch.relu(self.c1(torch.cat([x, t[:, None, None, None].expand(-1, 1, *x.shape[2:])], 1)))
        return self.c3(torch.relu(self.c2(h)))


@pytest.mark.parametrize("own_grads", [False, True])
def test_lightning_own_grads_false_trains_as_without_the_callback(tmp_path: Path, own_grads: bool) -> None:
    """GradientVarianceCallback(own_grads=False) passes it to the monitor: 4 float32 Adam steps measured every step
    end bit-identical to the same fit without the callback. The default (True) ends apart by rounding only (the
    owned convolutions' .grad is a float64 sum), which shows the conv net's layers are owned."""
    def fit(callbacks: list[L.Callback]) -> Tensor:
        module = ConvFlow()
        data = torch.utils.data.TensorDataset(torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
        L.Trainer(max_steps=4, callbacks=callbacks, accelerator="cpu", devices=1, precision="32-true", logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(
            module, torch.utils.data.DataLoader(data, batch_size=8))
        return torch.cat([p.detach().flatten() for p in module.model.parameters()])

    plain = fit([])
    callback = GradientVarianceCallback(every=1, t_bins=None, warn=False, own_grads=own_grads)
    monitored = fit([callback])
    assert callback.monitor is not None and len(callback.monitor.history) == 4
    assert (callback.monitor.engine.owned is None) is not own_grads
    if own_grads:
        assert not torch.equal(monitored, plain)
        assert (monitored - plain).abs().max().item() < 1e-5
    else:
        assert torch.equal(monitored, plain)
