"""Smoke tests of the benchmark scripts: each `--quick` run (the command BENCHMARKS.md documents, reduced grid)
finishes, prints its section, leaves BENCHMARKS.md alone under `--no-write`, and reports sane results.

The timings themselves are not asserted here (they belong to BENCHMARKS.md, on a quiet machine); what is asserted is
that the scripts still run against the current library and that the correctness columns they print hold.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["exact_ot", "cfm_step", "gradvar", "gradvar_gpu", "sweep_overhead", "audit_cost", "audit_calibration"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _table_rows(section: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in ``section`` whose header starts with ``first_header``."""
    lines = section.splitlines()
    for k, line in enumerate(lines):
        if line.startswith(f"| {first_header} |"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[k + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True)))
            return rows
    raise AssertionError(f"no table with first column {first_header!r} in the section")


@pytest.fixture(scope="module")
def quick_sections() -> dict[str, str]:
    """Each script's `--quick --no-write` section, run once for all tests of this module."""
    before = _digest(ROOT / "BENCHMARKS.md")
    out = {}
    for name in SCRIPTS:
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--no-write",
                               "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{name}.py --quick failed:\n{proc.stderr[-3000:]}"
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        assert begin in proc.stdout and end in proc.stdout, f"{name}.py printed no section"
        out[name] = proc.stdout[proc.stdout.index(begin):proc.stdout.index(end)]
    assert _digest(ROOT / "BENCHMARKS.md") == before, "--no-write must not touch BENCHMARKS.md"
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_prints_its_section_with_the_command(quick_sections: dict[str, str], name: str) -> None:
    section = quick_sections[name]
    assert "\n## " in section
    assert f"Command: `python benchmarks/{name}.py --quick" in section
    assert "Machine:" in section and "torch 2." in section


def test_gradvar_gpu_quick_measures_every_family_in_both_precisions_exactly(quick_sections: dict[str, str]) -> None:
    """The GPU benchmark's smoke run (on the CPU here): every model family × precision × method has a row, the
    engine's trace agrees with the per-sample loop, and the OT share is a percentage."""
    import re

    section = quick_sections["gradvar_gpu"]
    rows = _table_rows(section, "model")
    cells = {(r["model"], r["precision"], r["method"]) for r in rows}
    for model in ("UNet", "DiT", "`nn.TransformerEncoderLayer`", "MLP d=2"):
        for precision in ("float32", "bf16 autocast"):
            assert {(model, precision, m) for m in ("plain", "flowvar trace", "flowvar elementwise")} <= cells
    agreement = re.search(r"Agreement of the engine's trace with a per-sample loop.*?: (.*)\.\n", section)
    assert agreement is not None
    values = [float(part.rsplit(": ", 1)[1]) for part in agreement.group(1).split(", ")]
    assert len(values) == 4 and max(values) < 1e-5, agreement.group(1)
    ot = _table_rows(section, "batch")
    assert len(ot) == 2 and all(r["share"].endswith("%") for r in ot)


def test_gradvar_gpu_without_a_gpu_refuses_the_full_run_in_one_line() -> None:
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible: the full run would run")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gradvar_gpu.py"), "--no-write"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no" in proc.stderr and "--quick" in proc.stderr


def test_exact_ot_quick_every_exact_method_reaches_the_optimum(quick_sections: dict[str, str]) -> None:
    rows = _table_rows(quick_sections["exact_ot"], "n")
    exact = [r for r in rows if r["method"] not in ("cost matrix", "POT emd (default)")]
    assert exact and all(abs(float(r["cost gap"])) < 1e-12 for r in exact), exact


def test_cfm_step_quick_flowvar_pairs_are_bijections(quick_sections: dict[str, str]) -> None:
    rows = _table_rows(quick_sections["cfm_step"], "B")
    ours = [r for r in rows if r["method"].startswith("flowvar")]
    theirs = [r for r in rows if r["method"].startswith("torchcfm")]
    assert ours and all(r["bijection"] == "yes" and r["distinct x0 / x1"] == "100% / 100%" for r in ours), ours
    assert theirs and all(r["bijection"] == "no" for r in theirs), theirs  # resampled with replacement


