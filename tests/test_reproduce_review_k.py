"""Review K of reproduce: an interrupted ``--force`` run names the exact command that continues it — without
``--force``, which would compute the finished experiments again — and a bad ``--set`` value names its experiment."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

import flowvar.reproduce as reproduce_module
from flowvar.errors import ConfigError
from flowvar.reproduce import Options, command_line, interrupted_message, parse_scoped_overrides, reproduce


def test_the_rerun_command_of_a_forced_run_leaves_force_out() -> None:
    forced = Options(out=Path("my out"), quick=True, only=["prop1"], force=True)
    text = interrupted_message(forced)
    again = text.split("rerun ", 1)[1].split(" to continue", 1)[0]
    assert shlex.split(again) == ["flowvar", "reproduce", "--quick", "--out", "my out", "--only", "prop1"]
    assert "--force" in command_line(forced)  # the recorded command still says what ran
    assert "without --force, which would compute the finished experiments again" in text
    plain = interrupted_message(Options(out=Path("o"), quick=True))
    assert plain == "interrupted; finished experiments are cached: rerun flowvar reproduce --quick --out o to continue"


def test_an_interrupted_forced_run_logs_the_rerun_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_module, "_serve_hits", interrupted)
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        reproduce(Options(out=out, quick=True, only=["prop1"], force=True, quiet=True))
    log = (out / "reproduce.log").read_text()
    assert f"rerun flowvar reproduce --quick --out {out} --only prop1 to continue (without --force" in log
    assert "rerun the same command" not in log


def test_a_bad_set_value_names_its_experiment(tmp_path: Path) -> None:
    options = Options(out=tmp_path / "r", quick=True, only=["fig5"],
                      overrides=parse_scoped_overrides(["fig5.repeats=abc"]))
    with pytest.raises(ConfigError) as info:
        reproduce(options)
    assert str(info.value).startswith("--set fig5.repeats=abc: repeats expects an integer, got 'abc'")
