"""Calibration of `flowvar audit`'s fixed thresholds: each test's statistic over training seeds, per regime.

The audit's thresholds (docs/audit.md; `flowvar.audit.rules`) were set on single small models. This script trains
small MLP fields in regimes whose answer is known by construction and audits each over several training seeds, so
the table shows where each statistic falls against its thresholds, how far the seeds spread, and how often each
regime gets the verdict it should:

* **pairs memorised** — CFM(σ = 0) on N fixed (noise, target) pairs, trained until the loss is near its floor
  (Prop 2: the lines of the pairs are memorised); N = 16 and 64. N = 256 is a *finding* row: 1200 steps of batch 64
  see each pair ~300 times, which need not be enough to memorise 256 lines with this network — whether it did is
  what the row measures, so it has no expected verdict;
* **noisy pairs** — the same N = 64 pairs at σ = 0.5 (the noise blurs the lines; pair recovery drops but need not
  vanish: a *finding* regime, no expected verdict);
* **copies** — CFM with fresh noise each step paired with one of N = 16 training items (the empirical
  distribution as target), trained long: fresh samples collapse onto training items (the diffusion-model copying
  failure), while the noise was never paired;
* **generalising** — fresh noise paired with fresh draws of the target each step (the population, never a finite
  set), and the exact OT field of the Gaussian problem (closed form, no training); audited with N = 64 training
  items the model never saw specially and arbitrary sources as "pairs".

The target is N(2·1, ¼ I) in d = 8 (as in tests/test_audit.py); held-out data: 128 fresh draws. Each audit: 200
fresh samples, a 100- and a 10-step Euler grid, 32 gradient draws per t-bin in 3 bins. Reported per regime: the
mean and [min, max] over seeds of the pair-recovery score m (fine grid), the copy share p = (c − b)/(1 − b) (the
share of copies c beyond the held-out baseline b, normalised by the room 1 − b the baseline leaves), the
train/held-out NN-distance ratio ρ (one-sided: it can only read memorising), the gradient test's λ (loss ratio)
and ν (variance ratio), and the count of each overall verdict.

    python benchmarks/audit_calibration.py [--quick] [--seeds N]
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _common import machine_line, parse_args, setup, table, write_section
from torch import nn

from flowvar.audit import audit, rules
from flowvar.couplings import FixedPairs, IndependentCoupling
from flowvar.distributions import Empirical, StandardNormal
from flowvar.gaussian import GaussianProblem
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.seeding import derive_seed
from flowvar.train import TrainConfig, train

D = 8
HELDOUT = 128


@dataclass(frozen=True)
class Regime:
    """One row of the table: how its model is made from a seed, and the verdict it should get (None: a finding)."""

    name: str
    expected: str | None
    n: int
    build: Callable[[int, torch.Tensor, torch.Tensor, int], nn.Module]  # (seed, x0, x1, steps) → trained field


def _problem() -> GaussianProblem:
    return GaussianProblem(torch.full((D,), 2.0, dtype=torch.float64), 0.25 * torch.eye(D, dtype=torch.float64),
                           dtype=torch.float32)


def _mlp(seed: int) -> MLPField:
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "init"))
        return MLPField(D, width=128, depth=3)


def _fit(seed: int, coupling: object, sigma: float, steps: int) -> nn.Module:
    model = _mlp(seed)
    train(model, CFMLoss(Interpolant(sigma)), coupling,
          TrainConfig(steps=steps, batch_size=64, lr=2e-3, seed=derive_seed(seed, "batches"), log_every=0))
    return model.eval()


def fixed_pairs(sigma: float) -> Callable[[int, torch.Tensor, torch.Tensor, int], nn.Module]:
    return lambda seed, x0, x1, steps: _fit(seed, FixedPairs(x0, x1), sigma, steps)


def empirical_target(seed: int, x0: torch.Tensor, x1: torch.Tensor, steps: int) -> nn.Module:
    return _fit(seed, IndependentCoupling(StandardNormal(D), Empirical(x1)), 0.0, 4 * steps)


def population(seed: int, x0: torch.Tensor, x1: torch.Tensor, steps: int) -> nn.Module:
    return _fit(seed, IndependentCoupling(StandardNormal(D), _problem()), 0.0, steps)


def exact_ot(seed: int, x0: torch.Tensor, x1: torch.Tensor, steps: int) -> nn.Module:
    return _problem().ot_field()


REGIMES = [
    Regime("σ = 0, 16 fixed pairs", "memorising", 16, fixed_pairs(0.0)),
    Regime("σ = 0, 64 fixed pairs", "memorising", 64, fixed_pairs(0.0)),
    Regime("σ = 0, 256 fixed pairs", None, 256, fixed_pairs(0.0)),
    Regime("σ = 0.5, 64 fixed pairs", None, 64, fixed_pairs(0.5)),
    Regime("fresh noise → 16 training items, 4× longer", "memorising", 16, empirical_target),
    Regime("fresh noise → population (N = 64 audited)", "generalising", 64, population),
    Regime("exact OT field (closed form)", "generalising", 64, exact_ot),
]
QUICK = ("σ = 0, 16 fixed pairs", "fresh noise → population (N = 64 audited)", "exact OT field (closed form)")


#: The gradient test's claim verdict as a reading (its claim is "the model memorises").
GRADIENT_READING = {"confirmed": "memorising", "refuted": "generalising", "inconclusive": "inconclusive",
                    "untestable": "untestable"}


def audit_once(regime: Regime, seed: int, steps: int) -> dict[str, float | str]:
    """Train (or build) the regime's field for ``seed`` and audit it: the statistics and the verdicts."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "data", regime.n))
    problem = _problem()
    x0 = torch.randn(regime.n, D, generator=gen)
    x1, heldout = problem.sample(regime.n, gen), problem.sample(HELDOUT, gen)
    field = regime.build(seed, x0, x1, steps)
    if regime.build is exact_ot:
        x0, x1, heldout = x0.double(), x1.double(), heldout.double()
    report = audit(field, x1, pairs=x0, heldout=heldout, samples=200, steps=100, coarse_steps=10, grad_samples=32,
                   t_bins=3, seed=derive_seed(seed, "audit"))
    claims = {c.id: c for c in report.result.claims}
    pairs, copies = claims["audit.pair_recovery"].evidence, claims["audit.copying"].evidence
    grad = claims["audit.gradient_signal"].evidence
    return {"m": pairs["fine"]["score"], "m_coarse": pairs["coarse"]["score"],
            "copy_share": copies.get("copy_share_beyond_baseline", math.nan),
            "rho": claims["audit.generalisation_gap"].evidence.get("nn_ratio", math.nan),
            "lambda": grad["loss_ratio"], "nu": grad["variance_ratio"], "verdict": report.verdict,
            "gradient": GRADIENT_READING[claims["audit.gradient_signal"].verdict]}


