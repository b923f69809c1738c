"""Worker processes die with their parent, and nothing is written after an interrupt (hardening issue, §2).

Real signals against a real ``flowvar sweep`` whose second point blocks in a worker: SIGTERM to the main process is
handled like Ctrl-C (exit 130, every worker ended, the blocked point never written), and SIGKILL of the main process
(no chance to clean up) still takes the workers down within seconds (they watch their parent).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLUGIN = str(Path(__file__).parent / "plugins" / "toy_sweep.py")
FLOWVAR = [sys.executable, "-m", "flowvar.cli"]

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _ppid_and_state(int(entry))
            if info is not None:
                parents[int(entry)] = info[0]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    info = _ppid_and_state(pid)
    return info is not None and info[1] not in ("Z", "X")


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _start_blocked_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path, set[int]]:
    out, block = tmp_path / "out", tmp_path / "release"
    proc = subprocess.Popen([*FLOWVAR, "sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2,3", "--set",
                             "block_at=2", "--set", f"block_file={block}", "--jobs", "2", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: set[int] = set()

    def started() -> bool:  # two workers up and point x=1 stored: x=2 is now blocked in a worker
        nonlocal workers
        workers = _descendants(proc.pid)
        done = list((out / ".cache").glob("toy_sweep-*/cache.json"))
        return len(workers) >= 2 and len(done) >= 1

    assert _wait_until(started, 120), "the sweep did not start its workers"
    time.sleep(1.0)
    workers = _descendants(proc.pid)
    return proc, out, block, workers


def _entries(out: Path) -> set[str]:
    return {p.parent.name for p in (out / ".cache").glob("toy_sweep-*/cache.json")}


def test_sigterm_is_an_interrupt_that_ends_every_worker(tmp_path: Path) -> None:
    proc, out, block, workers = _start_blocked_sweep(tmp_path)
    before = _entries(out)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err.lower()
    assert _wait_until(lambda: not any(_alive(p) for p in workers), 10), "workers outlived the interrupted sweep"
    block.write_text("go")  # the blocked point would now finish and write, had its worker survived
    time.sleep(2.0)
    assert _entries(out) == before


def test_workers_die_when_the_main_process_is_killed(tmp_path: Path) -> None:
    proc, out, block, workers = _start_blocked_sweep(tmp_path)
    before = _entries(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    try:
        assert _wait_until(lambda: not any(_alive(p) for p in workers), 10), \
            "workers kept running after their parent was killed"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    block.write_text("go")
    time.sleep(2.0)
    assert _entries(out) == before


def test_a_workers_log_records_reach_the_parents_handlers(tmp_path: Path) -> None:
    """With --jobs > 1 the experiments run in spawned workers: their ``flowvar`` log lines (a training's "resumed
    from ...") reach the parent's handlers — OUT/reproduce.log — as a serial run's do, and only once."""
    import functools
    import logging

    from flowvar.logs import log_to
    from flowvar.runner import worker_pool

    path = tmp_path / "run.log"
    with log_to(path), worker_pool(2, 1) as pool:
        say = functools.partial(logging.getLogger("flowvar.train").info, "resumed from %s at step %d")
        for future in [pool.submit(say, f"ckpt{k}", 100 * k) for k in range(3)]:
            future.result()
    lines = path.read_text().splitlines()
    for k in range(3):
        assert sum(f"INFO flowvar.train: resumed from ckpt{k} at step {100 * k}" in line for line in lines) == 1
