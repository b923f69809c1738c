"""Smoke tests of the benchmark scripts: each `--quick` run (the command BENCHMARKS.md documents, reduced grid)
finishes, prints its section, leaves BENCHMARKS.md alone under `--no-write`, and reports sane results.

The timings themselves are not asserted here (they belong to BENCHMARKS.md, on a quiet machine); what is asserted is
that the scripts still run against the current library and that the correctness columns they print hold.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
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


def _all_table_rows(section: str, first_header: str) -> list[dict[str, str]]:
    """The rows of every markdown table in ``section`` whose header starts with ``first_header``."""
    rows: list[dict[str, str]] = []
    lines = section.splitlines()
    for k, line in enumerate(lines):
        if line.startswith(f"| {first_header} |"):
            rows += _table_rows("\n".join(lines[k:]), first_header)
    return rows


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


# --------------------------------------------------------------------------------------------- gradvar.py

FLOAT32_EXACT = 1e-5  # float32 traces of ~1M-parameter models: ~1e-6 relative measured; a wrong rule gives ≥ 1e-3


def _agreement_values(note: str, label: str) -> list[float]:
    """The relative differences an agreement cell gives after ``label`` (e.g. "flowvar trace vs "), up to the next
    clause."""
    part = re.split(r";|, element-wise", note.split(label, 1)[1])[0]
    return [float(v) for v in re.findall(r"\d\.\de[-+]\d\d", part)]


def test_gradvar_quick_agreement_rows_check_flowvar_against_independent_references(
        quick_sections: dict[str, str]) -> None:
    """Every agreement row compares flowvar's traces and element-wise Σ g_i² with the float64 torch.func reference,
    and flowvar's trace with the timed independent methods that measured every parameter; a batch where none did
    (the nn.TransformerEncoderLayer at the smoke scale: BackPACK incomplete, Opacus fails) says so instead of
    comparing flowvar with itself."""
    section = quick_sections["gradvar"]
    rows = _all_table_rows(section, "model") + _all_table_rows(section, "image")
    agreement = {(r.get("model") or r["image"], r["B"]): r["notes"] for r in rows if r.get("method") == "agreement"}
    assert {k[0] for k in agreement} == {"d=2", "16×16", "DiT (`DiTField`)", "`nn.TransformerEncoderLayer`"}
    for key, note in agreement.items():
        assert note.startswith("vs a float64 torch.func reference"), (key, note)
        ours = _agreement_values(note, "flowvar's traces ")
        sq = _agreement_values(note, "element-wise Σ g_i² ")
        assert len(ours) == 1 and len(sq) == 1, (key, note)
        assert ours[0] < FLOAT32_EXACT and sq[0] < FLOAT32_EXACT, (key, note)
        if "flowvar trace vs " in note:
            independent = _agreement_values(note, "flowvar trace vs ")
            assert independent and max(independent) < FLOAT32_EXACT, (key, note)
            assert "flowvar elementwise" not in note.split("flowvar trace vs ", 1)[1], note
    assert "BackPACK BatchL2Grad" in agreement[("d=2", "1024")] and "Opacus" in agreement[("d=2", "1024")]
    mha = agreement[("`nn.TransformerEncoderLayer`", "16")]  # the smoke run's image batch
    assert "no timed independent method measured every parameter" in mha and "Opacus per-sample: fails" in mha


def test_gradvar_quick_failed_methods_carry_no_timing(quick_sections: dict[str, str]) -> None:
    """A method that failed (Opacus on nn.MultiheadAttention) has no time and no 'timed in its own group' ratio."""
    section = quick_sections["gradvar"]
    failed = [r for r in _all_table_rows(section, "model") if r.get("notes", "").startswith("fails")]
    assert failed, "the smoke run has a method that fails (Opacus on nn.TransformerEncoderLayer)"
    for row in failed:
        assert row["time"] == "–" and "timed in its own group" not in row["notes"], row


def test_gradvar_agreement_never_takes_flowvar_as_its_own_reference() -> None:
    checks = _benchmark_module("gradvar_checks")
    torch = __import__("torch")
    Measured = checks.Measured
    reference = (2.0, {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)})
    ours = {"flowvar trace": Measured(2.0 * (1 + 1e-6)),
            "flowvar elementwise": Measured(2.0, sq_sum={"w": torch.tensor([1.0, 2.2])}),
            checks.OWN_OFF: Measured(2.0 * (1 - 4e-6))}
    alone = checks.agreement(ours, reference)
    assert alone.ours == pytest.approx(4e-6, rel=1e-6)  # the worst of flowvar's variants against the reference
    assert alone.sq_sum == pytest.approx(0.2 / math.sqrt(5.0), rel=1e-6)
    assert alone.independent == {}  # flowvar elementwise / own_grads=False are not references for flowvar trace
    note = checks.agreement_note(alone, {"Opacus per-sample": "fails: TypeError: ...",
                                         "BackPACK Variance": "incomplete: skips 2 parameter tensors"})
    assert "no timed independent method measured every parameter" in note
    assert "Opacus per-sample: fails" in note and "BackPACK Variance: incomplete" in note
    not_run = dict.fromkeys(("Opacus per-sample", "per-sample loop"), "not run (time)")
    large_batch = checks.agreement_note(alone, not_run)
    assert large_batch.endswith("; no timed independent method (at this batch size only flowvar and plain are timed)")
    both = checks.agreement({**ours, "Opacus per-sample": Measured(2.0 * (1 + 1e-6) * 1.001),
                             "BackPACK BatchL2Grad": Measured(float("nan"), "incomplete: skips")}, reference)
    assert set(both.independent) == {"Opacus per-sample"}  # BackPACK skipped parameters: its NaN is no reference
    assert both.independent["Opacus per-sample"] == pytest.approx(1e-3, rel=1e-6)


def test_gradvar_reference_moments_are_the_per_sample_gradients_in_float64() -> None:
    """The reference against a direct loop over samples (float64), whatever the chunk size."""
    torch = __import__("torch")
    gradvar = _benchmark_module("gradvar")
    checks = _benchmark_module("gradvar_checks")
    model, batch = gradvar.mlp_problem(2, 5)
    model = model.double()
    x, t, u = (b.double() for b in batch)
    grads = [torch.autograd.grad((model(x[i:i + 1], t[i:i + 1]) - u[i:i + 1]).pow(2).sum(), list(model.parameters()))
             for i in range(5)]
    flat = torch.stack([torch.cat([g.flatten() for g in gs]) for gs in grads])
    expected_trace = float(flat.pow(2).sum(1).mean() - flat.mean(0).pow(2).sum())
    for chunk_bytes in (1, 1 << 30):  # one sample per chunk; the whole batch at once
        trace, sq_sum = checks.reference_moments(model.float(), batch, chunk_bytes=chunk_bytes)
        model.double()
        assert trace == pytest.approx(expected_trace, rel=1e-5)  # the model's float32 weights, widened: same values
        assert torch.cat([v.flatten() for v in sq_sum.values()]).allclose(flat.pow(2).sum(0), rtol=1e-5)


def test_gradvar_bound_verdict_names_the_bound_from_the_interval() -> None:
    verdict = _benchmark_module("gradvar_checks").bound_verdict
    nan = float("nan")
    assert verdict({"a": (1.05, 1.01, 1.09)}, 1.10) == "met"
    assert verdict({"a": (1.08, 1.05, 1.12)}, 1.10) == "met; a at the bound (the 95% interval includes 1.10)"
    # a median just above the bound whose interval reaches it: not a miss, the run cannot tell
    assert verdict({"a": (1.12, 1.08, 1.15), "b": (1.0, 0.98, 1.02)}, 1.10) == \
        "**inconclusive — at the bound**: a 1.12× (1.08–1.15); the 95% interval includes 1.10"
    # a missed row names its clearly missed settings, and its at-the-bound ones apart as inconclusive
    assert verdict({"a": (1.2, 1.15, 1.3), "b": (1.12, 1.08, 1.15)}, 1.10) == \
        "**missed**: a 1.20× (1.15–1.30); inconclusive (the 95% interval includes 1.10): b 1.12× (1.08–1.15)"
    # BENCHMARKS.md's stored UNet trace row: both 32×32 intervals include 1.30, so only the 16×16 ones are missed
    unet = {"16×16 B=32": (1.60, 1.56, 1.65), "16×16 B=128": (1.46, 1.36, 1.53),
            "32×32 B=32": (1.32, 1.24, 1.38), "32×32 B=128": (1.32, 1.25, 1.66)}
    assert verdict(unet, 1.30) == ("**missed**: 16×16 B=32 1.60× (1.56–1.65), 16×16 B=128 1.46× (1.36–1.53); "
                                   "inconclusive (the 95% interval includes 1.30): 32×32 B=32 1.32× (1.24–1.38), "
                                   "32×32 B=128 1.32× (1.25–1.66)")
    assert verdict({"a": (1.05, nan, nan)}, 1.10) == "met (medians only: under 6 rounds, no interval)"
    assert verdict({"a": (1.2, nan, nan)}, 1.10) == "**missed**: a 1.20× (medians only: under 6 rounds, no interval)"
    assert verdict({}, 1.10) == "n/a (not measured)"


def test_gradvar_targets_say_how_far_paired_ratios_and_ratios_of_medians_differ() -> None:
    """The targets' paired ratios and the tables' ratios of medians come from the same rounds but are different
    statistics: BENCHMARKS.md's stored run has DiT B=128 at 0.99× in its table and 1.18× paired, far beyond the
    '~0.01' the text once claimed. The text names the largest difference of the run it describes."""
    checks = _benchmark_module("gradvar_checks")
    # the same rounds: plain and flowvar ran back to back, the load doubled half way through
    plain = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    ours = [1.2, 1.2, 1.2, 2.4, 2.4, 2.4, 2.4]
    paired = _benchmark_module("_common").paired_ratio(ours, plain)
    assert paired[0] == pytest.approx(1.2)  # every round reads 1.2
    statistics = __import__("statistics")
    assert statistics.median(ours) / statistics.median(plain) == pytest.approx(1.2)
    # medians of separate columns: a drift that hits the two columns in different rounds breaks the ratio of medians
    ours_shifted = [1.2, 1.2, 1.2, 1.2, 2.4, 2.4, 2.4]
    plain_shifted = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    plain_shifted[3] = 2.0  # round 3 ran plain after the load rose, flowvar before
    assert statistics.median(ours_shifted) / statistics.median(plain_shifted) == pytest.approx(0.6)
    assert _benchmark_module("_common").paired_ratio(ours_shifted, plain_shifted)[0] == pytest.approx(1.2)
    judged = [("flowvar trace", "DiT (`DiTField`) B=128", (1.18, 0.95, 1.23)),
              ("flowvar elementwise", "d=2 B=1024", (1.83, 1.71, 1.97)),
              ("flowvar trace", "d=2 B=4096", (1.23, 1.19, 1.30))]
    of_medians = {("flowvar trace", "DiT (`DiTField`) B=128"): 0.99, ("flowvar elementwise", "d=2 B=1024"): 1.96}
    assert checks.largest_gap(judged, of_medians) == \
        "flowvar trace DiT (`DiTField`) B=128: 0.99× in its table against 1.18× paired"
    assert checks.largest_gap(judged, {}) == ""
    image = {("dit", "DiT (`DiTField`)", 128): {"flowvar trace": (1.18, 0.95, 1.23)}}
    text = " ".join(checks.targets({}, {}, {}, 1, image, of_medians))
    assert "~0.01" not in text
    assert "(in this run at most for flowvar trace DiT (`DiTField`) B=128: 0.99× in its table against 1.18× " \
           "paired)" in text
    assert "ratios differ by more than rounding. A target" in " ".join(checks.targets({}, {}, {}, 1, image))


def test_gradvar_memory_verdict_judges_growth_with_B_not_its_level() -> None:
    verdict = _benchmark_module("gradvar_checks").memory_verdict
    P = 133122
    per_sample_grad_mib = P * 4 / 2**20
    # BENCHMARKS.md's figures: flowvar's extra 10.5 → 27 MiB, a plain step's peak 359 → 393 MiB (B = 256 → 4096)
    stored = {("flowvar trace", 256): (10.5, 359.4), ("flowvar trace", 4096): (27.0, 393.3)}
    assert verdict(stored, P)[2] == "met"
    assert "KiB per sample" in verdict(stored, P)[1]
    # 5% of a per-sample gradient per sample: grows with B·P, yet below 0.1·B·P·4 (the old level test passed it)
    b_p = {("flowvar trace", B): (0.05 * B * per_sample_grad_mib, 359.4 + (B - 256) * 9e-3) for B in (256, 4096)}
    assert max(v[0] for v in b_p.values()) < 0.1 * 4096 * per_sample_grad_mib
    assert verdict(b_p, P)[2] == "**missed**"
    assert verdict({("flowvar trace", 256): (10.0, 359.0)}, P) is None  # one B: no growth to judge
    # a measuring child that failed (NaN) measured nothing: not a target missed
    failed = {**stored, ("flowvar trace", 4096): (math.nan, math.nan)}
    assert verdict(failed, P)[2] == "n/a (measurement failed)" and "B = 4096" in verdict(failed, P)[1]


def test_gradvar_agreement_survives_flowvars_own_trace_failing() -> None:
    """The benchmark died (KeyError) exactly when flowvar's trace failed: the others are then compared with nothing,
    and the reference comparison of the variants that did run stays."""
    checks = _benchmark_module("gradvar_checks")
    results = {"plain": checks.Measured(math.nan), "flowvar elementwise": checks.Measured(2.0),
               "torch.func vmap": checks.Measured(2.0)}
    a = checks.agreement(results, (2.0, {}))
    assert a.independent == {} and a.ours == 0.0


def test_gradvar_quick_targets_rest_on_paired_ratios(quick_sections: dict[str, str]) -> None:
    rows = _table_rows(quick_sections["gradvar"], "target")
    assert len(rows) == 10
    for row in rows:
        assert re.match(r"(met|\*\*missed\*\*|\*\*inconclusive — at the bound\*\*|n/a)", row["verdict"]), row
        if row["verdict"] != "met" and not row["target"].startswith("flowvar peak extra memory"):
            # the smoke run's rounds are too few for an interval: the verdict says it judged medians
            assert "medians only" in row["verdict"], row
    assert "per sample" in rows[-1]["measured"] and rows[-1]["target"].startswith("flowvar peak extra memory")


@pytest.fixture(scope="module")
def ablations_section() -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gradvar.py"), "--ablations", "--quick",
                           "--no-write", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _section_of(proc.stdout, "gradvar_ablations")


def test_gradvar_ablations_quick_times_the_sum_check_and_the_monitors_parts(ablations_section: str) -> None:
    """`gradvar.py --ablations` regenerates the A/B figures docs/gradient_variance.md quotes."""
    assert "Command: `python benchmarks/gradvar.py --ablations --quick" in ablations_section
    check = _table_rows(ablations_section, "model")
    assert check and all(r["same trace"] == "yes" for r in check), check  # the check never changes the number
    parts = {r["variant"]: r["ratio to plain"] for r in _table_rows(ablations_section, "variant")}
    assert list(parts) == ["plain training step", "engine hooks armed, records cleared without measuring",
                           "engine `compute(check=False)`", "engine `compute()` (sum check)",
                           "the monitor at its defaults (t-profile, CSV row)"]
    assert all(float(v.split("×")[0]) > 0 for v in parts.values())


def test_audit_calibration_seeds_is_a_listed_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """BENCHMARKS.md's command passes `--seeds 5`: a real option, listed by `--help` (it was parsed by hand)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "audit_calibration.py"), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--seeds SEEDS" in proc.stdout, proc.stdout + proc.stderr
    module = _benchmark_module("audit_calibration")
    seen: list[int] = []
    run = {"m": 0.0, "copy_share": 0.0, "rho": 1.0, "lambda": 1.0, "nu": 1.0, "gradient": "g", "verdict": "v"}
    monkeypatch.setattr(module, "audit_once", lambda regime, seed, steps: seen.append(seed) or run)
    monkeypatch.setattr(module, "REGIMES", module.REGIMES[:1])
    monkeypatch.setattr(sys, "argv", ["audit_calibration.py", "--seeds", "3", "--no-write"])
    module.main()
    assert seen == [0, 1, 2]  # three training seeds, as the hand parser read `--seeds 3`


