"""`flowvar show` and `show --write-report` on folders that are not what they seem: a reproduce folder whose
results.json disagrees with an experiment's own result.json, a result cache, a file; and the summary.md a run writes
being the one `--write-report` writes again (an unedited folder re-renders byte for byte)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowvar.cli import app, main
from flowvar.report import rewrite_reports
from flowvar.report.markdown import result_markdown
from flowvar.results import Result

ROOT = Path(__file__).resolve().parents[1]
CLAIM = "fig4.own_coupling.ot_lower_with_noise"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the quick reference run's fig4 and prop1 (no figures) as a reproduce folder of just those two."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("fig4", "prop1"):
        shutil.copytree(ROOT / "results" / name, out / name, ignore=shutil.ignore_patterns("*.png"))
    collection = json.loads((ROOT / "results" / "results.json").read_text())
    collection["experiments"] = [e for e in collection["experiments"] if e["name"] in ("fig4", "prop1")]
    (out / "results.json").write_text(json.dumps(collection, indent=1))
    return out


def _edit_verdict(path: Path, verdict: str) -> None:
    """Set CLAIM's verdict in a results.json by hand."""
    data = json.loads(path.read_text())
    fig4 = next(e for e in data["experiments"] if e["name"] == "fig4")
    next(c for c in fig4["result"]["claims"] if c["id"] == CLAIM)["verdict"] = verdict
    path.write_text(json.dumps(data, indent=1))


def _verdict_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if f"`{CLAIM}`" in line and line.startswith("|")]


def test_the_stored_fig4_claim_is_confirmed() -> None:
    """The premise of the tests below: the reference run confirms CLAIM (a test edits it to refuted)."""
    own = Result.load(ROOT / "results" / "fig4" / "result.json")
    assert {c.id: c.verdict for c in own.claims}[CLAIM] == "confirmed"


def test_show_warns_when_results_json_disagrees_with_the_experiments_own_result(folder: Path) -> None:
    """A verdict edited in results.json: show names both files, the claim and both verdicts in one warning line,
    and shows the experiment's own result.json (the file the cache, reproduce and assemble use) — not the edit."""
    _edit_verdict(folder / "results.json", "refuted")
    run = CliRunner().invoke(app, ["show", str(folder)])
    assert run.exit_code == 0, run.output
    warnings = [line for line in run.stderr.splitlines() if line.startswith("flowvar: warning:")]
    assert len(warnings) == 1, run.stderr
    (warning,) = warnings
    for part in (str(folder / "results.json"), str(folder / "fig4" / "result.json"),
                 f"{CLAIM} (results.json: refuted, result.json: confirmed)", "--only fig4"):
        assert part in warning, warning
    rows = _verdict_rows(run.stdout)
    assert len(rows) == 1 and "**confirmed**" in rows[0], rows
    assert "0 refuted" in run.stdout.split("experiments: ")[1].splitlines()[0]


def test_write_report_renders_report_and_summary_from_one_copy(folder: Path) -> None:
    """--write-report after the same edit: report.md and fig4/summary.md agree (both confirmed), with the warning."""
    _edit_verdict(folder / "results.json", "refuted")
    run = CliRunner().invoke(app, ["show", str(folder), "--write-report"])
    assert run.exit_code == 0, run.output
    assert f"{CLAIM} (results.json: refuted, result.json: confirmed)" in run.stderr
    report_rows = _verdict_rows((folder / "report.md").read_text())
    assert report_rows and all("**confirmed**" in row for row in report_rows), report_rows
    assert f"- **confirmed** `{CLAIM}`" in (folder / "fig4" / "summary.md").read_text()


