"""The audit's four measurements. Each returns a :class:`Section`: its claim (judged by a rule of
:mod:`flowvar.audit.rules`), the numbers behind it, and its figures as PNG bytes (nothing is written here).

Every formula lives in the library module that owns it; this file only wires them:
endpoints from :func:`flowvar.sampling.integrate`, nearest neighbours, pairing accuracy, MMD and partner distances from
:mod:`flowvar.metrics`, the exact OT partner from :mod:`flowvar.ot`, the memorisation score and the train/held-out
nearest-neighbour ratio from :mod:`flowvar.metrics`, the gradient variance from :mod:`flowvar.variance`.

Why this module is long: it holds the four measurements of one report side by side — each with its claim, its text
and its figure — so a reader checks the whole audit's wiring in one file; each measurement is one function.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowvar.audit import rules
from flowvar.audit.adapters import AdaptedField, Conditioned, PackedLabels, pack_labels
from flowvar.audit.streams import audit_generator
from flowvar.data import ROW_ORDER_RULE
from flowvar.metrics import (
    as_matrix,
    median_heuristic,
    mmd2,
    nearest_neighbours,
    nn_distance_ratio,
    nn_train_over_heldout,
    pairing_accuracy,
    partner_distances,
)
from flowvar.ot import exact_ot_permutation
from flowvar.results import Claim, Precondition, judge
from flowvar.sampling import FIXED_METHODS, integrate

#: Integration batch: bounds memory for any number of training sources or fresh samples.
INTEGRATE_CHUNK = 512
#: How many closest copies the image grid shows.
GRID_COPIES = 8


@dataclass
class Section:
    """One test of the audit: ``key`` (pairs, copies, gap, gradient), ``title``, its ``claim``, the ``metrics`` it
    measured, ``figures`` (file name → PNG bytes) and ``text`` (what it found, in a sentence or two)."""

    key: str
    title: str
    claim: Claim
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    text: str = ""


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()  # side-by-side panels: keep one panel's axis label out of its neighbour
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def endpoints(field_: nn.Module, x0: Tensor, method: str, steps: int, labels: Tensor | None = None) -> Tensor:
    """ODE endpoints x̂1 of ``x0`` (n, *shape) under ``field_``, integrated INTEGRATE_CHUNK rows at a time; CPU.
    ``labels`` (n,): each row's class label, for a class-conditional :class:`AdaptedField`."""
    if labels is None:
        parts = [integrate(field_, x0[i:i + INTEGRATE_CHUNK], method=method, steps=steps).x1.detach().cpu()
                 for i in range(0, x0.shape[0], INTEGRATE_CHUNK)]
    else:
        assert isinstance(field_, AdaptedField)
        parts = [integrate(Conditioned(field_, labels[i:i + INTEGRATE_CHUNK]), x0[i:i + INTEGRATE_CHUNK],
                           method=method, steps=steps).x1.detach().cpu()
                 for i in range(0, x0.shape[0], INTEGRATE_CHUNK)]
    return torch.cat(parts)


def adaptive_method(method: str) -> bool:
    """Whether ``method`` chooses its own steps (every torchdiffeq solver that is not one of
    :data:`flowvar.sampling.FIXED_METHODS`, e.g. dopri5), so that ``steps`` only sets the times it saves and two step
    counts give one and the same solve."""
    return method not in FIXED_METHODS


#: The coarse reading of pair recovery under an adaptive method, which has no coarse grid of its own: Euler on
#: ``coarse_steps``, the grid Prop 2's solver dependence shows on (coarse Euler grids jump over the turning of a
#: memorised field that an adaptive solve follows; docs/experiments/solver_resolution.md).
ADAPTIVE_COARSE_METHOD = "euler"


def grid_text(grid: dict[str, Any]) -> str:
    """How one pair-recovery reading integrated: "dopri5, adaptive steps" or "euler, 10 steps" ("10 steps" for a
    reading saved before it recorded its method)."""
    if "method" not in grid:
        return f"{grid.get('steps', '–')} steps"
    return f"{grid['method']}, adaptive steps" if grid.get("adaptive") else f"{grid['method']}, {grid['steps']} steps"


def class_groups(labels: Tensor) -> list[Tensor]:
    """The row indices of each class present in ``labels`` (n,), in class order."""
    return [torch.nonzero(labels == c).reshape(-1) for c in torch.unique(labels).tolist()]


def own_partner_correct(end: Tensor, targets: Tensor, groups: list[Tensor]) -> Tensor:
    """(n,) bool: whether endpoint i's nearest target among its class's (``groups``: :func:`class_groups`, or one
    group of all rows) is its own partner ``targets[i]`` (:func:`flowvar.metrics.pairing_accuracy`)."""
    correct = torch.zeros(end.shape[0], dtype=torch.bool)
    for rows in groups:
        correct[rows] = pairing_accuracy(end[rows], targets[rows]).correct.cpu()
    return correct


# --------------------------------------------------------------------------------------------- 1. pair recovery