def test_wall_clock_scripts_refuse_the_clock_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts that always time wall-clock have no `--clock`: `--clock cpu` is an error, not silently ignored;
    the CPU-time note names the thread count."""
    for name in ("audit_cost", "sweep_overhead", "audit_calibration", "gradvar_gpu"):
        module = _benchmark_module(name)
        monkeypatch.setattr(sys, "argv", [f"{name}.py", "--quick", "--no-write", "--clock", "cpu"])
        with pytest.raises(SystemExit) as exit_info:
            module.main()
        assert exit_info.value.code == 2, name  # argparse: unrecognized arguments
    common = _benchmark_module("_common")
    assert "(one torch thread)" in common.clock_note("cpu", 1)
    assert "(2 torch threads, summed)" in common.clock_note("cpu", 2)
    assert common.clock_note("wall", 2) == "Times are wall-clock time."


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_session_records_each_step_and_fails_when_one_does(tmp_path: Path) -> None:
    """On this CPU machine with POT hidden and no wheels: the session says what is missing, records every step's
    status, runs on past failures, copies what it has into $OUT and exits non-zero; a benchmark cut off by its time
    limit is named as such."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python3").chmod(0o755)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ot.py").write_text('raise ImportError("hidden by the test")\n')
    (tmp_path / "wheels").mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(hide),
           "OUT": str(out), "WHEELS": str(tmp_path / "wheels"), "TEST_LIMIT": "120", "BENCH_LIMIT": "0.2"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "POT (ot) or torchcfm is missing and no wheels were carried" in proc.stdout
    steps = dict(line.split(": ", 1) for line in (out / "steps.txt").read_text().splitlines())
    assert steps["POT and torchcfm present"] == "exit 1 (failed)"
    assert steps["tests/test_cuda.py"] == "exit 0 (ok)"  # every test skips without a GPU
    assert steps["benchmarks/gradvar_gpu.py"] == "exit 124 (hit its time limit)"
    assert steps["copy BENCHMARKS.md"] == "exit 0 (ok)"
    assert (out / "BENCHMARKS.md").read_bytes() == (ROOT / "BENCHMARKS.md").read_bytes()
    assert "the benchmark hit BENCH_LIMIT" in proc.stdout and "step(s) failed" in proc.stdout


