"""A checkout's tests test that checkout: pytest puts its ``src`` first on ``sys.path`` (``pythonpath`` in
pyproject.toml), so a clone run with another checkout's virtual environment does not import that checkout's editable
install instead — where every mutation a reviewer makes in the clone "passes", as none of it is run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pytest_in_a_copy_of_the_checkout_imports_the_copys_flowvar(tmp_path: Path) -> None:
    copy = tmp_path / "clone"
    shutil.copytree(ROOT / "src" / "flowvar", copy / "src" / "flowvar",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / "tests").mkdir()
    (copy / "tests" / "test_which.py").write_text(
        "from pathlib import Path\n\nimport flowvar\n\n\n"
        "def test_which() -> None:\n"
        "    assert Path(flowvar.__file__).resolve().parents[1] == (Path(__file__).parents[1] / 'src').resolve(), "
        "flowvar.__file__\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_which.py"],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
