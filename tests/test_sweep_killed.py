"""A sweep killed with -9 (the OOM killer, a preempted node) must not leave another grid's figures presented as its
own (review sweepR, 3): the figures went only on Ctrl-C, and the tables a killed run had written said
``interrupted: false``, so ``flowvar show`` pointed to the previous grid's figures, or to a figures folder that did
not exist. Every table written while points run now records ``state: running``, the first one removes the earlier
figures, and ``show`` reads a running, crashed or interrupted sweep as unfinished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowvar.cli import _sweep_state, main
from flowvar.sweep import Options, sweep
from sweep_checks import PLUGIN

SRC = Path(__file__).resolve().parents[1] / "src"


def kill_while_running(out: Path, grid: str, sets: list[str], cached: int) -> None:
    """Start ``flowvar sweep toy_sweep --grid grid`` in its own process group and kill it with SIGKILL once ``cached``
    points are in the cache and the next one is computing (its staging folder exists); the block_at point waits on
    a gate file that is never written."""
    command = [sys.executable, "-m", "flowvar", "sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", grid, *sets,
               "--out", str(out), "--quiet"]
    env = {**os.environ, "FLOWVAR_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            entries = [p for p in (out / ".cache").glob("toy_sweep-*") if (p / "cache.json").is_file()]
            if len(entries) >= cached and list((out / ".cache").glob(".tmp-*-run-*")):
                break
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before it was killed: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not reach its blocked point")
        time.sleep(0.3)  # past the point's start: the tables of the points before it are written
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def shown(out: Path, capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    return capsys.readouterr().out


def test_a_rerun_killed_with_sigkill_leaves_no_earlier_grids_figures(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    out, gate = tmp_path / "s", tmp_path / "gate"
    sets = ["--set", "block_at=3", "--set", f"block_file={gate}"]
    first = sweep(Options("toy_sweep", grid=["x=1,2"], out=out, plugins=[PLUGIN], quiet=True,
                          overrides={"block_at": "3", "block_file": str(gate)}))
    assert first.figures and list((out / "figures").glob("*.png"))
    assert json.loads((out / "sweep.json").read_text())["meta"]["state"] == "finished"
    assert "figures in" in shown(out, capsys)

    kill_while_running(out, "x=1,2,3", sets, cached=2)  # x=1, 2 from the cache; killed while x=3 computes
    assert list((out / "figures").glob("*.png")) == []  # the x=1,2 grid's figures are not this sweep's
    meta = json.loads((out / "sweep.json").read_text())["meta"]
    assert "--grid x=1,2,3" in meta["command"] and meta["state"] == "running" and meta["figures"] == []
    assert meta["counts"]["cached"] == 2 and meta["counts"]["not run"] == 1 and meta["interrupted"] is False
    text = shown(out, capsys)
    assert "unfinished (still running, or killed): no figures (rerun the command to finish the sweep and draw " \
           "them)" in text
    assert "figures in" not in text


def test_a_first_run_killed_with_sigkill_is_shown_unfinished(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, gate = tmp_path / "s", tmp_path / "gate"
    kill_while_running(out, "x=1,2", ["--set", "block_at=2", "--set", f"block_file={gate}"], cached=1)
    meta = json.loads((out / "sweep.json").read_text())["meta"]
    assert meta["state"] == "running" and meta["counts"]["not run"] >= 1  # counts are written at most every 2 s
    text = shown(out, capsys)
    assert "unfinished (still running, or killed): no figures" in text and "figures in" not in text
    assert not (out / "figures").exists()  # show named this folder, which a killed first run never made


@pytest.mark.parametrize(("meta", "expected"), [
    ({"state": "finished", "figures": ["figures/a.png"], "counts": {"computed": 2}}, "figures in S/figures"),
    ({"state": "finished", "figures": [], "counts": {"computed": 2}}, "no figures drawn (see sweep.log)"),
    ({"state": "running", "figures": [], "counts": {"computed": 1, "not run": 1}},
     "unfinished (still running, or killed): no figures (rerun the command to finish the sweep and draw them)"),
    ({"state": "interrupted", "interrupted": True, "figures": [], "counts": {"not run": 2}},
     "interrupted: no figures (rerun the command to finish the sweep and draw them)"),
    ({"state": "crashed", "figures": ["figures/a.png"], "counts": {"computed": 1, "not run": 1}},
     "unfinished (crashed): 1 of 2 points not run (rerun the command to finish the sweep); figures in S/figures"),
    ({"interrupted": False, "counts": {"computed": 2}}, "figures in S/figures"),  # written before `state` was
])
def test_show_says_what_a_sweep_folder_holds(meta: dict, expected: str) -> None:
    assert _sweep_state(Path("S"), meta, 2) == expected
