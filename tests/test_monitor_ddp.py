"""The gradient-variance monitor under data parallelism: 2 gloo ranks (torchrun) log the global batch's numbers.

One worker script runs as a plain process (world size 1, the reference: the whole global batch in one process)
and under ``torchrun --standalone --nproc_per_node=2`` (each rank its contiguous shard). Three scenarios:

* ``plain``: a user's loop with torch's DistributedDataParallel (every rank back-propagates the mean over its
  shard of 8 of 16 samples), 4 SGD steps, t-profile and element-wise variances: the trace, the per-layer traces,
  the per-bin counts/losses/‖g_i‖² and Σ g_i² logged by both ranks must equal the single process's;
* ``uneven``: one measured step with shards of 7 and 8 (DDP's averaged ``.grad`` would not be the global mean
  here; the monitor reduces Σ g_i itself, so the trace is still exact), and the per-bin traces, which are the
  pooled within-rank estimate under W > 1 (flowvar.variance.ranks), against that estimate computed from the
  two shards in one process;
* ``trainer``: flowvar's trainer (it all-reduces the gradients itself) with the monitor as a callback: the
  2-rank history equals the 1-rank history;
* ``lightning``: flowvar.integrations.lightning's callback under Lightning's DDP strategy (2 ranks × 8 samples)
  against Lightning on one device (16 samples): the same records on both ranks and in the single process.

Tolerance: float64 throughout, 1e-9 relative (the differences are the order of floating-point additions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

WORKER = r'''
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from flowvar import distributed
from flowvar.couplings import FixedPairs
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.train import TrainConfig, train
from flowvar.variance import GradNormEngine
from flowvar.variance.monitor import GradientVarianceMonitor

world = distributed.init_from_env()
out = Path(sys.argv[1])


def batch(step, B):
    """The global batch of a step (same on every rank): (x_t, t, u_t), float64, d = 3."""
    g = torch.Generator().manual_seed(100 + step)
    x0 = torch.randn(B, 3, generator=g, dtype=torch.float64)
    x1 = 2.0 + torch.randn(B, 3, generator=g, dtype=torch.float64)
    t = torch.rand(B, generator=g, dtype=torch.float64)
    return (1 - t[:, None]) * x0 + t[:, None] * x1, t, x1 - x0


def model_and_wrapper():
    torch.manual_seed(0)
    model = MLPField(3, width=16, depth=2).double()
    distributed.broadcast_module_(model)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world.size > 1 else model
    return model, wrapped


# plain: a user's loop under torch DDP, equal shards, 4 steps
model, wrapped = model_and_wrapper()
monitor = GradientVarianceMonitor(model, every=1, t_bins=4, profile_every=1, elementwise=True,
                                  log_path=out / "plain.jsonl")
opt = torch.optim.SGD(model.parameters(), lr=0.05)
elementwise = []
for step in range(1, 5):
    xt, t, ut = batch(step, 16)
    lo, hi = distributed.shard_bounds(16, world.rank, world.size)
    losses = (wrapped(xt[lo:hi], t[lo:hi]) - ut[lo:hi]).pow(2).sum(1)
    opt.zero_grad()
    losses.mean().backward()
    monitor.step(step, losses, t[lo:hi])
    elementwise.append(monitor.last_report.elementwise)
    opt.step()
monitor.close()
plain = {"history": monitor.history, "elementwise": elementwise}

# uneven: one measured step, shards 7 + 8 of 15
model, wrapped = model_and_wrapper()
monitor = GradientVarianceMonitor(model, every=1, t_bins=3, profile_every=1)
xt, t, ut = batch(9, 15)
lo, hi = distributed.shard_bounds(15, world.rank, world.size)
losses = (wrapped(xt[lo:hi], t[lo:hi]) - ut[lo:hi]).pow(2).sum(1)
losses.mean().backward()
uneven = {"record": monitor.step(0, losses, t[lo:hi])}
monitor.close()
if world.size == 1:  # the per-shard bins that the 2-rank run pools, measured here in one process
    shards = []
    for a, b in (distributed.shard_bounds(15, r, 2) for r in range(2)):
        with GradNormEngine(model) as engine:
            part = (model(xt[a:b], t[a:b]) - ut[a:b]).pow(2).sum(1)
            model.zero_grad()
            part.mean().backward()
            bins = engine.compute(reduction="mean", losses=part.detach(), t=t[a:b], t_bins=3).bins()
        shards.append({"counts": bins.counts.tolist(), "trace": bins.trace.tolist()})
    uneven["shards"] = shards

# trainer: flowvar's data-parallel trainer with the monitor as its callback
g = torch.Generator().manual_seed(11)
x0 = torch.randn(40, 3, generator=g, dtype=torch.float64)
x1 = 2.0 + torch.randn(40, 3, generator=g, dtype=torch.float64)
pairs = FixedPairs(x0, x1, shuffle=True, generator=g)
torch.manual_seed(5)
model = MLPField(3, width=16, depth=2).double()
config = TrainConfig(steps=6, batch_size=15, lr=1e-2, grad_clip=0.5, warmup_steps=2, seed=3, log_every=0)
monitor = GradientVarianceMonitor(model, every=2, t_bins=3, profile_every=1)
result = train(model, CFMLoss(Interpolant(0.1)), pairs, config, callbacks=[monitor])
monitor.close()
trainer = {"history": result.history, "records": monitor.history}

# lightning: the callback under Lightning's DDP strategy (it reuses torchrun's process group); the batches carry
# their own (x0, x1, t), so a rank's shard of the global batch is the same samples as in one process
import lightning as L

from flowvar.integrations.lightning import GradientVarianceCallback


class Flow(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.model = MLPField(2, width=16, depth=2)

    def per_sample_losses(self, batch):
        x0, x1, t = batch
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        return (self.model(xt, t) - (x1 - x0)).pow(2).sum(1), t

    def training_step(self, batch, batch_idx):
        return self.per_sample_losses(batch)[0].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02)


g = torch.Generator().manual_seed(13)
data = torch.utils.data.TensorDataset(torch.randn(64, 2, generator=g, dtype=torch.float64),
                                      3 + torch.randn(64, 2, generator=g, dtype=torch.float64),
                                      torch.rand(64, generator=g, dtype=torch.float64))
# an unshuffled DistributedSampler (Lightning's own would shuffle): rank r takes samples r, r + W, ..., so the
# k-th global batch of 16 is samples 16k..16k + 15 in every run
sampler = torch.utils.data.DistributedSampler(data, shuffle=False) if world.size > 1 else None
loader = torch.utils.data.DataLoader(data, batch_size=16 // world.size, shuffle=False, sampler=sampler)
callback = GradientVarianceCallback(every=2, t_bins=3)
L.Trainer(max_steps=6, accelerator="cpu", devices=world.size, strategy="ddp" if world.size > 1 else "auto",
          precision="64-true", logger=False, callbacks=[callback], enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
          use_distributed_sampler=False).fit(Flow(), loader)
lightning = {"records": callback.monitor.history}

torch.save({"world": world.size, "plain": plain, "uneven": uneven, "trainer": trainer, "lightning": lightning},
           out / f"rank{world.rank}.pt")
'''

SCALAR_KEYS = ("loss", "trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_sq_norm")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("monitor_ddp")
    (root / "worker.py").write_text(WORKER)
    single, double = root / "single", root / "double"
    single.mkdir()
    double.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    procs = [subprocess.Popen(c, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in ([sys.executable, "worker.py", str(single)],
                       [*launcher, "--standalone", "--nproc_per_node=2", "worker.py", str(double)])]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-4000:]
    return {"single": torch.load(single / "rank0.pt", weights_only=False),
            "rank0": torch.load(double / "rank0.pt", weights_only=False),
            "rank1": torch.load(double / "rank1.pt", weights_only=False), "double": double}


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b)) or abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def _same_record(got: dict, ref: dict, bin_traces: bool = True) -> None:
    assert got["batch_size"] == ref["batch_size"]
    for key in SCALAR_KEYS:
        assert _close(got[key], ref[key]), (key, got[key], ref[key])
    assert set(got["per_layer"]) == set(ref["per_layer"])
    for layer, value in ref["per_layer"].items():
        assert _close(got["per_layer"][layer], value), layer
    gp, rp = got["t_profile"], ref["t_profile"]
    assert gp["counts"] == rp["counts"]
    for key in ("loss", "mean_sq_norm", *(("trace",) if bin_traces else ())):
        assert all(_close(a, b) for a, b in zip(gp[key], rp[key])), (key, gp[key], rp[key])


def test_ddp_loop_logs_the_global_batch_trace(runs: dict) -> None:
    one, r0, r1 = runs["single"]["plain"], runs["rank0"]["plain"], runs["rank1"]["plain"]
    assert runs["single"]["world"] == 1 and runs["rank0"]["world"] == 2
    assert len(one["history"]) == len(r0["history"]) == 4
    for got0, got1, ref in zip(r0["history"], r1["history"], one["history"]):
        _same_record(got0, ref, bin_traces=False)  # the 2-rank per-bin traces are pooled (see the uneven test)
        _same_record(got1, got0)  # every rank holds the same global numbers
        assert ref["trace"] > 0 and got0["batch_size"] == 16
    for got, ref in zip(r0["elementwise"], one["elementwise"]):
        for name, value in ref.items():
            torch.testing.assert_close(got[name], value, rtol=1e-9, atol=1e-15)
    rel = max(abs(g["trace"] - r["trace"]) / r["trace"] for g, r in zip(r0["history"], one["history"]))
    print(f"largest relative trace difference, 2 ranks vs 1 process: {rel:.2e}")


def test_only_rank0_writes_the_log(runs: dict) -> None:
    rows = [json.loads(line) for line in (runs["double"] / "plain.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["trace"] == pytest.approx(runs["rank0"]["plain"]["history"][-1]["trace"], rel=1e-12)


def test_uneven_shards_exact_trace_and_pooled_bin_traces(runs: dict) -> None:
    ref, got = runs["single"]["uneven"], runs["rank0"]["uneven"]
    _same_record(got["record"], ref["record"], bin_traces=False)
    assert got["record"]["batch_size"] == 15
    counts = np.array([s["counts"] for s in ref["shards"]], dtype=float)
    traces = np.array([s["trace"] for s in ref["shards"]], dtype=float)
    assert counts.sum(0).tolist() == got["record"]["t_profile"]["counts"]
    w = np.clip(counts - 1, 0, None)
    pooled = np.nansum(np.where(counts >= 2, w * traces, 0.0), 0) / w.sum(0)
    logged = np.array(got["record"]["t_profile"]["trace"])
    assert np.all(np.isfinite(logged))
    np.testing.assert_allclose(logged, pooled, rtol=1e-9)
    # the pooled value estimates the same conditional trace as the single process's (not the same number)
    assert not np.allclose(logged, ref["record"]["t_profile"]["trace"], rtol=1e-6)


def test_trainer_callback_under_ddp_matches_one_process(runs: dict) -> None:
    one, r0 = runs["single"]["trainer"], runs["rank0"]["trainer"]
    assert [h["step"] for h in r0["history"]] == [h["step"] for h in one["history"]] == [2, 4, 6]
    for got, ref in zip(r0["history"], one["history"]):
        for key in ("gv_loss", "gv_trace", "gv_normalised"):
            assert _close(got[key], ref[key]), (key, got[key], ref[key])
    for got, ref in zip(r0["records"], one["records"]):
        _same_record(got, ref, bin_traces=False)
        assert got["batch_size"] == 15


def test_lightning_callback_under_ddp_matches_one_process(runs: dict) -> None:
    one, r0, r1 = runs["single"]["lightning"], runs["rank0"]["lightning"], runs["rank1"]["lightning"]
    assert [r["step"] for r in one["records"]] == [r["step"] for r in r0["records"]] == [2, 4, 6]
    for got0, got1, ref in zip(r0["records"], r1["records"], one["records"]):
        _same_record(got0, ref, bin_traces=False)
        _same_record(got1, got0)
        assert got0["batch_size"] == 16


def test_grad_overwritten_in_place_before_the_monitor_reads_it() -> None:
    """DDP's reducer writes the averaged gradient into .grad in place during backward, and flowvar's trainer
    all-reduces into it before its callbacks: the monitor's mean gradient is its own copy of this pass's gradient,
    so the trace is unchanged by what happens to .grad afterwards (it was W× off under DDP before the copy)."""
    from flowvar.models import MLPField
    from flowvar.variance.monitor import GradientVarianceMonitor

    g = torch.Generator().manual_seed(4)
    x, t, u = (torch.randn(12, 3, generator=g, dtype=torch.float64), torch.rand(12, generator=g, dtype=torch.float64),
               torch.randn(12, 3, generator=g, dtype=torch.float64))
    traces = []
    for scale in (1.0, 3.0):
        torch.manual_seed(0)
        model = MLPField(3, width=8, depth=2).double()
        with GradientVarianceMonitor(model, t_bins=None) as monitor:
            losses = (model(x, t) - u).pow(2).sum(1)
            losses.mean().backward()
            for p in model.parameters():
                p.grad.mul_(scale)  # what an in-place all-reduce (or clipping) does to .grad
            traces.append(monitor.step(0, losses)["trace"])
    assert traces[1] == pytest.approx(traces[0], rel=1e-12)
