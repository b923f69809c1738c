"""Worker processes die with their parent, and nothing is written after an interrupt (hardening issue, §2).

Real signals against a real ``flowvar sweep`` whose second point blocks in a worker: SIGTERM to the main process is
handled like Ctrl-C (exit 130, every worker ended, the blocked point never written), and SIGKILL of the main process
(no chance to clean up) still takes the workers down within seconds (they watch their parent).
A worker killed mid-run (the out-of-memory killer) fails only its own point or experiment, in ``flowvar sweep``
and in ``flowvar reproduce --jobs 2``, whose rerun then computes only what failed.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowvar.report import load_collection

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


def test_workers_start_with_sigint_ignored_and_the_parent_keeps_its_handler() -> None:
    """A terminal's Ctrl-C reaches every worker; one still importing (before init_worker ignores SIGINT) died of it
    with a traceback of its imports. The pool's workers now start with SIGINT ignored — seen here with no
    initializer at all — while the parent's own handler is back after each submit."""
    import multiprocessing

    from flowvar.runner import _SpawnIgnoringInterrupts

    before = signal.getsignal(signal.SIGINT)
    with _SpawnIgnoringInterrupts(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_worker = pool.submit(signal.getsignal, signal.SIGINT).result(timeout=120)
        assert signal.getsignal(signal.SIGINT) is before
    assert in_worker == signal.SIG_IGN


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


REPLICATES = str(Path(__file__).parent / "plugins" / "toy_replicates.py")


def test_a_killed_worker_fails_only_its_own_point(tmp_path: Path) -> None:
    """x=2 kills its worker (SIGKILL, as the out-of-memory killer would) while x=1 runs beside it, which breaks the
    whole process pool. x=1 and the points that had not started (x=3, 4, 5) run in a fresh pool and are cached;
    x=2 is retried once, alone, kills that pool too and is reported failed, not retried forever."""
    from flowvar.cache import Cache
    from flowvar.sweep import Options, sweep

    out = tmp_path / "sw"
    summary = sweep(Options("toy_replicates", grid=["x=1,2,3,4,5"], jobs=2, out=out, plugins=[REPLICATES],
                            overrides={"kill_at": "2", "n_seeds": "1", "gate": str(tmp_path)}, quiet=True))
    status = {o.point.values["x"]: o.status for o in summary.outcomes}
    assert status == {1.0: "computed", 2.0: "failed", 3.0: "computed", 4.0: "computed", 5.0: "computed"}
    assert summary.outcomes[1].error == ("its worker process died twice while computing it (killed by SIGKILL: out "
                                         "of memory, or kill -9), the second time alone in its pool; not retried")
    cache = Cache(out / ".cache")
    assert [cache.lookup(o.point.key) is not None for o in summary.outcomes] == [True, False, True, True, True]
    for o in summary.outcomes:  # y = x + N(0, 1) noise of seed 0: each point its own numbers
        if o.status == "computed":
            assert abs(o.metrics["ys.seed0"] - o.point.values["x"]) < 5
    assert len({o.metrics.get("ys.seed0") for o in summary.outcomes if o.status == "computed"}) == 4
    deaths = [line.split("WARNING flowvar.runner: ")[1] for line in (out / "sweep.log").read_text().splitlines()
              if "WARNING flowvar.runner" in line]
    assert deaths == [  # x=1, running beside it, is not blamed: resubmitted with the 3 that had not started
        "a worker process died while computing x=2 (killed by SIGKILL: out of memory, or kill -9); starting a fresh "
        "worker pool, 2 unfinished run(s) submitted again",
        "a worker process died while computing x=2 (killed by SIGKILL: out of memory, or kill -9); starting a fresh "
        "worker pool"]
    assert "finished in" in (out / "sweep.log").read_text()


def test_a_worker_killed_by_sigterm_fails_only_its_own_point(tmp_path: Path) -> None:
    """A worker ended by SIGTERM is hard to tell from the ones the broken pool then terminates with SIGTERM: unless
    it was seen dead first, every point in flight is counted and runs alone next; either way x=1, running beside
    the killer, still finishes."""
    from flowvar.sweep import Options, sweep

    out = tmp_path / "sw"
    summary = sweep(Options("toy_replicates", grid=["x=1,2,3"], jobs=2, out=out, plugins=[REPLICATES], quiet=True,
                            overrides={"kill_at": "2", "kill_signal": "SIGTERM", "n_seeds": "1",
                                       "gate": str(tmp_path)}))
    assert [o.status for o in summary.outcomes] == ["computed", "failed", "computed"]
    assert summary.outcomes[1].error == ("its worker process died twice while computing it (killed by SIGTERM), the "
                                         "second time alone in its pool; not retried")


def _holding_lock(root: int, prefix: str) -> int | None:
    """The descendant of ``root`` holding an open file whose path starts with ``prefix`` (a computing worker keeps its
    key's ``flock`` file open), else None."""
    for pid in _descendants(root):
        try:
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # it ended meanwhile
            continue
        if any(t.startswith(prefix) and t.endswith(".lock") for t in targets):
            return pid
    return None


@pytest.mark.slow
def test_reproduce_survives_a_worker_killed_while_it_waits(tmp_path: Path) -> None:
    """`flowvar reproduce --jobs 2` while a worker dies without a word (SIGKILL: the out-of-memory killer): the worker
    computing prop1 is killed each time it starts, lemma1 runs beside it. The parent, waiting on lemma1, notices the
    death at once (CPython's pool may not watch a worker it spawned in the submit that woke it: the runner polls the
    workers' exit codes), reruns lemma1 and retries prop1 once, alone; prop1 is reported failed with how its worker
    died, lemma1 is computed, nothing hangs, and the recorded command, rerun, computes only prop1."""
    out = tmp_path / "out"
    lock_prefix = str(out / ".cache" / ".work" / "prop1-")
    argv = ["reproduce", "--quick", "--jobs", "2", "--quiet", "--out", str(out), "--only", "lemma1,prop1",
            "--set", "lemma1.n_samples=40000", "--set", "prop1.n_samples=5000"]  # lemma1 ~5 s: still in flight
    proc = subprocess.Popen([*FLOWVAR, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    killed: list[int] = []
    third: list[int] = []  # a prop1 worker after the two killed ones: a retry too many
    stop = threading.Event()

    def kill_prop1_workers() -> None:
        while not stop.is_set():
            pid = _holding_lock(proc.pid, lock_prefix)
            if pid is not None and pid not in killed:
                if len(killed) < 2:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                elif pid not in third:
                    third.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_prop1_workers, daemon=True)
    killer.start()
    try:
        stdout, stderr = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"reproduce hung after its prop1 workers {killed} were killed")
    finally:
        stop.set()
        killer.join(5)
    assert len(killed) == 2 and not third, (killed, third, stderr)
    assert proc.returncode == 1, stderr
    died = ("its worker process died twice while computing it (killed by SIGKILL: out of memory, or kill -9), the "
            "second time alone in its pool; not retried")
    assert "reproduce: 2 experiments (1 computed, 0 from the cache, 1 failed)" in stdout
    assert f"  FAILED prop1: {died} (see {out / 'reproduce.log'})" in stdout
    entries = {e["name"]: e for e in load_collection(out)["experiments"]}
    assert (entries["lemma1"]["status"], entries["prop1"]["status"]) == ("computed", "failed")
    assert entries["prop1"]["error"] == died and (out / "lemma1" / "result.json").is_file()
    assert not (out / "prop1").exists()
    # the log's story: lemma1 was in flight when prop1's worker died, lost with the broken pool and run again after
    # prop1's second death (it was not blamed); had the death gone unnoticed, lemma1 would have finished first
    events = [line.split(": ", 1)[1].split(" key=")[0].split(" after ")[0]
              for line in (out / "reproduce.log").read_text().splitlines()
              if " flowvar.runner: " in line or "computing: " in line or "computed: " in line or "failed: " in line]
    sigkill = "killed by SIGKILL: out of memory, or kill -9"
    # the two start in the order of their expected runtimes (longest first: the YAML files' estimates decide)
    assert sorted(events[:2]) == ["computing: lemma1", "computing: prop1"], events
    assert events[2:] == [
        f"a worker process died while computing prop1 ({sigkill}); starting a fresh worker pool, 2 unfinished "
        "run(s) submitted again",
        "computing: prop1",
        f"a worker process died while computing prop1 ({sigkill}); starting a fresh worker pool",
        "failed: prop1",
        "computing: lemma1", "computed: lemma1"], events
    # the rerun: the command the report records, as a user would paste it
    command = shlex.split(load_collection(out)["meta"]["command"])
    assert command[:2] == ["flowvar", "reproduce"]
    rerun = subprocess.run([*FLOWVAR, *command[1:]], capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    assert "reproduce: 2 experiments (1 computed, 1 from the cache, 0 failed)" in rerun.stdout
    log = (out / "reproduce.log").read_text().split("start: ")[-1]
    assert "cache hit: lemma1" in log and "computing: prop1" in log and "computing: lemma1" not in log
    assert [e["status"] for e in load_collection(out)["experiments"]] == ["cached", "computed"]


@pytest.mark.parametrize(("quiet", "tty", "bar"), [(None, False, False), (None, True, True), (False, False, True),
                                                   (True, True, False)])
def test_progress_draws_its_bar_on_a_terminal_unless_told_otherwise(quiet: bool | None, tty: bool, bar: bool) -> None:
    """`--progress` (quiet False) draws the bar into a log that is no terminal, `--quiet` never draws it, and by
    default a terminal decides; every experiment gets its plain line either way."""
    import io

    from flowvar.runner import Outcome, Progress, Task

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    stream = Stream()
    progress = Progress([Task("prop1", "", 1.0, {})], 1, quiet, stream)
    assert (progress.bar is not None) == bar
    progress.start("prop1")
    progress.finish(Outcome("prop1", "cached", None, 0.0))
    progress.close()
    assert "[1/1] prop1: cache hit" in stream.getvalue()
    assert ("reproduce 1/1" in stream.getvalue()) == bar


def test_reproduce_and_sweep_take_progress_like_run() -> None:
    from typer.testing import CliRunner

    from flowvar.cli import app

    for command in ("run", "reproduce", "sweep"):
        text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--progress" in text and "--quiet" in text, command
