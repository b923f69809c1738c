"""Whether a calling convention fits a model: each candidate :class:`~flowvar.audit.adapters.Convention` scored on
the training data, and the choice among them (:func:`check_conventions`).

A wrong convention rarely raises an error: a reversed time or a missing ×1000 still returns a tensor of the right
shape. So each candidate's field is measured on the training data — how well it explains the straight-path targets
(the loss ratio q against the zero field) and whether a short Euler integration moves fresh noise toward the data —
and the convention that fits is chosen, or the one requested is checked (docs/audit.md "Calling conventions").

Why this module is long: when no convention runs, the one error a user sees is composed from every candidate's
failure (NaN output, a missing argument, a forward without time, a layer of another width), and those readings are
made from the same scores the choice uses; split apart, each would re-run or re-parse the candidates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from flowvar.audit import rules
from flowvar.audit.adapters import (
    CALL_DEFAULTS,
    CALLS,
    TIMES,
    AdaptedField,
    Conditioned,
    Convention,
    LabelArg,
    OutputError,
    call_network_with_form,
)
from flowvar.errors import DataError, printable

#: A convention fits when its field explains the straight-path target better than the zero field by this factor:
#: loss ratio q = E‖v(x_t, t) − (x1 − x0)‖² / E‖x1 − x0‖² below Q_FIT (docs/audit.md).
Q_FIT = 0.9
#: ... and a short Euler integration of fresh noise ends closer to the training data than it started:
#: median nearest-training-item distance after / before below MOVE_FIT.
MOVE_FIT = 0.9
#: Another fitting convention "looks right" instead of the requested one when its loss ratio is below this fraction
#: of the requested one's.
Q_MARGIN = 0.5
#: Probe sizes: the loss ratio uses PROBE_N (x0, x1, t) draws with t ~ U(PROBE_T_LO, 1 − PROBE_T_LO); the movement
#: check integrates MOVE_N noise samples with MOVE_STEPS Euler steps.
PROBE_N = 128
PROBE_T_LO = 0.05
MOVE_N = 64
MOVE_STEPS = 8


#: What an error for a convention that does not fit asks about the weights audited (:func:`check_conventions`'s
#: ``trained``); :data:`FACTORY_QUESTION` when ``--model`` was given without ``--checkpoint``.
CHECKPOINT_QUESTION = "is the checkpoint trained on this data?"
FACTORY_QUESTION = ("no --checkpoint was given, so the factory's own weights were audited: does --model's factory "
                    "load trained weights (else pass them with --checkpoint)?")

#: A candidate's ``error`` when the call ran but the output held NaN or Inf.
NON_FINITE = "the model returned NaN/Inf"


@dataclass(frozen=True)
class CandidateScore:
    """How one convention did on the training data.

    ``runs``: the call succeeded with a finite output of the right shape (else ``error`` says what happened);
    ``loss_ratio``: q = E‖v(x_t, t) − (x1 − x0)‖² / E‖x1 − x0‖² on :data:`PROBE_N` fresh (noise, training item, t)
    draws (q < 1: the field explains part of the straight-path target; the zero field has q = 1, the reversed field of
    a fitted model q > 1); ``movement``: median distance of MOVE_STEPS-step Euler endpoints of fresh noise to their
    nearest training item over that of the noise itself (< 1: the integration moves noise toward the data); ``fits``:
    q < :data:`Q_FIT` and movement < :data:`MOVE_FIT` — on the fresh draws, or, when the training sources are known
    and the fresh draws do not fit, on the training pairs (``pairs_loss_ratio``, ``pairs_movement``: the same two
    numbers for (source_i, item_i) and the integrated sources; NaN when not measured). Why the second chance: a
    model that memorised its pairs explains fresh draws poorly (its field off the training lines is arbitrary) but
    its own pairs almost exactly, while a reversed field fails on both.
    """

    convention: Convention
    runs: bool
    loss_ratio: float = math.nan
    movement: float = math.nan
    fits: bool = False
    error: str = ""
    pairs_loss_ratio: float = math.nan
    pairs_movement: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"convention": self.convention.to_dict(), "runs": self.runs, "loss_ratio": self.loss_ratio,
                "movement": self.movement, "fits": self.fits, "error": self.error,
                "pairs_loss_ratio": self.pairs_loss_ratio, "pairs_movement": self.pairs_movement}


@dataclass(frozen=True)
class ConventionCheck:
    """The outcome of :func:`check_conventions`: the ``chosen`` convention (the requested one when it fits, else the
    best fitting one when nothing was requested), the ``requested`` one (None: auto), every candidate's score, and
    ``best`` (the fitting candidate of lowest loss ratio, or None)."""

    chosen: Convention
    requested: Convention | None
    best: Convention | None
    candidates: tuple[CandidateScore, ...]
    #: Said beside the verdict when another convention fits better than the requested one, which was audited.
    note: str = ""

    def score(self, convention: Convention) -> CandidateScore | None:
        """The score of the candidate making ``convention``'s choice of call, time and time scale (whatever time
        shape and output were detected)."""
        return next((c for c in self.candidates if c.convention.choice == convention.choice), None)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "requested": self.requested.to_dict() if self.requested else None,
                "best": self.best.to_dict() if self.best else None,
                "candidates": [c.to_dict() for c in self.candidates], "note": self.note,
                "thresholds": {"q_fit": Q_FIT, "move_fit": MOVE_FIT, "q_margin": Q_MARGIN}}


def candidate_conventions(requested: Convention | None, time_scales: Sequence[float] = (1.0, 1000.0)
                          ) -> list[Convention]:
    """Every call × time direction × scale to try, the requested convention first (then in :data:`CALLS` order)."""
    scales = list(dict.fromkeys([*([requested.time_scale] if requested else []), *map(float, time_scales)]))
    out = [requested] if requested is not None else []
    for call in CALLS:
        for time in TIMES:
            for scale in scales:
                c = Convention(call, time, scale)
                if all(c.choice != o.choice for o in out):
                    out.append(c)
    return out


def _median_nn(x: Tensor, ref: Tensor) -> float:
    from flowvar.metrics import as_matrix, nearest_neighbours

    return float(nearest_neighbours(as_matrix("points", x), as_matrix("training data", ref), 1)[0][:, 0].median())


def score_convention(model: nn.Module, convention: Convention, x1: Tensor, x0: Tensor, t: Tensor,
                     move_x0: Tensor, train: Tensor, seen: list[tuple[Tensor, CandidateScore]] | None = None,
                     labels: tuple[Tensor, Tensor] | None = None, label_arg: LabelArg | None = None,
                     pairs: PairProbe | None = None) -> CandidateScore:
    """Score one convention (see :class:`CandidateScore`). ``x1``, ``x0``: (P, *shape) training items and noise,
    ``t``: (P,); ``move_x0``: (M, *shape) noise to integrate; ``train``: the training items (for the movement);
    ``labels``: for a class-conditional model (``label_arg``), the labels (P,) of ``x1`` and (M,) of ``move_x0``;
    ``pairs``: the training pairs' probe, tried when the fresh draws do not fit.

    The integration runs only for a candidate whose loss ratio passes (the others cannot fit), and not again for a
    candidate whose probe output equals that of one in ``seen`` (two calls that reach the same network the same way,
    e.g. ``model(t, x)`` and ``model(x=x, t=t)`` on a ``forward(t, x)``): its score is reused. Appends to ``seen``.

    A call that raises with the time as (B,) is tried once more with the time as a (B, 1) column (not for ``cat``,
    which builds its own column); the score's convention records the time shape that ran and where the velocity
    was read from the output (:attr:`Convention.time_shape`, :attr:`Convention.output`).
    """
    field = AdaptedField(model, convention, label_arg)
    probe_labels, move_labels = labels if labels is not None else (None, None)
    try:
        v, q = _loss_ratio(field, x0, x1, t, probe_labels)
    except Exception as error:  # any failure of a foreign network under a wrong call is "does not run"
        if convention.time_shape != "(B,)" or convention.call == "cat":
            return CandidateScore(convention, False, error=_short(error))
        field = AdaptedField(model, replace(convention, time_shape="(B, 1)"), label_arg)
        try:
            v, q = _loss_ratio(field, x0, x1, t, probe_labels)
        except Exception:  # the column fails too: the (B,) call's error is the one to report
            return CandidateScore(convention, False, error=_short(error))
    convention = replace(field.convention, output=field.output_read)
    if not math.isfinite(q):
        return CandidateScore(convention, False, error=NON_FINITE)
    for earlier_v, earlier in seen or []:
        if torch.equal(v, earlier_v):
            return replace(earlier, convention=convention)
    score = CandidateScore(convention, True, q)
    if q < Q_FIT:
        movement, error = _movement(field, move_x0, train, move_labels)
        score = CandidateScore(convention, True, q, movement, q < Q_FIT and movement < MOVE_FIT, error)
    if pairs is not None:  # the training pairs' loss ratio: a second chance to fit, and what breaks close calls
        try:
            q_pairs = _loss_ratio(field, pairs.x0, pairs.x1, t, pairs.labels)[1]
        except Exception:  # ran on fresh draws, so this is not expected; then the pairs do not rescue the fit
            q_pairs = math.nan
        score = replace(score, pairs_loss_ratio=q_pairs)
        if not score.fits:
            move_pairs = _movement(field, pairs.move_x0, train, pairs.move_labels)[0] if q_pairs < Q_FIT \
                else math.nan
            score = replace(score, pairs_movement=move_pairs, fits=q_pairs < Q_FIT and move_pairs < MOVE_FIT)
    if seen is not None:
        seen.append((v, score))
    return score


@dataclass(frozen=True)
class PairProbe:
    """The training pairs as a second probe of :func:`score_convention`: sources ``x0`` and items ``x1`` (P, *shape)
    at the fresh probe's times, the first ``move_x0`` (M, *shape) sources to integrate, and the labels (P,), (M,)
    of a class-conditional model (else None)."""

    x0: Tensor
    x1: Tensor
    move_x0: Tensor
    labels: Tensor | None = None
    move_labels: Tensor | None = None


def _loss_ratio(field: AdaptedField, x0: Tensor, x1: Tensor, t: Tensor, labels: Tensor | None
                ) -> tuple[Tensor, float]:
    """(v(x_t, t), q = Σ‖v − u‖² / Σ‖u‖²) on the straight path x_t = (1 − t) x0 + t x1, u = x1 − x0 (NaN q when v is
    not finite)."""
    tb = t.reshape(-1, *([1] * (x0.ndim - 1)))
    with torch.no_grad():
        v = Conditioned(field, labels)((1 - tb) * x0 + tb * x1, t)
    if not bool(torch.isfinite(v).all()):
        return v, math.nan
    u = x1 - x0
    return v, float((v - u).pow(2).sum() / u.pow(2).sum())


def _movement(field: AdaptedField, move_x0: Tensor, train: Tensor, labels: Tensor | None) -> tuple[float, str]:
    """(median nearest-training-item distance of the MOVE_STEPS-step Euler endpoints of ``move_x0`` over that of
    ``move_x0`` itself, error text); a failed integration counts as not moving toward the data (inf)."""
    from flowvar.sampling import integrate

    try:
        end = integrate(Conditioned(field, labels), move_x0, method="euler", steps=MOVE_STEPS).x1
        before = _median_nn(move_x0, train)
        return (_median_nn(end, train) / before if before > 0 else math.nan), ""
    except Exception as error:  # a diverging integration under a wrong convention
        return math.inf, f"integration failed: {_short(error)}"


def _uncallable_cause(model: nn.Module, x: Tensor, t: Tensor, labels: Tensor | None,
                      label_arg: LabelArg | None) -> str | None:
    """Why no candidate ran, when the reason is the network's interface rather than the data: its output cannot be
    read (:class:`OutputError` under some call, with the time as (B,) or (B, 1)), or a call that raises with the
    time as (B,) and as (B, 1) runs with one time for the whole batch (a scalar t; the probe ``x`` (P, *shape) at
    ``t``[0]). None when neither: the data's shape or channels are the likely cause. Runs only on the way to an
    error."""
    scalar = None
    for call in CALLS:
        raised = True
        for s in (t,) if call == "cat" else (t, t[:, None]):
            try:
                with torch.no_grad():
                    call_network_with_form(model, call, x, s, labels, label_arg)
            except OutputError as error:
                return str(error)
            except Exception:  # this call does not reach the network so: try the next
                continue
            raised = False  # it runs (its output was rejected for another reason, e.g. NaN)
            break
        if raised and scalar is None and call != "cat":
            try:
                with torch.no_grad():
                    out = call_network_with_form(model, call, x, t[0], labels, label_arg)[0]
            except Exception:
                continue
            if bool(torch.isfinite(out).all()):
                scalar = call
    if scalar is None:
        return None
    one = {"tx": "self.net(t[i], x[i:i + 1])", "flow_matching": "self.net(x=x[i:i + 1], t=t[i])"}.get(
        scalar, "self.net(x[i:i + 1], t[i])")
    return (f"the model cannot be called with one time per item (t of shape (B,) or (B, 1)); it runs only with "
            f"one time for the whole batch (a scalar t, called as {scalar}), but the audit gives each item its own "
            f"time: audit a module that calls it one item at a time, e.g. forward(self, x, t): return "
            f"torch.cat([{one} for i in range(x.shape[0])])")


#: Python's TypeError for a call that leaves out required arguments: "f() missing 1 required keyword-only argument:
#: 'scale'", "missing 2 required positional arguments: 'a' and 'b'" (then "'a', 'b', and 'c'").
_MISSING = re.compile(r"missing \d+ required (?:positional|keyword-only) arguments?: (.+)$")


def missing_arguments(scores: Sequence[CandidateScore]) -> list[str]:
    """The arguments the network requires beyond x and t, in order of first mention: those a ``TypeError`` names as
    missing under a call that passed both (``xt``, ``tx``, ``diffusers`` pass them positionally, ``flow_matching``
    as ``x=``, ``t=``). ``cat`` passes one tensor, so its missing second argument is the network's own time: not
    counted."""
    names: list[str] = []
    for s in scores:
        if s.convention.call == "cat" or not s.error.startswith("TypeError"):
            continue
        found = _MISSING.search(s.error)
        if found is None:
            continue
        for name in re.findall(r"'([^']+)'", found.group(1)):
            if name not in names and not (s.convention.call == "flow_matching" and name in ("x", "t")):
                names.append(name)
    return names


#: Python's TypeError for a call with too many positional arguments ("XOnly.forward() takes 2 positional arguments but
#: 3 were given", "takes from 2 to 3 positional arguments but 4 were given") and TorchScript's RuntimeError for it
#: ("forward() expected at most 2 argument(s) but received 3 argument(s)"): the most the forward takes and the number
#: given, both counting a method's self.
_TOO_MANY = re.compile(r"takes (?:from \d+ to )?(\d+) positional arguments? but (\d+) (?:were|was) given"
                       r"|expected at most (\d+) argument\(s\) but received (\d+) argument\(s\)")

#: The calls that pass x and t as two positional arguments (:func:`flowvar.audit.adapters.call_network_with_form`).
TWO_ARGUMENT_CALLS = ("xt", "tx", "diffusers")


def takes_only_x(scores: Sequence[CandidateScore], positional_labels: bool = False) -> bool:
    """Whether the network's forward takes x alone (no time): every call of ``scores`` that passed x and t
    positionally (:data:`TWO_ARGUMENT_CALLS`; at least one was tried) raised the too-many-arguments error
    (:data:`_TOO_MANY`), and the most it takes, N − (M − p) for "takes N … but M were given" with p the arguments
    the call passed (2, or 3 with ``positional_labels``: ``--label-arg positional``; M − p is the self the message
    counts), is at most one. A forward(x, t) that fails for another reason, or takes labels the call did not pass,
    does not qualify; ``cat`` (one tensor) and ``flow_matching`` (keywords: "unexpected keyword argument 't'", or
    'x' for a forward(inp)) say nothing about it."""
    passed = 3 if positional_labels else 2
    tried = [s for s in scores if s.convention.call in TWO_ARGUMENT_CALLS]
    for s in tried:
        found = _TOO_MANY.search(s.error)
        if found is None:
            return False
        most, given = (int(g) for g in (found.groups()[:2] if found.group(1) else found.groups()[2:]))
        if most - (given - passed) > 1:
            return False
    return bool(tried)


_CAT_WIDTH = re.compile(r"under the cat call, .*? takes (\d+) input features")


def _cat_width_allows_time_free(layers: str, item_shape: tuple[int, ...] | None) -> bool:
    """False when the cat call failed in a Linear layer (:func:`_layer_mismatch`'s ``layers``) that takes a width
    other than the items' own size: a forward(x) network trained without time takes exactly the items' features, so
    then the data's shape, not the missing time, is what to fix (a bare nn.Linear(4, 4) given 5-feature items). True
    otherwise (no such failure recorded, or the width fits a time-free network)."""
    found = _CAT_WIDTH.search(layers)
    if found is None or item_shape is None:
        return True
    return int(found.group(1)) == math.prod(item_shape)


def _time_free_error(causes: str) -> str:
    """The error for a network whose forward takes x alone (:func:`takes_only_x`), ``causes`` the calls' own errors:
    it needs a time argument, and the wrapper that gives it one. The wrapper holds the network as ``self.net``, so the
    network's own state_dict given as --checkpoint loads into that submodule (:mod:`flowvar.audit.loading`)."""
    return (f"the model's forward takes only x, no time: flowvar needs a velocity field v(x, t) (or v(t, x)), called "
            f"with x (B, *item shape) and a float time t (B,) in [0, 1]; wrap it, e.g. a module whose "
            f"forward(self, x, t) returns self.net(x) for a network trained without time (a time-independent field), "
            f"or passes t to it the way its training did — the network's own state_dict given as --checkpoint loads "
            f"into the wrapper's submodule 'net' ({causes})")


def _bind_hint(names: list[str], has_labels: bool) -> str:
    """What to do about a network that requires arguments beyond x and t (:func:`missing_arguments`): bind them in
    the module the audit loads, or pass them as the items' labels/conditions with ``--label-arg``. Not
    ``functools.partial``: the audit needs an ``nn.Module`` (its weights, its dtype, its device)."""
    name = names[0]
    shown = " and ".join(f"'{n}'" for n in names)
    bound = ", ".join(f"{n}=..." for n in names)
    labels = (f"; if {name} is each item's class label or condition, which the data carry, pass --label-arg {name}"
              if has_labels else
              f"; if {name} is each item's class label or condition, pass --label-arg {name} with --labels FILE.npy "
              f"(or --conditions FILE.npy)")
    return (f"its forward requires {shown} besides x and t, which the audit does not pass: bind "
            f"{'it' if len(names) == 1 else 'them'} in the module your --model factory returns, e.g. a subclass "
            f"whose forward(self, x, t) returns super().forward(x, t, {bound}) (the same weight names, so "
            f"--checkpoint still loads; functools.partial is no nn.Module){labels}")


def _layer_mismatch(model: nn.Module, x: Tensor, t: Tensor, labels: Tensor | None, label_arg: LabelArg | None,
                    calls: Sequence[str] = CALLS) -> str:
    """What the model's layers take, when the data do not fit them: the first of ``calls`` whose call raised inside a
    ``Linear`` layer given inputs of another width, or a ``Conv*d`` given another number of channels, as ``"under
    the xt call, its layer net.0 (Linear) takes 9 input features and was given (128, 6)"``; "" when no call failed
    so (a call that raises in the forward's own code, e.g. a ``torch.cat`` of x (B, 3, 16, 16) with t (B, 1), before
    any layer: what the model takes is then not known, and not guessed from the first layer registered — a UNet
    registers its time embedding first). The layer is the innermost one running when a RuntimeError (torch's shape
    errors) was raised (forward pre-hooks push it, forward hooks pop it), so the sentence is about the layer that
    failed, and the width it names differs from what it was given. ``x`` (P, *shape),
    ``t`` (P,): the probe. Runs only on the way to an error."""
    running: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def enter(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            shape = tuple(args[0].shape) if args and isinstance(args[0], Tensor) else ()
            running.append((name, module, shape))
        return hook

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        running.pop()

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    handles = [h for n, m in layers for h in (m.register_forward_pre_hook(enter(n)), m.register_forward_hook(leave))]
    try:
        for call in calls:
            running.clear()
            try:
                with torch.no_grad():
                    call_network_with_form(model, call, x, t, labels, label_arg)
            except Exception as error:  # the failure wanted: which layer was running when it was raised
                if not running or not isinstance(error, RuntimeError):  # torch's shape errors are RuntimeErrors; a
                    continue  # TypeError is the call's signature (raised after the pre-hooks ran), not a width
                name, layer, given = running[-1]
                if isinstance(layer, nn.Linear) and given and given[-1] != layer.in_features:
                    takes = f"{layer.in_features} input features"
                elif isinstance(layer, nn.modules.conv._ConvNd) and len(given) >= 2 and \
                        given[1] != layer.in_channels:
                    takes = f"{layer.in_channels} input channels"
                else:  # it failed in a layer for another reason: not a width this sentence can name
                    continue
                where = f"its layer {name}" if name else "the model itself"  # a bare nn.Linear has no name
                return f"under the {call} call, {where} ({type(layer).__name__}) takes {takes} and was given {given}"
        return ""
    finally:
        for h in handles:
            h.remove()


def _no_call_runs(model: nn.Module, scores: Sequence[CandidateScore], has_labels: bool = False,
                  layers: str = "", item_shape: tuple[int, ...] | None = None, positional_labels: bool = False
                  ) -> str:
    """The error when no candidate ran: each cause after the calls that gave it (``xt: TypeError: …; tx, cat: …``).
    When some call reached the network and got NaN/Inf, that leads (with how many of the weights are not finite):
    the call works and the shape or timestep advice for calls that raise does not fit it. When the calls that
    passed x and t failed for a missing further argument (:func:`missing_arguments`), the fix named is to bind it
    (or pass it with ``--label-arg``; ``has_labels``: the data carry labels or conditions), not the shape or
    timestep advice. When every call passing x and t positionally was given too many arguments, the forward takes x
    alone (:func:`takes_only_x`; ``positional_labels``: the calls passed labels as a third), and the error leads
    with that and the wrapper that gives it a time. Otherwise the error leads with the data's ``item_shape`` and,
    where a layer failed on it, what that layer takes (``layers``: :func:`_layer_mismatch`), before torch's own
    messages."""
    causes: dict[str, list[str]] = {}
    for s in scores:
        calls = causes.setdefault(s.error, [])
        if s.convention.call not in calls:
            calls.append(s.convention.call)
    listed = "; ".join(f"{', '.join(calls)}: {error}" for error, calls in causes.items() if error != NON_FINITE)
    if NON_FINITE in causes:
        weights = [p for p in model.parameters() if p.is_floating_point()]
        bad = sum(int((~torch.isfinite(p)).sum()) for p in weights)
        total = sum(p.numel() for p in weights)
        checked = (f"{bad} of its {total} weights are NaN/Inf: the checkpoint is damaged or its training diverged"
                   if bad else "its weights are finite: are the data on the scale it was trained on (e.g. images "
                   "in [−1, 1]), in its dtype?")
        return (f"the model returns NaN/Inf on the training data under {', '.join(causes[NON_FINITE])}; {checked}"
                + (f" (the other calls fail — {listed})" if listed else ""))
    extra = missing_arguments(scores)
    if extra:
        return (f"the model cannot be called on the training data under any convention ({listed}); "
                f"{_bind_hint(extra, has_labels)}")
    items = f" (the data's items have shape {item_shape}{'; ' + layers if layers else ''})" \
        if item_shape is not None else ""
    # its signature, not the data: the shape advice would mislead — unless the cat call (one tensor: how a forward(x)
    # is called) reached a layer whose width fits neither the items nor the items and t, so the data do not fit
    if takes_only_x(scores, positional_labels) and _cat_width_allows_time_free(layers, item_shape):
        shape = f"the data's items have shape {item_shape}{'; ' + layers if layers else ''}; " \
            if item_shape is not None else ""
        return _time_free_error(f"{shape}every call fails — {listed}")
    return (f"the model cannot be called on the training data under any convention{items}: check the data's shape "
            f"and channels against the model ({listed}). flowvar calls it with x (B, *item shape) and a float time t "
            f"(B,) in [0, 1] (× --time-scale): a model that takes integer timesteps (an nn.Embedding lookup of t) "
            f"needs a wrapper, e.g. forward(x, t): return net(x, (t * 999).round().long())")


def _short(error: BaseException) -> str:
    text = printable(str(error).strip().splitlines()[0] if str(error).strip() else "")
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


#: Fitting candidates whose loss ratios are within this relative distance of the best are not told apart by the
#: probe (far below its Monte-Carlo error): a network that ignores its time's scale gives every scale the same ratio,
#: up to float rounding that varies with the thread count.
TIE_RATIO = 1e-4

#: Fitting candidates within this relative distance of the best loss ratio are a close call for the fresh probe
#: (:data:`PROBE_N` draws: its Monte-Carlo error is of this order): the training pairs' loss ratio decides when it
#: was measured for each of them (``--pairs``), else the call's usual time and scale. A memoriser explains fresh
#: draws about equally badly at time scale 1 and 1000 (0.45 against 0.43), its own pairs only at the right one.
CLOSE_RATIO = 0.1


#: The call of a network's own library, by the top-level package its class or a base class comes from. Calls that
#: reach a network identically tie (:data:`TIE_RATIO`); the tie then goes to its library's call, so the report names
#: the convention its users know: Meta flow_matching's ``ModelWrapper.forward(x, t, **extras)`` runs as ``model(x,
#: s)`` and as ``model(x=x, t=s)`` alike and reads ``flow_matching``, not ``xt``.
LIBRARY_CALLS: dict[str, str] = {"flow_matching": "flow_matching"}


def library_call(model: nn.Module) -> str | None:
    """The call of :data:`LIBRARY_CALLS` for ``model``'s class (searched along its MRO; a ``torch.compile`` wrapper is
    seen through), or None for a network of no listed library."""
    network = getattr(model, "_orig_mod", model)
    for cls in type(network).__mro__:
        package = str(getattr(cls, "__module__", "") or "").split(".")[0]
        if package in LIBRARY_CALLS:
            return LIBRARY_CALLS[package]
    return None


def ranked_fits(scores: Sequence[CandidateScore], library: str | None = None) -> list[CandidateScore]:
    """The fitting candidates, best first: by loss ratio, except that among those tied with the best
    (:data:`TIE_RATIO`) the call's usual time and scale (:data:`~flowvar.audit.adapters.CALL_DEFAULTS`) come first,
    then the ``library``'s call (:func:`library_call` of the network), then the candidates' own order — never the
    rounding. Without the tie rule, float rounding chose between equal fits (a torchcfm UNet early in training read
    as time scale 1000 on one thread, 1 on two)."""
    fitting = sorted((s for s in scores if s.fits), key=lambda s: s.loss_ratio)
    if not fitting:
        return []
    order = {id(s): i for i, s in enumerate(scores)}

    def usual(s: CandidateScore) -> tuple[bool, bool, int]:
        return ((s.convention.time, s.convention.time_scale) != CALL_DEFAULTS.get(s.convention.call),
                s.convention.call != library, order[id(s)])

    close = [s for s in fitting if s.loss_ratio <= fitting[0].loss_ratio * (1 + CLOSE_RATIO)]
    rest = fitting[len(close):]
    if len(close) > 1 and all(math.isfinite(s.pairs_loss_ratio) for s in close):
        pairs_best = min(s.pairs_loss_ratio for s in close)
        # the pairs decide unless they tie too (a network that ignores its time's scale): then the usual call
        return sorted(close, key=lambda s: (s.pairs_loss_ratio > pairs_best * (1 + CLOSE_RATIO), usual(s))) + rest
    bound = fitting[0].loss_ratio * (1 + TIE_RATIO)
    tied = [s for s in fitting if s.loss_ratio <= bound]
    tied.sort(key=usual)
    return tied + fitting[len(tied):]


def _q_text(score: CandidateScore) -> str:
    """A candidate's loss ratios for a sentence: the fresh draws', and the training pairs' when measured."""
    pairs = f", {score.pairs_loss_ratio:.3g} on the training pairs" if math.isfinite(score.pairs_loss_ratio) else ""
    return f"loss ratio {score.loss_ratio:.3g} on fresh draws{pairs}"


def _better(top: CandidateScore, own: CandidateScore) -> bool:
    """Whether the best fitting candidate ``top`` fits better than the requested ``own`` beyond what the probes tell
    apart: a lower fresh loss ratio beyond :data:`TIE_RATIO`, or a training-pairs one beyond :data:`CLOSE_RATIO`
    (a network that ignores its time's scale ties on both: no note)."""
    return (top.loss_ratio < own.loss_ratio * (1 - TIE_RATIO)
            or top.pairs_loss_ratio * (1 + CLOSE_RATIO) < own.pairs_loss_ratio)


def check_conventions(model: nn.Module, train: Tensor, requested: Convention | None, generator: torch.Generator,
                      time_scales: Sequence[float] = (1.0, 1000.0), labels: Tensor | None = None,
                      label_arg: LabelArg | None = None, sources: Tensor | None = None,
                      trained: str = CHECKPOINT_QUESTION) -> ConventionCheck:
    """Decide which calling convention to audit ``model`` under, from its behaviour on the training data.

    ``train``: (N, *shape) training items in the model's dtype and device; ``requested``: the user's convention, or
    None to pick the best fitting one; ``labels``: (N,) the items' class labels, passed as ``label_arg`` says to a
    class-conditional model (the probe's noise is integrated under the labels of random training items);
    ``sources``: (N, *shape) the training sources paired with ``train`` (``--pairs``), a second probe for a candidate
    the fresh draws reject (:class:`CandidateScore`); ``trained``: what the error of a convention that does not fit
    asks about the weights (:data:`CHECKPOINT_QUESTION`, :data:`FACTORY_QUESTION`). Every candidate of
    :func:`candidate_conventions` is scored (:func:`score_convention`). Raises :class:`DataError` (one line naming
    the convention that looks right, or what went wrong) when the requested convention does not fit, when
    another one fits much better (loss ratio below :data:`Q_MARGIN` × the requested one's, on the fresh draws or on
    the training pairs), or when none fits. A requested convention that fits, while another fits better short of
    that, is audited with a ``note`` naming the better one.
    """
    n = min(PROBE_N, train.shape[0])
    device, dtype = train.device, train.dtype
    idx = torch.randint(0, train.shape[0], (PROBE_N,), generator=generator)
    x1 = train[idx.to(device)]
    x0 = torch.randn(x1.shape, generator=generator, dtype=dtype).to(device)
    t = (PROBE_T_LO + (1 - 2 * PROBE_T_LO) * torch.rand(PROBE_N, generator=generator, dtype=dtype)).to(device)
    move_x0 = torch.randn((min(MOVE_N, max(n, 2)), *train.shape[1:]), generator=generator, dtype=dtype).to(device)
    probe_labels = None
    if labels is not None and label_arg is not None:  # drawn after everything else: unconditional draws unchanged
        move_labels = labels[torch.randint(0, train.shape[0], (move_x0.shape[0],), generator=generator)]
        probe_labels = (labels[idx].to(device), move_labels.to(device))
    pairs = None
    if sources is not None:  # no draws: the fresh probe's rows and times, the first sources to integrate
        m = move_x0.shape[0]
        pairs = PairProbe(sources[idx.to(device)], x1, sources[:m].to(device),
                          probe_labels[0] if probe_labels is not None else None,
                          labels[:m].to(device) if probe_labels is not None and labels is not None else None)
    # labels passed as a third positional argument (model(x, t, y)): what a too-many-arguments error counts
    positional = probe_labels is not None and label_arg is not None and label_arg.spec == "positional"
    seen: list[tuple[Tensor, CandidateScore]] = []
    scores = tuple(score_convention(model, c, x1, x0, t, move_x0, train, seen, probe_labels, label_arg, pairs)
                   for c in candidate_conventions(requested, time_scales))
    fitting = ranked_fits(scores, library_call(model))
    best = fitting[0].convention if fitting else None
    if requested is not None:
        own = scores[0]
        if not own.runs:
            cause = None if best else \
                _uncallable_cause(model, x1, t, probe_labels[0] if probe_labels is not None else None, label_arg)
            if cause is not None:  # the network's interface, not the convention: name it and its wrapper
                raise DataError(cause)
            extra = missing_arguments([own]) if best is None else []
            if best is None and not extra and takes_only_x([own], positional):
                raise DataError(_time_free_error(f"the {requested} call: {own.error}"))
            hint = f"; {best} fits: pass {best.flags()}" if best else \
                f"; {_bind_hint(extra, labels is not None)}" if extra else ""
            if not hint:  # no call runs and no argument is missing: the data's shape against the model's layers
                layer = _layer_mismatch(model, x1, t, probe_labels[0] if probe_labels is not None else None,
                                        label_arg, (requested.call,))
                hint = f" (the data's items have shape {tuple(train.shape[1:])}{'; ' + layer if layer else ''})"
            raise DataError(f"the model cannot be called as {requested}: {own.error}{hint}")
        if not own.fits:
            hint = (f"; {best} fits (loss ratio {fitting[0].loss_ratio:.3g}, movement {fitting[0].movement:.3g}): pass "
                    f"{best.flags()}" if best else f"; no other convention fits either ({trained})")
            movement = (f"noise movement toward the data {own.movement:.3g}, needs < {MOVE_FIT}"
                        if not math.isnan(own.movement) else "noise movement not measured: the loss ratio decides")
            raise DataError(f"convention {requested} does not fit this model on the training data (loss ratio "
                            f"{own.loss_ratio:.3g}, needs < {Q_FIT}; {movement}){hint}")
        top = fitting[0] if best is not None and best.choice != requested.choice else None
        # much better on the fresh draws, or on the training pairs — which a close call of the fresh probe leaves to
        # them (ranked_fits): a diffusers UNet trained at ×1000 fits fresh draws at ×1 almost as well (q 0.68
        # against 0.66), its pairs 4.7× worse (0.0042 against 0.0009)
        if top is not None and (top.loss_ratio < Q_MARGIN * own.loss_ratio
                                or top.pairs_loss_ratio < Q_MARGIN * own.pairs_loss_ratio):
            raise DataError(f"convention {own.convention} fits this model poorly ({_q_text(own)}) while {best} fits "
                            f"much better ({_q_text(top)}); pass {best.flags()}")
        pairs = (f", {top.pairs_loss_ratio:.3g} against {own.pairs_loss_ratio:.3g} on the training pairs"
                 if top is not None and math.isfinite(top.pairs_loss_ratio + own.pairs_loss_ratio) else "")
        note = (f"convention: {best} fits this model better than the {own.convention} requested (loss ratio "
                f"{top.loss_ratio:.3g} against {own.loss_ratio:.3g} on fresh draws{pairs}); audited as requested — "
                f"pass {best.flags()} to audit it so" if top is not None and _better(top, own) else "")
        return ConventionCheck(own.convention, requested, best, scores, note)
    if best is None:
        ran = [s for s in scores if s.runs]
        if not ran:
            probe_y = probe_labels[0] if probe_labels is not None else None
            cause = _uncallable_cause(model, x1, t, probe_y, label_arg)
            if cause is not None:
                raise DataError(cause)
            raise DataError(_no_call_runs(model, scores, has_labels=labels is not None,
                                          layers=_layer_mismatch(model, x1, t, probe_y, label_arg),
                                          item_shape=tuple(train.shape[1:]), positional_labels=positional))
        top = min(ran, key=lambda s: s.loss_ratio)
        raise DataError(f"no calling convention fits this model on the training data (best: {top.convention} with "
                        f"loss ratio {top.loss_ratio:.3g}, needs < {Q_FIT}"
                        + (f"; noise movement toward the data {top.movement:.3g}, needs < {MOVE_FIT}"
                           if not math.isnan(top.movement) else "") + f"); {trained}"
                        + (f" If it is, {rules.ROW_ALIGNMENT_QUESTION}" if sources is not None else
                           " A model trained on fixed pairs may fit on its own: pass --pairs"))
    return ConventionCheck(best, None, best, scores)


__all__ = [
    "CHECKPOINT_QUESTION",
    "FACTORY_QUESTION",
    "LIBRARY_CALLS",
    "MOVE_FIT",
    "MOVE_N",
    "MOVE_STEPS",
    "PROBE_N",
    "PROBE_T_LO",
    "Q_FIT",
    "Q_MARGIN",
    "TIE_RATIO",
    "TWO_ARGUMENT_CALLS",
    "CandidateScore",
    "ConventionCheck",
    "PairProbe",
    "candidate_conventions",
    "check_conventions",
    "library_call",
    "missing_arguments",
    "ranked_fits",
    "score_convention",
    "takes_only_x",
]
