"""examples/audit_own_model.py (auditR 8): the worked example of docs/audit.md runs as is — it trains 16 fixed pairs
at σ = 0, saves and reloads the weights, audits them and reads memorising by pair recovery, not by copying."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_audit_example_trains_saves_and_reads_memorising(tmp_path: Path) -> None:
    """A subprocess, as `python examples/audit_own_model.py` runs (600 training steps instead of 1200 keep it near
    ten seconds; the lines are memorised by then: pair recovery 100 %, λ ≈ 0.005). No OMP_NUM_THREADS: the example
    sets one torch thread itself (--threads), as a user's shell does not (on all cores of a loaded machine it ran ten
    times slower, newR 3)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "audit_own_model.py"), "--steps", "600", "--out",
                           str(tmp_path / "audit"), "--save-arrays", str(tmp_path / "arrays")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"trained 600 steps on 16 fixed pairs at σ = 0 in [0-9.]+ s on 1 torch thread \(last batch "
                        r"loss [0-9.e+-]+\)", lines[0]), lines[0]
    assert "verdict: memorising" in lines, proc.stdout
    assert any(line.startswith("  pair recovery: memorising — 100% of the 16 training sources") for line in lines)
    assert any(line.startswith("  copying: generalising") for line in lines)  # it memorises pairs, does not copy
    result = json.loads((tmp_path / "audit" / "result.json").read_text())
    assert result["metrics"]["verdict"] == "memorising"
    assert sorted(p.name for p in (tmp_path / "arrays").iterdir()) == ["held.npy", "weights.pt", "x0.npy", "x1.npy"]
    assert proc.stderr == "", proc.stderr  # no warning on the way


def test_the_audit_example_refuses_a_thread_count_below_one(tmp_path: Path) -> None:
    """--threads 0 is a usage error before any training (torch would raise its own message mid-run)."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "audit_own_model.py"), "--threads", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--threads must be at least 1, got 0" in proc.stderr, proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []
