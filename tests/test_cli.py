import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowvar.cli import main

FLOWVAR = [sys.executable, "-m", "flowvar.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FLOWVAR, *args], capture_output=True, text=True, timeout=300)


def test_run_writes_result_and_summary(tmp_path: Path) -> None:
    proc = run_cli("run", "prop1", "--quick", "--quiet", "--set", "n_samples=300", "--set", "angles=0,120",
                   "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "prop1" / "result.json").read_text())
    for key in ("experiment", "config", "claims", "metrics", "paper", "runtime_s", "versions", "choices"):
        assert key in result
    assert result["config"]["n_samples"] == 300 and result["config"]["angles"] == [0.0, 120.0]
    assert {c["verdict"] for c in result["claims"]} <= {"confirmed", "refuted", "inconclusive", "untestable"}
    assert (tmp_path / "prop1" / "summary.md").read_text().startswith("# prop1")
    assert (tmp_path / "prop1" / "variance_by_angle.png").stat().st_size > 1000
    assert "prop1.A.zero_loss_zero_variance" in proc.stdout
    # nothing but the result folder is left behind (no staging folders)
    assert [p.name for p in tmp_path.iterdir()] == ["prop1"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "nope"], "unknown experiment 'nope'"),
    (["run", "prop1", "--set", "bogus=1"], "unknown config key 'bogus'"),
    (["run", "prop1", "--set", "n_samples=many"], "n_samples expects an integer"),
    (["run", "prop1", "--set", "n_samples"], "key=value"),
    (["run", "prop1", "--set", "sigma=-0.5"], "prop1: sigma must be >= 0, got -0.5"),
    (["run", "prop1", "--set", "sigma=.inf"], "prop1: sigma must be finite"),
    (["run", "prop1", "--set", "angles=[]"], "prop1: angles must not be empty"),
    (["run", "lemma1", "--set", "cov_diag=1,-1"], "lemma1: cov_diag must be > 0"),
    (["run", "lemma1", "--set", "cov_diag=1,1,1"], "mean and cov_diag must have the same length"),
    (["run", "lemma1", "--set", "n_samples=0"], "lemma1: n_samples must hold counts from 1"),
    (["run", "counterexample1", "--set", "euler_steps=[]"], "euler_steps must not be empty"),
    # README: "a non-positive-definite M ... one line, exit 2"
    (["run", "fig4", "--quick", "--set", "cov=[[1,2],[2,1]]"], "cov must be positive definite"),
    (["run", "fig4", "--quick", "--set", "cov=[[1,0],[0,1],[0,0]]"], "cov must be a 2×2 matrix"),
    # docs/reproduce.md: a bad option value, before anything runs (the runner's backend check)
    (["reproduce", "--quick", "--only", "prop1", "--ray-address", "h:1"], "--ray-address needs --backend ray"),
    (["reproduce", "--quick", "--only", "prop1", "--backend", "slurm"], "--backend must be one of local, ray"),
    # an absurd σ is refused up front (it overflowed after the whole computation)
    (["run", "fig4", "--quick", "--set", "sigmas=0,1e200"], "fig4: sigmas must be at most 1000"),
    # docs/sweeps.md: an unreachable Ray address is checked before anything is written (not even --out)
    (["reproduce", "--quick", "--only", "prop1", "--backend", "ray", "--ray-address", "nohost.invalid:1"],
     "cannot reach the Ray cluster"),
    (["run", "prop1", "--seed", "abc"], "Invalid value for '--seed'"),
    (["run", "prop1", "--no-such-flag"], "No such option: --no-such-flag"),
    (["run", "prop1", "--set", "n_samples=1\r2"], "n_samples expects an integer, got '1\\r2'"),
    (["run", "prop1", "--threads", "100000"], "--threads must be between 1 and"),
    (["sweep", "prop1", "--quick", "--seeds", "3-1"], "--seeds range 3-1 runs backwards"),
    (["sweep", "prop1", "--quick", "--seeds", "0,1", "--set", "seed=5"], "seed is both swept (--seeds)"),
    (["sweep", "prop1", "--quick", "--seeds", "0-100000000"], "has 100000001 seeds; a sweep takes at most"),
    (["run", "table1", "--quick", "--set", "copy_threshold=2"], "copy_threshold must be in (0, 1]"),
    (["run", "fig4", "--quick", "--set", "sigmas=0.1", "--set", "sigmas=0.2"], "--set gives sigmas twice"),
    (["run", "table1", "--quick", "--set", "dims=[3,3]"], "dims must be distinct dimensions"),
    (["run", "fig5", "--quick", "--set", "noise_forms=[constant,constant]"], "noise_forms must be distinct"),
    (["reproduce", "--quick", "--full", "--only", "prop1"], "pass --quick or --full, not both"),
    # a σ grid without 0 names the option of the command that was run (advise-sigma refuses --set sigmas)
    (["run", "sigma_tradeoff", "--quick", "--set", "sigmas=[0.05,0.1]"], "--set sigmas=[0,0.05,0.1] (flowvar run"),
    (["advise-sigma", "--data", "gmm", "--quick", "--sigmas", "0.05,0.1"], "--sigmas 0,0.05,0.1 (flowvar advise"),
    (["advise-sigma", "--data", "gmm", "--quick", "--sigmas", "0,0"], "--sigmas 0,0.05,0.1 (flowvar advise"),
    (["advise-sigma", "--data", "gmm", "--quick", "--set", "gen_margin=-1"], "gen_margin must be >= 0"),
])
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([*args, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowvar: error:") and message in lines[0], err
    # no half-written result and no staging folder
    assert not out.exists() or list(out.iterdir()) == []


def test_usage_errors_exit_2() -> None:
    assert run_cli("run").returncode == 2
    assert main(["run", "prop1", "--bogus-flag"]) == 2


def test_list_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("lemma1", "prop1", "fig4", "fig5", "counterexample1", "lemma1_mlp"):
        assert name in out
    assert main(["--version"]) == 0
    assert "flowvar 0.1.0" in capsys.readouterr().out


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "prop1", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_show_prints_the_verdict_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "prop1", "--quick", "--quiet", "--set", "n_samples=300", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| prop1 | `prop1.A.zero_loss_zero_variance` | identity | **confirmed** |" in out
    assert "1 experiments: no reproduction claims in this run · 4 of 4" in out and "4 of 4 identities hold" in out


def test_show_of_one_experiment_folder_shows_that_experiment(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`flowvar show RUN/EXPERIMENT` (a folder holding result.json itself) shows that experiment, as `flowvar show
    RUN` shows it among the others."""
    assert main(["run", "prop1", "--quick", "--quiet", "--set", "n_samples=300", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "prop1")]) == 0
    out = capsys.readouterr().out
    assert "Findings" in out and "| prop1 | `prop1.A.zero_loss_zero_variance` | identity | **confirmed** |" in out
    assert "prop1: no reproduction claims in this run · 4 of 4" in out and "4 of 4 identities hold" in out
    (tmp_path / "prop1" / "result.json").write_text("{not json")
    assert main(["show", str(tmp_path / "prop1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a valid flowvar result" in err and "\n" not in err


def test_show_takes_the_result_file_for_its_folder(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parent.parent / "results" / "prop1"
    assert main(["show", str(root / "result.json")]) == 0
    by_file = capsys.readouterr().out
    assert main(["show", str(root)]) == 0
    assert capsys.readouterr().out == by_file and "Proposition 1" in by_file


def test_show_rejects_missing_or_corrupt_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "missing")]) == 2
    assert "no run folder" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "result.json").write_text("{not json")
    assert main(["show", str(tmp_path)]) == 2
    assert "is not a valid flowvar result" in capsys.readouterr().err
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text("{}")
    assert main(["show", str(tmp_path / "sw")]) == 2  # an empty table would read as a sweep of no points
    assert "is not a sweep index (no axes or points list)" in capsys.readouterr().err


def test_advise_sigma_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`flowvar advise-sigma --data X.npy`: the advice as JSON, the run kept under --out; bad input one line."""
    import numpy as np

    data = tmp_path / "vectors.npy"
    np.save(data, np.random.default_rng(0).normal(size=(60, 3)))
    out = tmp_path / "advice"
    args = ["advise-sigma", "--data", str(data), "--quick", "--sigmas", "0,1", "--set", "n_train=24", "--set",
            "steps=60", "--set", "n_eval=64", "--out", str(out), "--json", "--quiet"]
    assert main(args) == 0
    advice = json.loads(capsys.readouterr().out)
    assert [row["sigma"] for row in advice["table"]] == [0.0, 1.0]
    assert advice["recommended_sigma"] in (0.0, 1.0, None) and advice["rule"]
    result = json.loads((out / "sigma_tradeoff" / "result.json").read_text())
    assert result["config"]["dataset"] == "npy"
    assert result["metrics"]["recommended_sigma"] == advice["recommended_sigma"]
    for bad, message in [(["--data", str(tmp_path / "missing.npy")], "does not exist"),
                         (["--data", "gmm", "--sigmas", "0,x"], "--sigmas expects numbers"),
                         # the command's own options through --set (they were passed twice: a TypeError)
                         (["--data", "gmm", "--set", "seed=3"], "pass seed with --seed, not --set"),
                         (["--data", "gmm", "--set", "sigmas=0,0.1"], "pass sigmas with --sigmas, not --set"),
                         (["--data", "gmm", "--set", "out=x"], "pass out with --out, not --set"),
                         # a forced kind the data are not (it trained on gmm)
                         (["--data", "gmm", "--dataset", "celeba"], "dataset 'celeba' does not match the data"),
                         (["--data", str(data), "--dataset", "folder"], "which are 'npy'")]:
        assert main(["advise-sigma", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("flowvar: error:") and message in err and "\n" not in err


def test_reproduce_help_states_the_thread_default_the_code_uses(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from flowvar.reproduce import default_threads

    monkeypatch.delenv("FLOWVAR_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["reproduce", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "$FLOWVAR_THREADS, else 1" in text and "cores // jobs" not in text
    docs = (Path(__file__).resolve().parents[1] / "docs" / "reproduce.md").read_text()
    assert "default `$FLOWVAR_THREADS` or 1" in docs


@pytest.mark.parametrize("args", [
    ["sweep", "fig5", "--quick", "--grid", "sigmas=[0,0.05],[0,-1]"],             # docs/sweeps.md: a bad point
    ["sweep", "fig4", "--quick", "--grid", "angles=[60],[]"],
    ["reproduce", "--quick", "--set", "fig5.sigmas=[-1,0]"],                     # docs/reproduce.md: before anything
    ["reproduce", "--quick", "--only", "prop1", "--set", "prop1.n_samples=0"],
    ["run", "fig4", "--quick", "--set", "cov=[[1,2],[3,4]]"],                     # not symmetric
])
def test_documented_exit_2_with_nothing_written(args: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """docs/sweeps.md and docs/reproduce.md promise: an invalid value (any grid point, any selected experiment) is
    one `flowvar: error:` line, exit status 2, and nothing is written."""
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowvar: error:")
    assert not out.exists()


def test_output_slots_flowvar_must_not_replace_are_refused_before_computing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file, a link or someone else's folder where a result goes, and a cache that cannot be written: one line,
    exit 2, before anything is computed, and the user's files are untouched."""
    blocker = tmp_path / "afile"
    blocker.write_text("mine")

    def refused(args: list[str], message: str) -> None:
        assert main([*args, "--quiet"]) == 2, args
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("flowvar: error:") and message in lines[0], lines

    foreign = tmp_path / "o1" / "prop1"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    refused(["run", "prop1", "--quick", "--out", str(tmp_path / "o1")], "holds files but no result.json")
    assert (foreign / "notes.txt").read_text() == "mine" and list(foreign.iterdir()) == [foreign / "notes.txt"]
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "prop1").write_text("a file")
    refused(["reproduce", "--quick", "--only", "prop1", "--out", str(tmp_path / "o2")], "is a file")
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["prop1"]  # no report, no cache, no log
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "prop1").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    refused(["reproduce", "--quick", "--only", "prop1", "--out", str(tmp_path / "o3")], "is a symbolic link")
    refused(["reproduce", "--quick", "--only", "prop1", "--out", str(tmp_path / "o4"), "--cache",
             str(blocker / "cache")], "cannot write to the cache folder")
    assert not (tmp_path / "o4").exists()
    refused(["sweep", "prop1", "--quick", "--grid", "n_samples=100,200", "--out", str(tmp_path / "o5"), "--cache",
             str(blocker / "cache")], "cannot write to the cache folder")
    (tmp_path / "o6").mkdir()
    (tmp_path / "o6" / "figures").write_text("a file")
    refused(["sweep", "prop1", "--quick", "--grid", "n_samples=100,200", "--out", str(tmp_path / "o6")],
            "is in the way of the sweep's figures")
    assert blocker.read_text() == "mine"


def test_config_files_keyed_by_experiment_must_configure_the_one_asked_for(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("fig4: {repeats: 3}\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("fig5: {repeats: 3}\nfgi4: {repeats: 3}\n")
    for args, message in [(["config", "fig5", "--config", str(other)], "has no section for fig5"),
                          (["run", "fig5", "--quick", "--config", str(other), "--out", str(tmp_path / "o")],
                           "has no section for fig5"),
                          (["config", "fig5", "--config", str(typo)], "'fgi4' is not an experiment"),
                          (["config", "fig5", "--template", "--set", "repeats=3"], "--template prints the package")]:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("flowvar: error:") and message in err and "\n" not in err, err


def test_a_config_file_that_is_not_text_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    for args in (["config", "fig5"], ["run", "fig5", "--quick", "--out", str(tmp_path / "o")]):
        assert main([*args, "--config", str(binary)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("flowvar: error:") and "not UTF-8 text" in err and "\n" not in err


def test_show_update_readme_of_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = Path(__file__).resolve().parents[1] / "results"
    assert main(["show", str(results), "--update-readme", str(tmp_path / "nofile.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowvar: error: cannot read") and "nofile.md" in err and "\n" not in err


def test_sigterm_ends_flowvar_run_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM (timeout, CI cancellation, kill) takes Ctrl-C's path in every command: exit 130, a clean line, no
    staging folder left behind."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "flowvar.cli", "run", "fig4", "--quick", "--quiet", "--set",
                             "n_samples=400000", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and list(out.glob(".fig4.*"))):  # the run has started staging
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not list(out.glob(".fig4.*")) and not (out / "fig4").exists()


def test_flowvar_warnings_print_as_one_line_and_others_keep_their_location(capsys, monkeypatch):
    """Under the CLI a warning raised from flowvar's own code reads ``flowvar: warning: ...`` (one line, no source
    line from inside the package); a third-party warning goes to the previous handler unchanged (Python's
    ``path:line: Category`` format)."""
    import warnings

    import flowvar.data
    from flowvar.cli import _flowvar_warnings_on_one_line

    passed_on = []
    monkeypatch.setattr(warnings, "showwarning", lambda *args: passed_on.append(args))
    previous = warnings.showwarning
    with _flowvar_warnings_on_one_line():
        warnings.showwarning("3 of the 4 images are smaller\nthan 16x16", UserWarning, flowvar.data.__file__, 1)
        warnings.showwarning("elsewhere", DeprecationWarning, "/somewhere/else/lib.py", 7)
    assert capsys.readouterr().err == "flowvar: warning: 3 of the 4 images are smaller\\nthan 16x16\n"
    assert passed_on == [("elsewhere", DeprecationWarning, "/somewhere/else/lib.py", 7, None, None)]
    assert warnings.showwarning is previous  # restored on exit


@pytest.mark.parametrize("cached", [False, True])
def test_run_interrupted_says_what_is_kept_and_exits_130(tmp_path, capsys, monkeypatch, cached):
    import flowvar.cache
    import flowvar.experiments.base

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowvar.cache if cached else flowvar.experiments.base,
                        "run_cached" if cached else "run_experiment", interrupted)
    argv = ["run", "prop1", "--quick", "--out", str(tmp_path / "out")]
    code = main(argv + (["--cache", str(tmp_path / "cache")] if cached else []))
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and err.startswith("flowvar: interrupted")
    assert ("rerun the same command" in err) if cached else ("--cache DIR" in err)


def test_python_dash_m_flowvar_is_the_same_command_line():
    import subprocess
    import sys

    from flowvar import __version__

    ok = subprocess.run([sys.executable, "-m", "flowvar", "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and __version__ in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "flowvar", "run", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("flowvar: error: unknown experiment 'nope'")


def test_run_refuses_a_folder_a_reproduce_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`flowvar run` into a folder whose `flowvar reproduce` is running (it holds OUT/.reproduce.lock): one line,
    nothing written; once the lock is free the same command runs. The check creates nothing in a new folder."""
    from flowvar.runner import exclusive, refuse_if_locked

    out = tmp_path / "runs"
    refuse_if_locked(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    out.mkdir()
    argv = ["run", "counterexample1", "--quick", "--quiet", "--out", str(out)]
    with exclusive(out):
        assert main(argv) == 2
        assert main([*argv, "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(ln.startswith("flowvar: error: a `flowvar reproduce` (pid ") for ln in err), err
    assert f"is writing to {out}; `flowvar run` would write beside it" in err[0]
    assert not (out / "counterexample1").exists()
    assert main(argv) == 0 and (out / "counterexample1" / "result.json").is_file()


def test_show_and_write_report_take_the_same_collections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A results.json `flowvar show DIR` accepts, `show DIR --write-report` renders (missing meta fields are shown as
    not recorded), and one it refuses, both refuse with the same line. A recorded mode that the results contradict
    is a warning, and the report is told at the results' scale."""
    assert main(["run", "counterexample1", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "counterexample1" / "result.json").read_text())
    collection = tmp_path / "results.json"

    def both(data: object) -> tuple[list[int], list[str]]:
        collection.write_text(json.dumps(data))
        capsys.readouterr()
        codes = [main(["show", str(tmp_path)]), main(["show", str(tmp_path), "--write-report"])]
        return codes, capsys.readouterr().err.splitlines()

    codes, err = both({"meta": {"mode": "full"}, "experiments": [{"name": "counterexample1", "status": "computed",
                                                                  "result": result}]})
    assert codes == [0, 0]
    assert err == ["flowvar: warning: results.json records 'full' mode but its results ran in quick mode: reported "
                   "as a quick run"] * 2
    md = (tmp_path / "report.md").read_text()
    assert "`flowvar reproduce (command not recorded)` · quick mode" in md and "> **Quick run:" in md
    assert "<title>flowvar reproduction report (quick)</title>" in (tmp_path / "report.html").read_text()

    for data, problem in [
        ({"meta": {}, "experiments": [{"name": "fig5", "status": "computed"}]},
         "experiment fig5: status 'computed' without a result"),
        ({"meta": {}, "experiments": [{"name": "fig5", "status": "done", "result": result}]},
         "experiment fig5: status 'done' is none of"),
        ({"meta": {}, "experiments": [{"name": "fig5", "status": "computed", "result": {"claims": []}}]},
         "experiment fig5: its result is not a flowvar result"),
        ({"meta": {}, "experiments": [{"status": "not run"}]}, "experiment #1: not a record with a name"),
        ({"meta": {}, "experiments": [{"name": "fig5", "status": "not run"}]}, "meta.mode None is neither quick nor"),
        ({"meta": [], "experiments": []}, "its meta is not a JSON object"),
        ({"meta": {"mode": "quick", "wall_s": "long"}, "experiments": []}, "meta.wall_s 'long' is not a number"),
    ]:
        codes, err = both(data)
        assert codes == [2, 2] and len(err) == 2 and err[0] == err[1], (data, err)
        assert err[0].startswith("flowvar: error: ") and "is not a valid flowvar reproduce collection" in err[0]
        assert problem in err[0], err[0]


def _advice(table: list[dict]) -> object:
    from flowvar.advise import Advice

    margins = dict.fromkeys(("gen_margin", "mem_margin", "gen_floor", "gen_best", "gen_tolerance", "chance"), 0.1)
    return Advice(None, False, False, "no σ has finite scores", "rule", table, margins, "data",
                  diverged=["σ = 0, seed 0 diverged (the loss became non-finite (inf) at step 1)"])


def test_advise_sigma_json_is_strict_and_every_sigma_diverged_exits_1(monkeypatch, capsys):
    import math

    import flowvar.advise

    nan_row = {"sigma": 0.0, "pairing_accuracy": math.nan, "memorisation": math.nan, "generalisation": math.nan,
               "gen_mmd2.unbiased": math.nan, "fresh_copy_fraction": math.nan}
    monkeypatch.setattr(flowvar.advise, "advise_sigma", lambda *args, **kwargs: _advice([nan_row]))

    def refuse(constant: str) -> None:
        raise ValueError(f"bare {constant} is not JSON")

    assert main(["advise-sigma", "--data", "gmm", "--json"]) == 1  # no σ has finite scores: no advice
    advice = json.loads(capsys.readouterr().out, parse_constant=refuse)  # bare NaN used to be printed
    assert advice["table"][0]["memorisation"] == "nan"  # as result.json stores it
    assert main(["advise-sigma", "--data", "gmm"]) == 1
    out = capsys.readouterr().out
    assert "σ = 0, seed 0 diverged (the loss became non-finite" in out and "every σ diverged" in out


def test_advise_sigma_exit_status_of_each_outcome(monkeypatch, capsys):
    # 0 whenever there is advice to read (a recommendation, "undecided: add seeds", none with or without a flagged
    # fallback); 1 only when every σ diverged (test above); the first line names the outcome
    import flowvar.advise
    from flowvar.advise import Advice

    row = {"sigma": 0.0, "pairing_accuracy": 1.0, "memorisation": 1.0, "generalisation": 0.01,
           "gen_mmd2.unbiased": 0.01, "fresh_copy_fraction": 0.0}
    margins = dict.fromkeys(("gen_margin", "mem_margin", "gen_floor", "gen_reference", "gen_tolerance", "chance"), 0.1)
    cases = [(Advice(0.1, True, False, "r", "rule", [row], margins, "d", outcome="recommended"), "recommended σ = 0.1"),
             (Advice(None, False, False, "r", "rule", [row], margins, "d", outcome="undecided", candidates=[0.2]),
              "undecided: no σ passes both margins with confidence"),
             (Advice(0.5, False, True, "r", "rule", [row], margins, "d", outcome="none"),
              "no σ met both margins; fallback σ = 0.5"),
             (Advice(None, False, False, "r", "rule", [row], margins, "d", outcome="none"),
              "no σ satisfies both margins")]
    for advice, head in cases:
        monkeypatch.setattr(flowvar.advise, "advise_sigma", lambda *args, advice=advice, **kwargs: advice)
        assert main(["advise-sigma", "--data", "gmm"]) == 0
        assert capsys.readouterr().out.startswith(head)
        assert main(["advise-sigma", "--data", "gmm", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["outcome"] == advice.outcome


def test_advise_sigma_interrupted_says_so_and_exits_130(monkeypatch, capsys):
    import flowvar.advise

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowvar.advise, "advise_sigma", interrupted)
    assert main(["advise-sigma", "--data", "gmm"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flowvar: interrupted; nothing of this run is kept")


def test_advise_sigma_help_states_the_default_resolution(capsys):
    assert main(["advise-sigma", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "8x8 by default" in text and ".npz" in text



def test_reproduce_help_offers_only_the_keyed_config_form(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """reproduce refuses the flat NAME.yaml form, so its --help must not offer it (run's still does)."""
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["reproduce", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "YAML file keyed by experiment name" in text and "the flat NAME.yaml form of `flowvar config` is refused" \
        in text
    assert "the format of flowvar/experiments/NAME.yaml" not in text
    assert main(["run", "--help"]) == 0
    assert "the format of flowvar/experiments/NAME.yaml" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("flag", [None, "--quiet"])
def test_run_without_a_terminal_prints_one_timestamped_line_per_training(flag, tmp_path, capsys):
    """stderr is no terminal here (nohup, a CI log): by default every finished training prints one
    ``[HH:MM:SS] trained N steps in X s; ...`` line so a long run shows it is alive; --quiet prints none."""
    import re

    small = ["steps=20", "log_every=10", "n_seeds=2", "n_pairs=16", "cf_loss_samples=200", "floor_samples=200",
             "cf_families=random", "cf_sigmas=0.05", "variance_samples=16", "width=16", "dims=2",
             "cf_variance_samples=16", "batch_size=16"]
    args = ["run", "prop2", "--quick", "--out", str(tmp_path)] + [a for kv in small for a in ("--set", kv)]
    assert main(args + ([flag] if flag else [])) == 0
    err = capsys.readouterr().err
    lines = re.findall(r"^\[\d\d:\d\d:\d\d\] trained 20 steps in [\d.]+ s; mean loss of the last 2 steps [\d.e+-]+$",
                       err, flags=re.M)
    assert len(lines) == (0 if flag else 4), err  # two σ (0 and 0.05) × two seeds


def test_a_config_printed_for_the_other_mode_is_named_before_the_run(tmp_path: Path) -> None:
    """newuser (session 33): README's `flowvar config X --quick > my.yaml`, then `flowvar run X --config my.yaml`
    ran the quick values and labelled the result "full mode". The file's first line says which mode printed it."""
    from flowvar.cli import _config_mode_mismatch

    quick_file, full_file, plain = tmp_path / "q.yaml", tmp_path / "f.yaml", tmp_path / "p.yaml"
    quick_file.write_text("# prop1 (quick); defaults from x\nseed: 0\n")
    full_file.write_text("# prop1 (full); defaults from x\nseed: 0\n")
    plain.write_text("seed: 0\n")
    note = _config_mode_mismatch("prop1", quick_file, quick=False)
    assert note is not None and "labelled full mode" in note and "add --quick" in note
    assert _config_mode_mismatch("prop1", quick_file, quick=True) is None
    note = _config_mode_mismatch("prop1", full_file, quick=True)
    assert note is not None and "labelled quick mode" in note and "drop --quick" in note
    assert _config_mode_mismatch("prop1", full_file, quick=False) is None
    assert _config_mode_mismatch("prop1", plain, quick=False) is None  # a hand-written file: no claim about its mode
    assert _config_mode_mismatch("fig4", quick_file, quick=False) is None  # another experiment's header is not ours
