"""Robustness of the command line against inputs a reviewer found crashing, hanging or losing work: each one is
refused with the one-line ``flowvar: error:`` (exit 2) before anything runs, or handled without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FLOWVAR = [sys.executable, "-m", "flowvar.cli"]
TINY_TABLE2 = ["--set", "steps=3", "--set", "warmup_steps=0", "--set", "euler_steps=2", "--set", "eval_max=8",
               "--set", "ns=[8]"]
TOO_MANY_THREADS = 100_000
"""Above the bound of :func:`flowvar.runner.check_threads` on any machine under 25,000 cores; torch crashes or
hangs starting it (a segmentation fault at 300000 threads, hours of work at 1000)."""


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``flowvar ARGS`` in a fresh process: a crash of torch's thread pool must not take the test session with it."""
    return subprocess.run([*FLOWVAR, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("flowvar: error:") and message in lines[0], proc.stderr


# ------------------------------------------------------------------------------------------- thread bounds


@pytest.mark.parametrize(("args", "env", "message"), [
    (["run", "table2", "--quick", *TINY_TABLE2, "--set", f"threads={TOO_MANY_THREADS}"], {},
     "error: threads must be between 1 and"),
    (["run", "fig4", "--quick"], {"FLOWVAR_THREADS": str(TOO_MANY_THREADS)}, "$FLOWVAR_THREADS must be between 1 and"),
    (["run", "sigma_tradeoff", "--quick", "--set", f"threads={TOO_MANY_THREADS}"], {},
     "error: threads must be between 1 and"),
    # checked while planning, before any point or experiment runs (not one failed point per worker)
    (["sweep", "table2", "--quick", *TINY_TABLE2, "--grid", f"threads=1,{TOO_MANY_THREADS}"], {},
     "error: threads must be between 1 and"),
    (["reproduce", "--quick", "--only", "table2", "--set", f"table2.threads={TOO_MANY_THREADS}"], {},
     "error: threads must be between 1 and"),
])
def test_every_source_of_a_thread_count_is_bounded(args: list[str], env: dict[str, str], message: str,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(*args, "--quiet", "--out", str(out), env=env)
    assert_one_line_error(proc, message)
    assert f"got {TOO_MANY_THREADS}" in proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_run_experiment_bounds_the_environment_its_automatic_threads_fall_back_to(tmp_path: Path) -> None:
    """The Python API (no CLI thread set-up): ``threads: 0`` reads $FLOWVAR_THREADS, which must be bounded too."""
    code = ("import sys\nfrom flowvar.errors import ConfigError\nfrom flowvar.experiments import run_experiment\n"
            "try:\n    run_experiment('table2', sys.argv[1], quick=True, overrides={'steps': 3, 'warmup_steps': 0,"
            " 'euler_steps': 2, 'eval_max': 8, 'ns': [8], 'threads': 0})\n"
            "except ConfigError as e:\n    print(e)\n    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "FLOWVAR_THREADS": str(TOO_MANY_THREADS)})
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "$FLOWVAR_THREADS must be between 1 and" in proc.stdout and f"got {TOO_MANY_THREADS}" in proc.stdout


def test_the_thread_bound_admits_the_counts_a_machine_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowvar.errors import ConfigError
    from flowvar.runner import check_config_threads, check_threads, default_threads

    monkeypatch.setattr("flowvar.experiments.base.cpu_cores", lambda: 32)
    assert check_threads(128) == 128  # 4 × 32 cores
    with pytest.raises(ConfigError, match=r"^threads must be between 1 and 128 on this machine \(32 cores\), got 129"):
        check_threads(129, "threads")
    monkeypatch.setenv("FLOWVAR_THREADS", "128")
    assert default_threads() == 128
    monkeypatch.setenv("FLOWVAR_THREADS", "129")
    with pytest.raises(ConfigError, match=r"^\$FLOWVAR_THREADS must be between 1 and 128"):
        default_threads()

    class Config:
        threads = 0

    with pytest.raises(ConfigError, match=r"^\$FLOWVAR_THREADS"):  # automatic threads fall back to the variable
        check_config_threads(Config())
    monkeypatch.delenv("FLOWVAR_THREADS")
    check_config_threads(Config())
    Config.threads = 129
    with pytest.raises(ConfigError, match=r"^threads must be between"):
        check_config_threads(Config())
    Config.threads = 64
    check_config_threads(Config())


# ----------------------------------------------------------------------------------------- malformed files


def valid_result() -> dict:
    from flowvar.results import Claim, Result

    claim = Claim(id="x.a", statement="s", verdict="confirmed", evidence={"gap": 0.1}, rule="gap > 0")
    return Result(experiment="prop1", title="t", config={}, quick=True, claims=[claim], runtime_s=1.0).to_dict()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r["claims"][0].update(evidence=None), "claim x.a: field evidence must be a dict, got NoneType"),
    (lambda r: r["claims"][0].update(statement=3), "claim x.a: field statement must be a str, got int"),
    (lambda r: r.update(metrics=[1]), "result field metrics must be a dict, got list"),
    (lambda r: r.update(runtime_s="soon"), "result field runtime_s must be a int or float, got str"),
    (lambda r: r.update(quick=1), "result field quick must be a bool, got int"),
])
def test_show_of_a_result_with_a_field_of_the_wrong_type_is_one_line(mutate, message: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from flowvar.cli import main

    data = valid_result()
    (tmp_path / "prop1").mkdir()
    (tmp_path / "prop1" / "result.json").write_text(json.dumps(data))
    assert main(["show", str(tmp_path)]) == 0  # the unmodified result shows
    capsys.readouterr()
    mutate(data)
    (tmp_path / "prop1" / "result.json").write_text(json.dumps(data))
    assert main(["show", str(tmp_path)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is not a valid flowvar result" in lines[0] and message in lines[0], lines


@pytest.mark.parametrize(("sweep", "message"), [
    ({"axes": [{"key": "lr", "values": [1]}], "points": [{"bogus": 1}]}, "points[0] has no 'values' object"),
    ({"axes": [{"values": [1]}], "points": []}, "axes[0] must be"),
    ({"axes": [], "points": [{"values": {}, "verdicts": None}]}, "points[0].verdicts must be an object"),
    ({"axes": [], "points": [], "meta": {"metrics": "loss"}}, "meta must be an object with a metrics list"),
])
def test_show_of_a_malformed_sweep_index_is_one_line(sweep: dict, message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from flowvar.cli import main

    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    assert main(["show", str(tmp_path)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is not a valid sweep index" in lines[0] and message in lines[0], lines


# ------------------------------------------------------------------------------------------ early Ctrl-C

INTERRUPT_ON_IMPORT = """
import importlib.abc, os, signal, sys

class InterruptOnImport(importlib.abc.MetaPathFinder):
    '''Ctrl-C as the module sys.argv[1] starts importing: deterministic, where a timed signal lands anywhere.'''
    target = sys.argv[1]

    def find_spec(self, name, path=None, target=None):
        if name == self.target:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job inherits SIG_IGN)
sys.meta_path.insert(0, InterruptOnImport())
sys.argv = ["flowvar", *sys.argv[2:]]
from flowvar.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("module", [
    "torch",  # while flowvar.cli imports (the console script's `from flowvar.cli import main`)
    "flowvar.runner",  # in main(), before the command's own interrupt handler
    "flowvar.experiments",  # in the command, while it imports the experiments
])
def test_ctrl_c_while_flowvar_starts_is_one_line_and_exit_130(module: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_ON_IMPORT, module, "run", "prop1", "--quick", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 130, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("flowvar: interrupted") and len(lines) == 1, proc.stderr[-3000:]
    assert not (tmp_path / "out" / "prop1").exists()


# -------------------------------------------------------------------------------- a user's files are kept


def test_replacing_a_result_keeps_the_files_a_user_added_and_drops_the_old_results_own(tmp_path: Path) -> None:
    from flowvar.files import foreign_entries, staged_folder

    dest = tmp_path / "fig6"
    dest.mkdir()
    (dest / "result.json").write_text(json.dumps({"figures": ["old_plot.png"]}))
    for name in ("summary.md", "old_plot.png", "my_notes.md", "plot.png"):
        (dest / name).write_text(f"old {name}")
    (dest / "drafts").mkdir()
    (dest / "drafts" / "a.txt").write_text("draft")
    assert foreign_entries(dest) == ["drafts", "my_notes.md", "plot.png"]
    with staged_folder(dest) as stage:
        (stage.path / "result.json").write_text(json.dumps({"figures": ["plot.png"]}))
        (stage.path / "summary.md").write_text("new summary")
        (stage.path / "plot.png").write_text("new plot.png")
    assert sorted(p.name for p in dest.iterdir()) == ["drafts", "my_notes.md", "plot.png", "result.json",
                                                      "summary.md"]
    assert (dest / "my_notes.md").read_text() == "old my_notes.md"
    assert (dest / "drafts" / "a.txt").read_text() == "draft"
    assert (dest / "plot.png").read_text() == "new plot.png"  # the new result's file wins over an added one
    assert (dest / "summary.md").read_text() == "new summary"
    assert [p.name for p in tmp_path.iterdir()] == ["fig6"]  # no staging folder left


@pytest.mark.parametrize("cached", [False, True])
def test_rerunning_into_a_result_folder_keeps_a_users_notes(cached: bool, tmp_path: Path) -> None:
    out, notes = tmp_path / "out", tmp_path / "out" / "prop1" / "my_notes.md"
    args = ["run", "prop1", "--quick", "--quiet", "--set", "n_samples=300", "--set", "angles=0,120", "--out",
            str(out), *(["--cache", str(tmp_path / "cache")] if cached else [])]
    assert run_cli(*args).returncode == 0
    notes.write_text("what I saw")
    before = (out / "prop1" / "result.json").stat().st_mtime_ns
    proc = run_cli(*args, "--seed", "1")  # another result replaces the folder
    assert proc.returncode == 0, proc.stderr
    assert (out / "prop1" / "result.json").stat().st_mtime_ns != before
    assert json.loads((out / "prop1" / "result.json").read_text())["config"]["seed"] == 1
    assert notes.read_text() == "what I saw"
    if cached:  # the first result again, from the cache: installed although the folder holds the notes
        assert run_cli(*args).returncode == 0
        assert json.loads((out / "prop1" / "result.json").read_text())["config"]["seed"] != 1
        assert notes.read_text() == "what I saw"
        unchanged = (out / "prop1" / "result.json").stat().st_mtime_ns
        assert run_cli(*args).returncode == 0  # up to date: left untouched, notes or not
        assert (out / "prop1" / "result.json").stat().st_mtime_ns == unchanged


# ------------------------------------------------------------------------ one kind of output per folder


@pytest.mark.parametrize(("command", "marker", "other"), [
    (["sweep", "prop1", "--quick", "--seeds", "0,1", "--set", "n_samples=300", "--set", "angles=0,120"],
     "results.json", "reproduce"),
    (["sweep", "prop1", "--quick", "--seeds", "0,1", "--set", "n_samples=300", "--set", "angles=0,120"],
     ".reproduce.lock", "reproduce"),  # a reproduce still running (or interrupted before its index)
    (["reproduce", "--quick", "--only", "prop1", "--set", "prop1.n_samples=300"], "sweep.json", "sweep"),
    (["reproduce", "--quick", "--only", "prop1", "--set", "prop1.n_samples=300"], ".sweep.lock", "sweep"),
])
def test_reproduce_and_sweep_refuse_the_others_folder(command: list[str], marker: str, other: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from flowvar.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / marker).write_text("{}")
    assert main([*command, "--quiet", "--out", str(out)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"holds the output of a `flowvar {other}` ({marker})" in lines[0], lines
    assert [p.name for p in out.iterdir()] == [marker]  # nothing written beside it


# ------------------------------------------------------------------------ the runtime of a resumed run


def test_a_resumed_runs_runtime_counts_its_interrupted_attempts(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import flowvar.experiments.base as base

    work = tmp_path / "work"
    monkeypatch.setattr(base, "ELAPSED_EVERY_S", 0.05)
    with pytest.raises(KeyboardInterrupt), base.carried_runtime(work) as clock:
        time.sleep(0.3)
        assert (work / base.ELAPSED_FILE).is_file()  # recorded while running: a SIGKILL loses at most 0.05 s
        raise KeyboardInterrupt
    first = float((work / base.ELAPSED_FILE).read_text())
    assert 0.3 <= first < 5
    with base.carried_runtime(work) as clock:
        time.sleep(0.1)
    assert first + 0.1 <= clock() < first + 5
    (work / base.ELAPSED_FILE).write_text("nan")  # unreadable: this attempt's time alone
    with base.carried_runtime(work) as clock:
        pass
    assert clock() < 1
    with base.carried_runtime(None) as clock:  # no work folder: nothing written anywhere
        pass
    assert clock() < 1


def test_run_experiment_adds_the_earlier_attempts_time_to_runtime_s(tmp_path: Path) -> None:
    from flowvar.experiments.base import ELAPSED_FILE, run_experiment

    work = tmp_path / "work"
    work.mkdir()
    (work / ELAPSED_FILE).write_text("1000.5")
    result = run_experiment("prop1", tmp_path / "out", quick=True, overrides={"n_samples": 300, "angles": [0, 120]},
                            work_dir=work)
    stored = json.loads((tmp_path / "out" / "prop1" / "result.json").read_text())
    assert 1000.5 < result.runtime_s < 1100 and stored["runtime_s"] == result.runtime_s
    fresh = run_experiment("prop1", tmp_path / "out2", quick=True, overrides={"n_samples": 300, "angles": [0, 120]})
    assert fresh.runtime_s < 100
