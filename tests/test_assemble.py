"""`flowvar assemble`: an experiment's full result from a sweep that split its grid (memorisation_phase by cell) is
the whole run's result — same points, claims, notes and figures — and every way the parts can fail to make up the
grid is refused with a one-line error naming the fix."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from experiment_checks import rejudge_with_outdated_verdicts
from flowvar.cli import main
from flowvar.errors import ConfigError, DataError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.memorisation_phase import assemble
from flowvar.report import readme_section
from flowvar.results import Result, to_jsonable
from flowvar.sweep import Options, sweep
from flowvar.sweep.assemble import assemble_sweep

REPO = Path(__file__).resolve().parents[1]
TINY = {"n_seeds": "2", "sigmas": "0,0.05,0.5", "widths": "16", "steps": "8", "n_eval": "32",
        "variance_samples": "16", "floor_samples": "64", "exact_sources": "8"}
GRID = ["dims=[2],[5]", "ns=[8],[16]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole run over dims [2, 5] × ns [8, 16], and a sweep computing it as four cells."""
    root = tmp_path_factory.mktemp("assemble")
    whole = run_experiment("memorisation_phase", root / "whole", quick=True,
                           overrides={**TINY, "dims": "2,5", "ns": "8,16"})
    summary = sweep(Options("memorisation_phase", grid=GRID, quick=True, overrides=TINY, out=root / "sweep",
                            quiet=True))
    assert not summary.failed
    return {"whole": whole, "sweep": root / "sweep", "root": root}


def _without_runtimes(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "runtime_s"} for p in points]


def test_the_assembled_sweep_is_the_whole_run(runs: dict[str, Any], tmp_path: Path) -> None:
    result, folder = assemble_sweep(runs["sweep"], tmp_path)
    whole: Result = runs["whole"]
    assert folder == tmp_path / "memorisation_phase" and (folder / "result.json").is_file()
    assert result.config == whole.config  # dims [2, 5], ns [8, 16]: the axes' lists joined
    # the same points in the same order (the cells' streams are named by d, N, width and seed, not by position)
    assert _without_runtimes(result.metrics["points"]) == _without_runtimes(whole.metrics["points"])
    assert result.metrics["references"] == whole.metrics["references"]
    assert result.metrics["regions"] == whole.metrics["regions"]
    assert result.to_dict()["claims"] == whole.to_dict()["claims"]
    assert result.notes[:-1] == whole.notes and result.choices == whole.choices and result.figures == whole.figures
    assert result.notes[-1].startswith("Assembled from the 4 parts of a split run (`flowvar sweep memorisation_phase")
    for fig in result.figures:
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    source = result.metrics["assembled_from"]
    parts = [json.loads((runs["sweep"] / p["output"] / "result.json").read_text())
             for p in json.loads((runs["sweep"] / "sweep.json").read_text())["points"]]
    assert source["points"] == 4 and len(source["keys"]) == 4 and source["command"].startswith("flowvar sweep")
    # one code version, the experiment's, on both sides: the same code reads as the same (it named the package's)
    assert source["computed_by"] == source["assembled_by"]
    assert result.runtime_s == pytest.approx(sum(p["runtime_s"] for p in parts))
    assert "memorisation_phase" in (folder / "summary.md").read_text()


