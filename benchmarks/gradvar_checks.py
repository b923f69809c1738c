"""What gradvar.py's figures are judged by: the exactness check and the targets' verdicts.

* Exactness: every flowvar result is compared with a reference independent of flowvar's engine — float64
  per-sample gradients from ``torch.func`` over the whole batch (:func:`reference_moments`, untimed) — and with the
  timed independent methods that measured every parameter (BackPACK when complete, Opacus, ``torch.func``, the
  loop); flowvar's own variants (trace, element-wise, ``own_grads=False``) are never each other's reference.
* Targets: a ratio is the median of per-round ratios with its 95% sign-test interval (``_common.paired_ratio``);
  :func:`bound_verdict` names a target at its bound when the interval includes it, as cfm_step.py does for its
  parity. The memory target is judged on growth with B (:func:`memory_verdict`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _common import fmt_paired, fmt_ratio, table
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Batch = tuple[Tensor, Tensor, Tensor]  # x, t, u
Paired = tuple[float, float, float]  # median per-round ratio and its 95% interval (_common.paired_ratio)
OWN_OFF = "flowvar trace, autograd's gradients"
OURS = ("flowvar trace", "flowvar elementwise", OWN_OFF)  # flowvar's engine: never a reference for itself


@dataclass
class Measured:
    """One call's result: ``trace`` = tr Cov(g) (NaN when the method measures none or skipped parameters), a
    ``note`` for the table, ``sq_sum`` = {parameter name: Σ_i g_i ⊙ g_i} from the element-wise methods whose
    result is checked against the reference (:func:`reference_moments`), and flowvar's ``rules`` = {parameter name:
    how the engine measured it} (``BatchGradStats.rules``: 'conv2d-owned', 'conv2d-ghost', …), which the profiles
    count (gradvar_ablations.py)."""

    trace: float
    note: str = ""
    sq_sum: dict[str, Tensor] | None = None
    rules: dict[str, str] | None = None


Runner = Callable[[], Measured]


def reference_moments(model: nn.Module, batch: Batch, chunk_bytes: int = 256 << 20
                      ) -> tuple[float, dict[str, Tensor]]:
    """The exactness reference, independent of flowvar's engine: torch.func per-sample gradients in float64.

    g_i = ∇_θ ‖v(x_i, t_i) − u_i‖² from ``vmap(grad(...))`` on a float64 copy of the model, over chunks of the batch
    (≤ ``chunk_bytes`` of per-sample gradients at a time, so every B fits); returns tr Cov(g) =
    (1/B) Σ_i ‖g_i‖² − ‖(1/B) Σ_i g_i‖² and {parameter name: Σ_i g_i ⊙ g_i} (float64, the parameter's shape).
    Untimed; it costs about a float64 ``torch.func vmap`` row.
    """
    m = copy.deepcopy(model).double()
    params = {k: v.detach() for k, v in m.named_parameters()}
    B = batch[0].shape[0]
    chunk = max(1, chunk_bytes // (8 * sum(v.numel() for v in params.values())))

    def loss(p: dict[str, Tensor], xi: Tensor, ti: Tensor, ui: Tensor) -> Tensor:
        return (functional_call(m, p, (xi[None], ti[None])) - ui[None]).pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    sq_sum = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, B, chunk):
        grads = per_sample(params, *(b[start:start + chunk].double() for b in batch))
        for k, g in grads.items():
            total[k] += g.sum(0)
            sq_sum[k] += g.pow(2).sum(0)
    trace = (sum(float(v.sum()) for v in sq_sum.values()) / B
             - sum(float(v.pow(2).sum()) for v in total.values()) / B**2)
    return trace, sq_sum


@dataclass
class Agreement:
    """Relative differences: ``ours`` = max over flowvar's variants that ran of |trace − reference| / reference;
    ``sq_sum`` = ‖Σ g_i² − reference‖₂ / ‖reference‖₂ (all coordinates) of flowvar's element-wise method (NaN when it
    did not run); ``independent`` = {method: |its trace − flowvar's| / flowvar's} over the timed independent methods
    that measured every parameter (BackPACK when complete, Opacus, vmap, the loop)."""

    ours: float
    sq_sum: float
    independent: dict[str, float]


def agreement(results: dict[str, Measured], reference: tuple[float, dict[str, Tensor]]) -> Agreement:
    """flowvar's results against the float64 reference and against the timed independent methods; flowvar's own
    variants are never compared with each other."""
    ref_trace, ref_sq = reference
    ours = [abs(results[n].trace - ref_trace) / abs(ref_trace) for n in OURS if n in results]
    sq = results["flowvar elementwise"].sq_sum if "flowvar elementwise" in results else None
    sq_err_rel = math.nan
    if sq is not None:
        diff = math.sqrt(sum(float((sq[k].double() - v).pow(2).sum()) for k, v in ref_sq.items()))
        sq_err_rel = diff / math.sqrt(sum(float(v.pow(2).sum()) for v in ref_sq.values()))
    mine = results["flowvar trace"].trace if "flowvar trace" in results else math.nan
    # flowvar's own trace failed: nothing to compare the others with (its failure is in the table's notes)
    independent = {n: abs(r.trace - mine) / abs(mine) for n, r in results.items()
                   if n not in OURS and n != "plain" and math.isfinite(r.trace) and math.isfinite(mine)}
    return Agreement(max(ours) if ours else math.nan, sq_err_rel, independent)


def agreement_note(a: Agreement, notes: dict[str, str]) -> str:
    """The table's agreement cell; names what was compared, and says so when no timed independent method ran."""
    out = (f"vs a float64 torch.func reference (untimed, whole batch): flowvar's traces {a.ours:.1e}"
           + (f", element-wise Σ g_i² {a.sq_sum:.1e}" if math.isfinite(a.sq_sum) else ""))
    if a.independent:
        return out + "; flowvar trace vs " + ", ".join(f"{n} {v:.1e}" for n, v in a.independent.items())
    absent = {n: notes[n].split(":")[0] for n in notes
              if n not in OURS and n != "plain" and not notes[n].startswith("(timed")}
    if absent and set(absent.values()) == {"not run (time)"}:
        return out + "; no timed independent method (at this batch size only flowvar and plain are timed)"
    return out + "; no timed independent method measured every parameter" + (
        f" ({', '.join(f'{n}: {why}' for n, why in absent.items())})" if absent else "")