def _benchmark_module(name: str) -> ModuleType:
    """A benchmark script's module, imported as the script imports its neighbours (benchmarks/ on the path)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_paired_ratio_is_the_median_round_ratio_with_the_sign_test_interval() -> None:
    from math import comb, isnan

    paired_ratio = _benchmark_module("_common").paired_ratio
    den = [1.0] * 9
    num = [0.91, 1.08, 0.97, 1.02, 1.0, 0.99, 1.05, 0.95, 1.01]  # ratios = num; sorted: .91 .95 .97 .99 1 ...
    median, low, high = paired_ratio(num, den)
    assert median == 1.0
    # n = 9: P(Bin(9, ½) ≤ 1) = 10/512 ≤ 0.025 < P(≤ 2), so the interval is [r_(2), r_(8)]
    assert sum(comb(9, i) for i in range(2)) / 512 <= 0.025 < sum(comb(9, i) for i in range(3)) / 512
    assert (low, high) == (0.95, 1.05)
    # round-wise pairing: a common factor per round cancels
    drift = [1.0 + 0.5 * r for r in range(9)]
    assert paired_ratio([a * f for a, f in zip(num, drift, strict=True)], drift) == pytest.approx((1.0, 0.95, 1.05))
    assert all(isnan(x) for x in paired_ratio([1.0] * 5, [1.0] * 5)[1:])  # n = 5: no 95% interval exists
    with pytest.raises(ValueError, match="same positive number of rounds"):
        paired_ratio([1.0, 2.0], [1.0])


def test_cfm_step_verdict_names_parity_from_the_interval() -> None:
    verdict = _benchmark_module("cfm_step").verdict
    assert verdict({"a": (1.05, 1.01, 1.09), "b": (1.2, 1.1, 1.3)}) == "met"
    assert verdict({"a": (1.004, 0.99, 1.02), "b": (1.2, 1.1, 1.3)}) == \
        "met; a at parity (the 95% interval includes 1)"
    assert "not strictly met — at parity" in verdict({"a": (0.996, 0.98, 1.01), "b": (1.2, 1.1, 1.3)})
    assert verdict({"a": (0.95, 0.93, 0.97)}).startswith("**missed**: a 0.950 (0.930–0.970)")
    nan = float("nan")
    assert verdict({"a": (0.8, nan, nan)}) == "**missed**: a 0.800"  # too few rounds for an interval: no parity
    assert verdict({"a": (1.1, nan, nan)}) == "met"


def test_audit_cost_quick_times_the_whole_audit_against_a_training_step(quick_sections: dict[str, str]) -> None:
    section = quick_sections["audit_cost"]
    rows = _table_rows(section, "what")
    assert rows[0]["in training steps"] == "1" and float(rows[1]["in training steps"]) > 1
    assert "Verdict of the audit:" in section and "Peak resident memory" in section
    # the step time is train()'s wall time / steps, set-up included: the section must not call it a median
    assert rows[0]["what"].endswith("mean over the 60-step `train()` call)"), rows[0]["what"]
    assert "(no interleaved rounds, no median)" in section


def _section_of(text: str, name: str) -> str:
    return text[text.index(f"<!-- BEGIN {name} -->"):text.index(f"<!-- END {name} -->")]


def test_optimizer_settings_are_named_as_run(quick_sections: dict[str, str]) -> None:
    """The monitor-overhead and CFM-step loops run torch.optim.Adam at lr = 1e-4, not at its defaults (lr = 1e-3):
    the scripts' sections and BENCHMARKS.md say so."""
    assert _benchmark_module("cfm_step").LR == 1e-4
    stored = (ROOT / "BENCHMARKS.md").read_text()
    for name in ("gradvar", "cfm_step"):
        for section in (quick_sections[name], _section_of(stored, name)):
            assert "`torch.optim.Adam(lr=1e-4)`" in section
            assert "`torch.optim.Adam` at its defaults" not in section


def test_benchmarks_md_audit_cost_says_its_step_time_is_a_mean_over_the_train_call() -> None:
    """BENCHMARKS.md's stored audit_cost section and its header: the training step there is one train() call's
    wall time / steps (set-up included), not a median over interleaved rounds."""
    stored = (ROOT / "BENCHMARKS.md").read_text()
    section = _section_of(stored, "audit_cost")
    assert "mean over the 400-step `train()` call" in section and "(no interleaved rounds, no median)" in section
    header = stored[:stored.index("<!-- BEGIN")]
    assert "as a median over interleaved rounds" not in header and "time one run each" in header


def test_audit_calibration_quick_audits_each_regime_and_counts_the_expected_verdicts(
        quick_sections: dict[str, str]) -> None:
    section = quick_sections["audit_calibration"]
    rows = {r["regime"]: r for r in _table_rows(section, "regime")}
    assert set(rows) == {"σ = 0, 16 fixed pairs", "fresh noise → population (N = 64 audited)",
                         "exact OT field (closed form)"}
    # the regimes with a known answer get it even at the smoke scale (one seed, 300 steps)
    assert rows["σ = 0, 16 fixed pairs"]["verdicts"] == "1 memorising"
    assert float(rows["σ = 0, 16 fixed pairs"]["pair recovery m"]) >= 0.5
    for name in ("fresh noise → population (N = 64 audited)", "exact OT field (closed form)"):
        assert rows[name]["verdicts"] == "1 generalising"
        assert float(rows[name]["λ (loss ratio)"]) >= 0.5
    assert "got it in 3 of 3 audits" in section