def test_assembling_into_a_reproduce_folder_adds_it_to_the_report(runs: dict[str, Any], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    collection = tmp_path / "full"
    shutil.copytree(REPO / "results" / "full", collection)
    # the sweep ran quick: the collection, taken without the memorisation_phase it publishes (this test adds it), is
    # made a quick one (a full one refuses it, see the test below)
    index = json.loads((collection / "results.json").read_text())
    index["experiments"] = [e for e in index["experiments"] if e["name"] != "memorisation_phase"]
    shutil.rmtree(collection / "memorisation_phase", ignore_errors=True)
    index["meta"]["mode"] = "quick"
    for e in index["experiments"]:  # the results' own quick flags decide a collection's mode, not meta alone
        if e.get("result"):
            e["result"]["quick"] = True
    (collection / "results.json").write_text(json.dumps(index))
    before = index["experiments"]
    for _ in range(2):  # a second assembly replaces the entry, never adds another
        assert main(["assemble", str(runs["sweep"]), "--out", str(collection)]) == 0
    out = capsys.readouterr().out
    assert "memorisation_phase: assembled from 4 points" in out and "reproductions" in out
    entries = json.loads((collection / "results.json").read_text())["experiments"]
    assert [e["name"] for e in entries] == [e["name"] for e in before] + ["memorisation_phase"]
    entry = entries[-1]
    assert entry["status"] == "assembled" and entry["assembled_from"]["points"] == 4
    assert entry["result"]["claims"] and (collection / "memorisation_phase" / "result.json").is_file()
    report = (collection / "report.md").read_text()
    assert "assembled from a sweep" in report and "memorisation_phase.sigma0.05_reduces_memorisation" in report
    # the header, the HTML and the README block say where this experiment comes from (not the reproduce command)
    source = "memorisation_phase: assembled from the 4 points of `flowvar sweep memorisation_phase"
    assert source in report.split("> **")[0]
    assert "memorisation_phase: assembled from the 4 points of <code>flowvar sweep" in (
        collection / "report.html").read_text()
    section = readme_section(json.loads((collection / "results.json").read_text()), "full")
    assert "; memorisation_phase assembled from the 4 points of `flowvar sweep memorisation_phase" in section


def test_a_quick_sweep_is_refused_by_a_full_reproduction_which_stays_untouched(runs: dict[str, Any],
                                                                                tmp_path: Path) -> None:
    """Its report says paper-scale: a quick result in it would be told as one. Refused before anything is written."""
    collection = tmp_path / "full"
    shutil.copytree(REPO / "results" / "full", collection)
    before = (collection / "results.json").read_bytes()
    published = (collection / "memorisation_phase" / "result.json").read_bytes()  # the paper-scale assembly
    with pytest.raises(ConfigError, match="holds a full reproduction but the parts are quick-mode results"):
        assemble_sweep(runs["sweep"], collection)
    assert (collection / "results.json").read_bytes() == before
    assert (collection / "memorisation_phase" / "result.json").read_bytes() == published


@pytest.mark.parametrize("text", ["{broken", '{"experiments": []}', '{"meta": {}, "experiments": []}',
                                  '{"meta": {"command": "c", "mode": "quick", "code_version": "v", "created": "t", '
                                  '"wall_s": 1}, "experiments": ["x"]}'])
def test_a_corrupt_collection_is_refused_before_the_result_is_written(runs: dict[str, Any], tmp_path: Path,
                                                                       text: str) -> None:
    """Refused as one line before the result is written (before: a traceback from the report, after it)."""
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(DataError, match="not a valid flowvar reproduce collection"):
        assemble_sweep(runs["sweep"], tmp_path)
    assert not (tmp_path / "memorisation_phase").exists()


def test_a_file_where_the_result_folder_goes_is_a_one_line_error(runs: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "memorisation_phase").write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a result folder; move it away or give another --out"):
        assemble_sweep(runs["sweep"], tmp_path)
    assert (tmp_path / "memorisation_phase").read_text() == "mine"


def _edited_copy(runs: dict[str, Any], tmp_path: Path, edit_index: Any = None, edit_part: Any = None) -> Path:
    folder = tmp_path / "sweep"
    shutil.copytree(runs["sweep"], folder)
    index = json.loads((folder / "sweep.json").read_text())
    if edit_index is not None:
        edit_index(index)
        (folder / "sweep.json").write_text(json.dumps(index))
    if edit_part is not None:
        path = folder / index["points"][1]["output"] / "result.json"
        # the cache no longer holds the edited point, so its folder cannot be compared with the entry and what it
        # holds reaches the assembler's checks (with the entry there, any edit is refused as a damaged point)
        shutil.rmtree(folder / ".cache" / index["points"][1]["key"])
        part = json.loads(path.read_text())
        edit_part(part, path)
    return folder


def _set_status(index: dict[str, Any]) -> None:
    index["points"][2]["status"] = "failed"


def _scalar_axis(index: dict[str, Any]) -> None:
    index["axes"] = [{"key": "steps", "values": [8, 16]}]


def _repeated_axis(index: dict[str, Any]) -> None:
    index["axes"][0]["values"] = [[2], [2]]


def _other_experiment(index: dict[str, Any]) -> None:
    index["meta"]["experiment"] = "prop1"


def _axis_without_key(index: dict[str, Any]) -> None:
    del index["axes"][0]["key"]


def _axes_null(index: dict[str, Any]) -> None:
    index["axes"] = None


def _point_not_a_record(index: dict[str, Any]) -> None:
    index["points"][0] = "x"


def _point_dropped(index: dict[str, Any]) -> None:
    index["points"].pop(3)


def _point_listed_twice(index: dict[str, Any]) -> None:
    index["points"][3] = {**index["points"][0], "point": 3}


def _no_points(part: dict[str, Any], path: Path) -> None:
    del part["metrics"]["points"]
    path.write_text(json.dumps(part))


def _point_without_sigma(part: dict[str, Any], path: Path) -> None:
    del part["metrics"]["points"][0]["sigma"]
    path.write_text(json.dumps(part))


def _foreign_result(part: dict[str, Any], path: Path) -> None:
    part["experiment"] = "lemma2"
    part["config"] = {f"field_{i}": i for i in range(9)}
    path.write_text(json.dumps(part))


def _other_steps(part: dict[str, Any], path: Path) -> None:
    part["config"]["steps"] = 9
    path.write_text(json.dumps(part))


def _no_result(part: dict[str, Any], path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(("edit_index", "edit_part", "error", "message"), [
    (_set_status, None, ConfigError, r"1 of 4 points .* not finished \(failed\); rerun `flowvar sweep"),
    (_scalar_axis, None, ConfigError, "axis steps takes single values"),
    (_repeated_axis, None, ConfigError, "repeats a value"),
    (_repeated_axis, None, ConfigError, r"its points overlap: split the grid so that every value is in exactly one "
                                         r"point \(--grid \"dims=\[a\],\[b\]\", not"),
    (_other_experiment, None, ConfigError, "prop1 cannot be assembled"),
    (None, _other_steps, ConfigError, r"differ outside its axes \(steps\)"),
    (None, _no_result, DataError, "has no readable result"),
    (None, _foreign_result, DataError, r"point 1 \(.*\) holds a result of lemma2, not memorisation_phase; delete"),
    (None, _no_points, DataError, "part 2 of 4 is not a memorisation_phase result"),
    (None, _point_without_sigma, DataError, "part 2 of 4 is not a memorisation_phase result"),
    # a hand-edited or damaged index: one line, never a traceback
    (_axis_without_key, None, DataError, r"not a valid sweep index \(axes\[0\] must be \{'key': name"),
    (_axes_null, None, DataError, r"is not a sweep index \(no axes list\)"),
    (_point_not_a_record, None, DataError, r"not a valid sweep index \(points\[0\] has no 'values' object\)"),
    (_point_dropped, None, DataError, r"does not list its axes' grid \(missing .*\[5\].*\[16\].*rerun `flowvar sweep"),
    (_point_listed_twice, None, DataError, "does not list its axes' grid .*a grid point listed twice"),
])
def test_a_sweep_that_does_not_make_up_the_run_is_refused(runs: dict[str, Any], tmp_path: Path, edit_index: Any,
                                                           edit_part: Any, error: type, message: str) -> None:
    folder = _edited_copy(runs, tmp_path, edit_index, edit_part)
    with pytest.raises(error, match=message):
        assemble_sweep(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "memorisation_phase").exists()


def test_a_lost_point_is_restored_by_rerunning_the_sweep_not_by_force(runs: dict[str, Any], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--force would recompute every point (hours for by_cell); the plain command restores it from the cache. The
    folder may have been moved: the fix names it as --out."""
    folder = _edited_copy(runs, tmp_path, edit_part=_no_result)
    assert main(["assemble", str(folder), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "has no readable result" in err and "--force" not in err and f"--out {folder}`" in err
    assert "restores the point from its cache" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_the_fix_of_an_unfinished_moved_sweep_names_its_new_folder(runs: dict[str, Any], tmp_path: Path) -> None:
    """The recorded command's --out is where the sweep was run; rerun as it is, it would continue the sweep there."""
    folder = _edited_copy(runs, tmp_path, _set_status)
    with pytest.raises(ConfigError, match="not finished") as error:
        assemble_sweep(folder, tmp_path / "out")
    assert f"--out {folder}` (it continues" in str(error.value) and str(runs["sweep"]) not in str(error.value)
    with pytest.raises(ConfigError, match="not finished") as error:  # in place: the command as recorded
        assemble_sweep(_in_place(runs, _set_status))
    command = json.loads((runs["root"] / "sweep_unfinished" / "sweep.json").read_text())["meta"]["command"]
    assert f"rerun `{command}` (it continues" in str(error.value)


def _in_place(runs: dict[str, Any], edit: Any) -> Path:
    """A copy of the sweep at the --out of its recorded command (a sibling of the fixture's), edited by ``edit``."""
    index = json.loads((runs["sweep"] / "sweep.json").read_text())
    folder = runs["root"] / "sweep_unfinished"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(runs["sweep"], folder)
    index["meta"]["command"] = index["meta"]["command"].replace(f"--out {runs['sweep']}", f"--out {folder}")
    assert f"--out {folder}" in index["meta"]["command"]
    edit(index)
    (folder / "sweep.json").write_text(json.dumps(index))
    return folder


def test_a_plugin_sweep_names_the_plugin_to_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    plugin = REPO / "tests" / "plugins" / "toy_sweep.py"
    index = {"meta": {"experiment": "toy_sweep_not_loaded", "command": f"flowvar sweep toy --plugin {plugin}"},
             "axes": [], "points": [{"point": 0, "values": {}, "status": "computed", "output": "points/p"}]}
    (folder / "sweep.json").write_text(json.dumps(index))
    assert main(["assemble", str(folder)]) != 0
    err = capsys.readouterr().err
    assert f"`flowvar assemble {folder} --plugin {plugin}`" in err and "flowvar sweep --plugin" not in err


def test_a_folder_that_is_not_a_sweep_is_a_one_line_error(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assemble", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "is not a `flowvar sweep` folder (no sweep.json) nor a result folder" in err and "Traceback" not in err
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid sweep index"):
        assemble_sweep(tmp_path)


def test_the_experiment_checks_that_its_parts_make_up_the_grid(runs: dict[str, Any]) -> None:
    """memorisation_phase's own check: every (d, N, width, σ, seed) of the config exactly once (or identically)."""
    spec = get_experiment("memorisation_phase")
    config = build_config(spec, quick=True, overrides={**TINY, "dims": "2,5", "ns": "8,16"})
    parts = [json.loads((runs["sweep"] / p["output"] / "result.json").read_text())["metrics"]
             for p in json.loads((runs["sweep"] / "sweep.json").read_text())["points"]]

    class Sink:  # assemble stops before writing anything
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"assemble wrote {name} before its check")

    with pytest.raises(ConfigError, match=r"missing 6 point\(s\) in 1 cell\(s\): d=5,N=16,width=16"):
        assemble(config, parts[:3], Sink())  # type: ignore[arg-type]
    narrow = build_config(spec, quick=True, overrides={**TINY, "dims": "2", "ns": "8,16"})
    with pytest.raises(ConfigError, match=r"outside it 12 point\(s\) in 2 cell\(s\): d=5,N=16,width=16, d=5,N=8"):
        assemble(narrow, parts, Sink())  # type: ignore[arg-type]
    changed = json.loads(json.dumps(parts[0]))
    changed["points"][0]["pairing_accuracy"] += 0.5
    with pytest.raises(ConfigError, match="two parts hold different results for d=2, N=8"):
        assemble(config, [*parts, changed], Sink())  # type: ignore[arg-type]


def test_an_interrupted_assembly_says_how_to_finish_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C between installing the result and rewriting a reproduce folder's results.json and report leaves them
    behind the folder: the user is told that rerunning the command finishes (and replaces) it."""
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("flowvar.sweep.assemble.assemble_sweep", interrupted)
    assert main(["assemble", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun the same command" in err and "Traceback" not in err


def test_a_finished_sweep_of_an_assemblable_experiment_says_how_to_assemble_it(
        runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sweep", "memorisation_phase", "--quick", "--quiet", "--out", str(runs["sweep"])]
    args += [a for g in GRID for a in ("--grid", g)] + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 from the cache" in out  # the fixture's points: nothing computed again
    assert f"flowvar assemble {runs['sweep']}" in out


# --- judging a stored result again (`flowvar assemble RESULT_DIR`) --------------------------------------------------

def test_a_stored_result_judged_again_by_the_same_code_is_unchanged(runs: dict[str, Any], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Identity: the whole run's stored points judged again give its claims, regions and figures; nothing is trained
    (the result keeps the points' runtime, and the note says what judged it)."""
    whole: Result = runs["whole"]
    folder = tmp_path / "memorisation_phase"
    shutil.copytree(runs["root"] / "whole" / "memorisation_phase", folder)
    assert main(["assemble", str(folder)]) == 0  # in place by default
    out = capsys.readouterr().out
    assert "re-judged from the points stored in" in out and "verdicts changed: none" in out
    again = Result.load(folder / "result.json")
    assert again.to_dict()["claims"] == whole.to_dict()["claims"]
    assert again.metrics["points"] == whole.metrics["points"] and again.metrics["regions"] == whole.metrics["regions"]
    assert again.figures == whole.figures and again.runtime_s == pytest.approx(whole.runtime_s)
    source = again.metrics["assembled_from"]
    # the stored file named from the folder it is written into (no machine's temporary path in a published result),
    # and the run that computed and judged it named from its recorded versions, not "unknown"
    assert source["command"] is None and source["rejudged"]["result"] == "memorisation_phase/result.json"
    recorded = f"{whole.versions['flowvar']} at commit {whole.versions['git_commit'][:12]}"
    assert whole.versions.get("git_commit") and source["computed_by"] == recorded
    assert source["rejudged"]["judged_by"] == recorded
    assert source["rejudged"]["verdicts_before"] == {c.id: c.verdict for c in whole.claims}
    assert again.notes[:-1] == whole.notes
    assert "nothing was trained again. Verdicts it changed: none." in again.notes[-1]


def test_judging_again_replaces_outdated_verdicts_and_says_which(runs: dict[str, Any], tmp_path: Path) -> None:
    """A result judged by older rules (here: every stored verdict set to refuted) gets this code's verdicts from its
    own points; the changes are recorded beside the original provenance (the sweep that computed the points)."""
    from flowvar.sweep.assemble import rejudge_result

    assembled, _ = assemble_sweep(runs["sweep"], tmp_path / "first")
    stored = tmp_path / "first" / "memorisation_phase"
    result, folder, changed = rejudge_with_outdated_verdicts(stored, tmp_path / "second", assembled)
    assert folder == tmp_path / "second" / "memorisation_phase" and changed
    source = result.metrics["assembled_from"]
    assert source["command"].startswith("flowvar sweep memorisation_phase") and source["points"] == 4
    assert source["keys"] == assembled.metrics["assembled_from"]["keys"]  # where the points come from, kept
    assert source["rejudged"]["judged_by"] == assembled.metrics["assembled_from"]["assembled_by"]
    assert source["rejudged"]["earlier"] == []
    # judged once more: the first re-judging's record (its verdicts before: every one refuted) is kept, not replaced
    again, _ = rejudge_result(folder, tmp_path / "third")
    record = again.metrics["assembled_from"]["rejudged"]
    assert record["verdicts_before"] == {c.id: c.verdict for c in assembled.claims}
    assert [r["verdicts_before"] for r in record["earlier"]] == [{c.id: "refuted" for c in assembled.claims}]
    assert "earlier" not in record["earlier"][0] and again.notes[-1].endswith("Verdicts it changed: none.")


def test_judging_again_in_a_reproduce_folder_rewrites_its_report(runs: dict[str, Any], tmp_path: Path) -> None:
    collection = tmp_path / "full"
    shutil.copytree(REPO / "results" / "full", collection)
    published = Result.load(collection / "memorisation_phase" / "result.json")
    from flowvar.sweep.assemble import rejudge_result

    result, _ = rejudge_result(collection / "memorisation_phase")
    assert result.metrics["points"] == published.metrics["points"]  # the stored paper-scale points, not retrained
    entry = next(e for e in json.loads((collection / "results.json").read_text())["experiments"]
                 if e["name"] == "memorisation_phase")
    assert entry["status"] == "assembled" and entry["result"]["claims"] == result.to_dict()["claims"]
    report = (collection / "report.md").read_text()
    assert re.search(REJUDGED_BY, report.split("> **")[0]) and "from its stored points" in report


@pytest.mark.parametrize("case", ["no result", "unreadable", "whole-run experiment", "foreign config"])
def test_a_result_that_cannot_be_judged_again_is_a_one_line_error(runs: dict[str, Any], tmp_path: Path,
                                                                  case: str) -> None:
    from flowvar.sweep.assemble import rejudge_result

    folder = tmp_path / "exp"
    folder.mkdir()
    if case == "no result":
        with pytest.raises(DataError, match=r"holds no result\.json"):
            rejudge_result(folder)
        return
    if case == "unreadable":
        (folder / "result.json").write_text("{broken")
        with pytest.raises(DataError, match="is not a readable flowvar result"):
            rejudge_result(folder)
        return
    if case == "whole-run experiment":  # prop1 judges within each run: it has no assemble
        shutil.copytree(REPO / "results" / "prop1", folder, dirs_exist_ok=True)
        with pytest.raises(ConfigError, match=r"cannot be assembled from parts .* `flowvar run prop1`"):
            rejudge_result(folder)
        return
    shutil.copytree(runs["root"] / "whole" / "memorisation_phase", folder, dirs_exist_ok=True)
    data = json.loads((folder / "result.json").read_text())
    data["config"]["no_such_field"] = 1  # written by another flowvar
    (folder / "result.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"cannot be rebuilt by this flowvar .* recompute the result"):
        rejudge_result(folder)


def test_a_whole_runs_result_judged_again_in_its_reproduce_folder_says_so(tmp_path: Path) -> None:
    """The quick reference run's memorisation_phase was computed whole (no sweep): re-judged in its folder, the report
    says it was re-judged from the points its own run stored, not "assembled from the None points of `None`"."""
    from flowvar.sweep.assemble import rejudge_result

    collection = tmp_path / "quick"
    shutil.copytree(REPO / "results", collection, ignore=shutil.ignore_patterns("full", "digits_full_n"))
    published = Result.load(collection / "memorisation_phase" / "result.json")
    result, _ = rejudge_result(collection / "memorisation_phase")
    assert [c.verdict for c in result.claims] == [c.verdict for c in published.claims]
    entry = next(e for e in json.loads((collection / "results.json").read_text())["experiments"]
                 if e["name"] == "memorisation_phase")
    assert entry["status"] == "assembled" and entry["assembled_from"]["command"] is None
    report = (collection / "report.md").read_text()
    head = report.split("> **")[0]
    assert re.search("memorisation_phase: " + REJUDGED_BY, head) and "from the points its own run stored" in head
    assert "None points" not in report and "`None`" not in report
    assert "Status: re-judged from the points its run stored" in report


def test_stored_non_finite_numbers_are_judged_again_as_the_run_judged_them(runs: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    """result.json stores NaN and ±inf as the strings "nan", "inf", "-inf" (strict JSON): judged again, they are
    floats once more before the experiment's rules see them (a rule averaging the string crashed: TypeError in
    numpy's add.reduce), and the claims are those the experiment's assemble gives on the floats the run held."""
    from flowvar.experiments.base import RunContext
    from flowvar.sweep.assemble import rejudge_result

    config = build_config(get_experiment("memorisation_phase"), quick=True,
                          overrides={**TINY, "dims": "2,5", "ns": "8,16"})

    def stored_and_as_run(edits: list[tuple[int, str, str]]) -> tuple[Path, dict[str, Any]]:
        folder = tmp_path / f"stored{len(edits)}" / "memorisation_phase"
        shutil.copytree(runs["root"] / "whole" / "memorisation_phase", folder)
        data = json.loads((folder / "result.json").read_text())
        as_run = json.loads(json.dumps(data["metrics"]))
        for index, name, text in edits:
            data["metrics"]["points"][index][name] = text
            as_run["points"][index][name] = float(text)
        (folder / "result.json").write_text(json.dumps(data))
        return folder, as_run

    def judged_as_run(as_run: dict[str, Any], name: str) -> list[dict[str, Any]]:
        out = tmp_path / name
        out.mkdir()
        ctx = RunContext(name="memorisation_phase", out_dir=out, quick=True, seed=config.seed)
        with ctx.global_rng("global"):
            assemble(config, [as_run], ctx)
        return [to_jsonable(dataclasses.asdict(c)) for c in ctx.claims]

    # a diverged training: its loss NaN, its gradient variance inf, its excess loss −inf
    folder, as_run = stored_and_as_run([(0, "final_loss", "nan"), (0, "loss_ratio", "nan"), (1, "grad_var", "inf"),
                                        (2, "excess_loss", "-inf")])
    result, out = rejudge_result(folder, tmp_path / "again")
    assert result.to_dict()["claims"] == judged_as_run(as_run, "direct")
    stored = Result.load(out / "result.json").metrics["points"]
    assert (stored[0]["final_loss"], stored[1]["grad_var"], stored[2]["excess_loss"]) == ("nan", "inf", "-inf")
    # a NaN accuracy (which the run never writes) meets paired_over_seeds' refusal, as a run holding it would
    folder, as_run = stored_and_as_run([(1, "pairing_accuracy", "nan")])
    with pytest.raises(DataError, match=r"non-finite per-seed values .*\[nan,") as judged_again:
        rejudge_result(folder, tmp_path / "again_nan")
    with pytest.raises(DataError) as as_the_run:
        judged_as_run(as_run, "direct_nan")
    assert str(judged_again.value) == str(as_the_run.value)


def test_judging_a_table_again_in_place_keeps_the_figures_it_cannot_redraw(tmp_path: Path) -> None:
    """The image grids of table2/table3 need the trained models: re-judging in place deleted them (and dropped the
    run's device line) while its note said they were the original run's. They are kept, listed, byte for byte."""
    from flowvar.sweep.assemble import rejudge_result

    for name in ("table2", "table3"):
        folder = tmp_path / name
        shutil.copytree(REPO / "results" / name, folder)
        before = Result.load(folder / "result.json")
        grids = [f for f in before.figures if "grid" in f]
        assert grids, name
        originals = {f: (folder / f).read_bytes() for f in grids}
        result, out = rejudge_result(folder)  # in place
        assert out == folder and set(before.figures) == set(result.figures)
        assert all((folder / f).read_bytes() == data for f, data in originals.items())
        assert result.metrics["device"] == before.metrics["device"]
        assert result.metrics["compute"] == before.metrics["compute"]
        assert any("the images and" in n and "original run's" in n for n in result.notes)


#: How a report names the judge of a re-judged result: its commit, or (no git checkout) flowvar's version, called a
#: code digest.
REJUDGED_BY = (r"re-judged (at commit `[0-9a-f]{12}(\+dirty)?`|by flowvar \S+ \(a code digest; its commit was not "
               r"recorded\))")


def test_a_rejudged_result_is_named_by_its_commit_not_by_the_version_digest() -> None:
    """readerB 8 (session 28): the report said "re-judged by flowvar 0.1.0+783d61a94489", a source digest that
    looks like a commit and is none; the assembled result's recorded commit names the judge, the digest only where
    no commit was recorded."""
    from flowvar.report.collection import assembly_text

    source = {"sweep": None, "points": None, "command": None, "assembled_by": "0.1.0+783d61a94489",
              "rejudged": {"result": "x/result.json"}}
    commit = "04884140f0ab6e19b86b0f60386f6f361114ed8f"
    assert assembly_text(source, commit) == ("re-judged at commit `04884140f0ab` from the points its own run stored "
                                             "(`flowvar assemble`)")
    assert assembly_text(source, commit + "+dirty").startswith("re-judged at commit `04884140f0ab+dirty`")
    for unrecorded in (None, "unknown (not a git checkout)"):
        assert assembly_text(source, unrecorded).startswith(
            "re-judged by flowvar 0.1.0+783d61a94489 (a code digest; its commit was not recorded) from the points")
    swept = {**source, "sweep": "/s", "points": 40, "command": "flowvar sweep fig6 --out /s"}
    assert assembly_text(swept, commit) == ("assembled from the 40 points of `flowvar sweep fig6 --out /s` (`flowvar "
                                            "assemble`), re-judged at commit `04884140f0ab` from its stored points")
