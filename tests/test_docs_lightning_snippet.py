"""docs/gradient_variance.md's LightningModule contract runs as pasted (newR 7: it had no configure_optimizers and an
undefined field, so Lightning refused to fit it) and logs the monitor's columns."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_lightning_snippet_fits_and_logs_the_gradient_variance(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    text = (ROOT / "docs" / "gradient_variance.md").read_text(encoding="utf-8")
    start = text.index("import lightning as L", text.index("LightningModule's contract:"))
    snippet = text[start:text.index("```", start)]
    (tmp_path / "snippet.py").write_text(snippet, encoding="utf-8")
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = next((tmp_path / "lightning_logs").glob("version_*/metrics.csv"))
    rows = list(csv.DictReader(logged.open()))
    traces = [float(r["gradvar/trace"]) for r in rows if r.get("gradvar/trace")]
    assert len(traces) == 4 and all(t > 0 for t in traces)  # steps 50, 100, 150, 200
