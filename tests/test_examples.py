"""The scripts built on an optional comparison library (examples/, benchmarks/cfm_step.py) without that library: one
line on stderr naming the install command, a non-zero exit, no traceback.

Each runs in a subprocess with the library blocked (``sys.modules[name] = None``, so that ``import name`` fails as
it does where the library is not installed) through :func:`runpy.run_path`, as ``python script.py`` would run it.
That the scripts run with the library present is tests/test_integrations.py's (examples) and
tests/test_benchmarks.py's (cfm_step) business.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script, the library it needs, its arguments, what the install line must say
MISSING = [
    ("examples/monitor_flow_matching.py", "flow_matching", ["--steps", "10"],
     "pip install -c constraints.txt flow_matching"),
    ("examples/monitor_torchcfm.py", "torchcfm", ["--steps", "10"],
     "pip install -c constraints.txt --no-deps torchcfm"),
    ("benchmarks/cfm_step.py", "torchcfm", ["--quick", "--no-write"],
     "pip install -c constraints.txt --no-deps torchcfm"),
]


@pytest.mark.parametrize(("script", "library", "argv", "install"), MISSING, ids=[m[0] for m in MISSING])
def test_script_without_its_library_says_how_to_install_it_in_one_line(script: str, library: str, argv: list[str],
                                                                       install: str) -> None:
    run = ("import runpy, sys; "
           f"sys.modules[{library!r}] = None; "
           f"sys.path.insert(0, {str((ROOT / script).parent)!r}); "  # as `python script.py` puts its folder first
           f"sys.argv = [{script!r}, *{argv!r}]; "
           f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{script} ") and "not installed" in lines[0] and install in lines[0], lines[0]
    assert proc.stdout == ""  # it stops before training or timing anything
