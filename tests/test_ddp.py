"""Data-parallel training: a 2-process gloo run launched with torchrun reproduces the 1-process run.

The worker script below is written to a temporary folder and run twice: as a plain process (world size 1)
and under ``torchrun --standalone --nproc_per_node=2`` (the gloo backend on CPU). Both train the same models
on the same data with the same config; every rank draws the same global batch and keeps its slice, and the
gradients are summed over ranks, so the loss curves must agree up to the order of floating-point additions.
Tolerance: 1e-9 relative in float64 (observed differences are ~1e-15).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowvar import distributed
from flowvar.errors import ConfigError
from flowvar.train import CHECKPOINT_NAME, load_checkpoint, train

SCENARIOS = r'''
import torch
from flowvar.couplings import FixedPairs
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.models.unet import UNetField
from flowvar.train import TrainConfig


def mlp_setup(steps):
    """float64 MLP on 40 fixed shuffled pairs in d=3; global batch 15 (uneven shards 7 + 8 on 2 ranks)."""
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(40, 3, generator=g, dtype=torch.float64)
    x1 = 2.0 + torch.randn(40, 3, generator=g, dtype=torch.float64)
    pairs = FixedPairs(x0, x1, shuffle=True, generator=g)
    torch.manual_seed(5 + torch.distributed.get_rank() if torch.distributed.is_initialized() else 5)
    model = MLPField(3, width=32, depth=2).double()
    config = TrainConfig(steps=steps, batch_size=15, lr=1e-2, grad_clip=0.5, warmup_steps=5, ema_decay=0.9, seed=3,
                         checkpoint_every=10, log_every=0)
    return model, CFMLoss(Interpolant(0.1)), pairs, config


def unet_setup():
    """float64 tiny UNet on 12 fixed 8x8 pairs; global batch 8 (4 + 4)."""
    g = torch.Generator().manual_seed(12)
    x0 = torch.randn(12, 1, 8, 8, generator=g, dtype=torch.float64)
    x1 = torch.rand(12, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    pairs = FixedPairs(x0, x1)
    torch.manual_seed(7)
    model = UNetField(8, 1, base_channels=8, channel_mult=(1, 2), groups=4).double()
    config = TrainConfig(steps=6, batch_size=8, lr=1e-3, grad_clip=1.0, warmup_steps=2, ema_decay=0.5, seed=4,
                         log_every=0)
    return model, CFMLoss(Interpolant(0.05)), pairs, config
'''

WORKER = r'''
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from flowvar import distributed
from flowvar.train import train

ns = {}
exec(Path(sys.argv[2]).read_text(), ns)
world = distributed.init_from_env()
out = Path(sys.argv[1])
model, loss, pairs, config = ns["mlp_setup"](25)
res = train(model, loss, pairs, config, checkpoint_dir=out / "ckpt")
umodel, uloss, upairs, uconfig = ns["unet_setup"]()
ures = train(umodel, uloss, upairs, uconfig)
mapped = distributed.map_sharded(lambda x: x * 2 + 1, torch.arange(5.0)[:, None])
torch.save({"mapped": mapped, "world": world.size, "losses": res.losses, "params": model.state_dict(),
            "ema": res.ema_state, "unet_losses": ures.losses, "unet_params": umodel.state_dict()},
           out / f"rank{world.rank}.pt")
'''


def _run_all(commands: list[list[str]], cwd: Path) -> None:
    """Run the commands concurrently (each is mostly process start-up) and check that all succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-4000:]


def _rel(a: list[float], b: list[float]) -> float:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float(((ta - tb).abs() / tb.abs().clamp_min(1e-300)).max())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("ddp")
    (root / "scenarios.py").write_text(SCENARIOS)
    (root / "worker.py").write_text(WORKER)
    single, double = root / "single", root / "double"
    single.mkdir()
    double.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    _run_all([[sys.executable, "worker.py", str(single), "scenarios.py"],
              [*launcher, "--standalone", "--nproc_per_node=2", "worker.py", str(double), "scenarios.py"]], root)
    return {"root": root, "single": torch.load(single / "rank0.pt"), "rank0": torch.load(double / "rank0.pt"),
            "rank1": torch.load(double / "rank1.pt"), "ckpt1": single / "ckpt", "ckpt2": double / "ckpt"}


def test_two_process_loss_curve_matches_one_process(runs: dict) -> None:
    one, r0 = runs["single"], runs["rank0"]
    assert one["world"] == 1 and r0["world"] == 2
    assert len(one["losses"]) == len(r0["losses"]) == 25
    assert _rel(r0["losses"], one["losses"]) < 1e-9
    assert _rel(r0["unet_losses"], one["unet_losses"]) < 1e-9
    print("largest relative loss difference, 2 vs 1 process:", _rel(r0["losses"], one["losses"]),
          _rel(r0["unet_losses"], one["unet_losses"]))
    for key in ("params", "ema", "unet_params"):
        for name, value in one[key].items():
            torch.testing.assert_close(r0[key][name], value, rtol=1e-9, atol=1e-12, msg=f"{key}.{name}")