def pair_recovery(field_: nn.Module, x0: Tensor, x1: Tensor, *, method: str, steps: int, coarse_steps: int,
                  labels: Tensor | None = None, generator: torch.Generator | None = None,
                  heldout: Tensor | None = None, real: RealCopyBaseline | None = None) -> Section:
    """Integrate every training source x0_i (N, *shape) and ask whether its endpoint's nearest training target is its
    own partner x1_i, on a fine (``steps``) and a coarse (``coarse_steps``) grid of ``method``. An adaptive
    ``method`` (:func:`adaptive_method`) is one solve whatever the steps, so the fine reading is that solve and the
    coarse one is :data:`ADAPTIVE_COARSE_METHOD` on ``coarse_steps``: the rule's two readings stay two solvers.

    a_own = (1/N) Σ 1[argmin_j ‖x̂1_i − x1_j‖ = i]; a_ot likewise with the exact-OT partner σ(i) of x0_i
    (:func:`flowvar.ot.exact_ot_permutation`); the rule uses the pairs with σ(i) ≠ i and their memorisation score
    m = (a − c)/(1 − c) with chance c = 1/N (:func:`flowvar.metrics.memorisation_score`; with repeated targets,
    which count as one target, c = the mean over the scored pairs of the share of targets equal to the partner).

    With class ``labels`` (N,) (a class-conditional model, integrated under each source's label) everything is
    within the class: the nearest target among the N_c items of class c, the class-wise exact-OT partner (what a
    generalising conditional field reaches), and chance 1/N_c averaged over the pairs scored, so that
    m = (a − chance)/(1 − chance).

    With continuous conditions ``labels`` (N, *cond_shape) float there are no classes: the nearest target is searched
    among all N training targets, the OT partner is the global one, and chance is measured per grid: b = the share
    of fresh noise (one draw per training item, from ``generator``), integrated under item i's condition, that ends
    nearest x1_i (over the same pairs as a); chance = max(1/N, b), m = (a − chance)/(1 − chance). b is what the
    condition alone achieves: a condition that determines its item (b > PAIR_MAX_CONDITION_BASELINE) makes the test
    untestable.

    Endpoints that land on a training item (a copy by the copy test's ratio) that is neither their own nor their OT
    partner, a share l of the sources, are what memorised lines integrated from misaligned --pairs look like. l is
    judged against the real-data copy share b (:func:`real_copy_baseline`: ``heldout`` (H, *shape) items against the
    training set, else leave one out) by :func:`flowvar.audit.rules.pair_landing_suspect`: a generalising field lands
    like real data, and in low dimension real data "copy" nearly always (b > COPY_MAX_BASELINE: not checked).
    """
    n = x0.shape[0]
    x1c = x1.detach().cpu()
    continuous = labels is not None and labels.is_floating_point()
    groups = class_groups(labels.cpu()) if labels is not None and not continuous else [torch.arange(n)]
    perm = torch.arange(n)
    for rows in groups:  # the (class-wise) exact-OT partner of every source
        local = exact_ot_permutation(x0[rows].detach().cpu().double(), x1c[rows].double()).cpu()
        perm[rows] = rows[local]
    # value-wise: with repeated targets, OT may pick another copy of a source's own partner, which is still its own
    off = ~(x1c[perm] == x1c).flatten(1).all(1)
    n_off = int(off.sum())
    class_size, copies = torch.empty(n), torch.empty(n)
    for rows in groups:
        class_size[rows] = float(rows.numel())
        _, which, counts = torch.unique(x1c[rows].flatten(1), dim=0, return_inverse=True, return_counts=True)
        copies[rows] = counts[which].to(copies.dtype)  # how many targets of the class share this one's value
    # chance that the nearest target is the own partner's value: its copies over the class size (1/N_c without
    # repeats)
    chance = float((copies[off] / class_size[off]).mean()) if n_off else 1.0 / n
    fresh = None
    if continuous:  # fresh noise, one per training item, under that item's condition: the condition's own pull
        # the audit's own stream for this part: never torch's seed-0 stream, which training data often come from
        gen = generator if generator is not None else audit_generator(0, "pairs")
        fresh = torch.randn(x0.shape, generator=gen, dtype=x0.dtype).to(x0.device)
    adaptive = adaptive_method(method)
    coarse_method = ADAPTIVE_COARSE_METHOD if adaptive else method
    grids: dict[str, dict[str, Any]] = {}
    for name, solver, k in (("fine", method, steps), ("coarse", coarse_method, coarse_steps)):
        end = endpoints(field_, x0, solver, k, labels)
        ot_correct = torch.zeros(n, dtype=torch.bool)
        own_correct = own_partner_correct(end, x1c, groups)
        for rows in groups:
            local_perm = torch.searchsorted(rows, perm[rows])  # rows is sorted: the partner's place in the class
            ot_correct[rows] = pairing_accuracy(end[rows], x1c[rows], local_perm).correct.cpu()
        acc_off = float(own_correct[off].double().mean()) if n_off else math.nan
        dist = partner_distances(end, {"own": x1c, "ot": x1c[perm]})
        # endpoints that land on a training target (a copy by the copy test's ratio) other than their own partner:
        # memorised lines whose sources are not row-aligned with the targets look like this
        landed = knn_ratio(end, x1c, min(rules.COPY_K, n))[0].cpu() < rules.COPY_RATIO
        landed_other = float((landed & ~own_correct & ~ot_correct).double().mean())
        extra: dict[str, float] = {}
        if fresh is not None:  # continuous conditions: the measured chance of this grid
            fresh_end = endpoints(field_, fresh, solver, k, labels)
            fresh_correct = pairing_accuracy(fresh_end, x1c).correct.cpu()
            baseline = float(fresh_correct[off].double().mean()) if n_off else math.nan
            grid_chance = max(1.0 / n, baseline) if n_off else 1.0 / n
            score = (acc_off - grid_chance) / (1.0 - grid_chance) if n_off and grid_chance < 1 else math.nan
            extra = {"condition_baseline": baseline, "chance": grid_chance}
        else:  # memorisation_score's (a − chance)/(1 − chance), with the class-wise chance (and repeated targets)
            score = (acc_off - chance) / (1.0 - chance) if n_off and chance < 1 else math.nan
        adaptive_solve = adaptive and solver == method  # its steps only set the times it saves
        grids[name] = {"method": solver, "adaptive": adaptive_solve, "steps": None if adaptive_solve else k,
                       "accuracy_own": float(own_correct.double().mean()),
                       "accuracy_ot": float(ot_correct.double().mean()), "accuracy_own_off_ot": acc_off,
                       "score": score, "l2_own.median": dist["own"].median, "l2_ot.median": dist["ot"].median,
                       "landed_on_other_target": landed_other, **extra}
    fine, coarse = grids["fine"], grids["coarse"]
    if continuous:
        chance = fine["chance"]
    # how often real data land on a training item: the reference for the endpoints that land on other ones
    if real is None:  # the audit measures it once for this section and the copy test
        real = real_copy_baseline(x1c, heldout.detach().cpu() if heldout is not None else None)
    landed = fine["landed_on_other_target"]
    checked = rules.pair_landing_checkable(real.share)
    suspect = rules.pair_landing_suspect(landed, real.share)
    disagree = abs(fine["score"] - coarse["score"]) > rules.GRID_DISAGREE
    share = n_off / n
    pre_text = (f"at least {rules.PAIR_MIN_OFF_OT} training pairs, and {rules.PAIR_MIN_OFF_OT_SHARE:.0%} of them, "
                f"are not the exact-OT pairing (recovering OT pairs is what a generalising OT-like field does too)")
    pre_ok = n_off >= rules.PAIR_MIN_OFF_OT and share >= rules.PAIR_MIN_OFF_OT_SHARE
    pre_values: dict[str, Any] = {"n_pairs": n, "n_off_ot": n_off, "share_off_ot": share}
    pre_fix = "pass more training pairs, or pairs that are not an OT matching"
    baseline = math.nan
    if continuous:
        baseline = max(fine["condition_baseline"], coarse["condition_baseline"])
        pre_text += (f"; fresh noise under a training item's own condition ends nearest that item in at most "
                     f"{rules.PAIR_MAX_CONDITION_BASELINE:.0%} of cases (else the condition alone determines the "
                     f"item and reaching it says nothing about the pairs)")
        pre_ok = pre_ok and baseline <= rules.PAIR_MAX_CONDITION_BASELINE
        pre_values["condition_baseline"] = baseline
        if baseline > rules.PAIR_MAX_CONDITION_BASELINE:
            pre_fix = ("none for these conditions: they determine their items; read the copy and gap tests under "
                       "held-out conditions (--heldout with --heldout-conditions) and the gradient test")
    pre = Precondition(pre_text, pre_ok, pre_values, pre_fix)
    score_rule = ("(a − c)/(1 − c), c = max(1/N, share of fresh noise under the item's own condition ending "
                  "nearest the item)," if continuous else
                  "(a − c)/(1 − c), c = the mean over the scored pairs of 1/N_c, N_c the size of the pair's class "
                  "(with repeated targets: the share of the class's targets equal to the partner)"
                  if labels is not None else
                  "(a − c)/(1 − c), c = 1/N (with repeated targets: the mean share of targets equal to the partner)")
    evidence = {"n_pairs": n, "chance": chance, "method": method, "fine": fine,
                "coarse": coarse, "grids_disagree": disagree, "n_off_ot": n_off,
                "class_conditional": labels is not None and not continuous,
                "n_classes": len(groups) if labels is not None and not continuous else None,
                "continuous_conditions": continuous,
                "condition_baseline": baseline if continuous else None,
                "landing_baseline": real.share, "landing_baseline_source": real.source,
                "landing_excess": rules.pair_landing_excess(landed, real.share), "landing_checked": checked,
                "landing_suspect": suspect}
    both = (f" (the adaptive {method} solve and {coarse_method} on {coarse_steps} steps: {method}'s steps only set "
            f"its save times)" if adaptive else "")
    claim = judge("audit.pair_recovery",
                  "Integrating each training source ends at its own training partner (pair memorisation, Prop 2)",
                  evidence, kind="finding",
                  verdict=rules.pair_recovery_verdict(fine["score"], coarse["score"], landed, real.share),
                  precondition=pre,
                  rule=f"memorisation score m = {score_rule} of the pairs whose partner is not their OT "
                       f"partner: memorising if m ≥ {rules.PAIR_MEMORISE} on both grids{both}, generalising if m ≤ "
                       f"{rules.PAIR_GENERALISE} on both, else inconclusive; inconclusive also when the endpoints land "
                       f"on other training items (a copy by the copy test's ratio; misaligned pairs or copying) "
                       f"beyond what real data do: e = (l − b)/(1 − b) ≥ {rules.PAIR_MAX_LANDED_OTHER:.0%} (l: share "
                       f"of endpoints, b: of real items — held-out, else leave one out; not checked when b > "
                       f"{rules.COPY_MAX_BASELINE:.2f}, where real data land on training items as often)",
                  min_effect=f"m ≥ {rules.PAIR_MEMORISE} (half the non-OT pairs recovered beyond chance)",
                  replicates="none: every training pair is integrated once per grid")
    within = f" among the items of their class ({len(groups)} classes)" if labels is not None and not continuous \
        else ""
    who = ", each integrated under its own condition," if continuous else ""
    chance_text = (f"chance {evidence['chance']:.1%}: fresh noise under the same condition reaches the item in "
                   f"{fine['condition_baseline']:.1%}" if continuous else f"chance {evidence['chance']:.1%}")
    text = (f"{fine['accuracy_own']:.0%} of the {n} training sources{who} end nearest their own partner{within} on "
            f"the fine grid ({grid_text(fine)}; {chance_text}), {fine['accuracy_ot']:.0%} nearest "
            f"their OT partner; "
            f"coarse grid ({grid_text(coarse) if adaptive else f'{coarse_steps} steps'}): "
            f"{coarse['accuracy_own']:.0%} own, {coarse['accuracy_ot']:.0%} OT."
            + (" The two grids disagree: the outcome depends on the solver." if disagree else "")
            + _landing_text(landed, real, checked, suspect)
            + (f" The conditions alone lead to their items ({baseline:.0%} of fresh noise): pair recovery cannot "
               f"tell memorised pairs from a faithful conditional model." if continuous
               and baseline > rules.PAIR_MAX_CONDITION_BASELINE else ""))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    labels = ["own partner", "OT partner", "chance"]
    for j, (name, g) in enumerate((("fine", fine), ("coarse", coarse))):
        bars = [g["accuracy_own"], g["accuracy_ot"], g.get("chance", evidence["chance"])]  # per grid: continuous
        ax.bar(np.arange(3) + 0.38 * j, bars, 0.38,
               label=f"{name} ({grid_text(g)})")
    ax.set_xticks(np.arange(3) + 0.19, labels)
    ax.set_ylabel("share of training sources")
    ax.set_ylim(0, 1.05)
    ax.set_title("Pair recovery: whose target does each training source reach?")
    ax.legend()
    return Section("pairs", "Pair recovery", claim, {"pairs": evidence}, {"pair_recovery.png": png(fig)}, text)