def test_an_edited_evidence_number_is_named(folder: Path) -> None:
    """A count set to NaN in results.json only: the warning names the claim's evidence field and both values, and the
    count shown is the experiment's own (not "nan of 24")."""
    data = json.loads((folder / "results.json").read_text())
    fig4 = next(e for e in data["experiments"] if e["name"] == "fig4")
    claim = next(c for c in fig4["result"]["claims"] if c["id"] == CLAIM)
    own = claim["evidence"]["holds"]
    claim["evidence"]["holds"] = "nan"
    (folder / "results.json").write_text(json.dumps(data, indent=1))
    run = CliRunner().invoke(app, ["show", str(folder)])
    assert run.exit_code == 0, run.output
    assert f"{CLAIM}'s evidence holds (results.json: nan, result.json: {own})" in run.stderr, run.stderr
    assert "nan of" not in run.stdout


def test_agreeing_copies_warn_nothing(folder: Path) -> None:
    run = CliRunner().invoke(app, ["show", str(folder)])
    assert run.exit_code == 0, run.output
    assert "warning" not in run.stderr


def test_an_unreadable_experiment_result_is_named_and_the_copy_shown(folder: Path) -> None:
    """fig4/result.json truncated: a warning names it; show and --write-report use results.json's copy and leave
    that experiment's summary.md as it was (no traceback)."""
    (folder / "fig4" / "result.json").write_text("{")
    before = (folder / "fig4" / "summary.md").read_text()
    run = CliRunner().invoke(app, ["show", str(folder), "--write-report"])
    assert run.exit_code == 0, run.output
    assert f"{folder / 'fig4' / 'result.json'} is not a valid flowvar result" in run.stderr
    assert (folder / "fig4" / "summary.md").read_text() == before
    assert _verdict_rows((folder / "report.md").read_text())


def test_show_refuses_a_cache_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A result cache (entries `<key>/cache.json`) is not a run: one line pointing to `flowvar cache list`."""
    from flowvar.cache import Cache, cache_key
    from flowvar.results import Result

    cache = Cache(tmp_path / "cache")
    for name in ("fig4", "prop1"):
        source = tmp_path / "src" / name
        shutil.copytree(ROOT / "results" / name, source)
        result = Result.load(source / "result.json")  # stored under its own key: a store checks it (cacheR 4)
        cache.store(cache_key(name, result.config, result.quick), source)
    assert main(["show", str(tmp_path / "cache")]) == 2
    where = tmp_path / "cache"
    assert capsys.readouterr().err.strip() == (f"flowvar: error: {where} is a result cache (2 entries), not a run "
                                               f"folder; list its entries with `flowvar cache list --cache {where}`")


def test_show_of_a_file_says_it_is_a_file_and_names_its_run_folder(folder: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    summary = folder / "fig4" / "summary.md"
    assert main(["show", str(summary)]) == 2
    assert capsys.readouterr().err.strip() == (f"flowvar: error: {summary} is a file, not a run folder; the folder "
                                               f"holding it is one: `flowvar show {folder / 'fig4'}`")
    loose = tmp_path / "notes.txt"
    loose.write_text("x")
    assert main(["show", str(loose)]) == 2
    assert capsys.readouterr().err.strip() == (f"flowvar: error: {loose} is a file, not a run folder; pass the --out "
                                               f"folder of a finished `flowvar run`")


def test_write_report_leaves_an_unedited_run_byte_identical(tmp_path: Path) -> None:
    """The summary.md a run writes (config tuples and all) is the one --write-report renders from its result.json:
    re-rendering an unedited folder changes no byte, so the next cache hit has nothing to replace."""
    run = CliRunner().invoke(app, ["run", "counterexample1", "--quick", "--out", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    summary = tmp_path / "out" / "counterexample1" / "summary.md"
    assert result_markdown(Result.load(summary.with_name("result.json"))) == summary.read_text()
    # and through --write-report: the run's folder made a reproduce folder by a results.json around it
    result = json.loads(summary.with_name("result.json").read_text())
    meta = {"command": "flowvar reproduce --quick", "mode": "quick", "code_version": "x", "created": "now",
            "wall_s": 1.0}
    (tmp_path / "out" / "results.json").write_text(json.dumps(
        {"meta": meta, "experiments": [{"name": "counterexample1", "status": "computed", "result": result}]}))
    written = summary.read_bytes()
    rewrite_reports(tmp_path / "out")
    assert summary.read_bytes() == written