def test_gpu_session_inner_limits_fit_the_device_budget() -> None:
    """The device budget is 15 min in all, 2-4 min of it the machine's start: the session's inner limits add up to
    at most 330 s and the recommended call's timeout leaves the rest of the budget."""
    script = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    limits = [int(v) for v in re.findall(r"\$\{(?:TEST|BENCH)_LIMIT:-(\d+)\}", script)]
    assert len(limits) == 2 and sum(limits) <= 330, limits
    timeout = int(re.search(r"timeout_s=(\d+)", script).group(1))
    assert sum(limits) < timeout <= 15 * 60 - 4 * 60, timeout


def _ratio_cells(section: str) -> dict[tuple[str, str, str], str]:
    """(model label, B, method) → 'ratio to plain' (a ratio of medians) of BENCHMARKS.md's gradvar tables."""
    rows = _all_table_rows(section, "model") + _all_table_rows(section, "image")
    return {(r.get("model") or r["image"], r["B"], r["method"]): r["ratio to plain"] for r in rows if "method" in r}


def _target_cells(section: str) -> dict[tuple[str, str, str], str]:
    """(model label, B, method) → the paired ratio with its interval ('1.26× (1.26–1.31)') in the `measured` cells
    of a gradvar section's targets (flowvar's trace and element-wise rows), which every run prints."""
    out = {}
    for row in _table_rows(section, "target"):
        if not row["target"].startswith(("MLP", "UNet", "DiT", "`nn.TransformerEncoderLayer`")):
            continue
        method = "flowvar elementwise" if "element-wise" in row["target"] else "flowvar trace"
        for part in row["measured"].split(", "):
            match = re.fullmatch(r"(.+) B=(\d+): (\S+×(?: \([\d.]+–[\d.]+\))?)", part)
            assert match, part
            out[(match[1], match[2], method)] = match[3]
    return out


