"""examples/audit_own_model.py (auditR 8): the worked example of docs/audit.md runs as is — it trains 16 fixed pairs
at σ = 0, saves and reloads the weights, audits them and reads memorising by pair recovery, not by copying."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_audit_example_trains_saves_and_reads_memorising(tmp_path: Path) -> None:
    """A subprocess, as `python examples/audit_own_model.py` runs (600 training steps instead of 1200 keep it near
    ten seconds; the lines are memorised by then: pair recovery 100 %, λ ≈ 0.005)."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "audit_own_model.py"), "--steps", "600", "--out",
                           str(tmp_path / "audit"), "--save-arrays", str(tmp_path / "arrays")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "verdict: memorising" in lines, proc.stdout
    assert any(line.startswith("  pair recovery: memorising — 100% of the 16 training sources") for line in lines)
    assert any(line.startswith("  copying: generalising") for line in lines)  # it memorises pairs, does not copy
    result = json.loads((tmp_path / "audit" / "result.json").read_text())
    assert result["metrics"]["verdict"] == "memorising"
    assert sorted(p.name for p in (tmp_path / "arrays").iterdir()) == ["held.npy", "weights.pt", "x0.npy", "x1.npy"]
    assert proc.stderr == "", proc.stderr  # no warning on the way
