"""A new user's first contact with the command line and setup (review newR, items 6 and 10): a bare ``flowvar``
prints its help without an empty error line, and the setup note, ``show --write-report``'s message and the
missing-data error say what is true."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from flowvar.cli import main
from flowvar.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ item 6: bare `flowvar`, `flowvar cache`


@pytest.mark.parametrize("args", [[], ["cache"]])
def test_no_command_prints_the_help_and_no_empty_error_line(args: list[str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The help, then no ``flowvar: error:  (see ...)`` line with nothing after "error:"; exit status 2, as click
    gives a group called without a command (a script running ``flowvar $CMD`` with an empty CMD fails)."""
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "Usage" in captured.out and "Commands" in captured.out, captured.out
    assert "error" not in captured.err, captured.err
    assert captured.err == ""


# ------------------------------------------------------------------ item 10: what the messages cite and say


def test_constraints_cite_readme_text_that_exists() -> None:
    """constraints.txt cited README "Setup", a section README.md does not have: every README "..." it cites is in
    README.md."""
    cited = re.findall(r'README "([^"]+)"', (ROOT / "constraints.txt").read_text())
    assert cited, "constraints.txt no longer cites the README: drop this test or cite it again"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert [c for c in cited if " ".join(c.split()) not in readme] == []


def test_write_report_names_the_files_it_rendered_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`show DIR --write-report` said "re-rendered from DIR/results.json", while the reports carry each experiment's
    own result.json where it disagrees with results.json's copy (the warning before it says so)."""
    out = tmp_path / "rp"
    out.mkdir()
    shutil.copy(ROOT / "results" / "results.json", out / "results.json")
    shutil.copytree(ROOT / "results" / "prop1", out / "prop1", ignore=shutil.ignore_patterns("*.png"))
    assert main(["show", str(out), "--write-report"]) == 0
    text = capsys.readouterr().out
    assert f"re-rendered from each experiment's own {out / 'NAME' / 'result.json'}" in text, text
    assert f"re-rendered from {out / 'results.json'}" not in text


def test_missing_data_path_names_every_kind_of_file_the_loader_takes(tmp_path: Path) -> None:
    """advise-sigma's and the audit's missing-path error listed folders and .npy files, not the .npz the loader
    also takes."""
    from flowvar.data import resolve_data

    with pytest.raises(DataError, match=r"does not exist; .*a \.npy file.*an \.npz file"):
        resolve_data(str(tmp_path / "missing.npz"))