def _paired_cells(section: str) -> dict[tuple[str, str, str], str]:
    """(model label, B, method) → the paired ratio with its interval of a gradvar section: the tables' paired column
    where the run printed one (from gradvar.py's PAIRED_HEADER on), else the targets' cells (:func:`_target_cells`)."""
    header = _benchmark_module("gradvar").PAIRED_HEADER
    rows = _all_table_rows(section, "model") + _all_table_rows(section, "image")
    table = {(r.get("model") or r["image"], r["B"], r["method"]): r[header] for r in rows
             if "method" in r and r.get(header, "–") not in ("–", "")}
    return {**_target_cells(section), **table}


def test_gradient_variance_doc_quotes_the_stored_gradvar_run() -> None:
    """docs/gradient_variance.md's Cost table and the figures its prose takes from it are BENCHMARKS.md's gradvar
    run (regenerate both together): the paired ratios with their intervals that the targets judge, wherever the run
    printed one; a cell marked † is the table's ratio of medians, allowed only where the stored run has no paired
    figure (the DiT at B = 128 reads 0.99× as a ratio of medians and 1.18× paired: the doc quoted the former)."""
    stored = _section_of((ROOT / "BENCHMARKS.md").read_text(), "gradvar")
    medians, paired = _ratio_cells(stored), _paired_cells(stored)
    assert paired[("DiT (`DiTField`)", "128", "flowvar trace")] == "1.18× (0.95–1.23)"  # the stored run's
    doc = (ROOT / "docs" / "gradient_variance.md").read_text()
    cost = doc[doc.index("## Cost"):]

    def quoted(label: str, B: str, method: str) -> str:
        key = (label, B, method)
        return paired[key] if key in paired else f"{medians[key]}†"

    columns = ("flowvar trace", "flowvar elementwise", "flowvar trace, autograd's gradients")
    for doc_label, label in (("UNet 32²", "32×32"), ("UNet 16²", "16×16"), ("DiT (`DiTField`", "DiT (`DiTField`)"),
                             ("the same size from `nn.TransformerEncoderLayer`", "`nn.TransformerEncoderLayer`")):
        row = next(line for line in cost.splitlines() if line.startswith(f"| {doc_label}"))
        for method, cell in zip(columns, row.strip("|").split("|")[1:], strict=True):
            assert cell.strip() == f"{quoted(label, '32', method)} / {quoted(label, '128', method)}", (label, method)
    for method in ("flowvar trace", "flowvar elementwise"):
        mlp = [float(paired[(f"d={d}", B, method)].split("×")[0]) for d in (2, 50) for B in ("1024", "4096")]
        assert f"{min(mlp):.2f}–{max(mlp):.2f}× |" in next(line for line in cost.splitlines()
                                                           if line.startswith("| MLP 3×256, B ≥ 1024 |")), method
        assert f"({min(mlp):.2f}–{max(mlp):.2f}× paired in the table's run" in cost, method
    dit = [paired[("DiT (`DiTField`)", B, "flowvar trace")] for B in ("32", "128")]
    assert f"costs {dit[0]} / {dit[1]} (B = 32 / 128, the Cost table)" in " ".join(cost.split())
    assert "1.29× / 0.99×" not in cost  # the ratios of medians the doc quoted before
    monitor = {(r["model"], r["B"]): r for r in _all_table_rows(stored, "model") if "plain step" in r}[("d=2", "256")]
    assert f"takes {monitor['plain step']} in the table's run" in cost
    assert f"at B = 256 ({monitor['monitor (defaults)']} in the table;" in cost