def bound_verdict(ratios: dict[str, Paired], bound: float) -> str:
    """A target "ratio ≤ bound" judged from per-round ratios (median, 95% interval) as cfm_step.py judges its own:
    'met' when every median is ≤ bound (naming those whose interval still reaches above it as at the bound);
    'inconclusive — at the bound' when the medians above the bound all have intervals reaching down to it;
    'missed' otherwise, naming the settings clearly above the bound (interval entirely above it) and, separately as
    'inconclusive', those above it whose interval includes it: a row's miss must not be read as every setting's.
    A ratio without an interval (under 6 rounds) is judged by its median, and the verdict says so."""
    if not ratios:
        return "n/a (not measured)"
    medians_only = " (medians only: under 6 rounds, no interval)" if any(
        math.isnan(r[1]) for r in ratios.values()) else ""
    above = {k: r for k, r in ratios.items() if r[0] > bound}
    if not above:
        level = [k for k, r in ratios.items() if not math.isnan(r[2]) and r[2] > bound]
        if not level:
            return "met" + medians_only
        return (f"met; {', '.join(level)} at the bound (the 95% interval includes {bound:.2f})" + medians_only)

    def listed(part: dict[str, Paired]) -> str:
        return ", ".join(f"{k} {fmt_paired(r)}" for k, r in part.items())

    at_bound = {k: r for k, r in above.items() if not math.isnan(r[1]) and r[1] <= bound}
    clearly_above = {k: r for k, r in above.items() if k not in at_bound}
    if not clearly_above:
        return (f"**inconclusive — at the bound**: {listed(at_bound)}; the 95% interval includes {bound:.2f}"
                + medians_only)
    inconclusive = (f"; inconclusive (the 95% interval includes {bound:.2f}): {listed(at_bound)}"
                    if at_bound else "")
    return f"**missed**: {listed(clearly_above)}{inconclusive}" + medians_only


