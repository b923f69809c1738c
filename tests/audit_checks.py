"""Helpers shared by the audit test files (tests/test_audit.py, tests/test_audit_conditions.py): a module of test
networks written to a temporary folder and made importable (what `flowvar audit --model module:factory` imports),
and the command line with its captured output.

Not a test module (pytest collects only ``test_*.py``); imported as ``from audit_checks import ...``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from flowvar.cli import main


def importable_module(tmp_path_factory: pytest.TempPathFactory, name: str, source: str) -> Iterator[ModuleType]:
    """Write ``source`` as ``name.py`` into a fresh temporary folder, put the folder on sys.path and yield the imported
    module; afterwards the folder leaves sys.path and the module sys.modules (a module-scoped fixture's body)."""
    folder = tmp_path_factory.mktemp(name)
    (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``flowvar audit ARGS``: the exit code, stdout and stderr."""
    code = main(["audit", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
