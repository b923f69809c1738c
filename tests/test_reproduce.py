"""`flowvar reproduce`: the report, the cache hit on a rerun, resume after a kill, corrupted entries, bad input,
--jobs, and the per-experiment YAML configs it runs from.

The runs use the two fastest experiments (prop1, counterexample1) at tiny sizes via `--set EXPERIMENT.key=value`.
"""

import dataclasses
import io
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowvar.cli import main
from flowvar.errors import ConfigError
from flowvar.experiments.base import (
    CONFIG_DIR,
    ExperimentSpec,
    build_config,
    discover,
    experiments,
    package_defaults,
    read_yaml,
)
from flowvar.report import load_collection
from flowvar.reproduce import Options, command_line, parse_only, parse_scoped_overrides, reproduce

FAST = ["--only", "prop1,counterexample1", "--set", "prop1.n_samples=300", "--set", "prop1.angles=0,120,180"]
CLAIMS = ["prop1.A.zero_loss_zero_variance", "prop1.B.noise_breaks_zero_variance", "ce1.single_crossing_point",
          "ce1.even_euler_hits_singularity"]



def log_since(out: Path, offset: int) -> str:
    return (out / "reproduce.log").read_text()[offset:]


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `reproduce --quick` of the fast pair with --jobs 1 (library call): (folder, progress lines).

    Read-only for the tests."""
    out = tmp_path_factory.mktemp("serial") / "out"
    only = parse_only([FAST[1]])
    stream = io.StringIO()
    summary = reproduce(Options(out=out, quick=True, only=only, quiet=True,
                                overrides=parse_scoped_overrides(FAST[3::2])), stream=stream)
    assert [o.status for o in summary.outcomes] == ["computed", "computed"]
    assert summary.report_html == out / "report.html"
    return out, stream.getvalue()


def test_report_files(serial: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    out, progress = serial
    assert re.search(r"\[1/2\] prop1: computed in .*\(4 confirmed\)", progress)
    assert re.search(r"\[2/2\] counterexample1: computed in .*\(3 confirmed\)", progress)

    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="verdicts"' in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,iVBOR") for s in sources)
    for claim in CLAIMS:
        assert claim in page
    assert page.count('class="badge confirmed"') >= 7
    assert "Choices the paper leaves open" in page and "torch" in page and "seed" in page

    md = (out / "report.md").read_text()
    assert "| experiment | claim | kind | verdict | evidence |" in md
    assert "| prop1 | `prop1.A.zero_loss_zero_variance` | identity | **confirmed** |" in md
    assert "**no reproduction claims in this run · 7 of 7 identities hold**" in md
    assert "no reproduction claims in this run · 7 of 7" in page and "7 of 7 identities hold" in page
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert links and all((out / link).is_file() for link in links)

    collection = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in collection["experiments"]] == ["prop1", "counterexample1"]
    for e in collection["experiments"]:
        assert e["status"] == "computed" and e["key"].startswith(e["name"] + "-")
        assert e["result"] == json.loads((out / e["name"] / "result.json").read_text())
        # each result names the code that computed it (its flowvar version alone is 0.1.0 for every commit)
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown \(not a git checkout\)",
                            e["result"]["versions"]["git_commit"])
    assert collection["experiments"][0]["result"]["config"]["angles"] == [0.0, 120.0, 180.0]
    assert collection["meta"]["mode"] == "quick" and collection["meta"]["versions"]["torch"]

    # `flowvar show` reads a reproduce folder (and ignores .cache/)
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "2 experiments: no reproduction claims in this run · 7 of 7" in shown
    assert "7 of 7 identities hold" in shown and "flowvar reproduce --quick" in shown


def test_cache_hit_corrupted_entry_and_force(serial: tuple[Path, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(serial[0], out)  # the cache travels with the folder: OUT/.cache
    # rerun: everything is a cache hit, nothing is recomputed or rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.is_file()}
    offset = len((out / "reproduce.log").read_text())
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), *FAST]) == 0
    assert "2 from the cache" in capsys.readouterr().out
    log = log_since(out, offset)
    assert "cache hit: prop1" in log and "cache hit: counterexample1" in log and "computing:" not in log
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.is_file()} == stamps
    assert [e["status"] for e in load_collection(out)["experiments"]] == ["cached", "cached"]

    # a corrupted cache entry is not trusted: one warning line, recomputed, the other still a hit
    entry = next((out / ".cache").glob("prop1-*"))
    result = json.loads((entry / "result.json").read_text())
    result["claims"][0]["verdict"] = "refuted"
    (entry / "result.json").write_text(json.dumps(result))
    offset = len((out / "reproduce.log").read_text())
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "prop1" in warnings[0] and "corrupted" in warnings[0], err
    log = log_since(out, offset)
    assert "computing: prop1" in log and "cache hit: counterexample1" in log
    assert json.loads((out / "prop1" / "result.json").read_text())["claims"][0]["verdict"] == "confirmed"
    assert [e["status"] for e in load_collection(out)["experiments"]] == ["computed", "cached"]

    # --force recomputes everything
    offset = len((out / "reproduce.log").read_text())
    assert main(["reproduce", "--quick", "--quiet", "--force", "--out", str(out), *FAST]) == 0
    assert log_since(out, offset).count("computing:") == 2


def test_resume_after_kill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["reproduce", "--quick", "--quiet", "--out", str(out), "--only", "prop1,counterexample1",
            "--set", "prop1.n_samples=300"]
    proc = subprocess.Popen([sys.executable, "-m", "flowvar.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((out / ".cache").glob("prop1-*/cache.json")):
            assert proc.poll() is None, "reproduce ended before the first experiment was cached"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "counterexample1" / "result.json").exists(), "killed too late to test a resume"
    # the kill may land before this process installed prop1 from the cache: what must survive is the cache entry
    cached = next((out / ".cache").glob("prop1-*/result.json"))
    first = cached.stat().st_mtime_ns
    # what a kill inside the report's atomic writes leaves: their temporary files (the rerun removes them)
    stale = [out / ".results.json.k1ll3d.tmp", out / ".report.html.k1ll3d.tmp"]
    for tmp in stale:
        tmp.write_text('{"half": ')

    assert main([*args]) == 0
    assert not any(tmp.exists() for tmp in stale)
    assert "1 computed, 1 from the cache" in capsys.readouterr().out
    log = (out / "reproduce.log").read_text().split("start: ")[-1]
    assert "cache hit: prop1" in log and "computing: counterexample1" in log and "computing: prop1" not in log
    assert cached.stat().st_mtime_ns == first and (out / "prop1" / "result.json").is_file()
    assert (out / "counterexample1" / "result.json").is_file()
    assert not list(out.glob(".counterexample1.*")) and not list((out / ".cache").glob(".tmp-*"))
    assert [e["status"] for e in load_collection(out)["experiments"]] == ["cached", "computed"]


def test_only_into_a_folder_reports_what_the_folder_holds(serial: tuple[Path, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`reproduce --only prop1` into a folder that already holds counterexample1 (an earlier reproduce): the report and
    results.json keep counterexample1 (status "kept", with the command and date that made it), instead of shrinking to
    prop1 and calling counterexample1 "not selected" while its result sits in the folder."""
    out = tmp_path / "my out"  # a space: the recorded commands must still read back as one --out
    shutil.copytree(serial[0], out)
    earlier = load_collection(out)["meta"]
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), "--only", "prop1", *FAST[2:]]) == 0
    printed = capsys.readouterr().out
    assert "1 experiments (0 computed, 1 from the cache" in printed
    assert "also holds the results already in" in printed and "of counterexample1: kept" in printed
    collection = load_collection(out)
    entries = {e["name"]: e for e in collection["experiments"]}
    assert [e["name"] for e in collection["experiments"]] == ["counterexample1", "prop1"]  # the registry's order
    assert entries["prop1"]["status"] == "cached" and collection["meta"]["kept"] == ["counterexample1"]
    kept = entries["counterexample1"]
    assert kept["status"] == "kept" and kept["key"].startswith("counterexample1-")
    assert kept["kept_from"] == {"status": "computed", "command": earlier["command"], "created": earlier["created"]}
    assert kept["result"] == json.loads((out / "counterexample1" / "result.json").read_text())
    assert shlex.split(collection["meta"]["command"])[3:5] == ["--out", str(out)]
    md = (out / "report.md").read_text()
    not_selected = next(ln for ln in md.splitlines() if ": not selected —" in ln)
    assert "counterexample1" not in not_selected and "partial: 2 of 15 experiments have a result" in md
    assert "Status: kept: its result was already in this folder, from the run `" + earlier["command"] in md
    assert "| counterexample1 | quick | 0 |" in md and "| kept from an earlier run |" in md
    assert "ce1.single_crossing_point" in (out / "report.html").read_text()

    # a second --only run keeps the first provenance, not "kept from the run that kept it"
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), "--only", "prop1", *FAST[2:]]) == 0
    again = {e["name"]: e for e in load_collection(out)["experiments"]}
    assert again["counterexample1"]["kept_from"]["command"] == earlier["command"]

    # a result of the other mode is not told at this scale: left out, with a warning; one installed by another
    # command (no record in results.json) is kept without a provenance
    ce1 = json.loads((out / "counterexample1" / "result.json").read_text())
    (out / "counterexample1" / "result.json").write_text(json.dumps({**ce1, "quick": False}))
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), "--only", "prop1", *FAST[2:]]) == 0
    err = capsys.readouterr().err
    assert "flowvar: warning:" in err and "full-mode results of counterexample1: left out of this quick report" in err
    assert [e["name"] for e in load_collection(out)["experiments"]] == ["prop1"]
    (out / "counterexample1" / "result.json").write_text(json.dumps({**ce1, "runtime_s": 1.5}))
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), "--only", "prop1", *FAST[2:]]) == 0
    other = {e["name"]: e for e in load_collection(out)["experiments"]}["counterexample1"]
    assert other["status"] == "kept" and other["key"] is None and other["kept_from"]["command"] is None
    assert "from an earlier command (not a recorded `flowvar reproduce` run)" in (out / "report.md").read_text()

    # without --only every experiment is this command's: nothing is kept
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), *FAST]) == 0
    assert [e["status"] for e in load_collection(out)["experiments"]] == ["cached", "cached"]
    assert json.loads((out / "counterexample1" / "result.json").read_text()) == ce1  # the cache's, reinstalled


