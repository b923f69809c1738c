"""Exact per-sample gradient statistics from one forward and one backward pass: the one-pass engine.

Setting. A batch of B samples with per-sample losses ℓ_i (for flow matching ℓ_i = ‖u_i − v_θ(x_t,i, t_i)‖²,
:func:`flowvar.loss.per_sample_loss`) and the reduced loss L = Σ_i ℓ_i (``reduction="sum"``) or
L = (1/B) Σ_i ℓ_i (``"mean"``). The per-sample gradient is g_i = ∇_θ ℓ_i, **whatever the reduction**: a
backward pass of the mean-reduced loss hands every layer δ_i/B instead of δ_i, and the engine multiplies
by B again (scale s = B for ``"mean"``, s = 1 for ``"sum"``).

What the engine returns (:class:`~flowvar.variance.moments.BatchGradStats`), per parameter tensor θ_p:

* per-sample squared norms ‖g_{i,p}‖², shape (B,), float64;
* the mean gradient ḡ_p = (1/B) Σ_i g_{i,p} (from the backward pass itself, or from the layer rule);
* optionally the element-wise sum of squares Σ_i g_{i,p} ⊙ g_{i,p} (element-wise variance);
* optionally per-segment squared norms ‖Σ_{i ∈ S_k} g_{i,p}‖² (segments = t-bins: the conditional variance
  profile tr Cov(g | t-bin)).

From these, tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² (plug-in) and Var(g)_j = (1/B) Σ_i g_ij² − ḡ_j² follow
without ever materialising all B per-sample gradients at once.

How. Forward hooks capture each parametrised module's inputs; tensor hooks on its outputs capture
δ = ∂L/∂output; tensor hooks on the parameters capture this backward's gradient
(:class:`~flowvar.variance.records.CallRecord`). After the backward pass each module's parameters go
through the rule for its type, or through the exact torch.func fallback (:mod:`flowvar.variance.rules`).
:attr:`BatchGradStats.fallback` names every parameter that went through the fallback and why. No
parameter is ever skipped.

Assumptions (checked where possible): each ℓ_i depends on sample i only — no batch statistics
(``BatchNorm`` in training mode and ``Embedding(scale_grad_by_freq=True)`` raise :class:`ConfigError`; coupling
written with functions in a forward, ``F.batch_norm(..., training=True)`` or ``h - h.mean(0)``, cannot be seen
and gives numbers for per-sample gradients that do not exist); one forward/backward pass per
:meth:`~GradNormEngine.compute` (several calls of the model in one backward pass are refused, and so are two backward
passes through one forward: ``retain_graph=True``); the backward pass
is of L alone (no extra loss terms); parameters are used inside their own module's
forward; every module input carries the batch in its first dimension (a module whose input does not is measured
through the whole model; one whose first dimension has the batch's size without being the batch — a table of B rows
shared by every sample, a sequence-first input at L = B — is found only by the per-sample probe of a validating
pass). ``validate=True`` compares the rules' Σ_i g_i with the backward pass's gradient, which catches
extra loss terms and parameters used outside their module, and recomputes two samples' gradients exactly
(:mod:`flowvar.variance.probe`), which catches rows paired with the wrong samples. The reduction cannot be read
off the backward pass (δ/B from a mean looks like δ from a sum of smaller losses): it must be declared. A
batched-gradient pass (``torch.autograd.grad(..., is_grads_batched=True)``, a Jacobian) is not a pass of the losses:
the hooks skip it (:func:`~flowvar.variance.records.is_batched_grad`), and ``compute()`` raises :class:`DataError`
when it was the only backward pass through the recorded forward pass.

Numerics: per-sample quantities are computed in the parameter dtype and accumulated in float64. The
trace is a difference of raw moments, so its relative rounding error is about eps·‖ḡ‖²/trace.

Why this module is long: the hook engine's forward/backward hooks, its dispatch to the layer rules and the per-
sample sum check read and write the same per-call records; the rules themselves live in
:mod:`flowvar.variance.rules`.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NoReturn

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten, tree_unflatten

from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int
from flowvar.variance.moments import BatchGradStats
from flowvar.variance.owned import OwnedGradients
from flowvar.variance.probe import exact_sample_norms, probe_samples, rng_state, rng_unchanged
from flowvar.variance.records import (
    DEFAULT_CHUNK_BYTES,
    F64,
    BatchedPasses,
    CallRecord,
    Collector,
    ForwardState,
    ProbeSet,
    RuleContext,
    autocast_state,
    is_batched_grad,
)
from flowvar.variance.rules import LinearRule, Rule, fallback_call, parametrization_children, rule_for
from flowvar.variance.rules.attention import Capture, capture_projections, end_capture
from flowvar.variance.rules.fallback import forward_state, recorded_buffers, settle_state, spectral_vectors

__all__ = ["REDUCTIONS", "REPEATED_BACKWARD", "UNRECORDED", "BatchMismatchError", "GradNormEngine", "Reduction",
           "UnplannedParametersError"]

log = logging.getLogger(__name__)

Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum")

#: Recorded calls of the model without a backward pass after which the next call starts afresh (a grad-enabled
#: evaluation loop must not keep every batch's graph alive through the records).
_PENDING_CALLS = 8
#: How many dropped passes' batch sizes the engine remembers for its errors.
_RETIRED_KEPT = 16

#: Why compute() refuses a pass that two backward passes went through (the hooks add up what both handed each call,
#: so the per-sample gradients measured would be of the two losses together, while ``.grad``, zeroed in between,
#: holds the last one only: +18% on the trace with no error, before this was refused).
REPEATED_BACKWARD = (
    "two backward passes went through the same recorded forward pass of the model (a loss back-propagated with "
    "retain_graph=True, then another loss through the same forward: a discriminator or auxiliary loss on the model's "
    "output without detach(), a gradient penalty, backward() called twice): the per-sample gradients recorded are of "
    "both losses together, while .grad (zeroed in between or not) need not be, so no measurement of the losses given "
    "can be told from them. Detach the model's output for the other loss (e.g. D(fake.detach())), or call compute() "
    "(the monitor's step()) right after the backward pass of the losses it measures, before the other loss's backward, "
    "or back-propagate the other loss through a forward of its own")

#: Why compute() cannot measure a backward pass whose forward the hooks did not see.
UNRECORDED = (
    "the parameters received gradients in a backward pass that reached no recorded forward call of the model or its "
    "modules: the forward ran where the module hooks do not reach (a torch.compile'd model: compiled code runs no "
    "Python module hooks; a TorchScript trace or script of the model), or the backward pass was of the parameters "
    "alone. Call the uncompiled model itself on the steps you measure (compiled = torch.compile(model); out = "
    "(model if monitor.due(step) else compiled)(x)), or measure with "
    "flowvar.variance.gradient_variance(method='autograd')")


class BatchMismatchError(ShapeError):
    """:meth:`GradNormEngine.compute` was given ``n`` samples (per-sample losses, ``batch_size``) other than the
    recorded forward passes of the model held: ``batches``, one entry per recorded call (its batch size)."""

    def __init__(self, message: str, n: int, batches: tuple[int, ...]) -> None:
        super().__init__(message)
        self.n, self.batches = n, batches


class UnplannedParametersError(ConfigError):
    """:meth:`GradNormEngine.compute` found parameters that require gradients in modules the engine was not built with
    (a layer added or replaced, a parametrisation registered after it was built): they carry no hooks, so measuring
    would leave them out. ``parameters``: their names; ``modules``: the modules holding them ("the model" for the
    root). The monitor words its own remedy from :meth:`found`."""

    def __init__(self, parameters: list[str], modules: list[str]) -> None:
        self.parameters, self.modules = parameters, modules
        super().__init__(f"{self.found()}. Build the engine after the model is final: engine.detach(), then "
                         f"GradNormEngine(model) again")

    def found(self, built: str = "the engine") -> str:
        """"the model has parameters ... ('name', ...; in module 'm')": what was found, without a remedy (``built``:
        what was built before the modules were added)."""
        shown = ", ".join(repr(n) for n in self.parameters[:6])
        more = f" and {len(self.parameters) - 6} more" if len(self.parameters) > 6 else ""
        where = ", ".join(repr(m) for m in self.modules[:4]) + (f" and {len(self.modules) - 4} more"
                                                                if len(self.modules) > 4 else "")
        kind = "module" if len(self.modules) == 1 else "modules"
        return (f"the model has parameters that require gradients in modules added after {built} was built "
                f"({shown}{more}; in {kind} {where}): they carry no hooks, so the statistics would leave them out")


def _unique_params(module: nn.Module) -> dict[str, nn.Parameter]:
    """The module's direct parameters (not its children's), by local name."""
    return {k: p for k, p in module._parameters.items() if p is not None}


def _sequence_first(model: nn.Module) -> set[int]:
    """ids of the layers inside a sequence-first ``nn.TransformerEncoderLayer``/``DecoderLayer`` (``batch_first=False``,
    PyTorch's default): their inputs are (L, B, ·), so their rules get the calls with the batch moved to the front
    (the attention itself reads ``batch_first``)."""
    out: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer) and not m.self_attn.batch_first:
            out.update(id(c) for c in m.modules() if c is not m and not isinstance(c, nn.MultiheadAttention))
    return out


def _batch_to_front(call: CallRecord) -> CallRecord:
    """A recorded call of a layer fed (L, B, ·) tensors, as if fed (B, L, ·): input, outputs and their gradients."""
    def move(x: Any) -> Any:
        return x.movedim(1, 0) if isinstance(x, Tensor) and x.ndim >= 2 else x

    return CallRecord(tuple(move(a) for a in call.args), call.kwargs, [move(o) for o in call.outputs],
                      [move(g) for g in call.grads], autocast=call.autocast, state=call.state)


def _claimed_children(model: nn.Module) -> dict[int, list[str]]:
    """{id(module): child names} for the modules whose rule also measures some children's parameters, and for
    parametrised modules (``torch.nn.utils.parametrize``): the submodules that hold the tensors their weight is
    computed from, which the module's fallback measures through the parametrisation."""
    out: dict[int, list[str]] = {}
    for _, m in model.named_modules():
        rule, _ = rule_for(m)
        claimed = [*(rule.children(m) if rule is not None else ()), *parametrization_children(m)]
        if claimed:
            out[id(m)] = claimed
    return out



@dataclass
class _Pass:
    """What the hooks recorded of one forward/backward pass (the engine's containers of the same names)."""

    records: dict[int, list[CallRecord]]
    param_grads: dict[int, Tensor]
    last_grad: dict[int, Tensor]
    accumulated: dict[int, Tensor]
    root_outputs: list[Any]
    root_calls: list[CallRecord]
    batched: BatchedPasses
    owned_calls: list[Any]


@dataclass
class _Unit:
    """Parameters measured together: one module with a rule, or the (possibly tied) parameters of a fallback."""

    modules: list[tuple[str, nn.Module]]
    params: dict[str, nn.Parameter]  # global name → parameter
    local: list[dict[str, str]]  # per module: local name → global name
    rule: Rule | None
    reason: str | None


def _coupling_problem(modules: list[tuple[str, nn.Module]]) -> str | None:
    """Why the samples of a batch are coupled (batch statistics), or None; ``modules``: (name, module) pairs."""
    for name, m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            # without running statistics eval() changes nothing: it normalises with the batch's in either mode
            fix = ("Call model.eval() on it (running statistics) or use GroupNorm/LayerNorm" if m.track_running_stats
                   else "It keeps no running statistics (track_running_stats=False), so it does so in eval mode too: "
                        "build it with track_running_stats=True, train it, and call model.eval() on it while "
                        "measuring, or use GroupNorm/LayerNorm")
            return (f"{name or 'the model'} ({type(m).__name__}) normalises with batch statistics, which couples "
                    f"the samples: per-sample gradients are not defined. {fix}")
        if isinstance(m, nn.Embedding) and m.scale_grad_by_freq:
            return (f"{name} (Embedding) has scale_grad_by_freq=True, which scales gradients by batch counts: "
                    f"per-sample gradients are not defined. Set scale_grad_by_freq=False")
    return None


class GradNormEngine:
    """Hooks that make per-sample gradient statistics a by-product of an ordinary forward/backward pass.

    Usage (any model, any per-sample loss whose batch loss is its sum or mean)::

        engine = GradNormEngine(model)            # attaches hooks; armed
        losses = per_sample_loss(model, path)     # (B,)
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses, t=path.t, t_bins=10)
        stats.report().trace                      # tr Cov(g), exact
        engine.detach()

    ``armed``: whether hooks record the next forward pass (set it False on steps that are not measured; the
    hooks stay installed and still run, returning at a flag check: their Python dispatch is the cost of an
    unmeasured step, which :meth:`detach` removes); setting it arms fully. ``light`` (set after ``armed``): record
    the calls but leave every gradient to autograd and take no row norms — for a pass that may not be measured; the
    rules then do that work in ``compute``, which stays exact. ``compute`` clears the records.

    One pass at a time: a grad-enabled call of the model after a backward pass reached the recorded one starts a
    new pass. The finished pass (never measured) is kept until the new pass's backward reaches the parameters —
    a forward in between (a Jacobian, a validation loss) leaves it measurable when ``compute`` is given its losses
    — and then dropped, whether it was armed fully or lightly. So records never pile up, and ``compute`` measures
    the latest forward/backward pass only. A backward pass that reached several recorded calls of the model (two
    batches in one loss) is refused rather than measured as one batch, and so are two backward passes through one
    recorded call (``retain_graph=True``: :data:`REPEATED_BACKWARD`).

    ``elementwise``: also Σ_i g_i² (element-wise variance). ``chunk_bytes`` bounds the memory of materialised
    chunks; ``fallback_chunk`` the samples per vmap call of the fallback. Parameters with ``requires_grad=False``
    are not measured. The plan (which rule or the fallback for each module) is made at construction: ``compute``
    refuses a model that has since gained modules with parameters requiring gradients (a layer added or replaced, a
    parametrisation registered: :class:`UnplannedParametersError`) rather than measure it in part, and checks the
    BatchNorm/Embedding modules the model has now for batch coupling.
    """

    def __init__(self, model: nn.Module, *, elementwise: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 fallback_chunk: int = 64, own_grads: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.elementwise = bool(elementwise)
        self.chunk_bytes = check_positive_int("chunk_bytes", chunk_bytes)
        self.fallback_chunk = check_positive_int("fallback_chunk", fallback_chunk)
        self._armed = True
        self.light = False
        #: whether the model's recorded calls note torch's random-number state as they begin (a few µs each), which
        #: the per-sample probe of a validating compute() replays (:mod:`flowvar.variance.probe`): on until the first
        #: compute(), which turns it off; set it again before the forward of a later pass you will validate (the
        #: monitor does, for its validate_first step). Without it the probe still runs where the forward draws no
        #: random numbers, and says it could not where it does
        self.keep_rng = True
        self._busy = False
        # a backward pass reached the parameters since the pass's forward began: the next call of the model starts a
        # new pass (``_begin_pass``)
        self._backward_seen = False
        #: whether a backward pass reached the parameters while the engine was not armed, since the last clear(): a
        #: pass that ran unrecorded (the monitor armed for another step than the one that ran)
        self.unarmed_backward = False
        # the finished pass kept while the next one's forward runs without a backward yet (_begin_pass)
        self._previous: _Pass | None = None
        # the batch sizes of the passes dropped since the last clear() (the latest few), and whether one had a
        # backward pass: what the errors of compute() tell from
        self._retired: deque[int] = deque(maxlen=_RETIRED_KEPT)
        self._retired_backward = False
        self._records: dict[int, list[CallRecord]] = {}
        # every gradient the parameter hooks saw in this pass, and the part of it that reached .grad: they differ when
        # a custom autograd.Function's backward calls autograd.grad on the parameters and then returns those
        # gradients to the outer pass (torchcfm's CheckpointFunction), which fires the hooks twice for one gradient
        self._param_grads: dict[int, Tensor] = {}
        self._last_grad: dict[int, Tensor] = {}
        self._accumulated: dict[int, Tensor] = {}
        self._root_outputs: list[Any] = []
        self._root_calls: list[CallRecord] = []
        # batched-gradient passes (a vmapped backward: is_grads_batched=True) are not the training pass: the hooks
        # skip them and note that they ran
        self._batched = BatchedPasses()
        #: open projection captures of capturing rules' modules, by (thread, id(module)): one forward each
        self._captures: dict[tuple[int, int], Capture] = {}
        # the buffers of calls under way, from the forward pre-hook to the forward hook (:meth:`_state_begin`), by
        # (thread, module, whether it is the whole model's call)
        self._pending: dict[tuple[int, int, bool], list[ForwardState]] = {}
        # the spectral norms' vectors inside each module measured by the fallback (and the whole model: key 0)
        self._vectors: dict[int, list[str]] = {}
        # whether the whole model's recorded calls keep copies of its buffers (:meth:`_model_buffers`)
        self._keep_model_state = False
        self._handles: list[Any] = []
        #: parameters found used outside their own module's forward: measured through the whole model (the
        #: fallback at the root), {name: why}; kept for later batches
        self.outside: dict[str, str] = {}
        self._probes: dict[tuple[object, ...], ProbeSet] = {}
        self.units = self._plan()
        # for the sum check's error: a parametrization added later keeps the weight's identity, so nothing else tells
        self._parametrized = {id(m) for m in model.modules() if parametrize.is_parametrized(m)}
        #: layers whose parameter gradients this engine computes itself (:mod:`flowvar.variance.owned`); None when
        #: ``own_grads=False`` (autograd computes every gradient; the engine measures after the backward pass)
        self.owned = OwnedGradients(self._owning, self.outside, self.elementwise,
                                    self.chunk_bytes) if own_grads else None
        self._sequence_first = _sequence_first(model)
        # the parameters the plan measures (by identity), and the modules all of whose parameters it measures, which
        # :meth:`_survey` passes over (by id; the values hold them, so that no later module can take a freed one's id;
        # a parameter reassigned on such a module is measured by its local name, as the plan's rules and fallback read
        # the module's current parameters)
        self._planned_params = {id(p) for u in self.units for p in u.params.values()}
        self._planned_modules = {id(m): m for m in model.modules() if all(
            id(p) in self._planned_params for p in m._parameters.values() if p is not None)}
        # what :meth:`_survey` finds in the model as it is now: the modules that may couple the samples (BatchNorm,
        # Embedding) and those holding buffers, whose versions the model's forward pre-hook notes (:meth:`_state_begin`)
        self._coupling_candidates: list[tuple[str, nn.Module]] = []
        self._buffer_owners: list[tuple[str, nn.Module]] = []
        self._survey()
        self.attach()

    # ----------------------------------------------------------------------------------------- plan

    def _survey(self) -> UnplannedParametersError | None:
        """Look at the model as it is now (at construction and at every :meth:`compute`, one walk over its modules):
        refresh the BatchNorm/Embedding modules whose batch coupling :func:`_coupling_problem` checks and the modules
        holding buffers; returns the error to raise for parameters that require gradients in modules the plan does
        not cover (a layer added or replaced after the engine was built: no hook would see them), or None."""
        candidates: list[tuple[str, nn.Module]] = []
        owners: list[tuple[str, nn.Module]] = []
        params: list[str] = []
        modules: list[str] = []
        for name, m in self.model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Embedding):
                candidates.append((name, m))
            if m._buffers:
                owners.append((f"{name}." if name else "", m))
            if id(m) in self._planned_modules:
                continue
            new = [k for k, p in m._parameters.items()
                   if p is not None and p.requires_grad and id(p) not in self._planned_params]
            if new:
                params += [f"{name}.{k}" if name else k for k in new]
                modules.append(name or "the model")
        self._coupling_candidates, self._buffer_owners = candidates, owners
        return UnplannedParametersError(params, modules) if params else None

    def _plan(self) -> list[_Unit]:
        names: dict[int, str] = {}
        for name, p in self.model.named_parameters():
            names.setdefault(id(p), name)
        claims = _claimed_children(self.model)
        claimed = {id(m.get_submodule(c)) for m in self.model.modules() if id(m) in claims for c in claims[id(m)]}

        def unit_params(m: nn.Module) -> dict[str, nn.Parameter]:
            """A module's direct parameters plus those of the children its rule claims ("child.name")."""
            out = _unique_params(m)
            for child in claims.get(id(m), []):
                out.update({f"{child}.{k}": p for k, p in _unique_params(m.get_submodule(child)).items()})
            return out

        modules = [(n, m) for n, m in self.model.named_modules() if id(m) not in claimed]
        owners: dict[int, list[tuple[str, nn.Module]]] = {}
        for mname, m in modules:
            for p in unit_params(m).values():
                owners.setdefault(id(p), []).append((mname, m))
        # group modules that share a parameter (union over tied parameters)
        units: list[_Unit] = []
        seen: set[int] = set()
        for mname, m in modules:
            direct = unit_params(m)
            if not direct or id(m) in seen:
                continue
            group: list[tuple[str, nn.Module]] = [(mname, m)]
            frontier = [m]
            while frontier:
                cur = frontier.pop()
                for p in unit_params(cur).values():
                    for oname, o in owners[id(p)]:
                        if all(o is not g for _, g in group):
                            group.append((oname, o))
                            frontier.append(o)
            seen.update(id(g) for _, g in group)
            params: dict[str, nn.Parameter] = {}
            local: list[dict[str, str]] = []
            for _, g in group:
                loc = {}
                for k, p in unit_params(g).items():
                    params[names[id(p)]] = p
                    loc[k] = names[id(p)]
                local.append(loc)
            if len(group) > 1:
                rule, reason = None, "parameters shared by modules " + ", ".join(repr(n) for n, _ in group)
            else:
                rule, reason = rule_for(m)
            units.append(_Unit(group, params, local, rule, reason))
        return units

    # ----------------------------------------------------------------------------------------- hooks

    def attach(self) -> GradNormEngine:
        """Register the hooks (done by the constructor; a no-op when attached)."""
        if self._handles:
            return self
        fallback_modules = {id(m) for u in self.units if u.rule is None for _, m in u.modules}
        linear_modules = {id(m) for u in self.units if isinstance(u.rule, LinearRule) for _, m in u.modules}
        any_capturing = False
        for unit in self.units:
            for _, m in unit.modules:
                capturing = unit.rule is not None and unit.rule.captures and id(m) not in self._sequence_first
                any_capturing |= capturing
                if capturing:
                    self._handles.append(m.register_forward_pre_hook(self._capture_begin))
                if id(m) in fallback_modules:  # its buffers as each recorded call begins, for the recomputation
                    self._vectors[id(m)] = spectral_vectors(m)
                    self._handles.append(m.register_forward_pre_hook(self._state_begin))
                hook = partial(self._forward_hook, clone=id(m) in fallback_modules,
                               row_norms=id(m) in linear_modules, capture=capturing)
                self._handles.append(m.register_forward_hook(hook, with_kwargs=True))
                if capturing:  # always: a forward that raises must still close its capture
                    self._handles.append(m.register_forward_hook(self._capture_end, always_call=True))
                if self.owned is not None and unit.rule is not None and id(m) not in self._sequence_first and \
                        type(unit.rule).ownable is not Rule.ownable:
                    self._handles.extend(self.owned.attach(m, unit.rule, unit.local[0]))
            for p in unit.params.values():
                if p.requires_grad:
                    self._handles.append(p.register_hook(partial(self._param_hook, id(p))))
                    self._handles.append(p.register_post_accumulate_grad_hook(partial(self._accumulated_hook, id(p))))
        self._vectors[0] = spectral_vectors(self.model)
        self._handles.append(self.model.register_forward_hook(self._root_hook, with_kwargs=True))
        self._handles.append(self.model.register_forward_pre_hook(self._begin_pass, prepend=True))
        if self.owned is not None:  # parameters an interrupted forward left frozen get requires_grad back
            self._handles.append(self.model.register_forward_pre_hook(self.owned.thaw, prepend=True))
        if any_capturing:  # and captures it left open are closed (no layer is inside its forward at this point)
            self._handles.append(self.model.register_forward_pre_hook(self._close_stale_captures, prepend=True))
        return self

    def detach(self) -> None:
        """Remove every hook and drop the records."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    def __deepcopy__(self, memo: dict[int, Any]) -> GradNormEngine:
        """A copy for a copy of the model (the model's hooks carry the engine, so ``copy.deepcopy(model)`` copies it)
        without this pass's records: they hold the pass's non-leaf tensors, which cannot be deep-copied, and they
        belong to the original's pass (an EMA copy or a checkpoint taken between ``backward()`` and ``compute()``)."""
        transient: list[Any] = [self._records, self._param_grads, self._last_grad, self._accumulated,
                                self._root_outputs, self._root_calls, self._captures, self._pending]
        if self.owned is not None:
            transient += [self.owned.calls, self.owned._frozen]
        for obj in transient:  # every reference to them in the copy (the owned layers' too) gets the same empty one
            memo[id(obj)] = type(obj)()
        if self._previous is not None:
            memo[id(self._previous)] = None
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, copy.deepcopy(value, memo))

        # what the engine keys by id() names the original's modules and parameters; the copy's are the objects deepcopy
        # made of them (memo is keyed by the originals' ids): a copy that kept the original's ids would find every
        # parameter of its model unplanned
        def moved(key: int) -> int:
            return id(memo[key]) if key in memo else key

        new._planned_params = {moved(k) for k in self._planned_params}
        new._planned_modules = {id(m): m for m in new._planned_modules.values()}
        new._vectors = {moved(k): v for k, v in new._vectors.items()}
        new._sequence_first = {moved(k) for k in self._sequence_first}
        new._parametrized = {moved(k) for k in self._parametrized}
        return new

    def __enter__(self) -> GradNormEngine:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def clear(self) -> None:
        """Forget the recorded forward/backward pass (and close projection captures an interrupted forward left
        open)."""
        self._close_captures()
        self._pending.clear()  # the buffers of calls an exception interrupted (no forward hook took them)
        self._drop_pass()
        self._retired.clear()
        self._retired_backward = False
        self.unarmed_backward = False
        if self.owned is not None:
            self.owned.clear()

    def _drop_pass(self) -> None:
        """Forget the records of the current pass and of a finished one kept (not the engine's state between
        passes)."""
        self._take_pass()
        self._previous = None

    def _take_pass(self) -> _Pass:
        """The current pass's records, handed over; the engine records into fresh containers from now on (the hooks
        already registered on the pass's tensors keep filling the ones handed over)."""
        taken = _Pass(self._records, self._param_grads, self._last_grad, self._accumulated, self._root_outputs,
                      self._root_calls, self._batched, self.owned.calls if self.owned is not None else [])
        self._records, self._param_grads, self._last_grad, self._accumulated = {}, {}, {}, {}
        self._root_outputs, self._root_calls, self._batched = [], [], BatchedPasses()
        if self.owned is not None:
            self.owned.calls = []
        self._backward_seen = False
        return taken

    def _restore(self, kept: _Pass) -> None:
        """Make ``kept`` the current pass again (the current one's records are dropped)."""
        self._records, self._param_grads, self._last_grad, self._accumulated = (
            kept.records, kept.param_grads, kept.last_grad, kept.accumulated)
        self._root_outputs, self._root_calls, self._batched = kept.root_outputs, kept.root_calls, kept.batched
        if self.owned is not None:
            self.owned.calls = kept.owned_calls
        self._previous = None

    def _begin_pass(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook of the model (prepended): a recorded call of the model after a backward pass reached the
        parameters starts a new pass. The finished one, never measured (compute() not called: a step the monitor does
        not log, step() left out), is kept only until the new pass's backward reaches the parameters, so that a
        forward between a backward pass and compute() (a Jacobian, a validation loss) leaves it measurable, whether it
        was armed fully or lightly (a lightly armed pass may be a due step's whose number the monitor could not
        foresee). So at most one finished pass is held besides the current one, records never pile up, and passes
        are never measured together as one batch. Calls that got no backward pass are dropped once
        :data:`_PENDING_CALLS` pile up (a grad-enabled evaluation loop). Not inside a backward pass: a forward
        recomputed there (activation checkpointing) belongs to the pass under way. Also notes the model's buffers as
        the call begins (:meth:`_state_begin`: this hook stands for that one on the model, one Python call less)."""
        self._state_begin(self.model, args, root=True)
        if not (self._backward_seen or len(self._root_calls) >= _PENDING_CALLS):
            return
        if not self._recording() or torch._C._current_graph_task_id() != -1:
            return
        if not self._backward_seen:
            self._take_pass()
            return
        self._retired.extend(self._root_batches())
        self._retired_backward = True
        # kept whether the pass was armed fully or lightly: the monitor arms lightly the passes whose step number it
        # cannot foresee (step() on logged steps only, numbers restarting per epoch), and a due one among them must
        # stay measurable past a validation forward just as a fully armed one does
        self._previous = self._take_pass()

    def _recording(self) -> bool:
        # calls inside torch.func transforms (a per-sample reference computed while the engine is armed) are not
        # the training pass: their tensors carry one sample, or none of the batch
        return self._armed and not self._busy and torch.is_grad_enabled() and _outside_transforms()

    def _owning(self) -> bool:
        """Whether an owned layer computes this call's parameter gradients itself (not on a lightly armed pass)."""
        return not self.light and self._recording()

    def _forward_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
                      clone: bool = False, row_norms: bool = False, capture: bool = False) -> None:
        if not self._recording():
            return
        if row_norms and not self.light and isinstance(output, Tensor) and output.requires_grad and len(args) == 1 and \
                isinstance(args[0], Tensor) and args[0].ndim == 2:
            # a Linear on (B, in): the row norms its rule needs, computed now while input and δ are in cache
            norms: list[Tensor | None] = [None]
            grads_: list[Tensor | None] = [None]
            self._records.setdefault(id(module), []).append(
                CallRecord(args, dict(kwargs), [output], grads_, torch.linalg.vector_norm(args[0].detach(), dim=1),
                           norms))
            output.register_hook(partial(_store_grad_and_norm, grads_, norms, self._batched))
            return
        leaves = [output] if isinstance(output, Tensor) else tree_flatten(output)[0]
        grads: list[Tensor | None] = [None] * len(leaves)
        stored = leaves
        state = None
        if clone:  # the fallback recomputes the module later: keep this call's inputs and outputs as they are now
            inputs, spec = tree_flatten((args, kwargs))
            args, kwargs = tree_unflatten([_snapshot(x) for x in inputs], spec)
            stored = [_snapshot(x) for x in leaves]
            state = self._state_end(module, id(module), False)
        call = CallRecord(tuple(args), dict(kwargs), stored, grads, autocast=autocast_state(leaves), state=state)
        if capture:  # the projections this very call used (this thread's capture of the module, still open)
            opened = self._captures.get((threading.get_ident(), id(module)))
            if opened is not None:
                call.captured = opened.found
        for k, leaf in enumerate(leaves):
            if isinstance(leaf, Tensor) and leaf.requires_grad:
                # the hook must reference only the grads list: a reference to ``call`` (which holds the output)
                # would make a cycle output → hook → call → output that keeps every step's graph alive until
                # the garbage collector runs (measured: +60% forward/backward time)
                leaf.register_hook(partial(_store_grad, grads, k, self._batched))
        self._records.setdefault(id(module), []).append(call)

    def _state_begin(self, module: nn.Module, args: tuple[Any, ...], root: bool = False) -> None:
        """Forward pre-hook of the modules measured by the fallback and of the whole model: their buffers as the call
        begins (:class:`~flowvar.variance.records.ForwardState`), which the forward may update before compute() runs
        and the fallback must recompute from. A module's are copied (its inputs and outputs are, too); the model's
        only once the fallback through the whole model is planned — until then the versions of its buffers are
        noted (a few attribute reads, none for a model without buffers) — since copying every buffer of a model (a
        data set held as buffers) on every recorded pass would cost every step."""
        if not self._recording():
            return
        if not root or self.outside or self._keep_model_state:
            state = forward_state(module, copy=True)
        else:
            state = ForwardState({f"{prefix}{k}": (b, b._version) for prefix, m in self._buffer_owners
                                  for k, b in m._buffers.items() if b is not None})
        if root and self.keep_rng and not torch.compiler.is_compiling():  # for the probe (:attr:`keep_rng`)
            state.rng = rng_state(args)
        self._pending.setdefault((threading.get_ident(), id(module), root), []).append(state)

    def _state_end(self, module: nn.Module, key: int, root: bool) -> ForwardState | None:
        """The forward hook's half of :meth:`_state_begin`: the state of the call that is returning (None when the
        pre-hook did not run for it), with the spectral norms' vectors as the forward left them."""
        stack = self._pending.get((threading.get_ident(), id(module), root))
        if not stack:
            return None
        state = stack.pop()
        settle_state(module, state, self._vectors.get(key, []))
        return state

    def _capture_begin(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook of a capturing rule's module (MultiheadAttention): observe its projections while
        recording. Keyed by thread: one model may run on several threads at once."""
        key = (threading.get_ident(), id(module))
        stale = self._captures.pop(key, None)
        if stale is not None:  # the module's previous forward on this thread never returned (KeyboardInterrupt)
            end_capture(stale)
        if self._recording():
            assert isinstance(module, nn.MultiheadAttention)
            self._captures[key] = capture_projections(module, self._capture_output, self)

    def _capture_output(self, output: Tensor) -> list[Tensor | None]:
        grads: list[Tensor | None] = [None]
        output.register_hook(partial(_store_grad, grads, 0, self._batched))
        return grads

    def _capture_end(self, module: nn.Module, args: tuple[Any, ...], output: Any = None) -> None:
        """Forward hook (always called, after :meth:`_forward_hook` gave the capture to the call it recorded): close
        the capture."""
        opened = self._captures.pop((threading.get_ident(), id(module)), None)
        if opened is not None:
            end_capture(opened)

    def _close_captures(self, thread: int | None = None) -> None:
        """Close this engine's open captures (of one thread, or of all): those a forward interrupted by an exception
        that is not an ``Exception`` left open (PyTorch runs no ``always_call`` hook then), or all on detach."""
        for key in [k for k in list(self._captures) if thread is None or k[0] == thread]:
            opened = self._captures.pop(key, None)
            if opened is not None:
                end_capture(opened)

    def _close_stale_captures(self, *_: Any) -> None:
        """Forward pre-hook of the whole model (prepended): no attention of the model is inside its forward on this
        thread when the model's forward starts, so a capture of this thread still open is stale."""
        if self._captures:
            self._close_captures(threading.get_ident())

    def _param_hook(self, key: int, grad: Tensor) -> None:
        if is_batched_grad(grad):  # one of a batch of vmapped gradients (a Jacobian), not this pass's gradient
            self._batched.seen = True
            return
        if self._busy:
            return
        if not self._armed:
            self.unarmed_backward = True
            return
        self._backward_seen = True
        self._previous = None  # this pass's backward has begun: the finished one kept until now is obsolete
        # a copy: autograd may make this very tensor the parameter's .grad, which DDP's reducer (or a trainer's
        # all-reduce, or clipping) then overwrites in place before compute() reads it
        g = grad.detach().clone()
        self._param_grads[key] = self._param_grads[key] + g if key in self._param_grads else g
        self._last_grad[key] = g

    def _accumulated_hook(self, key: int, param: Tensor) -> None:
        """After a gradient was accumulated into ``.grad``: the one the tensor hook just saw."""
        if self._armed and not self._busy:
            g = self._last_grad.pop(key, None)
            if g is not None:
                self._accumulated[key] = self._accumulated[key] + g if key in self._accumulated else g

    def _hooked_grads(self) -> dict[int, Tensor]:
        """This pass's gradient of each parameter: what reached ``.grad``, or, for parameters whose gradient never
        reached it (``torch.autograd.grad``), what the hooks saw."""
        return {key: self._accumulated.get(key, g) for key, g in self._param_grads.items()}

    def _root_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self._recording():
            self._root_outputs.append(output)
            # the whole model's call, for the fallback of parameters used outside their own module
            leaves = [output] if isinstance(output, Tensor) else tree_flatten(output)[0]
            grads: list[Tensor | None] = [None] * len(leaves)
            state = self._state_end(module, 0, True)
            if state is not None and state.rng is not None and rng_unchanged(state.rng):
                state.rng = None  # the forward drew no random numbers: the probe need not touch the generators
            self._root_calls.append(CallRecord(tuple(args), dict(kwargs), leaves, grads,
                                               in_backward=torch._C._current_graph_task_id() != -1,
                                               autocast=autocast_state(leaves), state=state))
            for k, leaf in enumerate(leaves):
                if isinstance(leaf, Tensor) and leaf.requires_grad:
                    leaf.register_hook(partial(_store_grad, grads, k, self._batched))

    @property
    def armed(self) -> bool:
        """Whether the hooks record the next forward pass (class docstring)."""
        return self._armed

    @armed.setter
    def armed(self, value: bool) -> None:
        # fully: code that arms the engine for a pass it will measure (the Lightning callback) need not know of
        # ``light``, which whoever wants it sets after this
        self._armed, self.light = bool(value), False

    @property
    def attached(self) -> bool:
        """Whether the hooks are installed (:meth:`attach`; :meth:`detach` removes them)."""
        return bool(self._handles)

    @property
    def has_records(self) -> bool:
        """Whether a forward pass was recorded since the last :meth:`compute` or :meth:`clear`."""
        return bool(self._records or self._root_calls)

    @property
    def unrecorded_gradients(self) -> bool:
        """Whether, while armed, a backward pass gave the parameters gradients but reached no recorded call of the
        model or its modules: the forward ran where the hooks do not reach (``torch.compile``, ...)."""
        return bool(self._param_grads) and not self._calls_reached()

    def _reached(self) -> bool:
        """Whether a backward pass reached the current pass's parameters or recorded calls."""
        return bool(self._param_grads) or self._calls_reached()

    def _calls_reached(self) -> bool:
        """Whether a backward pass reached a recorded call (of a module, or of the model)."""
        return any(g is not None for calls in (*self._records.values(), self._root_calls) for c in calls
                   for g in c.grads)

    def _root_batches(self) -> list[int]:
        """The batch size of each recorded call of the model: the leading dimension of its output's first tensor."""
        batches: list[int] = []
        for out in self._root_outputs:
            leaves = [x for x in tree_flatten(out)[0] if isinstance(x, Tensor) and x.ndim > 0]
            if leaves:
                batches.append(int(leaves[0].shape[0]))
        return batches

    @property
    def root_output(self) -> Any:
        """The model's output in the recorded forward pass (raises unless the model was called exactly once)."""
        if len(self._root_outputs) != 1:
            raise DataError(f"the model was called {len(self._root_outputs)} times while the engine was armed; "
                            f"measure one forward pass per step")
        return self._root_outputs[0]

    @property
    def root_grad(self) -> Tensor | None:
        """∂L/∂v: the gradient that reached the model's output in the recorded pass's backward, shaped as the output
        (B, ...); None unless the model was called once, returned one tensor, and a backward pass reached it. Read
        it before :meth:`compute`, which clears the records (the root hook records it anyway, for the fallback)."""
        if len(self._root_calls) != 1 or not isinstance(self._root_outputs[0], Tensor):
            return None
        return self._root_calls[0].grads[0]

    @property
    def fallback_parameters(self) -> dict[str, str]:
        """{parameter name: reason} for parameters the engine measures with the exact per-sample fallback: those
        of modules without a rule, and those found used outside their own module (measured through the model)."""
        out = {n: u.reason or "" for u in self.units if u.rule is None for n in u.params}
        out.update(self.outside)
        return out

    # ----------------------------------------------------------------------------------------- compute

    def compute(self, batch_size: int | None = None, *, reduction: Reduction = "mean", losses: Tensor | None = None,
                t: Tensor | None = None, t_bins: int | None = None, segments: Tensor | None = None,
                n_segments: int | None = None, bin_traces: bool = True, validate: bool = False,
                check: bool = True) -> BatchGradStats:
        """Per-sample gradient statistics of the recorded forward/backward pass, then :meth:`clear`.

        ``reduction``: how the backward pass's loss was formed from the per-sample losses ("mean": L = (1/B)Σℓ_i,
        "sum": L = Σℓ_i); g_i = ∇ℓ_i either way. ``batch_size``: B (default: the leading dimension of ``losses``
        or of the model output). ``losses``: (B,) ℓ_i, kept in the result for loss statistics. ``t`` (B,) in
        [0, 1] (or (B, 1), (B, 1, 1, 1): one time per sample) with ``t_bins``: per-bin sums for
        :meth:`BatchGradStats.bins`; or explicit ``segments`` (B,) long in [0, n_segments). ``bin_traces=False``:
        keep the segments (per-bin counts, losses, ‖g_i‖²) but skip the per-segment gradient sums (about one
        weight-gradient product per layer).

        ``check`` (default): verify that the per-sample gradients add up to the backward pass's gradient,
        Σ_i g_i = s·G, cheaply — exactly where a rule materialises g_i, by :data:`~flowvar.variance.records.N_PROBES`
        random rank-one projections where it does not (a few % of the pass). Parameters that fail it (used
        outside their module's forward, or the module changed how it uses them) are measured again through the
        whole model by the exact fallback and kept there (:attr:`outside`); if the sums still disagree, the
        backward pass was of more than the per-sample losses and :class:`DataError` is raised. ``validate``: the
        same check with the full Σ_i g_i of every parameter (about one extra weight-gradient product per layer), and
        the per-sample probe (:meth:`_probe`: the first and the last sample's gradients recomputed exactly through the
        model, about one more forward and two backward passes of the batch): parameters whose rule paired rows with
        the wrong samples are measured through the whole model from then on; the result's ``probe`` says what it
        found.
        """
        if reduction not in REDUCTIONS:
            raise ConfigError(f"unknown reduction {reduction!r}; use 'mean' (L = mean of the per-sample losses) or "
                              f"'sum'")
        if self.has_records and not self._batched.seen and not self._reached() and (
                self._previous is None or not _derives_from(losses, self._previous.root_calls)):
            # a forward pass whose backward has not run yet (compute() before loss.backward()), and the losses are not
            # those of a finished pass kept from before it: its records are kept (raised before the clear() below),
            # so that a compute() after the backward pass measures it — after a diagnostic pass too, which left a
            # finished pass kept (dropped here, the retry was refused as a backward pass reaching no recorded forward)
            raise DataError(_LATER_FORWARD if self._retired_backward or self._previous is not None else _NO_BACKWARD)
        try:
            return self._compute(batch_size, reduction, losses, t, t_bins, segments, n_segments, bin_traces, validate,
                                 check)
        finally:
            self.clear()
            self.keep_rng = False  # a few µs per pass from now on saved (:attr:`keep_rng`)

    def _batch_mismatch(self, n: int, given: str) -> BatchMismatchError | None:
        """A :class:`BatchMismatchError` when the batch of ``n`` samples given to :meth:`compute` (``given``: as
        losses or batch_size) differs from the recorded calls of the model (their batch sizes: the leading dimension
        of each output's first tensor), else None. Called only on the way to an error. ``batches`` of the error: the
        calls the ``n`` samples look like they came from: this pass's, after those of the passes dropped before it
        when the ``n`` samples are theirs together (the losses of several accumulated micro-batches)."""
        batches = self._root_batches()
        if not batches or batches == [n]:
            return None
        earlier = list(self._retired)
        for k in range(len(earlier)):
            if sum(earlier[k:]) + sum(batches) == n:
                batches = earlier[k:] + batches
                break
        if len(batches) == 1:
            text = (f"{given} for a batch of {batches[0]} (the recorded forward pass of the model): give one loss "
                    f"per sample of that pass")
        else:
            text = (f"{given} for {len(batches)} recorded forward passes of the model "
                    f"({' + '.join(map(str, batches))} samples): compute() measures one forward/backward pass; call "
                    f"it after each pass's backward, with that pass's losses")
        return BatchMismatchError(text, n, tuple(batches))

    def _infer_batch(self, batch_size: int | None, losses: Tensor | None) -> int:
        if batch_size is not None:
            return check_positive_int("batch_size", batch_size)
        if losses is not None:
            return int(losses.shape[0])
        batches = self._root_batches()
        if batches:
            return batches[0]
        raise ConfigError("cannot tell the batch size; pass batch_size or losses to compute()")

    def _segments(self, B: int, t: Tensor | None, t_bins: int | None, segments: Tensor | None,
                  n_segments: int | None) -> tuple[Tensor | None, int, np.ndarray | None]:
        if t_bins is not None and t is not None:
            nb = check_positive_int("t_bins", t_bins)
            # one time per sample, in the losses' order: a shape with one non-unit dimension of B (t.squeeze() is
            # (B,)); flattening any other layout of B elements (a (4, 4) t for B = 16) pairs samples with wrong times
            if t.numel() != B or sum(n != 1 for n in t.shape) > 1:
                raise ShapeError(f"t must have shape ({B},), got {tuple(t.shape)}; accepted: ({B},), ({B}, 1) or "
                                 f"({B}, 1, 1, 1) — one time per sample, in the order of the losses")
            tt = t.detach().reshape(-1)
            lo, hi = torch.stack(torch.aminmax(tt)).tolist()
            if not (lo >= 0 and hi <= 1):  # NaN fails too
                raise DataError(f"t must lie in [0, 1] to be binned, got values in [{lo:.3g}, {hi:.3g}]")
            # bin k = ⌊t·n⌋ (t ≥ 0, so truncation is the floor; float64: t·n exact for float32 t), t = 1 in the last bin
            return (tt.to(F64) * nb).long().clamp_(max=nb - 1), nb, _bin_edges(nb)
        if segments is not None:
            if n_segments is None:
                raise ConfigError("pass n_segments with segments")
            n = check_positive_int("n_segments", n_segments)
            seg = segments.detach().reshape(-1).long()
            long_axes = sum(size != 1 for size in segments.shape)  # (B,), (B, 1), (1, B): one axis of B
            if segments.numel() != B or long_axes > 1 or bool(((seg < 0) | (seg >= n)).any()):
                raise ShapeError(f"segments must be ({B},) integers in [0, {n})")
            return seg, n, None
        return None, 0, None

    def _compute(self, batch_size: int | None, reduction: str, losses: Tensor | None, t: Tensor | None,
                 t_bins: int | None, segments: Tensor | None, n_segments: int | None, bin_traces: bool,
                 validate: bool, check: bool) -> BatchGradStats:
        unplanned = self._survey()
        # a BatchNorm in training mode among the modules added is the more basic problem (a new engine would refuse it
        # too): named first
        problem = _coupling_problem(self._coupling_candidates)
        if problem is not None:
            raise ConfigError(problem)
        if unplanned is not None:
            raise unplanned
        if self._previous is not None and not self._reached():
            # a forward ran after the finished pass's backward and has had no backward of its own: the finished pass
            # is measured when the losses are its own (a Jacobian or a validation loss computed in between), else
            # the losses may be the new forward's, given before its backward
            if not _derives_from(losses, self._previous.root_calls):
                raise DataError(_LATER_FORWARD)
            self._restore(self._previous)
        if not self.has_records and not self._param_grads:
            raise DataError("nothing was recorded: run the forward and backward pass with the engine attached and "
                            "armed (engine.armed = True) before compute(), with gradients enabled" +
                            (" (a backward pass did reach the parameters while the engine was not armed)"
                             if self.unarmed_backward else ""))
        if self._param_grads and not self._calls_reached():
            raise DataError(UNRECORDED)
        if self._batched.repeated:
            raise DataError(REPEATED_BACKWARD)
        if self._batched.seen and not self._reached():
            raise DataError("the only backward pass through the recorded forward pass was a batched-gradient pass "
                            "(torch.autograd.grad(..., is_grads_batched=True), autograd.functional.jacobian with "
                            "vectorize=True, torch.func.vmap around autograd.grad), which has no per-sample losses' "
                            "gradient to measure: run the ordinary backward pass of the reduced per-sample losses "
                            "before compute()")
        if not self._reached():
            # a forward pass without its backward: every rule would read "unused" and report a trace of 0
            raise DataError(_LATER_FORWARD if self._retired_backward else _NO_BACKWARD)
        reached = [c for c in self._root_calls if any(g is not None for g in c.grads)]
        if self._retired_backward and _derives_from(losses, reached) is False:
            # passes were dropped unmeasured since the last compute(): the latest is measured, so the losses must be
            # its own (not of a pass before it, followed by another forward/backward pass before compute())
            raise DataError(_OTHER_PASS)
        if len(reached) > 1 and any(c.in_backward for c in reached):
            # a whole model recomputed in the backward pass (reentrant checkpointing: its forward ran without
            # gradients, so it did not start a new pass) joins the pass before it when that one was not measured
            raise DataError(
                "the backward pass recomputed the model (reentrant activation checkpointing around the whole model) "
                "after an earlier pass that was never measured, and the two cannot be told apart: call compute() "
                "(the monitor's step()) after every backward pass, or checkpoint the model's blocks rather than the "
                "whole model (or use_reentrant=False)")
        if len(reached) > 1:
            raise DataError(
                f"the backward pass reached {len(reached)} recorded calls of the model (forward passes with "
                f"gradients enabled since the last compute(), none of them back-propagated on its own): per-sample "
                f"gradients are measured for one forward/backward pass, and several calls' samples cannot be told "
                f"apart from one call of a larger batch (two batches back-propagated together would be paired by "
                f"index). Back-propagate each batch's loss separately and measure after each backward, run extra "
                f"forward passes under torch.no_grad(); for a loss that calls the model more than once per sample "
                f"(self-conditioning with gradients through both calls, a consistency loss), build the engine or "
                f"monitor on a module whose forward makes all of the calls")
        B = self._infer_batch(batch_size, losses)
        if losses is not None and losses.shape != (B,):
            raise ShapeError(f"losses must have shape ({B},), got {tuple(losses.shape)}")
        try:
            seg, n_seg, edges = self._segments(B, t, t_bins, segments, n_segments)
        except ShapeError as error:  # t (or segments) does not carry B samples: is B itself not the recorded batch's?
            mismatch = self._batch_mismatch(B, f"batch_size={B}" if batch_size is not None or losses is None
                                            else f"{B} per-sample losses")
            if mismatch is None:  # B is the recorded batch: t is the one that is wrong
                raise
            raise mismatch from error
        scale = float(B) if reduction == "mean" else 1.0
        measured = {n: p for u in self.units for n, p in u.params.items() if p.requires_grad}
        devices = {p.device for p in measured.values()}
        if len(devices) > 1:
            raise ConfigError(f"the measured parameters live on several devices ({sorted(map(str, devices))}); the "
                              f"engine accumulates per-sample statistics on one device: move the model to one")
        device = devices.pop() if devices else torch.device("cpu")
        if seg is not None:
            seg = seg.to(device)  # t (or segments) may come from the CPU data pipeline
        hooked = self._hooked_grads()
        want_sum = {n for n, p in measured.items() if validate or id(p) not in hooked}
        if check:  # rules that do not feed the cheap check give their full Σ_i g_i instead
            want_sum |= {n for u in self.units if u.rule is not None and not u.rule.fills_check for n in u.params}
        ctx = RuleContext(B=B, want_grad_sum=want_sum, want_sq_sum=self.elementwise,
                          segments=seg if bin_traces else None, n_segments=n_seg, chunk_bytes=self.chunk_bytes,
                          fallback_chunk=self.fallback_chunk, device=device, check=check or validate)
        sq_buf = torch.zeros(len(measured), B, dtype=F64, device=device)  # per-parameter ‖g_i‖², one row each
        collectors = {n: Collector(n, p.shape, ctx, sq_buf[k], self._probes)
                      for k, (n, p) in enumerate(measured.items())}
        rules: dict[str, str] = {}
        fallback: dict[str, str] = {}
        self._busy = True
        try:
            with torch.no_grad():  # the rules build no graph; torch.func inside the fallback ignores the outer no_grad
                via_model: dict[str, str] = {}  # parameters to measure through the whole model, and why
                # those of them whose module's input does not carry the batch in its first dimension (a rule's
                # ShapeError, or the probe), and why: named, with the fix, if the whole model cannot measure them
                layout: dict[str, str] = {}
                for unit in self.units:
                    names = [n for n in unit.params if n in measured]
                    via_model.update({n: self.outside[n] for n in names if n in self.outside})
                    names = [n for n in names if n not in self.outside]
                    if names:
                        via_model.update(self._run_unit(unit, names, collectors, ctx, rules, fallback, hooked,
                                                        layout))
                if ctx.check:
                    for name in self._failed_checks(collectors, measured, hooked, B, ctx):
                        via_model.setdefault(name, f"used outside its module's forward: the rule's per-sample "
                                                   f"gradients of {name!r} did not add up to the backward pass's")
                probe = None
                if validate:  # the rows the rules paired with samples: checked against exact recomputations
                    found, probe = self._probe(measured, collectors, set(via_model), B, scale)
                    layout.update(found)
                    via_model.update(found)
                if via_model:
                    self._through_model(via_model, layout, measured, collectors, ctx, rules, fallback, hooked, B)
        except ShapeError as error:  # a module's input does not carry B samples: is B that of the recorded passes?
            mismatch = self._batch_mismatch(B, f"batch_size={B}" if batch_size is not None or losses is None
                                            else f"{B} per-sample losses")
            if mismatch is None:
                raise
            raise mismatch from error
        finally:
            self._busy = False
        mean_grad: dict[str, Tensor] = {}
        for name, c in collectors.items():
            p = measured[name]
            ref = hooked.get(id(p))
            c.finish(scale)
            if c.grad_sum is not None:
                mean_grad[name] = c.grad_sum / B
            else:  # the backward pass's gradient is Σ_i g_i / s: ḡ = that · s / B (a copy: .grad may change later)
                assert ref is not None
                g = ref.to_dense() if ref.is_sparse else ref
                mean_grad[name] = g.clone() if scale == B else g * (scale / B)
        if scale != 1.0:
            sq_buf *= scale ** 2
        param_sq = {n: c.sq_norms for n, c in collectors.items()}
        return BatchGradStats(
            n=B, sq_norms=sq_buf.sum(0), param_sq_norms=param_sq, mean_grad=mean_grad,
            sq_sum={n: c.sq_sum for n, c in collectors.items() if c.sq_sum is not None} if self.elementwise else None,
            seg_sq_norms={n: c.seg_sq for n, c in collectors.items() if c.seg_sq is not None}
            if seg is not None and bin_traces else None,
            segments=seg, n_segments=n_seg, losses=None if losses is None else losses.detach().to(F64),
            rules=rules, fallback=fallback, edges=edges, probe=probe)

    def _run_unit(self, unit: _Unit, names: list[str], collectors: dict[str, Collector], ctx: RuleContext,
                  rules: dict[str, str], fallback: dict[str, str], hooked: dict[int, Tensor],
                  layout: dict[str, str]) -> dict[str, str]:
        """Measure ``names`` of ``unit`` by its rule or the module fallback; returns {name: why} for parameters to
        measure through the whole model instead: those that received a gradient although their module took no part
        in the backward pass (used outside it), and those of a module whose input (or output) does not carry the
        batch in its first dimension (also put in ``layout``: :meth:`_off_layout`)."""
        calls = [[c for c in self._records.get(id(m), []) if any(g is not None for g in c.grads)]
                 for _, m in unit.modules]
        if not any(calls):
            got = [n for n in names
                   if id(unit.params[n]) in hooked and bool(hooked[id(unit.params[n])].abs().sum() > 0)]
            for n in names:
                rules[n] = "unused"
            # no module hook ran at all, only the model's own: inside torch.compile'd code (graph breaks around the
            # model's call leave its hook in Python) the modules run without their hooks
            why = " (no module hook ran inside the model's call: a torch.compile'd model?)" if not self._records else ""
            return {n: f"used outside its module's forward: module {unit.modules[0][0]!r} took no part in the "
                       f"backward pass{why}" for n in got}
        if unit.rule is not None:
            (mname, m), = unit.modules
            local = {k: collectors[g] for k, g in unit.local[0].items() if g in names}
            stash = None if self.owned is None or ctx.segments is not None else self.owned.stash_for(m, calls[0])
            # (the stash's rows are the first dimension of the input: the batch, unless the rule's own check says no)
            if stash is not None and all(k in stash.sums for k in local) and calls[0][0].args[0].shape[0] == ctx.B:
                for k, c in local.items():  # measured at the end of the backward pass, when it wrote .grad
                    c.sq_norms.copy_(stash.sq_norms[k])
                    target = c.sum_target()
                    if target is not None:
                        target += stash.sums[k]
                    if c.sq_sum is not None:
                        c.sq_sum += stash.sq_sums[k]
                for n in names:
                    rules[n] = f"{unit.rule.name}-owned"
                return {}
            mcalls = [_batch_to_front(c) for c in calls[0]] if id(m) in self._sequence_first else calls[0]
            dtype = next(iter(unit.params.values())).dtype
            mcalls = [_in_dtype(c, dtype) for c in mcalls]
            try:
                label = unit.rule.accumulate(m, mcalls, local, ctx)
            except ShapeError as error:
                return self._off_layout(unit, names, error, ctx.B, layout)
            for n in names:
                rules[n] = label
            return {}
        wanted_by_module = [{k: g for k, g in loc.items() if g in names} for loc in unit.local]
        how = "fallback-vmap"
        for start, stop in self._fallback_chunks(ctx, [unit.params[n] for n in names]):
            total: dict[str, Tensor] = {}
            for (mname, m), wanted, mcalls in zip(unit.modules, wanted_by_module, calls):
                if id(m) in self._sequence_first:  # a reparametrised Linear of a sequence-first encoder layer: it acts
                    # on the last dimension, so batch-first calls recompute it (the fallback checks the output)
                    mcalls = [_batch_to_front(c) for c in mcalls]
                for call in mcalls:
                    try:
                        grads, h = fallback_call(m, mname, wanted, call, start, stop, ctx.B,
                                                 recorded_buffers(m, call.state))
                    except ShapeError as error:  # its output does not carry the batch first
                        return self._off_layout(unit, names, error, ctx.B, layout)
                    how = h if h == "fallback-loop" else how
                    for k, g in grads.items():
                        total[wanted[k]] = total[wanted[k]] + g if wanted[k] in total else g
            for n in names:
                p = unit.params[n]
                g = total.get(n)
                collectors[n].add_per_sample(start, p.new_zeros(stop - start, *p.shape) if g is None else g)
        for n in names:
            rules[n] = how
            fallback[n] = unit.reason or ""
        return {}

    def _fallback_chunks(self, ctx: RuleContext, params: list[Tensor]) -> list[tuple[int, int]]:
        """Sample ranges for the fallback: at most ``fallback_chunk`` samples, and about ``chunk_bytes`` of
        materialised per-sample gradients (two copies: the vmap result and its float64 sums)."""
        per_sample = 2 * sum(p.numel() * p.element_size() for p in params)
        size = max(1, min(ctx.fallback_chunk, self.chunk_bytes // max(1, per_sample)))
        return [(s, min(s + size, ctx.B)) for s in range(0, ctx.B, size)]

    def _off_layout(self, unit: _Unit, names: list[str], error: ShapeError, B: int,
                    layout: dict[str, str]) -> dict[str, str]:
        """``unit``'s module got an input (or gave an output) without the batch of B samples in its first dimension
        (``error``, raised by its rule's :func:`~flowvar.variance.rules.base.batched` or its fallback's): a table
        shared by every sample ((L, E), (1, E)), tokens flattened to (B·L, E), a sequence-first (L, B, E) input. Its
        rule cannot pair rows with samples, but the per-sample gradients are defined (each loss still depends on its
        own sample), so ``names`` go to the exact fallback through the whole model, which recomputes one sample at a
        time whatever the layers' shapes: {name: why}, also put in ``layout``. Raises ``error`` again when B is not
        the recorded batch's (then the caller gave the wrong B, and :meth:`compute` says so), and a
        :class:`ShapeError` naming the module and the fix when the model's own call was not recorded."""
        if self._batch_mismatch(B, "") is not None:
            raise error
        where = _modules_named(unit.modules)
        if not any(any(g is not None for g in c.grads) for c in self._root_calls):
            raise ShapeError(f"{where}: {error}; the model's own call was not recorded either, so its parameters "
                             f"cannot be measured through the whole model. {_LAYOUT_FIX}") from error
        why = (f"{where} has an input or output without the batch of {B} samples in its first dimension ({error}); "
               f"measured through the whole model")
        found = dict.fromkeys(names, why)
        layout.update(found)
        return found

    def _probe(self, measured: dict[str, nn.Parameter], collectors: dict[str, Collector], skip: set[str], B: int,
               scale: float) -> tuple[dict[str, str], str]:
        """The per-sample probe of a validating pass (:mod:`flowvar.variance.probe`): each parameter's ‖g_i‖² for
        the first and the last sample, recomputed exactly through the whole model, against what its rule (or its
        module's fallback) gave. They disagree when the module paired rows of an input with samples although that
        input's first dimension, of the batch's size, is not the batch (a table of B rows shared by every sample, a
        sequence-first (L, B, ·) input at L = B), which the sum check cannot see (the rows are only permuted between
        samples), or when the forward couples the samples. Tolerance: relative ``_tolerance()`` of the two norms,
        plus ``1e-3 · _tolerance()`` of the sample's whole ‖g_i‖² (a parameter whose gradient cancels to ~0 holds
        rounding noise). Returns ({name: why} for those that disagree, to measure through the whole model; what the
        probe found, for :attr:`BatchGradStats.probe`). ``skip``: parameters measured through the whole model
        anyway. Where the probe cannot run it says why (and logs it) and changes nothing."""
        names = {n: p for n, p in measured.items() if n not in skip}
        if not names:
            return {}, "not run: every parameter is measured through the whole model"
        calls = [c for c in self._root_calls if any(g is not None for g in c.grads)]
        if len(calls) != 1:
            exact: dict[str, Tensor] | str = "the model's own call was not recorded"
        else:
            buffers, written, added = self._buffers_then(calls[0])
            # buffers not known as the call began: taken as they are (a running statistic the forward wrote but does
            # not read); the recomputation's check against the recorded output catches one it does read
            live = dict(self.model.named_buffers())
            buffers = {**buffers, **{n: live[n].detach() for n in (*written, *added)}}
            samples = probe_samples(B)
            # every engine on the model and its modules (another monitor, an estimator's engine) stays out of the
            # recomputation, as this one does (it is busy): it is no pass of theirs
            others = [e for e in _engines_on(self.model) if not e._busy]
            for e in others:
                e._busy = True
            try:
                exact = exact_sample_norms(self.model, calls[0], measured, buffers, samples, B)
            finally:
                for e in others:
                    e._busy = False
        if isinstance(exact, str):
            log.warning("gradient variance: the per-sample probe of this validating pass could not run (%s): a module "
                        "input whose first dimension has the batch's size without being the batch would go "
                        "unnoticed", exact)
            return {}, f"not run: {exact}"
        order = [n for n in exact if n in names]
        tol = self._tolerance()
        device = collectors[order[0]].sq_norms.device
        rows = torch.tensor(samples, device=device)
        got = torch.stack([collectors[n].sq_norms.index_select(0, rows) for n in order])  # raw δ, as ``exact``
        want = torch.stack([exact[n] for n in order]).to(device)
        bound = tol * (got + want) + 1e-3 * tol * want.sum(0)
        bad = ((got - want).abs() > bound).tolist()  # one transfer (NaN compares False: a NaN pass is logged as such)
        got_l, want_l = (got * scale ** 2).tolist(), (want * scale ** 2).tolist()
        owner = {n: unit.modules for unit in self.units for n in unit.params}
        found: dict[str, str] = {}
        for q, n in enumerate(order):
            j = next((j for j, b in enumerate(bad[q]) if b), None)
            if j is None:
                continue
            i = samples[j]
            found[n] = (f"{_modules_named(owner[n])}: the per-sample gradients its rule gave (pairing row r of each "
                        f"input with sample r) disagree with an exact recomputation of sample {i} through the whole "
                        f"model (‖g_{i}‖² of {n!r}: {want_l[q][j]:.6g}, not {got_l[q][j]:.6g}): an input's first "
                        f"dimension has the batch's size ({B}) without being the batch (a table of {B} rows shared by "
                        f"every sample, a sequence-first (L, B, ·) input at L = B), or the forward couples the "
                        f"samples; measured through the whole model")
        shown = ", ".join(map(str, samples))
        note = (f"samples {shown}: {len(order)} parameter tensors agree with an exact recomputation" if not found else
                f"samples {shown}: {len(found)} of {len(order)} parameter tensors disagree with an exact "
                f"recomputation ({_listed(list(found))}), measured through the whole model")
        return found, note

    def _through_model(self, via_model: dict[str, str], layout: dict[str, str], measured: dict[str, nn.Parameter],
                       collectors: dict[str, Collector], ctx: RuleContext, rules: dict[str, str],
                       fallback: dict[str, str], hooked: dict[int, Tensor], B: int) -> None:
        """:meth:`_run_whole_model`, whose refusal (a forward drawing random numbers, an output without the batch
        first, samples coupled) names, for parameters sent there because of their module's input (``layout``), that
        module and the fix."""
        try:
            self._run_whole_model(via_model, measured, collectors, ctx, rules, fallback, hooked, B)
        except DataError:  # the sums or the buffers: its own message says what and why
            raise
        except Exception as error:  # a refusal, or the model's own error recomputed on one sample (F.batch_norm)
            sent = [n for n in via_model if n in layout]
            if not sent:
                raise
            kind = type(error) if isinstance(error, ConfigError | ShapeError) else ConfigError
            raise kind(f"{layout[sent[0]]} — but that failed: {type(error).__name__}: {error}. So {_listed(sent)} "
                       f"cannot be measured exactly on this pass. {_LAYOUT_FIX}") from error

    def _run_whole_model(self, via_model: dict[str, str], measured: dict[str, nn.Parameter],
                         collectors: dict[str, Collector], ctx: RuleContext, rules: dict[str, str],
                         fallback: dict[str, str], hooked: dict[int, Tensor], B: int) -> None:
        """The exact fallback through the whole model for parameters its hooks cannot attribute (used outside their
        module's forward, or a rule's sums failed the check): per-sample vector-Jacobian products of the recorded
        model call(s). Checks their sums again; a mismatch left means an extra loss term: :class:`DataError`."""
        names = list(via_model)
        if not self._root_calls or not any(any(g is not None for g in c.grads) for c in self._root_calls):
            self._mismatch_error(names, "and the model's own call was not recorded (call the model itself, with the "
                                        "engine armed, to let it measure them through the model)")
        for n in names:
            collectors[n].reset()
        # global names: the root's named_parameters() are the engine's names
        wanted = {n: n for n in names}
        how = "fallback-vmap"
        calls = [c for c in self._root_calls if any(g is not None for g in c.grads)]
        buffers = [self._model_buffers(c, names) for c in calls]
        for start, stop in self._fallback_chunks(ctx, [measured[n] for n in names]):
            total: dict[str, Tensor] = {}
            for call, state in zip(calls, buffers):
                grads, h = fallback_call(self.model, "the model", wanted, call, start, stop, B, state)
                how = h if h == "fallback-loop" else how
                for k, g in grads.items():
                    total[k] = total[k] + g if k in total else g
            for n in names:
                p = measured[n]
                g = total.get(n)
                collectors[n].add_per_sample(start, p.new_zeros(stop - start, *p.shape) if g is None else g)
        for n in names:
            rules[n] = f"model-{how}"
            fallback[n] = via_model[n]
        if ctx.check:
            still = self._failed_checks({n: collectors[n] for n in names}, measured, hooked, B, ctx)
            if still:
                self._mismatch_error(still, "even when measured through the whole model")
        new = [n for n in names if n not in self.outside]
        if new:  # from now on these go through the model directly (a later batch need not fail the check first)
            log.warning("gradient variance: %d parameter(s) measured through the whole model by the exact fallback "
                        "(slower): %s — %s", len(new), ", ".join(new[:5]) + (" ..." if len(new) > 5 else ""),
                        via_model[new[0]])
        self.outside.update(via_model)

    def _model_buffers(self, call: CallRecord, names: list[str]) -> dict[str, Tensor]:
        """The model's buffers as its recorded ``call`` began, for the fallback through the whole model (which copies
        them again before use, never writing the model's own): the copies the call kept; else each buffer as it is
        now where it is the same tensor at the same version as then (not written since), or a copy a module measured
        by the fallback kept of it at that version. A buffer written since that nothing kept a copy of (a module
        without parameters that updates its buffers in its forward, on a pass recorded before the fallback through
        the model was planned) cannot be recomputed from: :class:`DataError`, and from then on the model's calls keep
        copies of every buffer. So is a buffer the call's notes do not hold at all: registered after the engine last
        looked at the model (:meth:`_survey`, at construction and at every compute(); a module that had no buffers
        then is not among those whose versions are noted), whose value as the call began is unknown — named as such,
        not as written. (A write through ``.data`` advances no version counter: a module without parameters
        that writes its buffers so is recomputed from the written values, and the recomputation's check against the
        recorded output is then what stands between it and a wrong number.)"""
        out, written, added = self._buffers_then(call)
        if written or added:
            self._keep_model_state = True
            causes = []
            if written:
                causes.append(f"the buffers {_listed(written)} were written since (a module that updates its buffers "
                              f"in its forward: running statistics, a counter, an EMA of its input)")
            if added:
                causes.append(f"the buffers {_listed(added)} were registered after the engine last looked at the model "
                              f"(at its construction or its last compute()), so their values as the pass began were "
                              f"not noted")
            raise DataError(
                f"{', '.join(repr(n) for n in names[:5])} must be measured through the whole model (used outside their "
                f"module's forward, or their module's input does not carry the batch in its first dimension: "
                f"stats.fallback says which), which recomputes the model from its buffers as the recorded forward pass "
                f"began, "
                f"but {'; and '.join(causes)}; no copy of them as they were was kept: this pass cannot be measured "
                f"exactly. From the next pass on the engine keeps one at the start of every recorded forward pass: "
                f"measure the next step")
        return out

    def _buffers_then(self, call: CallRecord) -> tuple[dict[str, Tensor], list[str], list[str]]:
        """The model's buffers as its recorded ``call`` began, where known (:meth:`_model_buffers`), and the names of
        those that are not: written since, and registered after the engine last looked at the model."""
        state = call.state
        if state is not None and state.copies is not None:
            return state.copies, [], []
        then = state.live if state is not None else {}
        out: dict[str, Tensor] = {}
        written: list[str] = []
        added: list[str] = []  # not in the call's notes: registered after the engine last surveyed the model
        for name, b in self.model.named_buffers():
            was = then.get(name)
            fresh = was is not None and was[0] is b and was[1] == b._version  # not written since the call began
            copy = b.detach() if fresh else self._kept_copy(name, was)
            if copy is None:
                (added if was is None else written).append(name)
            else:
                out[name] = copy
        return out, written, added

    def _kept_copy(self, name: str, was: tuple[Tensor, int] | None) -> Tensor | None:
        """The copy of the model's buffer ``name`` that a module measured by the fallback kept as its first recorded
        call of this pass began, if the buffer was then the tensor ``was`` names at its version (not written since
        the model's call began); else None."""
        if was is None:
            return None
        for unit in self.units:
            if unit.rule is not None:
                continue
            for mname, m in unit.modules:
                prefix = f"{mname}." if mname else ""
                calls = self._records.get(id(m))
                if not name.startswith(prefix) or not calls:
                    continue
                state = calls[0].state
                local = name[len(prefix):]
                if state is None or state.copies is None or local not in state.copies:
                    continue
                seen = state.live.get(local)
                # the spectral norms' vectors were kept as the forward left them, which the recomputation needs
                if local in self._vectors.get(id(m), ()) or (seen is not None and seen[0] is was[0] and
                                                             seen[1] == was[1]):
                    return state.copies[local]
        return None

    def _failed_checks(self, collectors: dict[str, Collector], measured: dict[str, nn.Parameter],
                       hooked: dict[int, Tensor], B: int, ctx: RuleContext) -> list[str]:
        """Parameters whose Σ_i g_i (raw δ, before the reduction's scale) disagrees with the hooked gradient G.

        Full sums: ‖Σ_i g_i − G‖ ≤ tol·(‖G‖ + √(B Σ_i ‖g_i‖²)) plus 1% of the same bound over all parameters (a
        floor for gradients that cancel to 0). Probes R_j (rank one, Gaussian factors): the gap divided by
        2‖R_j‖/√P (‖R_j‖/√P: the size of ⟨N, R_j⟩ for noise N of unit norm). tol from the precision of the pass
        (float64 1e-8, float32 1e-3 — 1e-2 on a GPU allowed to use TF32 —, half types 3e-2).
        """
        probe: dict[str, tuple[Tensor, Tensor, Tensor]] = {}  # name → (Σ_i ⟨g_i, R_j⟩, ⟨G, R_j⟩, ‖R_j‖/√P)
        full: dict[str, Tensor] = {}  # name → ‖Σ_i g_i − G‖
        refs: dict[str, tuple[Tensor, Tensor]] = {}  # name → (G, per-sample ‖g_i‖²)
        for name, c in collectors.items():
            ref = hooked.get(id(measured[name]))
            if ref is None:
                continue
            G = ref.to_dense() if ref.is_sparse else ref
            if c.grad_sum is None and c.probe_sum is not None and c.probe is not None and c.probe_scale is not None:
                if c.check_sum is None and c.probe_factors is not None:  # ⟨G, u_j v_jᵀ⟩ = u_jᵀ G v_j
                    u, v = c.probe_factors
                    probe[name] = (c.probe_sum, torch.linalg.vecdot(u @ G.reshape(u.shape[1], v.shape[1]), v),
                                   c.probe_scale)
                else:
                    R = c.probe.reshape(c.probe.shape[0], -1)
                    got = c.probe_sum if c.check_sum is None else c.probe_sum + R.to(F64) @ c.check_sum.reshape(-1)
                    probe[name] = (got, R @ G.reshape(-1), c.probe_scale)
            else:
                total = c.grad_sum if c.grad_sum is not None else c.check_sum
                full[name] = (torch.linalg.vector_norm(G, dtype=F64) if total is None
                              else torch.linalg.vector_norm(total - G.to(F64)))
            refs[name] = (G, c.sq_norms)
        if not refs:
            return []
        names = [*probe, *full]
        gaps = []
        if probe:
            got, want, scales = (torch.stack(x) for x in zip(*probe.values()))
            # ÷ 2: the largest of N_PROBES projections of a mismatch M is typically ~1.5‖M‖, so this flags about when
            # the full check would (a parameter flagged by the probes alone is still measured exactly, but slowly)
            gaps.append(((got - want.to(F64)).abs() / (2 * scales)).amax(1))
        if full:
            gaps.append(torch.stack(list(full.values())))
        # per parameter ‖G‖ + √(B Σ_i ‖g_i‖²), in the order of ``names``
        norms = torch.stack(torch._foreach_norm([refs[n][0] for n in names])).to(F64)
        spread = (B * torch.stack([refs[n][1] for n in names]).sum(1)).sqrt()
        bound = self._tolerance() * (norms + spread) + 1e-300
        # a floor from the whole pass's scale: a parameter whose true gradient cancels to 0 (a key bias under softmax)
        # holds rounding noise of the size of its terms, not of its sum; below this floor a mismatch cannot move the
        # trace by more than a fraction ~tol of it either
        bound = bound + 1e-2 * torch.linalg.vector_norm(bound)
        bad = (torch.cat(gaps) > bound).tolist()  # one transfer for all parameters
        return [n for n, b in zip(names, bad) if b]

    def _tolerance(self) -> float:
        """Relative tolerance of the sum check from the lowest precision among the recorded gradients (and TF32:
        float32 matmuls and convolutions on a GPU may round to 10-bit mantissas, ~5e-4, when allowed)."""
        dtypes = {g.dtype for calls in self._records.values() for c in calls for g in c.grads if g is not None}
        dtypes |= {g.dtype for g in self._param_grads.values()}
        if dtypes & {torch.float16, torch.bfloat16}:
            return 3e-2
        if dtypes <= {F64}:
            return 1e-8
        on_gpu = any(g.is_cuda for g in self._param_grads.values())
        tf32 = torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
        return 1e-2 if on_gpu and tf32 else 1e-3

    def _mismatch_error(self, names: list[str], where: str) -> NoReturn:
        shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        changed = [name or "the model" for name, m in self.model.named_modules()
                   if parametrize.is_parametrized(m) and id(m) not in self._parametrized]
        if changed:  # the likelier cause, named first
            raise DataError(
                f"the per-sample gradients of {shown} do not add up to the gradient of the backward pass {where}: "
                f"{', '.join(repr(n) for n in changed[:5])} gained a parametrization (weight_norm, spectral_norm, "
                f"register_parametrization) after this engine or monitor was built, so it measures the layers as they "
                f"were. Build it after the model is final")
        raise DataError(
            f"the per-sample gradients of {shown} do not add up to the gradient of the backward pass {where}: the "
            f"backward pass was of more than the per-sample losses (an extra loss term, a regulariser), or of a "
            f"forward pass other than the one recorded, or several passes ran since the last compute() (a second "
            f"grad-enabled forward, a Hessian, a non-vectorised Jacobian: measure before them, or call engine.clear() "
            f"after measuring). Backpropagate only the reduced per-sample losses (add regularisers after measuring), "
            f"or use flowvar.variance.gradient_variance(method='autograd')")


#: The fix for a module whose input does not carry the batch in its first dimension, when the whole model cannot
#: measure its parameters instead.
_LAYOUT_FIX = (
    "Unless the forward couples the samples, give that module inputs with the batch in their first dimension: "
    "expand a table shared by every sample to the batch before the layer (layer(table.expand(B, -1, -1)), exact and "
    "measured by the rule), feed a sequence-first layer batch-first (batch_first=True, or transpose after the "
    "layer), keep tokens (B, L, E) rather than flattened to (B·L, E); or register a rule for it "
    "(flowvar.variance.register_rule)")


def _engines_on(model: nn.Module) -> list[GradNormEngine]:
    """The engines with a forward hook on ``model`` or on any of its modules (built on it, on one of its modules, or
    on a model containing it): their hooks are bound methods of the engine, or partials of them."""
    found: dict[int, GradNormEngine] = {}
    for m in model.modules():
        for hook in (*m._forward_pre_hooks.values(), *m._forward_hooks.values()):
            owner = getattr(hook.func if isinstance(hook, partial) else hook, "__self__", None)
            if isinstance(owner, GradNormEngine):
                found[id(owner)] = owner
    return list(found.values())


def _modules_named(modules: list[tuple[str, nn.Module]]) -> str:
    """"module 'proj' (Linear)", or several of them (a tied unit), for a message."""
    kind = "module" if len(modules) == 1 else "modules"
    return f"{kind} " + ", ".join(f"{name or 'the model'!r} ({type(m).__name__})" for name, m in modules[:4]) + (
        f" and {len(modules) - 4} more" if len(modules) > 4 else "")


#: compute() finds a forward without a backward (every rule would read "unused" and report a trace of 0).
_NO_BACKWARD = ("a forward pass was recorded but no backward pass reached it: call compute() (the monitor's step()) "
                "after loss.backward(), not before")
#: compute() finds the latest forward without a backward, after a pass that had one.
_LATER_FORWARD = (
    "the latest grad-enabled forward pass of the model has had no backward pass, and it ran after the backward pass "
    "of an earlier one: compute() (the monitor's step()) was called before this pass's loss.backward(), or the model "
    "ran again with gradients enabled after the backward pass (a validation or diagnostic forward) and the losses "
    "given are not the earlier pass's own (or were detached, so this cannot be told). Call it after "
    "loss.backward(), with the losses of the pass back-propagated (not detached), and run extra forward passes "
    "under torch.no_grad() or after it")
#: compute() finds the losses given of another pass than the latest, after unmeasured passes.
_OTHER_PASS = (
    "the losses given are not of the latest forward/backward pass of the model: another forward and backward pass "
    "ran after theirs and before compute() (the monitor's step()), and per-sample gradients are measured for the "
    "latest pass only (earlier ones, never measured, are dropped as the next begins). Call it right after the "
    "backward pass of the losses you give it, or run the other pass after it")
#: Graph nodes :func:`_derives_from` visits at most (the losses' graph back to the model's output is a few nodes).
_LINEAGE_NODES = 10_000


def _derives_from(losses: Tensor | None, calls: list[CallRecord]) -> bool | None:
    """Whether the autograd graph of ``losses`` reaches an output of one of the model's recorded ``calls`` (the
    graph's nodes outlive its backward pass, which frees only what they saved); None when that cannot be told:
    losses without a graph (detached), no call with a graph of its own outside a backward pass, or a graph larger
    than :data:`_LINEAGE_NODES`."""
    # by id, holding every node compared: a node's Python object lives only while referenced, and a new one (another
    # id) would stand for it later
    targets = {id(n): n for c in calls for x in c.outputs if isinstance(x, Tensor) and (n := x.grad_fn) is not None}
    if losses is None or losses.grad_fn is None or not targets or any(c.in_backward for c in calls):
        return None
    seen: dict[int, Any] = {}
    stack = [losses.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        if id(node) in targets:
            return True
        if len(seen) >= _LINEAGE_NODES:
            return None
        seen[id(node)] = node
        stack.extend(fn for fn, _ in node.next_functions)
    return False


_EDGES: dict[int, np.ndarray] = {}


def _listed(names: list[str], shown: int = 5) -> str:
    """``'a', 'b' and 3 more``: the first ``shown`` names quoted, for an error message."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def _bin_edges(n_bins: int) -> np.ndarray:
    """(n_bins + 1,) equal-width edges of [0, 1], memoised (read-only: the same array is handed out every time)."""
    edges = _EDGES.get(n_bins)
    if edges is None:
        edges = _EDGES[n_bins] = np.arange(n_bins + 1) / n_bins
        edges.flags.writeable = False
    return edges


def _outside_transforms() -> bool:
    """Whether no torch.func transform (vmap, grad, ...) is running."""
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is None or peek() is None


def _snapshot(x: Any) -> Any:
    return x.detach().clone() if isinstance(x, Tensor) else x


def _in_dtype(call: CallRecord, dtype: torch.dtype) -> CallRecord:
    """``call`` with its floating-point inputs and δ in ``dtype`` (the parameters'), when some are not: under autocast
    a layer receives float32 inputs and hands back half-precision δ, and the rules' products need one dtype. The
    statistics are then formed in the parameters' precision from δ of the autocast precision (the sum check's
    tolerance follows the lowest precision among the gradients). The captured projections of a capturing rule are
    not touched here: the attention rule casts them itself. The row norms the hooks took are dropped (the rule
    recomputes them from the cast tensors)."""
    def off(x: Any) -> bool:
        return isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype

    if not any(off(g) for g in call.grads) and not any(off(a) for a in call.args):
        return call
    cast = [g.to(dtype) if off(g) else g for g in call.grads]
    args = tuple(a.to(dtype) if off(a) else a for a in call.args)
    return CallRecord(args, call.kwargs, call.outputs, cast, captured=call.captured, autocast=call.autocast)


def _store_grad(grads: list[Tensor | None], k: int, batched: BatchedPasses, grad: Tensor) -> None:
    """Tensor hook on a recorded output leaf ``k``: this pass's δ, added to what earlier passes left (a batch of
    vmapped cotangents, :func:`~flowvar.variance.records.is_batched_grad`, is not δ: noted in ``batched``, left
    alone)."""
    if is_batched_grad(grad):
        batched.seen = True
        return
    g = grad.detach()
    old = grads[k]
    if old is not None:  # a tensor hook fires once per backward pass: this is a second one through the same call
        batched.repeated = True
    grads[k] = g if old is None else old + g


def _store_grad_and_norm(grads: list[Tensor | None], norms: list[Tensor | None], batched: BatchedPasses,
                         grad: Tensor) -> None:
    """:func:`_store_grad` for a (B, out) Linear output, plus its row norms ‖δ_i‖ (None once several gradients
    were summed: the rule then computes them from the sum)."""
    if is_batched_grad(grad):
        batched.seen = True
        return
    g = grad.detach()
    old = grads[0]
    if old is None:
        grads[0] = g
        norms[0] = torch.linalg.vector_norm(g, dim=1) if g.ndim == 2 else None
    else:  # a second backward pass through the same call (:func:`_store_grad`)
        batched.repeated = True
        grads[0] = old + g
        norms[0] = None
