"""Review integR 1: under DDP, a monitor built or called on one rank only is a one-line ConfigError, not a hang.

The monitor reduces its statistics over the ranks with collectives on the default process group. A rank that is not
in it (the monitor built under ``if rank == 0:``, or built everywhere and called on rank 0 only) paired them with
DDP's own gradient all-reduce: the run hung until the group's timeout or aborted inside gloo ("Received data size
doesn't match expected size"), with no flowvar message. Each logged step now first meets the ranks through the
group's key-value store (flowvar.variance.ranks.meet_ranks): a rank that does not come within ``rank_timeout_s`` is a
ConfigError naming the rule and the fix (``reduce_ranks=False``).

Two gloo processes on the CPU, launched as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; the env://
rendezvous's TCPStore), one launch per scenario, both at once:

* ``rank0_only``: the monitor built and called on rank 0 only (the reviewer's ddp3.py); ``rank_timeout_s=2``;
* ``stepped_rank0``: first both ranks call it (3 logged steps): the same global trace on both, the store's keys of
  earlier rounds deleted; then both call it with different step numbers: a ConfigError on both ranks together; then
  a new monitor built on both ranks is called on rank 0 only (the reviewer's ddp2.py, which aborted inside gloo).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

WORKER = r'''
import datetime, json, os, sys, time
import torch
import torch.distributed as dist

torch.set_num_threads(1)
from flowvar import distributed
from flowvar.errors import ConfigError
from flowvar.models import MLPField
from flowvar.variance.monitor import GradientVarianceMonitor

scenario, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
rank = dist.get_rank()
torch.manual_seed(0)
model = MLPField(2, 16, 2)
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
result = {"rank": rank}


def batch(step):
    g = torch.Generator().manual_seed(step)
    x0, x1, t = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g) + 3, torch.rand(32, generator=g)
    xt, u = (1 - t[:, None]) * x0 + t[:, None] * x1, x1 - x0
    lo, hi = 16 * rank, 16 * (rank + 1)
    return xt[lo:hi], t[lo:hi], u[lo:hi]


def train_step(step, monitor, call, number=None):
    xt, t, u = batch(step)
    losses = ((ddp(xt, t) - u) ** 2).sum(1)
    opt.zero_grad()
    losses.mean().backward()
    record = None
    if call:
        start = time.perf_counter()
        try:
            record = monitor.step(step if number is None else number, losses, t)
        finally:
            result["seconds"] = time.perf_counter() - start
    opt.step()
    return record


try:
    if scenario == "rank0_only":
        monitor = GradientVarianceMonitor(ddp.module, every=1, rank_timeout_s=2) if rank == 0 else None
        for step in range(3):
            train_step(step, monitor, rank == 0)
    else:
        monitor = GradientVarianceMonitor(ddp.module, every=1, rank_timeout_s=10)
        result["traces"] = [train_step(step, monitor, True)["trace"] for step in range(3)]
        store = dist.distributed_c10d._get_default_store()
        rounds = distributed._ROUNDS["gradvar"]
        result["keys"] = [store.check([f"flowvar/gradvar/{k}/{rank}"]) for k in range(rounds)]
        try:
            train_step(3, monitor, True, number=3 + rank)  # the ranks number their steps differently
        except ConfigError as error:
            result["mismatch"] = str(error)
        monitor.close()
        monitor = GradientVarianceMonitor(ddp.module, every=1, t_bins=None, rank_timeout_s=2)
        for step in range(4, 7):
            train_step(step, monitor, rank == 0)
except Exception as error:
    result["error"], result["type"] = str(error)[:2000], type(error).__name__
with open(os.path.join(out, f"{scenario}{rank}.json"), "w") as fh:
    json.dump(result, fh)
os._exit(0)  # a rank left inside gloo's collective by its peer: no teardown to wait for
'''

SCENARIOS = ("rank0_only", "stepped_rank0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("integr_ranks")
    (root / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    procs = []
    for scenario in SCENARIOS:
        port = str(_free_port())
        for rank in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "worker.py", scenario, str(root)], cwd=root, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
                env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_PORT": port}))
    start = time.monotonic()
    logs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, 90 - (time.monotonic() - start)))
            logs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    found = {}
    for scenario in SCENARIOS:
        files = [root / f"{scenario}{rank}.json" for rank in range(2)]
        assert all(f.is_file() for f in files), "\n".join(log[-3000:] for log in logs)
        found[scenario] = [json.loads(f.read_text()) for f in files]
    return found


def _one_line_rule_and_fix(message: str) -> None:
    assert "\n" not in message
    assert "every rank must build the monitor and call it on the same steps" in message
    assert "reduce_ranks=False" in message


@pytest.mark.parametrize("scenario", ["rank0_only", "stepped_rank0"])
def test_a_monitor_on_rank0_only_is_a_config_error_within_the_timeout(results: dict, scenario: str) -> None:
    rank0 = results[scenario][0]
    assert rank0.get("type") == "ConfigError", rank0
    _one_line_rule_and_fix(rank0["error"])
    assert "rank(s) 1 never reached it" in rank0["error"]
    assert f"step {0 if scenario == 'rank0_only' else 4}:" in rank0["error"]
    # rank_timeout_s=2: bounded by the handshake, not by the group's 30 s collective timeout
    assert 2.0 <= rank0["seconds"] < 10.0, rank0


def test_every_rank_calling_logs_the_same_global_trace_and_keeps_no_stale_keys(results: dict) -> None:
    r0, r1 = results["stepped_rank0"]
    # (rank 1's error: its peer gone from DDP's next all-reduce, once rank 0 raised in the last phase)
    assert r0["type"] == "ConfigError" and r1["type"] != "ConfigError", (r0, r1)
    assert len(r0["traces"]) == 3 and all(tr > 0 for tr in r0["traces"])
    assert r0["traces"] == r1["traces"]  # the global batch's numbers on both ranks
    # each round deletes the rank's key of the round before: only the last round's key is left
    assert r0["keys"] == r1["keys"] == [False, False, True]


def test_ranks_calling_with_different_step_numbers_both_raise(results: dict) -> None:
    for r in results["stepped_rank0"]:
        message = r.get("mismatch", "")
        assert "at different steps (rank 0: 3, rank 1: 4)" in message, r
        assert "every rank must build the monitor and call it on the same steps" in message


def test_rank_timeout_must_be_positive() -> None:
    from flowvar.errors import ConfigError
    from flowvar.models import MLPField
    from flowvar.variance.monitor import GradientVarianceMonitor

    for bad in (0, -1.0, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ConfigError, match="rank_timeout_s must be a number of seconds > 0"):
            GradientVarianceMonitor(MLPField(2, 8, 1), rank_timeout_s=bad)


def test_default_wait_is_300_s_capped_at_half_the_group_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowvar import distributed
    from flowvar.variance import ranks

    monkeypatch.setattr(distributed, "store_timeout_s", lambda: None)
    assert ranks.rank_timeout_s() == ranks.RANK_TIMEOUT_S == 300.0
    monkeypatch.setattr(distributed, "store_timeout_s", lambda: 1800.0)  # torch's default 30 min
    assert ranks.rank_timeout_s() == 300.0
    monkeypatch.setattr(distributed, "store_timeout_s", lambda: 120.0)  # a group built with a 2-minute timeout
    assert ranks.rank_timeout_s() == 60.0
    assert ranks.rank_timeout_s(7) == 7.0
    assert distributed.rendezvous("gradvar", 1.0) is None  # no process group: nothing to meet