def test_replicas_stay_identical_and_rank1_initialisation_is_overwritten(runs: dict) -> None:
    # rank 1 built its MLP from another seed (5 + rank): the broadcast at the start made it rank 0's model.
    r0, r1 = runs["rank0"], runs["rank1"]
    assert r0["losses"] == r1["losses"]
    expected = torch.arange(5.0)[:, None] * 2 + 1  # map_sharded: each rank maps its rows, all gather the result
    assert torch.equal(r0["mapped"], expected) and torch.equal(r1["mapped"], expected)
    for key in ("params", "ema", "unet_params"):
        for name, value in r0[key].items():
            assert torch.equal(r1[key][name], value), f"{key}.{name} differs between ranks"


def test_only_rank0_writes_one_checkpoint_that_resumes_in_one_process(runs: dict, tmp_path: Path) -> None:
    ckpt_dir = runs["ckpt2"]
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [CHECKPOINT_NAME]
    state = load_checkpoint(ckpt_dir / CHECKPOINT_NAME)
    assert state["step"] == 25 and len(state["global_rng_ranks"]) == 2
    ns: dict = {}
    exec(SCENARIOS, ns)
    # the data generator's state does not depend on the world size: continue the 2-process run in 1 process
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(ckpt_dir, resumed_dir)
    model, loss, pairs, config = ns["mlp_setup"](35)
    resumed = train(model, loss, pairs, config, checkpoint_dir=resumed_dir)
    ref_model, loss, pairs, config = ns["mlp_setup"](35)
    reference = train(ref_model, loss, pairs, config)
    assert resumed.resumed_from == 25
    assert _rel(resumed.losses, reference.losses) < 1e-9
    for name, value in reference.ema_state.items():  # type: ignore[union-attr]
        torch.testing.assert_close(resumed.ema_state[name], value, rtol=1e-9, atol=1e-12)  # type: ignore[index]


def test_shard_bounds_cover_the_batch() -> None:
    for total in (2, 7, 15, 64):
        for size in (1, 2, 3):
            if total < size:
                continue
            bounds = [distributed.shard_bounds(total, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    with pytest.raises(ConfigError, match="raise batch_size"):
        distributed.shard_bounds(1, 0, 2)


def test_single_process_helpers_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() == distributed.World(0, 1, 0)
    assert distributed.is_main_process() and not distributed.is_distributed()
    assert distributed.map_sharded(lambda x: 2 * x, torch.ones(3, 2)).sum() == 12
    assert distributed.agree(4) == (4, 4)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        distributed.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.init_from_env()


@pytest.mark.parametrize(("gpus", "per_node", "expected"), [(0, 2, "gloo"), (1, 2, "gloo"), (2, 2, "nccl"),
                                                            (4, 2, "nccl")])
def test_backend_choice_is_the_same_on_every_rank_of_a_node(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture, gpus: int,
                                                            per_node: int, expected: str) -> None:
    """NCCL only when each of the node's processes gets a GPU of its own (two ranks on one GPU used to pick NCCL on
    both and fail with 'invalid device ordinal' on rank 1); the choice rests on LOCAL_WORLD_SIZE, not the rank."""
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: calls.append(backend))
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, per_node, 0))
    exits: list[object] = []
    monkeypatch.setattr(distributed.atexit, "register", exits.append)
    for key, value in {"WORLD_SIZE": str(per_node), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                       "LOCAL_WORLD_SIZE": str(per_node)}.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level("WARNING", logger="flowvar.distributed"):
        for rank in range(per_node):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("LOCAL_RANK", str(rank))
            distributed.init_from_env()
    assert [c for c in calls if isinstance(c, str)] == [expected] * per_node
    assert exits == [distributed._destroy_at_exit] * per_node  # each joined group is released at exit
    devices = [c for c in calls if isinstance(c, tuple)]
    assert devices == ([("device", r) for r in range(per_node)] if expected == "nccl" else [])
    assert ("using gloo on the CPU" in caplog.text) == (expected == "gloo" and gpus > 0)


def test_nccl_without_a_gpu_per_process_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="a GPU per process"):
        distributed.init_from_env(backend="nccl")


def test_backend_choice_without_local_world_size_is_the_same_on_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOCAL_WORLD_SIZE (a launcher other than torchrun): NCCL on every rank when there is a GPU, and the rank
    that has none is refused with the fix, instead of picking gloo while its peers pick NCCL (a hang)."""
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: calls.append(backend))
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2, 0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    distributed.init_from_env()
    assert calls == [("device", 0), "nccl"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="a GPU per process"):
        distributed.init_from_env()
    assert calls == [("device", 0), "nccl"]  # rank 1 chose no backend of its own