def test_gradvar_tables_print_the_paired_ratio_beside_the_ratio_of_medians() -> None:
    """The tables' paired cell is the per-round ratio the targets judge (median and 95% interval), '1.00×' for
    plain and '–' for a method without per-round ratios (timed in its own group): a doc can quote a stored cell."""
    gradvar = _benchmark_module("gradvar")
    grid = gradvar.Grid(medians={"plain": 1.0, "flowvar trace": 0.99, "torch.func vmap": 4.0}, results={}, notes={},
                        paired={"flowvar trace": (1.18, 0.95, 1.23)})
    assert gradvar.paired_cell("flowvar trace", grid) == "1.18× (0.95–1.23)"  # not the 0.99× of the medians
    assert gradvar.paired_cell("plain", grid) == "1.00×"
    assert gradvar.paired_cell("torch.func vmap", grid) == "–"


def test_gradvar_quick_tables_paired_column_is_what_the_targets_judge(quick_sections: dict[str, str]) -> None:
    """Every flowvar trace / element-wise cell the targets list is the tables' paired cell of the same run."""
    section = quick_sections["gradvar"]
    header = _benchmark_module("gradvar").PAIRED_HEADER
    rows = _all_table_rows(section, "model") + _all_table_rows(section, "image")
    assert rows and all(header in r for r in rows if "method" in r)
    table_cells = {(r.get("model") or r["image"], r["B"], r["method"]): r[header] for r in rows if "method" in r}
    targets = _target_cells(section)
    assert {k[0] for k in targets} == {"d=2", "16×16", "DiT (`DiTField`)", "`nn.TransformerEncoderLayer`"}
    for key, cell in targets.items():
        assert table_cells[key] == cell, key