def landing_question(landed: float, baseline: float, baseline_source: str) -> str:
    """Pair recovery's row-alignment question when its landing check fired: a share ``landed`` of the training
    sources' endpoints land on other training items while a share ``baseline`` of real data (``baseline_source``) are
    copies — the one wording of the report, the console, ``flowvar show`` and saved audits read back."""
    return (f"{landed:.0%} of the training sources' endpoints land on a training item that is neither their own nor "
            f"their OT partner, "
            f"while {baseline:.0%} of real data ({baseline_source}) count as copies of a training item: "
            f"{rules.ROW_ALIGNMENT_QUESTION}")


def name_order(files: list[str]) -> Tensor | None:
    """The other natural order of a class-folder layout's rows (``files``: relative paths in row order): all files
    by file name across the subfolders (ties by relative path) — position k holds the row of the k-th file so
    sorted. None when no file lies in a subfolder or the two orders agree."""
    if not any("/" in f.replace("\\", "/") for f in files):
        return None
    order = sorted(range(len(files)), key=lambda i: (files[i].replace("\\", "/").rsplit("/", 1)[-1], files[i]))
    return None if order == list(range(len(files))) else torch.tensor(order)


def pair_order_check(field_: nn.Module, x0: Tensor, x1: Tensor, files: list[str], share_loader: float, *,
                     method: str, steps: int, labels: Tensor | None = None) -> dict[str, Any] | None:
    """Whether ``--pairs`` (N, *shape) follow another row order than the loader's: read as ordered by
    :func:`name_order` (row k the source of the k-th file by name), the sources are realigned to the loader's rows,
    integrated (fine grid) and the share b of endpoints whose nearest target in their class is their own partner
    compared with the loader order's share a (``share_loader``, pair recovery's fine ``accuracy_own``) by
    :func:`flowvar.audit.rules.pair_order_suspect`. None when there is no other order."""
    order = name_order(files)
    if order is None:
        return None
    realigned = torch.empty_like(x0)
    realigned[order] = x0  # row k of --pairs is then the source of the file at loader row order[k]
    groups = class_groups(labels.cpu()) if labels is not None and not labels.is_floating_point() \
        else [torch.arange(x0.shape[0])]
    end = endpoints(field_, realigned, method, steps, labels)
    share_other = float(own_partner_correct(end, x1.detach().cpu(), groups).double().mean())
    n = x0.shape[0]
    return {"other_order": "file name across subfolders", "own_partner_loader_order": share_loader,
            "own_partner_name_order": share_other, "n_pairs": n,
            "suspect": rules.pair_order_suspect(share_loader, share_other, n)}


