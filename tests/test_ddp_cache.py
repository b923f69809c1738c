"""`flowvar run --cache` under torchrun: rank 0 alone takes the key's lock, looks up, stores and installs; the other
ranks follow its hit or miss (trainR, session 30: every rank took the lock, and rank 0, holding it, waited in the
process group for rank 1, which waited for the lock — a hang until the 30-minute collective timeout).
`flowvar reproduce` and `flowvar sweep` refuse to run under torchrun with the command that does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flowvar.cli import main


def _torchrun(args: list[str], cwd: Path, *, module: bool = True,
              timeout: float = 240) -> subprocess.CompletedProcess[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    program = ["-m", "flowvar", *args] if module else args
    proc = subprocess.Popen([*launcher, "--standalone", "--nproc_per_node=2", *program], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as hung:
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks too, not only the launcher: a hung rank would outlive the test
        proc.communicate()
        raise AssertionError(f"torchrun did not finish in {timeout} s (ranks waiting for each other?)") from hung
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


COLLECTIVE = """
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from flowvar import distributed
from flowvar.cache import Cache, run_cached
from flowvar.experiments.base import RunContext, register


@dataclass
class Config:
    seed: int = 0


@register("toy_collective", title="toy: one all-reduce across the torchrun ranks", config=Config)
def run(config: Config, ctx: RunContext) -> None:
    distributed.init_from_env()  # as the image experiments' compute_settings does
    total = torch.ones(1)
    distributed.all_reduce_sum_([total])
    ctx.metric("world", float(total))


out, cache = Path(sys.argv[1]), Path(sys.argv[2])
done = run_cached("toy_collective", out, Cache(cache))
print(f"rank {distributed.world().rank}: hit={done.hit} world={done.result.metrics['world']}")
"""


def test_an_experiment_with_collectives_runs_cached_under_torchrun(tmp_path: Path) -> None:
    """The hang itself: the experiment's first collective needs every rank inside it, while the cache lock let in one
    rank at a time. Now rank 1 follows rank 0 into the miss, then into the hit."""
    (tmp_path / "toy.py").write_text(COLLECTIVE)
    script = [str(tmp_path / "toy.py"), str(tmp_path / "out"), str(tmp_path / "cache")]
    for hit in (False, True):
        proc = _torchrun(script, tmp_path, module=False, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert sorted(proc.stdout.split("\n"))[1:] == [f"rank {r}: hit={hit} world=2.0" for r in (0, 1)], proc.stdout
    assert json.loads((tmp_path / "out" / "toy_collective" / "result.json").read_text())["metrics"]["world"] == 2.0


def test_two_ranks_share_one_cache_entry_and_print_once(tmp_path: Path) -> None:
    args = ["run", "counterexample1", "--quick", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    first = _torchrun(args, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("counterexample1: ") == 1, first.stdout  # rank 0 says it, once
    assert "claims in " in first.stdout  # computed, not a hit
    entries = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("counterexample1-")]
    assert len(entries) == 1 and (entries[0] / "result.json").is_file()
    assert not (tmp_path / "cache" / ".work").exists() or not any((tmp_path / "cache" / ".work").iterdir())
    stored = json.loads((tmp_path / "out" / "counterexample1" / "result.json").read_text())
    second = _torchrun(args, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("counterexample1: ") == 1 and "cache hit" in second.stdout, second.stdout
    assert json.loads((tmp_path / "out" / "counterexample1" / "result.json").read_text()) == stored


@pytest.mark.parametrize("command", [["reproduce", "--quick", "--only", "lemma1"],
                                     ["sweep", "counterexample1", "--quick", "--grid", "mu=2,3"]])
def test_reproduce_and_sweep_refuse_torchrun_with_the_command_that_works(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*command, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"`flowvar {command[0]}` does not run under torchrun (WORLD_SIZE=2)" in err
    assert "torchrun ... -m flowvar run EXPERIMENT --set ... --cache DIR" in err
    assert not (tmp_path / "out").exists()