def memory_verdict(memory: dict[tuple[str, int], tuple[float, float]], P: int) -> list[str] | None:
    """The memory target judged on growth, not on a level: between the smallest and the largest B, flowvar's
    extra memory per added sample against a plain step's growth per sample (the batch and the activations autograd
    keeps: B·activations) and against P·4 bytes (one per-sample float32 gradient: B·P). Met when it is below
    0.1·P·4 and at most twice the plain step's growth: the engine keeps each layer's output gradient δ (the size of
    the outputs autograd keeps) and its products' workspaces, about the activations' own size again; anything that
    scales with B·P exceeds both."""
    mem = {B: v for (m, B), v in memory.items() if m == "flowvar trace"}
    if len(mem) < 2:
        return None
    failed = sorted(B for B, v in mem.items() if not all(math.isfinite(x) for x in v))
    if failed:  # a child process that failed measured nothing: not a target missed
        return ["flowvar peak extra memory independent of B·P (grows with B·activations only)",
                f"not measured at B = {', '.join(map(str, failed))} (the measuring process failed: see its log)",
                "n/a (measurement failed)"]
    low, high = min(mem), max(mem)
    ours = (mem[high][0] - mem[low][0]) / (high - low) * 2**20  # bytes per added sample
    plain = (mem[high][1] - mem[low][1]) / (high - low) * 2**20
    detail = (", ".join(f"B={B}: {mem[B][0]:.0f} MiB (B·P·4 = {B * P * 4 / 2**20:.0f} MiB)" for B in sorted(mem))
              + f"; growth B={low}→{high}: {ours / 1024:.1f} KiB per sample, against {plain / 1024:.1f} KiB for a "
              f"plain step's activations and {P * 4 / 1024:.0f} KiB for one per-sample gradient")
    ok = ours <= 2 * max(plain, 0.0) and ours < 0.1 * P * 4
    return ["flowvar peak extra memory independent of B·P (grows with B·activations only: per added sample ≤ 2× a "
            "plain step's growth and < 0.1·P·4 bytes)", detail, "met" if ok else "**missed**"]


def largest_gap(judged: list[tuple[str, str, Paired]], of_medians: dict[tuple[str, str], float]) -> str:
    """Where a paired ratio (median of per-round ratios) and the tables' ratio of medians (median time over median
    time, each over its own column of rounds) differ most, among the ``judged`` (method, setting, paired) that
    ``of_medians`` {(method, setting): ratio of medians} also holds, as text: "<method> <setting>: 0.99× in its table
    against 1.18× paired"; "" when none is in both. The two are computed from the same rounds, but under load that
    drifts between rounds the two medians can come from different rounds, so they differ by more than rounding."""
    both = [(abs(of_medians[(m, k)] - r[0]), m, k, r) for m, k, r in judged if (m, k) in of_medians]
    if not both:
        return ""
    _, method, setting, paired = max(both, key=lambda g: g[0])
    return (f"{method} {setting}: {fmt_ratio(of_medians[(method, setting)])} in its table against "
            f"{fmt_ratio(paired[0])} paired")