def _not_judged(section: Section, statement: str, measured: dict[str, Any], remedy: str, evidence: dict[str, Any],
                why: str) -> Section:
    """``section`` (a test on the pairs) made untestable because the pairs given are in doubt: its precondition gains
    ``statement`` (failed, with ``measured`` and ``remedy``), its evidence ``evidence``, its text starts with
    "Not judged: ``why``", and its rule's outcome is kept as ``verdict_if_testable``."""
    claim = section.claim
    pre = dict(claim.precondition or {"statement": "", "measured": {}, "remedy": ""})
    pre.update(statement=(f"{pre['statement']}; and " if pre["statement"] else "") + statement, holds=False,
               measured={**pre.get("measured", {}), **measured},
               remedy=(f"{pre['remedy']}; " if pre.get("remedy") and claim.verdict == "untestable" else "") + remedy)
    kept = claim.verdict_if_testable if claim.verdict == "untestable" else claim.verdict
    new_claim = replace(claim, verdict="untestable", precondition=pre, verdict_if_testable=kept,
                        evidence={**claim.evidence, **evidence})
    return replace(section, claim=new_claim, text=f"Not judged: {why}. " + section.text)


def order_in_doubt(section: Section, check: dict[str, Any]) -> Section:
    """``section`` (a test on the pairs) made untestable because :func:`pair_order_check` found ``--pairs``
    aligned with another row order: its precondition gains "--pairs follow --data's row order", its rule's outcome
    kept as ``verdict_if_testable``."""
    a, b = check["own_partner_loader_order"], check["own_partner_name_order"]
    return _not_judged(section, f"--pairs rows follow --data's row order ({ROW_ORDER_RULE})",
                       {"own_partner_loader_order": a, "own_partner_name_order": b},
                       "reorder --pairs to --data's row order (result.json's data_row_order)",
                       {"pair_order_check": check},
                       f"--pairs look ordered by file name across the subfolders ({b:.0%} own partners) rather than "
                       f"--data's order ({a:.0%})")


def alignment_question(pairs: dict[str, Any]) -> str:
    """The row-alignment question of pair recovery's evidence ``pairs`` when its landing check fired
    (``landing_suspect``: the endpoints of the training sources land on other training items beyond what real data
    do, :func:`flowvar.audit.rules.pair_landing_suspect`); "" otherwise. Said beside the verdict, since the pairs
    tests are then not judged (:func:`alignment_in_doubt`)."""
    if not pairs.get("landing_suspect"):
        return ""
    question = landing_question(pairs["fine"]["landed_on_other_target"], pairs["landing_baseline"],
                                pairs["landing_baseline_source"])
    return (f"pair tests: not judged — {question} Sources that are not the model's own give no evidence either way: "
            f"the verdict rests on the fresh-sample tests, and memorised training pairs (Prop 2's memorisation) are "
            f"not excluded")


def alignment_in_doubt(section: Section, pairs: dict[str, Any]) -> Section:
    """The gradient test ``section`` made untestable when pair recovery's landing check fired (evidence ``pairs``,
    :func:`alignment_question`): its training pairs would then be pairs the model never trained on, and λ on them
    reads generalising whatever the model memorised (a 48-pair memoriser with --pairs rolled by one row: λ = 0.62)."""
    e = pairs["landing_excess"]
    return _not_judged(section, f"--pairs are the model's training sources row-aligned with --data: their endpoints "
                                f"land on other training items less than e = (l − b)/(1 − b) = "
                                f"{rules.PAIR_MAX_LANDED_OTHER:.0%} beyond real data (pair recovery's landing check)",
                       {"landed_on_other_target": pairs["fine"]["landed_on_other_target"],
                        "landing_baseline": pairs["landing_baseline"], "landing_excess": e},
                       "check that row i of --pairs is the source trained with --data's row i (same order, same "
                       "items), then rerun",
                       {"pairs_alignment_in_doubt": True},
                       f"pair recovery's endpoints land on other training items beyond real data (e = {e:.2f}): "
                       f"--pairs may not be row-aligned with --data")


def _landing_text(landed: float, real: RealCopyBaseline, checked: bool, suspect: bool) -> str:
    """Pair recovery's sentence on the endpoints that land on other training items (share ``landed``), against the
    real-data copy share: the row-alignment question only when they do so well beyond real data; "" when few land."""
    where = f"{real.share:.0%} of real data ({real.source}) count as copies of a training item"
    if suspect:
        return " " + landing_question(landed, real.share, real.source)
    if landed < rules.PAIR_MAX_LANDED_OTHER:
        return ""
    if not checked:
        return (f" {landed:.0%} of the endpoints land on other training items, as real data do here ({where}, above "
                f"{rules.COPY_MAX_BASELINE:.0%}): at this density landing cannot tell misaligned --pairs from the "
                f"data's own, so row alignment is not checked.")
    return f" {landed:.0%} of the endpoints land on other training items, near what real data do ({where})."


# --------------------------------------------------------------------------------------------- 2. copying


