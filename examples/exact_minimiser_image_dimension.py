"""Does the exact CFM(σ) minimiser return the training partner at the paper's image dimension? (table2/table3's
exception to the "noise can act" policy rests on this check; docs/experiments/table2.md, "Verdicts".)

table2 and table3 judge their σ = 0.05 network claims without the "noise can act" precondition that table1 and
sigma_tradeoff carry, because at the paper's own image dimension D = 12 288 (CelebA at 64 × 64 × 3) the optimum of
the CFM(σ) loss keeps every training pair at any σ the paper uses, so no open choice could make Remark 2's mechanism
act. CelebA is not bundled, so this measures it on the bundled digits upsampled to the same D (table2's loader:
``dataset=digits, resolution=64, channels=3``, the grey image repeated into 3 identical channels). Everything else
is table2's own pipeline for one data-set size and one seed (``table2._run_size``), composed from the same library
calls, none restated:

1. the N images (:func:`~flowvar.experiments._image_data.load_subset` and ``nested_subset`` of table2's config with
   ``ns=N``), and N Gaussian sources x0 ~ N(0, I) from the replicate's "sources" stream;
2. the OT assignment σ (:func:`flowvar.ot.ot_assignment`, table2's ``ot_method``/``max_exact``/…, its "ot" seed),
   re-paired by a derangement π (:func:`flowvar.ot.adversarial_pairs`): training pair i is (x0_i, x1_σ(π(i)));
3. per noise level s: the exact CFM(s) minimiser on those N pairs integrated by Euler (table2's ``euler_steps``)
   from every training source (:func:`~flowvar.experiments._exact_minimiser.exact_minimiser_endpoints`, float64);
4. per s, over the N endpoints x̂_i: the fraction whose nearest training image is the shuffled partner x1_σ(π(i))
   (and the OT partner x1_σ(i)) (:func:`flowvar.metrics.pairing_accuracy`), the mean pixel L2 ‖x̂_i − x1_σ(π(i))‖
   and ‖x̂_i − x1_σ(i)‖ on the flattened [−1, 1] tensor, and s / the training lines' median spacing
   (:func:`~flowvar.experiments._imaging.median_line_spacing`; the minimiser starts losing pairs only from
   s / spacing ≈ 0.37–0.49, :data:`flowvar.advisor.SIGMA_OVER_SPACING_ONSET`).

The full check (N = 512, s = 0.05, 0.5, 2; some 8 min of CPU time on one thread, the cost being B × N × D per
Euler step) writes the published ``results/checks/exact_minimiser_image_dimension.json``; ``--quick`` is a 32-image
smoke version (seconds)::

    python examples/exact_minimiser_image_dimension.py                 # the published check
    python examples/exact_minimiser_image_dimension.py --quick --out /tmp/check.json

Deterministic: every random number comes from table2's named streams of ``--seed`` (replicate 0) and ``data_seed``;
on the CPU in float64 a rerun gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flowvar.advisor import SIGMA_OVER_SPACING_ONSET
from flowvar.experiments import table2
from flowvar.experiments._exact_minimiser import exact_minimiser_endpoints
from flowvar.experiments._image_data import describe_data, load_subset, nested_subset
from flowvar.experiments._imaging import median_line_spacing
from flowvar.experiments.config import build_config
from flowvar.experiments.registry import get_experiment
from flowvar.metrics import pairing_accuracy
from flowvar.ot import adversarial_pairs, ot_assignment
from flowvar.results import versions
from flowvar.seeding import Streams

DEFAULT_OUT = Path("results/checks/exact_minimiser_image_dimension.json")
SIGMAS = (0.05, 0.5, 2.0)
"""table2's σ = 0.05 and the two larger values the docs quote (table2.md, table3.md)."""
FULL_N, QUICK_N = 512, 32
RESOLUTION, CHANNELS = 64, 3
"""CelebA 64² RGB, the paper's Table 2/3 setting: D = 3 × 64 × 64 = 12 288."""


def check_config(n: int, seed: int) -> table2.Table2Config:
    """table2's full-scale config (its YAML) with the data at the paper's image dimension and one data-set size
    ``n``: the loader, OT and Euler settings are table2's own. Validated as ``flowvar run table2 --set ...`` is."""
    overrides = {"resolution": str(RESOLUTION), "channels": str(CHANNELS), "ns": str(n), "n_seeds": "1",
                 "seed": str(seed), "device": "cpu"}
    return build_config(get_experiment("table2"), overrides=overrides)