def targets(mlp_paired: dict[tuple[int, int], dict[str, Paired]], monitor_paired: dict[tuple[int, int], Paired],
            memory: dict[tuple[str, int], tuple[float, float]], P: int,
            image_paired: dict[tuple[str, str, int], dict[str, Paired]],
            of_medians: dict[tuple[str, str], float] | None = None) -> list[str]:
    """The issues' targets (issue 20's ratios; issue 4's comparisons and memory), each with the measured figures it
    rests on and a verdict (:func:`bound_verdict`, :func:`memory_verdict`). ``of_medians``: the tables' ratios of
    medians {(method, setting): ratio} of the same settings (methods as in the paired dicts, "monitor (defaults)"
    for the monitor; settings as this table names them), so the text can say how far the two kinds differ in this
    run (:func:`largest_gap`)."""
    judged: list[tuple[str, str, Paired]] = []  # (method, setting, paired ratio) of every row below

    def mlp(method: str, min_B: int) -> dict[str, Paired]:
        out = {f"d={d} B={B}": r[method] for (d, B), r in sorted(mlp_paired.items()) if min_B <= B and method in r}
        judged.extend((method, k, r) for k, r in out.items())
        return out

    def image(kind: str, method: str) -> dict[str, Paired]:
        out = {f"{label} B={B}": r[method] for (k, label, B), r in image_paired.items() if k == kind and method in r}
        judged.extend((method, k, r) for k, r in out.items())
        return out

    def row(what: str, ratios: dict[str, Paired], bound: float, absent: str = "not measured") -> list[str]:
        return [what, ", ".join(f"{k}: {fmt_paired(r)}" for k, r in ratios.items()) or absent,
                bound_verdict(ratios, bound)]

    rows = []
    for what, ratios, bound in (
            ("MLP, trace, B ≥ 1024", mlp("flowvar trace", 1024), 1.10),
            ("MLP, element-wise, B ≥ 1024", mlp("flowvar elementwise", 1024), 1.40),
            ("UNet (16² and 32², B = 32 and 128), trace", image("UNet", "flowvar trace"), 1.30),
            ("UNet, element-wise", image("UNet", "flowvar elementwise"), 1.60),
            ("DiT (`DiTField`), trace", image("dit", "flowvar trace"), 1.30),
            ("`nn.TransformerEncoderLayer` transformer, trace", image("mha", "flowvar trace"), 1.30)):
        rows.append(row(f"{what} ≤ {bound:.2f}× plain forward+backward", ratios, bound))
    monitor = {f"d={d} B={B}": r for (d, B), r in sorted(monitor_paired.items()) if B == 256}
    judged.extend(("monitor (defaults)", k, r) for k, r in monitor.items())
    rows.append(row("monitor at its defaults, every step, MLP B = 256 ≤ 1.15× a plain training step", monitor, 1.15))
    for ours, theirs in (("flowvar trace", "BackPACK BatchL2Grad"), ("flowvar elementwise", "BackPACK Variance")):
        rows.append(row(f"{ours} faster than {theirs} (MLP; ratio = {ours} / {theirs} < 1)",
                        mlp(f"{ours} / {theirs}", 0), 1.0, absent="BackPACK not installed"))
    memory_row = memory_verdict(memory, P)
    if memory_row is not None:
        rows.append(memory_row)
    gap = largest_gap(judged, of_medians or {})
    return ["### Targets (issue 20; the comparisons and memory of issue 4)", "",
            "Computed by this script from the runs above. A ratio here is the median of the per-round ratios "
            "(flowvar and its comparison ran in the same round (order shuffled), so load that drifts between "
            "rounds cancels), with its 95% sign-test interval in brackets (`paired_ratio` in "
            "benchmarks/_common.py). The tables' ratio "
            "column divides two medians instead, each taken over its own column of the same rounds; when the load "
            "drifts between rounds those medians can come from different rounds, so the two ratios differ by more "
            "than rounding" + (f" (in this run at most for {gap})" if gap else "") + ". A target whose bound lies "
            "inside the interval is at the bound: named when the median meets it, judged inconclusive when the "
            "median misses it. Where a target is missed, docs/gradient_variance.md says where the time goes.", "",
            table(["target", "measured", "verdict"], rows), ""]