def spread(values: list[float], digits: int = 2) -> str:
    """mean [min, max] of the finite values ('—' when none)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.fmean(vals):.{digits}f} [{min(vals):.{digits}f}, {max(vals):.{digits}f}]"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], clock=False, configure=lambda parser: parser.add_argument(
        "--seeds", type=int, default=5, help="training seeds audited per regime (default 5; --quick uses 1)"))
    setup(args.threads, "wall")
    steps = 300 if args.quick else 1200
    regimes = [r for r in REGIMES if r.name in QUICK] if args.quick else REGIMES
    n_seeds = 1 if args.quick else args.seeds
    started = time.perf_counter()
    rows, hits, expected_total = [], 0, 0
    for regime in regimes:
        runs = [audit_once(regime, seed, steps) for seed in range(n_seeds)]
        counts = Counter(str(r["verdict"]) for r in runs)
        if regime.expected is not None:
            hits += counts[regime.expected]
            expected_total += len(runs)
        col = {k: spread([float(r[k]) for r in runs]) for k in ("m", "copy_share", "rho", "lambda", "nu")}
        rows.append([regime.name, regime.expected or "(finding)", col["m"], col["copy_share"], col["rho"],
                     col["lambda"], col["nu"],
                     ", ".join(f"{v} {k}" for k, v in Counter(str(r["gradient"]) for r in runs).most_common()),
                     ", ".join(f"{v} {k}" for k, v in counts.most_common())])
        print(rows[-1], flush=True)
    wall = time.perf_counter() - started
    quick = " --quick" if args.quick else ""
    seeds = "" if args.quick else f" --seeds {n_seeds}"
    thresholds = (f"pair recovery m ≥ {rules.PAIR_MEMORISE} memorising, ≤ {rules.PAIR_GENERALISE} generalising (both "
                  f"grids); copy share p ≥ {rules.COPY_MEMORISE} / ≤ {rules.COPY_GENERALISE}; ρ < {rules.GAP_MEMORISE}"
                  f" memorising, never generalising (a ratio of medians cannot see a copying minority; these two each "
                  f"also {rules.ALLOWANCE_Z} standard errors clear of the other threshold); λ and ν < "
                  f"{rules.GRAD_MEMORISE} memorising, λ ≥ {rules.GRAD_GENERALISE} generalising, each with its "
                  f"Monte-Carlo error on the log scale, s: λ·e^(zs) and ν·e^(zs) below, λ·e^(−zs) at or above "
                  f"(z = {rules.ALLOWANCE_Z})")
    body = "\n\n".join([
        "## `flowvar audit`: threshold calibration",
        f"Command: `python benchmarks/audit_calibration.py{quick}{seeds} --threads {args.threads}` "
        f"({wall / 60:.1f} min).",
        machine_line(args.threads),
        f"Small MLP fields (MLPField(8, width 128, depth 3), Adam lr 2e-3, batch 64, {steps} steps unless stated) in "
        f"regimes whose answer is known by construction, each audited over {n_seeds} training seed(s) (a seed draws "
        f"the pairs, the initialisation, the batches and the audit's samples). Target N(2·1, ¼ I), d = 8; 128 "
        f"held-out draws; 200 fresh samples; Euler 100 and 10 steps; 32 gradient draws per t-bin, 3 bins. Cells: mean "
        f"[min, max] over seeds. Thresholds (fixed, docs/audit.md): {thresholds}.",
        table(["regime", "should read", "pair recovery m", "copy share p", "ρ (gap)", "λ (loss ratio)",
               "ν (variance ratio)", "gradient test", "verdicts"], rows),
        f"Regimes with a known answer got it in {hits} of {expected_total} audits.",
    ])
    write_section("audit_calibration", body, args.no_write)


if __name__ == "__main__":
    main()