def run_check(n: int, sigmas: tuple[float, ...], seed: int, log: Any = None) -> dict[str, Any]:
    """The measurement (module docstring) for ``n`` images and noise levels ``sigmas``: a JSON-ready dict."""
    config = check_config(n, seed)
    images = nested_subset(load_subset(config, n, "ns"), n, config.data_seed)  # table2: prepare + nested_subset
    x1 = images.images  # (N, 3, 64, 64) in [−1, 1]
    rep = Streams(config.seed).replicate(0)  # table2's replicate 0: its sources, OT seed and derangement
    gen = rep.generator("sources", n)
    x0 = torch.randn(x1.shape, generator=gen)
    assignment = ot_assignment(x0, x1, method=config.ot_method, max_exact=config.max_exact,  # type: ignore[arg-type]
                               block_size=config.ot_block_size, refine_rounds=config.ot_refine_rounds,
                               seed=rep.derive_seed("ot", n))
    pairs = adversarial_pairs(x0, x1, assignment, gen)
    ot_partner, shuffled = pairs.original_x1, pairs.x1
    # partner indices into x1 (the training images), as table2's nearest-image fractions read them
    ot_index = assignment.permutation
    shuffled_index = assignment.permutation[pairs.permutation]
    spacing = median_line_spacing(x0, shuffled)
    reference = float((ot_partner - shuffled).flatten(1).double().norm(dim=1).mean())
    rows = []
    for sigma in sigmas:
        start = time.perf_counter()
        # from every training source (table2 evaluates min(N, eval_max) of them; eval_max 2000 >= N here)
        exact = exact_minimiser_endpoints(x0, shuffled, sigma, steps=config.euler_steps, rows=config.eval_batch)
        row = {
            "sigma": sigma,
            "nearest_is_shuffled_partner": pairing_accuracy(exact, x1.flatten(1), shuffled_index).accuracy,
            "nearest_is_ot_partner": pairing_accuracy(exact, x1.flatten(1), ot_index).accuracy,
            "mean_l2_to_shuffled_partner": float((exact - shuffled.flatten(1).double()).norm(dim=1).mean()),
            "mean_l2_to_ot_partner": float((exact - ot_partner.flatten(1).double()).norm(dim=1).mean()),
            "sigma_over_line_spacing": sigma / spacing,
            "runtime_s": round(time.perf_counter() - start, 2)}
        rows.append(row)
        if log is not None:
            print(f"σ = {sigma:g}: nearest image is the shuffled partner for {row['nearest_is_shuffled_partner']:.1%} "
                  f"of {n}; mean L2 to it {row['mean_l2_to_shuffled_partner']:.3g}, to the OT partner "
                  f"{row['mean_l2_to_ot_partner']:.3g}; σ / spacing {row['sigma_over_line_spacing']:.3g} "
                  f"({row['runtime_s']:.0f} s)", file=log, flush=True)
    return {
        "config": {"experiment_config": "table2 (its YAML, full scale) with --set " + " ".join(
                       f"{k}={v}" for k, v in {"resolution": RESOLUTION, "channels": CHANNELS, "ns": n,
                                               "n_seeds": 1, "seed": seed, "device": "cpu"}.items()),
                   "n": n, "dimension": int(x1[0].numel()), "image_shape": list(x1.shape[1:]),
                   "sigmas": list(sigmas), "seed": config.seed, "replicate": 0, "data_seed": config.data_seed,
                   "euler_steps": config.euler_steps, "rows": config.eval_batch, "ot_method": config.ot_method,
                   "max_exact": config.max_exact, "sources": "N(0, I), the replicate's 'sources' stream",
                   "coupling": "OT pairs re-paired by a derangement (flowvar.ot.adversarial_pairs)",
                   "endpoints": "exact_minimiser_endpoints (EmpiricalField, float64, Euler) from all N training "
                                "sources"},
        "data": describe_data(config, images),
        "ot": {"method": assignment.method, "mean_cost": assignment.cost},
        "median_line_spacing": spacing,
        "sigma_over_spacing_onset": list(SIGMA_OVER_SPACING_ONSET),
        "mean_distance_ot_vs_shuffled_partner": reference,
        "per_sigma": rows,
    }


def _sigmas(text: str) -> tuple[float, ...]:
    """``--sigmas 0.05,0.5,2`` → (0.05, 0.5, 2.0); each > 0 (s = 0 is Prop 2's memorising field, exact already)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sigmas takes comma-separated numbers such as 0.05,0.5,2; got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError(f"--sigmas must all be finite and > 0, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N} instead of {FULL_N} (a smoke test)")
    parser.add_argument("--n", type=int, default=None, help="number of images N (default: 512, or 32 with --quick)")
    parser.add_argument("--sigmas", type=_sigmas, default=SIGMAS, help="noise levels (default 0.05,0.5,2)")
    parser.add_argument("--seed", type=int, default=0, help="table2's seed (replicate 0 of it); default 0")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JSON file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    n = args.n if args.n is not None else QUICK_N if args.quick else FULL_N
    if n < 2:
        parser.error(f"--n must be at least 2 (a derangement needs two pairs), got {n}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run_check(n, args.sigmas, args.seed, log=sys.stdout)
    command = "python examples/exact_minimiser_image_dimension.py" + (" --quick" if args.quick else "") + (
        f" --n {args.n}" if args.n is not None else "") + (
        f" --sigmas {','.join(f'{s:g}' for s in args.sigmas)}" if args.sigmas != SIGMAS else "") + (
        f" --seed {args.seed}" if args.seed else "")
    out = {"check": "the exact CFM(σ) minimiser at the paper's image dimension D = 12 288 (digits upsampled to "
                    "64 × 64 × 3): does it return each source's shuffled training partner?",
           "command": command, "quick": args.quick, **result,
           "threads": torch.get_num_threads(), "device": "cpu", "versions": versions(),
           "runtime_s": round(time.perf_counter() - start, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {out['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
