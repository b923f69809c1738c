"""What the registry tells a user about experiments it does not have, and which of its experiments assemble: the
commands an unknown experiment's message names are those that take ``--plugin`` (``flowvar run`` does not), and
docs/sweeps.md lists exactly the experiments with an ``assemble``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from flowvar.cli import app
from flowvar.errors import ConfigError
from flowvar.experiments import experiments
from flowvar.experiments.registry import PLUGIN_COMMANDS, discover, get_experiment

DOCS = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf command of a (Typer's own click) group, by its full name ("cache list")."""
    out: dict[str, Any] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            out.update(_commands(command, f"{prefix}{name} "))
        else:
            out[f"{prefix}{name}"] = command
    return out


def test_the_commands_named_for_a_plugin_are_those_that_take_one() -> None:
    commands = _commands(typer.main.get_command(app))
    takes = {name for name, c in commands.items() if any("--plugin" in p.opts for p in c.params)}
    assert set(PLUGIN_COMMANDS) == takes and "reproduce" not in takes
    with pytest.raises(ConfigError) as info:
        get_experiment("nosuch")
    message = str(info.value)
    assert ("`flowvar list`, `flowvar run`, `flowvar config`, `flowvar sweep`, `flowvar assemble`, `flowvar cache "
            "list`, `flowvar cache prune` take") in message
    assert "flowvar reproduce" not in message


def test_the_docs_name_exactly_the_experiments_that_assemble() -> None:
    text = DOCS.read_text()
    listed = re.search(r"Those with one: (.*?) \(the registry's", text, re.S)
    assert listed is not None
    named = set(re.findall(r"`([a-z0-9_]+)`", listed.group(1)))
    # flowvar's own experiments only: a plugin that another test of this worker loaded is not in the docs
    own = set(discover())
    assert named == {n for n, spec in experiments().items() if spec.assemble is not None and n in own}


def test_run_config_and_list_load_a_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user's own experiment runs, prints its config and is listed with --plugin, as it sweeps."""
    from flowvar.cli import main

    plugin = str(Path(__file__).parent / "plugins" / "toy_sweep.py")
    assert main(["list", "--plugin", plugin]) == 0
    listed = capsys.readouterr().out
    assert "toy_sweep" in listed and "fig4" in listed
    assert main(["config", "toy_sweep", "--quick", "--plugin", plugin]) == 0
    assert "scale: 2.0" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["run", "toy_sweep", "--quick", "--quiet", "--set", "x=0.5", "--out", str(out), "--plugin",
                 plugin]) == 0
    assert "toy_sweep: " in capsys.readouterr().out
    assert (out / "toy_sweep" / "result.json").is_file()