def test_machine_line_records_the_git_commit(tmp_path: Path) -> None:
    """A section names the commit it measured ('+dirty' when tracked files differ), or says there was none."""
    common = _benchmark_module("_common")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    commit = common.git_commit()
    assert commit in (head, head + "+dirty") and commit.endswith("+dirty") == bool(dirty), commit
    assert f"flowvar commit {commit};" in common.machine_line(1)
    assert common.git_commit(tmp_path) == "unknown (no git checkout)"


def test_audit_cost_calls_the_peak_difference_a_lower_bound() -> None:
    """The difference of the two VmHWM peaks is what the audit added to the process's peak: a lower bound on its own
    working memory (it may reuse what training freed), never 'at most'. The stored section says what the script
    now prints."""
    sentence = _benchmark_module("audit_cost").peak_sentence
    text = sentence(490.2, 665.4)
    assert "raised the process's peak by 175 MiB, a lower bound on its own working memory" in text
    assert "at most" not in text
    assert "by 0 MiB" in sentence(500.0, 480.0)  # the audit stayed under the training peak
    stored = _section_of((ROOT / "BENCHMARKS.md").read_text(), "audit_cost")
    assert sentence(490.0, 665.0) in stored and "at most the difference" not in stored


def test_pairing_is_described_as_the_same_round_not_back_to_back() -> None:
    """`_common.interleaved` shuffles every method of a comparison in each round, so two methods of a pair run in
    the same round, not necessarily adjacent: no script or stored section says 'back to back'."""
    for path in [*sorted((ROOT / "benchmarks").glob("*.py")), ROOT / "BENCHMARKS.md"]:
        assert "back to back" not in path.read_text(), path
    stored = (ROOT / "BENCHMARKS.md").read_text()
    for name in ("gradvar", "gradvar_ablations", "cfm_step"):
        assert "in the same round (order shuffled)" in _section_of(stored, name), name