def knn_ratio(x: Tensor, train: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """r_i = d_1 / mean(d_1, …, d_k) over the k nearest training items of each x_i (after Carlini et al. 2023):
    (ratios (n,), nearest distances (n,), nearest indices (n,)). r = 0 when all k distances are 0."""
    d, idx = nearest_neighbours(as_matrix("samples", x), as_matrix("training data", train), k)
    return _ratio_to_mean(d), d[:, 0], idx[:, 0]


def _ratio_to_mean(d: Tensor) -> Tensor:
    """d[:, 0] / mean(d, 1) for sorted neighbour distances d (n, k); 0 where all k are 0."""
    mean = d.mean(1)
    return torch.where(mean > 0, d[:, 0] / mean.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(mean))


def leave_one_out_ratio(train: Tensor, k: int) -> Tensor:
    """:func:`knn_ratio` of each training item against the other N − 1 (its own zero distance left out): how often
    real data has a near-duplicate among the rest of the training set, the copy baseline without held-out data.
    ``k`` ≤ N − 1. (N,)."""
    d, _ = nearest_neighbours(as_matrix("training data", train), as_matrix("training data", train), k + 1)
    return _ratio_to_mean(d[:, 1:])  # the first is the item itself (or an exact duplicate: one zero either way)


@dataclass(frozen=True)
class RealCopyBaseline:
    """How often real data count as copies of a training item (:func:`real_copy_baseline`): ``ratios`` (n,) the real
    items' :func:`knn_ratio`, ``share`` b of them below COPY_RATIO (NaN without items), ``n_effective`` the number of
    independent items it rests on, ``source`` in words, ``heldout`` whether held-out items were used."""

    ratios: Tensor
    share: float
    n_effective: int
    source: str
    heldout: bool


def real_copy_baseline(train: Tensor, heldout: Tensor | None) -> RealCopyBaseline:
    """The real-data copy share b against ``train`` (N, *shape): held-out items (H, *shape) against the training set,
    or without them each distinct training item against the other distinct ones (:func:`leave_one_out_ratio`,
    k = min(COPY_K, N − 1); a repeated item is no near-duplicate of real data — the duplicate is the same item — and
    counting it so would hide copying behind the baseline). Leave-one-out copies come in pairs (nearest neighbours
    are mutual), so they count as half as many independent items. What the copy test measures fresh samples against,
    and pair recovery its endpoints that land on other training items."""
    if heldout is not None:
        ratios = knn_ratio(heldout, train, min(rules.COPY_K, train.shape[0]))[0]
        source, n_effective = "held-out items", int(ratios.numel())
    else:
        distinct = torch.unique(train.flatten(1), dim=0).reshape(-1, *train.shape[1:])
        ratios = leave_one_out_ratio(distinct, min(rules.COPY_K, distinct.shape[0] - 1)) \
            if distinct.shape[0] >= 2 else torch.empty(0)
        source = "training items, each against the others (leave one out; no --heldout)"
        n_effective = int(ratios.numel()) // 2  # mutual nearest neighbours: leave-one-out copies come in pairs
    share = float((ratios < rules.COPY_RATIO).double().mean()) if ratios.numel() else math.nan
    return RealCopyBaseline(ratios, share, n_effective, source, heldout is not None)


def copying(generated: Tensor, train: Tensor, heldout: Tensor | None, conditioned_on: str = "",
            real: RealCopyBaseline | None = None) -> Section:
    """Share of fresh samples that copy a training item: r_i < COPY_RATIO (:func:`knn_ratio`), against the same
    share for real data (the data set's own near-duplicates): held-out items against the training set, or without
    held-out data each training item against the others (:func:`leave_one_out_ratio`); the NN1/NN2 ratio test
    (:func:`flowvar.metrics.nn_distance_ratio`) is reported beside it. ``conditioned_on``: for a model with
    continuous conditions, under which the samples were generated ("training conditions" / "held-out
    conditions"; recorded and said in the text)."""
    n, m = train.shape[0], generated.shape[0]
    k = min(rules.COPY_K, n)
    r, _, nn_idx = knn_ratio(generated, train, k)
    copy_fraction = float((r < rules.COPY_RATIO).double().mean())
    if real is None:
        real = real_copy_baseline(train, heldout)
    r_h, source, n_base, base = real.ratios, real.source, real.n_effective, real.share
    nn12 = nn_distance_ratio(generated, train, rules.COPY_RATIO) if n >= 2 else None
    se = rules.excess_standard_error(copy_fraction, m, base, n_base)
    share = rules.copy_share_estimate(copy_fraction, base)
    share_se = rules.copy_share_standard_error(copy_fraction, m, base, n_base)
    evidence = {"n_samples": m, "n_train": n, "k": k, "copy_fraction": copy_fraction,
                "heldout_copy_fraction": base if heldout is not None else math.nan, "baseline": base,
                "baseline_source": source, "n_baseline": int(r_h.numel()), "n_baseline_effective": n_base,
                "excess": copy_fraction - base, "excess_standard_error": se,
                "copy_share_beyond_baseline": share, "copy_share_beyond_baseline_standard_error": share_se,
                "ratio.median": float(r.median()),
                "nn1_nn2_copy_fraction": nn12.fraction_below if nn12 is not None else math.nan}
    if conditioned_on:
        evidence["conditioned_on"] = conditioned_on
    enough_base = heldout is not None or int(r_h.numel()) >= rules.COPY_MIN_LOO
    room = not base > rules.COPY_MAX_BASELINE  # NaN: judged by the rule (inconclusive)
    pre = Precondition(f"at least {rules.COPY_MIN_TRAIN} training items and {rules.COPY_MIN_SAMPLES} generated "
                       f"samples; without --heldout at least {rules.COPY_MIN_LOO} distinct training items for the "
                       f"leave-one-out baseline; a baseline share ≤ {rules.COPY_MAX_BASELINE:.2f} (room for an "
                       f"excess of {rules.COPY_MEMORISE})",
                       n >= rules.COPY_MIN_TRAIN and m >= rules.COPY_MIN_SAMPLES and enough_base and room,
                       {"n_train": n, "n_samples": m, "n_baseline": int(r_h.numel()), "baseline": base},
                       "pass more training data or raise --samples" if n < rules.COPY_MIN_TRAIN
                       or m < rules.COPY_MIN_SAMPLES else
                       "pass --heldout (real data never trained on) or more training items" if not enough_base else
                       "none at this dimension: nearly every real item has a near-duplicate in the training data, so "
                       "copying cannot be told from the data's own density; read pair recovery and the gap test")
    z = rules.ALLOWANCE_Z
    claim = judge("audit.copying", "Fresh samples copy training items (nearest-neighbour distance ratio test)",
                  evidence, kind="finding",
                  verdict=rules.copying_verdict(copy_fraction, m, base, n_base), precondition=pre,
                  rule=f"copy: d1/mean(d1..d{k}) < {rules.COPY_RATIO:.3g}; p = (c − b)/(1 − b), the share of "
                       f"samples copying beyond real data (c: share of copies among samples, b: among real items — "
                       f"held-out items, or without --heldout each training item against the others), se by the "
                       f"delta method from both shares: memorising if p ≥ {rules.COPY_MEMORISE} and p − {z}·se > "
                       f"{rules.COPY_GENERALISE}, generalising if p ≤ {rules.COPY_GENERALISE} and p + {z}·se < "
                       f"{rules.COPY_MEMORISE}, else inconclusive",
                  min_effect=f"{rules.COPY_MEMORISE:.0%} of samples copying beyond what real data shows",
                  replicates=f"none: {m} fresh samples from one seed (the sampling error of both shares is allowed "
                             f"for)")
    held_text = (f"; held-out real data: {base:.1%}" if heldout is not None else
                 f"; real data (each training item against the others, no held-out data given): {base:.1%}")
    # p = (c − b)/(1 − b) has no value at b = 1 (every real item has a near-duplicate): say so, not "+nan%"
    share_text = (f"a share p = (c − b)/(1 − b) = {share:+.1%} ± {share_se:.1%} of samples copies beyond real data"
                  if math.isfinite(share) else
                  f"p = (c − b)/(1 − b) undefined (baseline {base:.0%})" if base >= 1.0 else
                  "p = (c − b)/(1 − b) undefined (no baseline share)")
    text = (f"{copy_fraction:.1%} of {m} fresh samples are copies (nearest training item closer than "
            f"{rules.COPY_RATIO:.2f} × the mean of its {k} nearest){held_text}: {share_text}."
            + _under(conditioned_on))
    plt = _plt()
    figures: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(0, 1.05, 43)
    ax.hist(r.numpy(), bins=bins, alpha=0.6, density=True, label="generated")
    if r_h.numel():
        ax.hist(r_h.numpy(), bins=bins, alpha=0.6, density=True,
                label="held-out" if heldout is not None else "training, leave one out")
    ax.axvline(rules.COPY_RATIO, color="k", ls="--", lw=1, label="copy threshold")
    ax.set_xlabel(f"d1 / mean(d1..d{k}) to the training data")
    ax.set_ylabel("density (histogram)")
    ax.set_title("Copying: nearest-neighbour distance ratio")
    ax.legend()
    figures["copying_ratio.png"] = png(fig)
    if generated.ndim == 4:
        order = torch.argsort(r)[:GRID_COPIES]
        pairs_grid = torch.stack([generated[order].cpu().float(), train[nn_idx[order]].cpu().float()], 1)
        figures["closest_copies.png"] = image_grid_png(pairs_grid.flatten(0, 1), nrow=2)
        text += " The grid shows the closest copies (left: generated, right: its nearest training item)."
    return Section("copies", "Copying of training data", claim, {"copies": evidence}, figures, text)


def _under(conditioned_on: str) -> str:
    """The sentence saying under which continuous conditions the fresh samples were generated ("" for none)."""
    if conditioned_on == "held-out conditions":
        return " Samples generated under held-out items' conditions."
    if conditioned_on:
        return (f" Samples generated under {conditioned_on} (a condition that determines its item makes a faithful "
                f"model reproduce training items: pass --heldout-conditions to generate under held-out ones).")
    return ""


def image_grid_png(images: Tensor, nrow: int) -> bytes:
    """[−1, 1] images (n, C, H, W) tiled ``nrow`` per row, upscaled to at least 48 px, as PNG bytes."""
    from PIL import Image

    from flowvar.data import to_uint8

    arr = to_uint8(images)
    n, h, w, c = arr.shape
    pad = 1
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = arr[i]
    img = Image.fromarray(grid[:, :, 0] if c == 1 else grid)
    scale = max(1, math.ceil(48 / max(h, 1)))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- 3. generalisation gap


def half_sample_standard_error(generated: Tensor, train: Tensor, heldout: Tensor, generator: torch.Generator,
                               reps: int) -> float:
    """Standard error of ρ = :func:`flowvar.metrics.nn_train_over_heldout` (samples (S, *shape), ``train`` and
    ``heldout`` (m, *shape)) by half-sampling: the sd of ρ over ``reps`` draws of half the samples, half the training
    items and half the held-out items, without replacement, around the half-samples' own mean. For a mean,
    Var(half − full) = σ²(2/n − 1/n) = Var(full), so the spread of half-sample estimates stands for that of the
    full one (no duplicates, unlike a bootstrap, which would shrink nearest-neighbour distances); ρ is no mean (a
    ratio of medians, and halving a reference moves every NN distance), and the se was measured conservative:
    1.1–1.7× the sd of ρ over redraws, coverage of ρ ± 1.645·se 0.91–0.99 (docs/audit.md). NaN with fewer than 2
    items per half."""
    s, m = generated.shape[0], train.shape[0]
    if s < 4 or m < 4:
        return math.nan
    x, tr, ho = as_matrix("samples", generated), as_matrix("train", train), as_matrix("heldout", heldout)
    d_tr = torch.cdist(x, tr) if s * m <= 4_000_000 else None  # distances once when they fit, else per draw
    d_ho = torch.cdist(x, ho) if d_tr is not None else None
    values = []
    for _ in range(reps):
        rows = torch.randperm(s, generator=generator)[: s // 2]
        cols_tr = torch.randperm(m, generator=generator)[: m // 2]
        cols_ho = torch.randperm(m, generator=generator)[: m // 2]
        if d_tr is not None and d_ho is not None:
            num = d_tr[rows][:, cols_tr].min(1).values.median()
            den = d_ho[rows][:, cols_ho].min(1).values.median()
            values.append(float(num / den) if den > 0 else math.nan)
        else:
            values.append(nn_train_over_heldout(x[rows], tr[cols_tr], ho[cols_ho]))
    return float(np.std(values, ddof=1))


def generalisation_gap(generated: Tensor, train: Tensor, heldout: Tensor | None, generator: torch.Generator,
                       conditioned_on: str = "") -> Section:
    """Are fresh samples nearer the training data than unseen data? ρ = median NN distance to m training items over
    that to m held-out items (m = min(N, H), equal sizes since NN distances shrink with the reference size;
    :func:`flowvar.metrics.nn_train_over_heldout`), and the unbiased MMD² (:func:`flowvar.metrics.mmd2`, chunked,
    RBF at the held-out data's median-heuristic bandwidth) of the samples to each reference and of the two
    references to each other. ``conditioned_on``: as for :func:`copying`."""
    if heldout is None:
        pre = Precondition("held-out data (--heldout) is given", False, {}, "pass --heldout with data never trained on")
        claim = judge("audit.generalisation_gap", "Fresh samples sit nearer the training data than unseen data",
                      {}, kind="finding", verdict="inconclusive", precondition=pre,
                      rule=f"ρ < {rules.GAP_MEMORISE}: memorising; never generalising (a median cannot exclude a "
                           f"copying minority)")
        return Section("gap", "Generalisation gap", claim, {}, {}, "Not measured: no held-out data (--heldout).")
    m = min(train.shape[0], heldout.shape[0])
    tr = train[torch.randperm(train.shape[0], generator=generator)[:m]]
    ho = heldout[torch.randperm(heldout.shape[0], generator=generator)[:m]]
    rho = nn_train_over_heldout(generated, tr, ho)
    # its own stream, derived from the audit's seed: the draws of the tests after this one stay as they were
    halves = torch.Generator().manual_seed(generator.initial_seed() ^ 0x4A1F)
    rho_se = half_sample_standard_error(generated, tr, ho, halves, rules.GAP_HALF_SAMPLES)
    h = median_heuristic(heldout)
    mmd_train = mmd2(generated, tr, bandwidth=h).mmd2
    mmd_held = mmd2(generated, ho, bandwidth=h).mmd2
    mmd_data = mmd2(tr, ho, bandwidth=h).mmd2 if m >= 2 else math.nan
    evidence = {"nn_ratio": rho, "nn_ratio_standard_error": rho_se, "m": m, "n_samples": generated.shape[0],
                "bandwidth": h, "mmd2_to_train": mmd_train, "mmd2_to_heldout": mmd_held,
                "mmd2_gap": mmd_held - mmd_train, "mmd2_train_vs_heldout": mmd_data,
                "majority_novel": rules.gap_reads_majority_novel(rho, rho_se)}
    if conditioned_on:
        evidence["conditioned_on"] = conditioned_on
    # m = min(N, H): name whichever set is short (a short training set is not fixed by more held-out data)
    n_train, n_held = train.shape[0], heldout.shape[0]
    short = [f"{what} (now {count})" for what, count in (("training items", n_train), ("held-out items", n_held))
             if count < rules.GAP_MIN_HELDOUT]
    pre = Precondition(f"at least {rules.GAP_MIN_HELDOUT} training and {rules.GAP_MIN_HELDOUT} held-out items "
                       f"(m = min(N, H) of each are compared)", m >= rules.GAP_MIN_HELDOUT,
                       {"m": m, "n_train": n_train, "n_heldout": n_held},
                       f"pass at least {rules.GAP_MIN_HELDOUT} " + " and ".join(short))
    claim = judge("audit.generalisation_gap", "Fresh samples sit nearer the training data than unseen data",
                  evidence, kind="finding", verdict=rules.gap_verdict(rho, rho_se), precondition=pre,
                  rule=f"ρ = median NN distance to {m} training items / to {m} held-out items, se from "
                       f"{rules.GAP_HALF_SAMPLES} half-samples of the samples and both references: memorising if ρ < "
                       f"{rules.GAP_MEMORISE} and ρ + {rules.ALLOWANCE_Z}·se < {rules.GAP_GENERALISE}, else "
                       f"inconclusive — never generalising: ρ ≥ {rules.GAP_GENERALISE} (and ρ − "
                       f"{rules.ALLOWANCE_Z}·se ≥ {rules.GAP_MEMORISE}) says the majority of samples is novel, and a "
                       f"median cannot exclude a copying minority (the copy test counts copies)",
                  min_effect=f"ρ < {rules.GAP_MEMORISE}: samples a quarter nearer the training data",
                  replicates=f"none: {generated.shape[0]} fresh samples, one random subset of each reference (their "
                             f"sampling error is allowed for)")
    text = (f"Fresh samples are {rho:.2f}× (± {rho_se:.2f}) as far from the training data as from held-out data "
            f"(nearest-neighbour medians, {m} items each); MMD² to training {mmd_train:.3g}, to held-out "
            f"{mmd_held:.3g} (training vs held-out data: {mmd_data:.3g})."
            + (" The majority of samples is as near unseen data as training data; a median cannot exclude a copying "
               "minority, so this test never reads generalising (the copy test counts copies)."
               if rules.gap_reads_majority_novel(rho, rho_se) else "") + _under(conditioned_on))
    plt = _plt()
    d_tr = nearest_neighbours(as_matrix("x", generated), as_matrix("t", tr), 1)[0][:, 0].numpy()
    d_ho = nearest_neighbours(as_matrix("x", generated), as_matrix("h", ho), 1)[0][:, 0].numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(0, float(max(d_tr.max(), d_ho.max())) * 1.02 + 1e-12, 40)
    ax.hist(d_tr, bins=bins, alpha=0.6, label="to training data")
    ax.hist(d_ho, bins=bins, alpha=0.6, label="to held-out data")
    ax.set_xlabel("distance of a generated sample to its nearest neighbour")
    ax.set_ylabel("generated samples (count)")
    ax.set_title(f"Generalisation gap: ρ = {rho:.2f}")
    ax.legend()
    return Section("gap", "Generalisation gap", claim, {"gap": evidence}, {"generalisation_gap.png": png(fig)}, text)


# --------------------------------------------------------------------------------------------- 4. gradient signal


Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor, Tensor]]


def labelled_t_profile(field_: AdaptedField, draw: Draw, sigma: float, n_per_bin: int, n_bins: int,
                       generator: torch.Generator) -> tuple[np.ndarray, ...]:
    """:func:`flowvar.variance.variance_t_profile` for a conditional field: per t-bin b (``n_bins`` equal bins
    of [0, 1]), ``n_per_bin`` pairs with labels from ``draw(n, generator)`` → (x0, x1, labels), t ~ U(bin),
    x_t = (1 − t) x0 + t x1 + σ z, and the plug-in tr Cov of the per-sample gradients of ℓ = ‖v(x_t, t, label) −
    (x1 − x0)‖² (:func:`flowvar.variance.gradient_variance` on :class:`PackedLabels` states, which carry each
    sample's label or flattened continuous condition). Returns (bin centres, mean losses, traces, the losses' and the
    traces' standard errors), each (n_bins,).
    """
    from flowvar.interpolants import Interpolant, PathSample
    from flowvar.variance import gradient_variance

    interpolant = Interpolant(sigma)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    reports = []
    for b in range(n_bins):
        x0, x1, labels = draw(n_per_bin, generator)
        t = float(edges[b]) + float(edges[b + 1] - edges[b]) * torch.rand(n_per_bin, generator=generator,
                                                                           dtype=x0.dtype)
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype) if sigma > 0 else torch.zeros_like(x0)
        path = interpolant.path(x0, x1, t, z)
        packed = PathSample(x0=x0, x1=x1, t=path.t, z=z, xt=pack_labels(path.xt, labels),
                            target=pack_labels(path.target, torch.zeros_like(labels)))
        cond_shape = tuple(labels.shape[1:]) if labels.is_floating_point() else None  # continuous conditions
        reports.append(gradient_variance(PackedLabels(field_, tuple(x0.shape[1:]), cond_shape), packed))
    return ((edges[:-1] + edges[1:]) / 2, *(np.array([getattr(r, k) for r in reports])
                                            for k in ("mean_loss", "trace", "mean_loss_se", "trace_se")))


def gradient_signal(field_: nn.Module, train: Tensor, pairs_x0: Tensor | None, heldout: Tensor | None, *,
                    sigma: float, n_per_bin: int, n_bins: int, generator: torch.Generator,
                    labels: Tensor | None = None, heldout_labels: Tensor | None = None) -> Section:
    """CFM loss and tr Cov of the per-sample gradients (:func:`flowvar.variance.variance_t_profile`, per t-bin) at
    the trained weights, on the training pairs (x0_i, x1_i) and on fresh pairs (fresh noise, a training item drawn at
    random; and a held-out item when given), at σ = 0 and the user's σ.

    λ = mean loss on the training pairs / on fresh pairs, ν = the same for the gradient-variance trace, both at σ = 0
    averaged over the bins: Prop 2 predicts λ, ν → 0 at a memorising minimiser.

    A conditional field (``labels`` of the training items given: (N,) class labels or (N, *cond_shape) continuous
    conditions) is evaluated on each pair under the label / condition of its data item (:func:`labelled_t_profile`);
    the held-out set needs ``heldout_labels`` and is left out without them.
    """
    from flowvar.couplings import FixedPairs, IndependentCoupling
    from flowvar.distributions import Empirical, StandardNormal
    from flowvar.interpolants import Interpolant
    from flowvar.loss import CFMLoss
    from flowvar.variance import variance_t_profile

    shape = tuple(train.shape[1:])
    source = StandardNormal(shape, dtype=train.dtype)
    couplings: dict[str, Any] = {"fresh pairs": IndependentCoupling(source, Empirical(train))}
    if pairs_x0 is not None:
        couplings = {"training pairs": FixedPairs(pairs_x0, train), **couplings}
    if heldout is not None and (labels is None or heldout_labels is not None):
        couplings["fresh pairs, held-out data"] = IndependentCoupling(source, Empirical(heldout))
    draws: dict[str, Draw] = {}
    if labels is not None:  # the same pair sets, each pair with its data item's label
        def fresh(items: Tensor, item_labels: Tensor) -> Draw:
            def draw(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
                idx = torch.randint(0, items.shape[0], (n,), generator=gen)
                return torch.randn((n, *shape), generator=gen, dtype=train.dtype), items[idx], item_labels[idx]
            return draw

        def training_pairs(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
            assert pairs_x0 is not None
            idx = torch.randint(0, train.shape[0], (n,), generator=gen)
            return pairs_x0[idx], train[idx], labels[idx]

        draws = {"fresh pairs": fresh(train, labels)}
        if pairs_x0 is not None:
            draws = {"training pairs": training_pairs, **draws}
        if heldout is not None and heldout_labels is not None:
            draws["fresh pairs, held-out data"] = fresh(heldout, heldout_labels)
    sigmas = sorted({0.0, float(sigma)})
    table: dict[str, dict[str, Any]] = {}
    error = ""
    try:
        for s in sigmas:
            loss = CFMLoss(Interpolant(s))
            for name, coupling in couplings.items():
                if labels is not None:
                    assert isinstance(field_, AdaptedField)
                    centres, mean_losses, traces, loss_se, trace_se = labelled_t_profile(
                        field_, draws[name], s, n_per_bin, n_bins, generator)
                else:
                    prof = variance_t_profile(field_, loss, coupling, n_per_bin, n_bins, generator)
                    centres, mean_losses, traces = prof.centres, prof.mean_losses, prof.traces
                    loss_se = np.array([r.mean_loss_se for r in prof.reports])
                    trace_se = np.array([r.trace_se for r in prof.reports])
                table[f"sigma={s:g}/{name}"] = {"sigma": s, "coupling": name, "t_centres": centres.tolist(),
                                                "loss": mean_losses.tolist(), "trace": traces.tolist(),
                                                "loss_se": loss_se.tolist(), "trace_se": trace_se.tolist()}
    except Exception as exc:  # a model the engine cannot differentiate (e.g. a layer torch.func refuses): say so
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        error = error.replace("AdaptedField", "the model")  # the audit's calling adapter is not the user's class
    lam = nu = lam_se = nu_se = math.nan
    if not error and pairs_x0 is not None:
        tr, fr = table["sigma=0/training pairs"], table["sigma=0/fresh pairs"]
        lam = float(np.mean(tr["loss"]) / np.mean(fr["loss"])) if np.mean(fr["loss"]) > 0 else math.nan
        nu = float(np.mean(tr["trace"]) / np.mean(fr["trace"])) if np.mean(fr["trace"]) > 0 else math.nan
        lam_se = rules.ratio_log_standard_error(tr["loss"], tr["loss_se"], fr["loss"], fr["loss_se"])
        nu_se = rules.ratio_log_standard_error(tr["trace"], tr["trace_se"], fr["trace"], fr["trace_se"])
    evidence = {"loss_ratio": lam, "variance_ratio": nu, "loss_ratio_log_se": lam_se, "variance_ratio_log_se": nu_se,
                "sigmas": sigmas, "n_per_bin": n_per_bin, "n_bins": n_bins, "profiles": table}
    if error:
        evidence["error"] = error
    pre = Precondition("training pairs (--pairs) are given and the variance engine can differentiate the model",
                       pairs_x0 is not None and not error,
                       {"pairs": pairs_x0 is not None, **({"error": error} if error else {})},
                       "pass --pairs with the training sources" if pairs_x0 is None else
                       "see the error: the gradient-variance engine could not differentiate this model")
    claim = judge("audit.gradient_signal",
                  "Loss and gradient variance vanish on the training pairs at σ = 0 (Prop 2's memorisation signature)",
                  evidence, kind="finding", verdict=rules.gradient_verdict(lam, nu, lam_se, nu_se), precondition=pre,
                  rule=f"λ = loss(training pairs)/loss(fresh pairs), ν = tr Cov ratio, at σ = 0, each with its "
                       f"Monte-Carlo standard error s on the log scale: memorising if both λ·e^(zs) and ν·e^(zs) < "
                       f"{rules.GRAD_MEMORISE}, generalising if λ·e^(−zs) ≥ {rules.GRAD_GENERALISE} "
                       f"(z = {rules.ALLOWANCE_Z}), else inconclusive",
                  min_effect=f"a {1 / rules.GRAD_MEMORISE:.0f}-fold drop of loss and variance on the training pairs",
                  replicates=f"none (one trained model): {n_per_bin} draws per t-bin, {n_bins} bins; the sampling "
                             f"error of λ and ν (delta method over the per-bin means) is allowed for")
    if error:
        text = f"Not measured: the gradient-variance engine failed on this model ({error})."
    elif pairs_x0 is None:
        text = ("Loss and gradient variance on fresh pairs only (no --pairs): the memorisation signature needs the "
                "training pairs.")
    elif math.isnan(nu):
        text = (f"At σ = 0 the training pairs have {lam:.3g}× the loss of fresh pairs; the gradient-variance ratio is "
                f"not measured (the fresh pairs' per-sample gradients have zero variance: no trainable parameter "
                f"acts on the output).")
    else:
        text = (f"At σ = 0 the training pairs have {lam:.3g}× (×/÷ {math.exp(lam_se):.3g}) the loss and {nu:.3g}× "
                f"(×/÷ {math.exp(nu_se):.3g}) the gradient variance of fresh pairs (one standard error).")
    if heldout is not None and labels is not None and heldout_labels is None:
        missing = "conditions (--heldout-conditions)" if labels.is_floating_point() else "class labels"
        text += f" Held-out pairs left out: the held-out data carry no {missing}."
    figures: dict[str, bytes] = {}
    if table:
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        colours = {name: f"C{i}" for i, name in enumerate(couplings)}  # one colour per pair set, dashed for σ > 0
        for key, row in table.items():
            ls = "-" if row["sigma"] == 0 else "--"
            for ax, what in zip(axes, ("loss", "trace")):
                ax.plot(row["t_centres"], np.maximum(row[what], 1e-30), ls, color=colours[row["coupling"]],
                        marker="o", ms=3, label=key)
        for ax, what in zip(axes, ("CFM loss", "tr Cov of per-sample gradients")):
            ax.set_yscale("log")
            ax.set_xlabel("t (per t-bin)")
            ax.set_ylabel("mean over the t-bin (log scale)")  # the title names the quantity
            ax.set_title(what)
        axes[1].legend(fontsize=7)
        figures["gradient_signal.png"] = png(fig)
    return Section("gradient", "Gradient signal at the trained weights", claim, {"gradient": evidence}, figures, text)


__all__ = ["GRID_COPIES", "INTEGRATE_CHUNK", "RealCopyBaseline", "Section", "alignment_in_doubt",
           "alignment_question", "copying", "endpoints",
           "generalisation_gap", "gradient_signal", "half_sample_standard_error", "image_grid_png", "knn_ratio",
           "leave_one_out_ratio", "pair_recovery", "png", "real_copy_baseline"]
