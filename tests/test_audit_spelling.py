"""The audit's messages name `flowvar audit`'s options; called from Python, they also name the argument each one is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowvar.audit import audit, load_model
from flowvar.audit.spelling import python_spelling
from flowvar.cli import main
from flowvar.errors import ConfigError


def test_a_python_caller_is_told_which_argument_each_named_option_is() -> None:
    with pytest.raises(ConfigError) as info:
        audit(torch.nn.Linear(3, 2), torch.randn(20, 2), labels=torch.zeros(20, dtype=torch.long))
    message = str(info.value)
    assert message.startswith("--labels are passed to the model only with --label-arg NAME")
    assert message.endswith("(called from Python: in audit(), --labels is labels=, --label-arg is label_arg=)")
    with pytest.raises(ConfigError) as info:
        load_model(None, None)
    assert str(info.value).endswith("(called from Python: in load_model(), --model is factory=, --checkpoint is "
                                    "checkpoint=)")


def test_the_command_line_keeps_its_own_spelling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--data", "digits", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "give --model package.module:factory" in err and "called from Python" not in err


def test_only_the_options_of_the_function_are_translated_once_each_in_order() -> None:
    arguments = {"label-arg": "label_arg", "cond-arg": "label_arg", "data": "data"}
    message = "pass --cond-arg x or --label-arg y; --data-dir and --json are not ours; --data twice: --data"
    assert python_spelling(message, arguments, "audit") == (
        f"{message} (called from Python: in audit(), --cond-arg is label_arg=, --label-arg is label_arg=, --data is "
        "data=)")
    assert python_spelling("no option here -- at all", arguments, "audit") == "no option here -- at all"