def test_profile_site_of_names_the_phase_and_the_innermost_flowvar_function() -> None:
    from types import SimpleNamespace

    ablations = _benchmark_module("gradvar_ablations")

    def chain(*names: str) -> SimpleNamespace:
        """An operator event under ``names`` (outermost first), as torch.profiler links them."""
        parent = None
        for name in names:
            parent = SimpleNamespace(name=name, cpu_parent=parent)
        return SimpleNamespace(name="aten::mm", cpu_parent=parent)

    src = "/x/src/flowvar/variance"
    assert ablations.site_of(chain("bench.py(1): run", f"{src}/engine.py(785): compute",
                                   f"{src}/engine.py(1019): _run_unit", f"{src}/rules/conv.py(43): accumulate",
                                   f"{src}/records.py(72): sample_sum")) == (
        "compute(): rules", "records.py:sample_sum (from conv.py)")
    assert ablations.site_of(chain(f"{src}/engine.py(785): compute", f"{src}/engine.py(1201): _failed_checks")) == (
        "compute(): sum check", "engine.py:_failed_checks")
    assert ablations.site_of(chain(f"{src}/owned.py(175): backward", f"{src}/rules/conv.py(205): _grouped")) == (
        "owned layers (backward pass)", "conv.py:_grouped")
    assert ablations.site_of(chain("/x/src/flowvar/models/mlp.py(30): forward", f"{src}/engine.py(571): "
                                   "_forward_hook")) == ("engine hooks", "engine.py:_forward_hook")
    assert ablations.site_of(chain("/x/src/flowvar/models/mlp.py(30): forward")) == ("model forward", "mlp.py:forward")
    assert ablations.site_of(chain("bench.py(1): run")) == ("autograd backward", "–")
    assert not ablations.is_operator(f"{src}/engine.py(785): compute") and ablations.is_operator("aten::mm")