def test_the_recorded_command_is_shell_quoted(tmp_path: Path) -> None:
    """The "rerun the same command" line must copy-paste into a shell: every argument shlex-quoted."""
    options = Options(out=Path("sp ace/x"), quick=True, only=["prop1", "fig4"], jobs=2, config_file=Path("my cfg.yaml"),
                      cache_dir=Path("a cache"), seed=3, overrides={"prop1": {"angles": "0, 120", "note": "it's"}})
    line = command_line(options)
    assert shlex.split(line) == ["flowvar", "reproduce", "--quick", "--out", "sp ace/x", "--only", "prop1,fig4",
                                 "--jobs", "2", "--config", "my cfg.yaml", "--cache", "a cache", "--seed", "3",
                                 "--set", "prop1.angles=0, 120", "--set", "prop1.note=it's"]


def test_make_reproduce_passes_out_as_one_argument(tmp_path: Path) -> None:
    """`make reproduce OUT="my runs"`: one --out argument, not two; an empty OUT= (the current folder) is refused."""
    root = Path(__file__).resolve().parent.parent
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = ".venv/.flowvar-installed"  # -o: the setup prerequisite counts as done, so only the recipe is printed
    dry = subprocess.run(["make", "-n", "-o", stamp, "reproduce", "OUT=my runs"], cwd=root, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    line = next(ln for ln in dry.stdout.splitlines() if "flowvar reproduce" in ln)
    argv = shlex.split(line)
    assert argv[argv.index("--out") + 1] == "my runs"
    empty = subprocess.run(["make", "-o", stamp, "reproduce", "OUT="], cwd=root, capture_output=True, text=True,
                           timeout=60)
    assert empty.returncode != 0 and "OUT is empty" in empty.stderr


def test_jobs_gives_identical_results(serial: tuple[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--quiet", "--jobs", "2", "--out", str(out), *FAST]) == 0
    parallel, one = load_collection(out), load_collection(serial[0])
    assert parallel["meta"]["jobs"] == 2 and one["meta"]["jobs"] == 1
    assert [e["status"] for e in parallel["experiments"]] == ["computed", "computed"]

    def strip(collection: dict) -> list[dict]:
        return [{k: v for k, v in e["result"].items() if k != "runtime_s"} for e in collection["experiments"]]

    assert strip(parallel) == strip(one)


@pytest.mark.parametrize(("args", "message"), [
    (["--only", "prop1,nope"], "unknown experiment 'nope' in --only"),
    (["--only", "prop1", "--set", "prop1.bogus=1"], "unknown config key 'bogus' for prop1"),
    (["--only", "prop1", "--set", "n_samples=3"], "EXPERIMENT.key=value"),
    (["--only", "prop1", "--set", "nope.n_samples=3"], "unknown experiment 'nope' in --set"),
    (["--only", "prop1", "--set", "prop1.n_samples=many"], "n_samples expects an integer"),
    (["--only", "prop1", "--jobs", "0"], "greater than or equal to 1"),  # --jobs min=1 (cliR 4)
    (["--only", ""], "--only names no experiment"),  # an unset shell variable must not run everything
    (["--only", "prop1", "--cache", "/dev/null"], "--cache /dev/null is a file"),
    # a setting for an experiment --only leaves out would be silently ignored
    (["--only", "prop1", "--set", "counterexample1.n_samples=3"],
     "--set counterexample1.n_samples=3 sets counterexample1, which --only prop1 leaves out"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), *args]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowvar: error:") and message in lines[0], lines
    assert not list(out.glob("*/result.json"))


def test_unwritable_folder_and_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["reproduce", "--quick", "--only", "prop1", "--out", str(blocker / "sub")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text("prop1:\n  n_samples: 300\n  bogus: 1\n")
    assert main(["reproduce", "--quick", "--only", "prop1", "--out", str(tmp_path / "o"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'bogus'" in err and str(config) in err
    config.write_text("n_samples: 300\n")
    assert main(["reproduce", "--quick", "--only", "prop1", "--out", str(tmp_path / "o"), "--config", str(config)]) == 2
    assert "keyed by experiment name" in capsys.readouterr().err
    config.write_text("n_samples: [1\n")
    assert main(["run", "prop1", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_failing_and_unimportable_experiments_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import flowvar.experiments.base as base
    import flowvar.experiments.registry as registry

    def boom(config: object, ctx: object) -> None:
        raise RuntimeError("numerical trouble")

    monkeypatch.setitem(registry._REGISTRY, "prop1", dataclasses.replace(base.get_experiment("prop1"), run=boom))
    real = base.get_experiment

    def get(name: str) -> base.ExperimentSpec:
        if name == "counterexample1":
            raise ImportError("half-written module")
        return real(name)

    monkeypatch.setattr(base, "get_experiment", get)
    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--quiet", "--only", "prop1,counterexample1", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED prop1: RuntimeError: numerical trouble" in printed and "FAILED counterexample1" in printed
    collection = load_collection(out)
    assert {e["name"]: e["status"] for e in collection["experiments"]} == {"prop1": "failed",
                                                                          "counterexample1": "failed"}
    assert "numerical trouble" in (out / "report.html").read_text()
    assert "Traceback" in (out / "reproduce.log").read_text()
    assert not list((out / ".cache").glob("prop1-*"))


# --- configs: the YAML files are the values, the dataclass the schema -------------------------------------------

def test_every_yaml_file_matches_its_dataclass_and_loads() -> None:
    specs = experiments()
    yaml_files = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))  # flowvar's own (not a loaded plugin's folder)
    assert {"lemma1", "prop1", "fig4", "fig5", "counterexample1", "lemma1_mlp"} <= set(yaml_files)
    for name in yaml_files:
        assert name in specs, f"{name}.yaml has no experiment"
        spec = specs[name]
        raw = read_yaml(spec.defaults_file)
        assert set(raw) - {"quick", "expected_runtime_s", "sweeps"} == set(spec.field_names()), name
        defaults = package_defaults(spec)
        assert set(defaults.expected_runtime_s) == {"quick", "full"}, name
        for quick in (False, True):
            build_config(spec, quick=quick)


def test_the_values_of_flowvars_experiments_live_in_their_yaml_files_only() -> None:
    """Issue 17 item 6: the dataclass is the schema (names, types, validation) and carries no value; there is no
    register(quick=...) either. Every value, full and quick, is in experiments/NAME.yaml, and a config built without
    it is refused with the file to fix."""
    own = set(discover())  # flowvar's own: a plugin an earlier test loaded may keep its values where it likes
    for name, spec in experiments().items():
        if name not in own:
            continue
        assert package_defaults(spec) is not None, f"{name} has no YAML file"
        with_values = [f.name for f in dataclasses.fields(spec.config_cls)
                       if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
        assert not with_values, f"{name}: the dataclass holds values for {with_values}; they belong in its YAML file"
        assert not spec.quick, f"{name}: register(quick=...) duplicates the YAML quick section"
        build_config(spec)
        build_config(spec, quick=True)
    spec = experiments()["prop1"]
    bare = dataclasses.replace(spec, defaults_file=Path("/nonexistent/prop1.yaml"))
    with pytest.raises(ConfigError, match=r"has no value for seed, mean.*YAML file prop1\.yaml"):
        build_config(bare)


@dataclass
class Demo:
    seed: int = 0
    steps: int = 100
    lr: float = 0.1
    sigmas: tuple[float, ...] = (0.0,)


def test_config_layering_and_validation(tmp_path: Path) -> None:
    defaults = tmp_path / "demo.yaml"
    defaults.write_text("steps: 200\nlr: 1e-3\nquick:\n  steps: 20\nexpected_runtime_s: {quick: 1, full: 9}\n")
    spec = ExperimentSpec("demo", "demo", Demo, lambda c, ctx: None, {"steps": 5}, {}, defaults)
    assert build_config(spec) == Demo(steps=200, lr=0.001)
    assert build_config(spec, quick=True).steps == 20  # the YAML quick section, not register(quick=...)
    user = tmp_path / "user.yaml"
    user.write_text("sigmas: [0.05, 0.5]\nquick:\n  steps: 7\n")
    assert build_config(spec, quick=True, config_file=user) == Demo(steps=7, lr=0.001, sigmas=(0.05, 0.5))
    assert build_config(spec, quick=True, seed=3, config_file=user, overrides={"steps": "8"}) == Demo(
        seed=3, steps=8, lr=0.001, sigmas=(0.05, 0.5))
    # without a YAML file: dataclass defaults and register(quick=...)
    assert build_config(dataclasses.replace(spec, defaults_file=None), quick=True) == Demo(steps=5)
    defaults.write_text("steps: 200\nwidth: 3\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(defaults))}: unknown config key 'width'"):
        build_config(spec)
    defaults.write_text("quick:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"quick section.*steps expects an integer"):
        build_config(spec, quick=True)


def test_config_command_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "fig4", "--quick", "--set", "repeats=4"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "fig4.yaml"
    path.write_text(printed)
    spec = experiments()["fig4"]
    assert build_config(spec, config_file=path) == build_config(spec, quick=True, overrides={"repeats": "4"})
    assert main(["config", "prop1", "--template"]) == 0
    assert "quick:\n  n_samples: 5000" in capsys.readouterr().out


def test_a_full_disk_is_one_line_per_failure_and_a_rerun_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC on every write (injected at the fsync of the one atomic writer): each experiment is reported as failed
    with the path it could not write (its work folder's record, before anything is computed), the report's own
    write is one `flowvar: error:` line with exit 2, no traceback and nothing half-written is left in place; once
    space is back the same command completes."""
    import errno

    import flowvar.files as files_mod

    out = tmp_path / "out"
    real_fsync = files_mod.os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_mod.os, "fsync", disk_full)
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # (the first write is the work folder's record of its key, inputs.json: the run stops before computing)
    assert re.search(r"prop1: FAILED: WriteError: cannot write the work folder record .*inputs\.json: No space left on "
                     r"device", err)
    assert err.strip().splitlines()[-1].startswith("flowvar: error: cannot write")
    assert not (out / "prop1").exists() and not (out / "report.html").exists()
    assert not [p for p in out.iterdir() if p.name.startswith((".prop1.", ".counterexample1."))]  # no staging left
    monkeypatch.setattr(files_mod.os, "fsync", real_fsync)
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out), *FAST]) == 0
    collection = json.loads((out / "results.json").read_text())
    assert [e["status"] for e in collection["experiments"]] == ["computed", "computed"]
    assert (out / "report.html").is_file() and (out / "prop1" / "result.json").is_file()


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 2 MiB tmpfs mounted at tmp_path/disk (skipped where this process may not mount)."""
    import shutil
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = shutil.which("mount")
    if mount is None or sys.platform != "linux":
        pytest.skip("a real full-disk test needs Linux mount(8); the injected-ENOSPC test covers the code path")
    proc = subprocess.run([mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); the injected-ENOSPC "
                    f"test covers the code path")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill_disk(disk: Path, free_kib: int) -> Path:
    """Fill the filesystem of ``disk`` with one file, then free ``free_kib`` KiB of it; the file (delete it to free
    the space)."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    with open(filler, "r+b") as fh:
        fh.truncate(max(0, filler.stat().st_size - free_kib * 1024))
    return filler


def test_a_real_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(
        small_tmpfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Disk full for real (a 2 MiB tmpfs, nearly filled): no traceback, every failure one line naming what could
    not be written, the output consistent (a report lists exactly what is installed), and once space is freed the
    same command completes."""
    out = small_tmpfs / "out"
    filler = fill_disk(small_tmpfs, free_kib=24)  # too little for the experiments' figures
    args = ["reproduce", "--quick", "--quiet", "--out", str(out), "--cache", str(tmp_path / "cache"), *FAST]
    code = main(args)
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err, err
    assert "No space left on device" in err
    if (out / "results.json").is_file():  # whatever the report says is installed, is
        collection = json.loads((out / "results.json").read_text())
        for e in collection["experiments"]:
            assert (out / e["name"] / "result.json").is_file() == (e["status"] in ("computed", "cached")), e
    filler.unlink()
    assert main(args) == 0
    collection = json.loads((out / "results.json").read_text())
    assert all(e["status"] in ("computed", "cached") for e in collection["experiments"])
    assert (out / "report.html").is_file()


def test_run_on_a_full_disk_is_one_line(small_tmpfs: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`flowvar run --cache` whose output disk is full: it computes into the cache (on another disk) and then
    installs, so the result is kept: one line naming the output folder that is full and the cache entry that holds
    the result (it was a 20-line PIL traceback from savefig, then a lost result), nothing half-written left in the
    output folder; once space is freed the same command installs it as a cache hit, without recomputing."""
    from flowvar.cache import Cache

    filler = fill_disk(small_tmpfs, free_kib=8)
    out = small_tmpfs / "out"
    args = ["run", "counterexample1", "--quick", "--out", str(out), "--cache", str(tmp_path / "cache")]
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    (entry,) = Cache(tmp_path / "cache").entries()
    assert re.fullmatch(rf"flowvar: error: cannot write {re.escape(str(out / 'counterexample1'))}: No space left on "
                        rf"device; free space or choose another output folder; the computed result of "
                        rf"counterexample1 is complete in the cache {re.escape(str(tmp_path / 'cache'))} "
                        rf"\({entry['key']}\): once it can be written, rerun the same command to install it without "
                        rf"recomputing", lines[0]), lines[0]
    assert not (out / "counterexample1").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".counterexample1.")] if out.is_dir() else True
    filler.unlink()
    assert main(args) == 0
    assert "cache hit" in capsys.readouterr().out
    assert (out / "counterexample1" / "result.json").is_file()


def test_a_cache_store_on_a_full_disk_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copying a finished result into a full cache: a DataError naming the experiment, the cache and the fix (it was
    a bare OSError), and no staging folder left behind."""
    import errno

    from flowvar.cache import Cache
    from flowvar.errors import DataError

    assert main(["run", "counterexample1", "--quick", "--out", str(tmp_path / "runs"), "--cache",
                 str(tmp_path / "first")]) == 0

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(DataError, match=r"cannot store the result of counterexample1 in the cache .*: No space left "
                                        r"on device; free space or choose another --cache"):
        # under the result's own key: a store checks the key first (review cacheR 4), then the disk refuses it
        cache.store(next(p.name for p in (tmp_path / "first").iterdir() if p.name.startswith("counterexample1-")),
                    tmp_path / "runs" / "counterexample1")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".work")] == []