def test_profile_attributes_every_operator_of_a_real_call() -> None:
    """A profiled call of flowvar's trace on a small MLP: the operators' time falls in the model's forward, autograd's
    backward, the hooks and compute() (the sum check too); a plain step has no engine phase; the sites add up to the
    operators' total."""
    import torch

    ablations = _benchmark_module("gradvar_ablations")
    gradvar = _benchmark_module("gradvar")
    torch.manual_seed(0)
    model, batch = gradvar.mlp_problem(2, 64)
    ours = ablations.PROFILE_VARIANTS["flowvar trace"](model, batch)
    plain = ablations.PROFILE_VARIANTS["plain"](model, batch)
    ours(), plain()
    sites, ops, wall = ablations.profile_call(ours, stacks=True)
    phases = {phase for phase, _ in sites}
    assert {"model forward", "autograd backward", "engine hooks", "compute(): rules", "compute(): sum check"} <= phases
    assert sum(sites.values()) == pytest.approx(sum(ops.values()))
    assert 0 < sum(ops.values()) < wall * 1.5
    plain_sites, _, _ = ablations.profile_call(plain, stacks=True)
    assert {phase for phase, _ in plain_sites} <= {"model forward", "autograd backward"}
    assert ablations.rule_counts(ours().rules) == "4 linear"


def test_exact_ot_doc_says_one_round_beside_the_4096_mixture_figures() -> None:
    """The exact_ot doc's spans whose end-points are the 4096-point mixture rows (emd's 1.27×, LSA's 8.5×, sparse's
    2.5×) say that those rows were timed in one round (their scipy LSA takes up to 79 s)."""
    stored = _section_of((ROOT / "BENCHMARKS.md").read_text(), "exact_ot")
    one_round = {(r["n"], r["d"]) for r in _all_table_rows(stored, "n") if r["targets"] == "mixture"
                 and r["rounds"] == "1"}
    assert one_round == {("4096", "2"), ("4096", "50")}
    doc = " ".join((ROOT / "docs" / "exact_ot.md").read_text().split())
    assert "(the 1.27× and the 8.5× are the 4096-point mixture rows, one round each" in doc
    assert "2.5–7.4× at 4096; the 2.5× is the 4096-point mixture in d = 2, timed in one round." in doc


def test_gradvar_profile_quick_prints_the_profiles_the_doc_quotes_and_writes_nothing() -> None:
    """`gradvar.py --profile` (the command docs/gradient_variance.md cites for its profiles) prints a table per
    setting — the UNet's trace and element-wise variants, the MLP's trace with and without the sum check — and leaves
    BENCHMARKS.md alone."""
    before = _digest(ROOT / "BENCHMARKS.md")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gradvar.py"), "--profile", "--quick",
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _digest(ROOT / "BENCHMARKS.md") == before
    out = proc.stdout
    assert "Command: `python benchmarks/gradvar.py --profile --quick" in out and "flowvar commit " in out
    unet, mlp = out.split("### UNet 16×16")[1].split("### MLP d = 2")
    variants = {r["variant"]: r for r in _table_rows(unet, "variant")}
    assert list(variants) == ["plain", "flowvar trace", "flowvar elementwise"]
    assert "conv2d-owned" in variants["flowvar elementwise"]["weight tensors by rule"]
    sites = {r["phase"]: r for r in _table_rows(unet, "phase")}
    assert float(sites["**owned layers (backward pass), total**"]["flowvar trace"]) > 0
    assert float(sites["**owned layers (backward pass), total**"]["plain"]) == 0
    assert list(v["variant"] for v in _table_rows(mlp, "variant")) == [
        "plain", "flowvar trace, check=False", "flowvar trace", "flowvar elementwise"]
    mlp_sites = {r["phase"]: r for r in _table_rows(mlp, "phase")}
    assert float(mlp_sites["**compute(): sum check, total**"]["flowvar trace, check=False"]) == 0
    assert float(mlp_sites["**compute(): sum check, total**"]["flowvar trace"]) > 0
