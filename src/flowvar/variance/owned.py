"""Layers whose parameter gradients the engine computes itself: the per-sample gradients, once.

Why. For a layer whose rule materialises the per-sample weight gradients g_i (a convolution on a large feature
map, where the ghost norm would cost S²(K + O) > S·K·O per sample), the backward pass and the engine both form
the same product: the backward its sum G = Σ_i g_i (one GEMM over B·S positions), the engine each g_i (B GEMMs
over S positions). The batch gradient is the sum of the per-sample ones, so one of the two is redundant: the
engine takes the layer's weight product out of the backward pass and forms G from the g_i it materialises anyway.
On a UNet this removes about half of every such convolution's backward cost.

How. For the duration of the layer's forward call its parameters have ``requires_grad`` off, so the layer's own
backward computes only ∂L/∂input. The parameters re-enter the graph through an identity node on the layer's input,
x → x′ (:class:`_OwnedGrad`, whose inputs are x and a view of each parameter). The backward pass reaches it right
after the layer's backward, when δ = ∂L/∂output is complete for this pass (a pre-hook of the node that produced the
output takes it as the layer's backward receives it, after any hook on the output): it passes ∂L/∂x through,
materialises g_i chunk by chunk from x and δ, stashes their norms (and element-wise squares) for the engine's
statistics and returns G = Σ_i g_i (summed in float64) as the parameters' gradient. Autograd does the rest as for
any gradient: it accumulates G into ``.grad`` (``backward``), returns it (``torch.autograd.grad``), differentiates
it again (``create_graph=True``: G then comes from autograd through the layer's operation on a detached weight,
differentiable in x and δ, and a Linear's ∂L/∂x is recomputed as δW from the weight itself, because ``F.linear``
saved a transpose of the frozen weight), and fires
every hook on the parameters (the engine's own, users' tensor hooks, post-accumulate-grad hooks of optimisers).
The node computes no parameter gradient when the pass does not want it (``torch.autograd.grad`` of the input or of
other parameters, ``backward(inputs=...)`` without them): the views are non-leaf nodes, so autograd can say
whether it will run them, and ``.grad`` is left alone as autograd leaves it.

Other people's hooks on the layer: the engine's forward hook is prepended, so it sees the layer's own output and
gives ``requires_grad`` back before a hook registered earlier replaces that output or uses the weight; a forward
pre-hook registered after the engine's that replaces the input makes the node use the input the layer received
(a second differentiation of such a call raises instead).

What a user sees: every gradient is what autograd would have computed (float64: to rounding; float32: the sum is
formed in float64 from the per-sample gradients, so if anything more accurate), wherever it goes. The statistics
are those of the δ the engine records (``own_grads=False``): the stash is dropped when a later hook on the output
changed δ, or when several backward passes reached the call. The per-sample gradients are materialised during the
backward pass (at most ``chunk_bytes`` at a time) rather than after it. A batched-gradient pass
(``torch.autograd.grad(..., is_grads_batched=True)``: the backward vmapped over many cotangents, a Jacobian) gets
the parameters' gradients from the layer's own weight-gradient operation, one per cotangent, and measures nothing.

When a call is left to autograd (the engine then measures it after the backward pass, as for every other layer):
the engine is not armed; the input does not require grad (the layer's output would then not either) or carries a
vmapped forward-mode tangent (a forward-mode ``autograd.functional.jacobian`` with ``vectorize=True``); the layer
runs in a half-precision dtype or under autocast; a ``torch.distributed`` process group is initialised;
saved-tensor hooks are active (activation checkpointing, offloading: a forward recomputed inside the backward pass
would not rebuild this node); the forward runs inside a backward pass or under ``torch.compile``; the call passes
keyword arguments; the weight is frozen; a trainable parameter is not a leaf (``functional_call`` with computed
weights: they cannot be frozen) or is not the layer's own ``weight``/``bias`` (a reparametrised weight: such layers
go to the fallback, :func:`~flowvar.variance.rules.fallback.reparametrized`); the parameter was found
used outside its module's forward (:attr:`GradNormEngine.outside`); or the rule prefers the ghost norm for the
call's shape (:meth:`~flowvar.variance.rules.base.Rule.ownable`).

Not supported: an exception that is not an ``Exception`` (``KeyboardInterrupt``) raised inside an owned layer's
forward. PyTorch runs ``always_call`` forward hooks only for ``Exception``, so the layer's parameters stay frozen
(``requires_grad`` False) until the model (or that layer) is called again or the engine is cleared
(``engine.clear()``, which the monitor calls every step); build an optimiser over ``p.requires_grad`` parameters
only after one of those.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.variance.records import CallRecord, is_batched_grad, sample_sq_norms, sample_sum
from flowvar.variance.rules import Conv2dRule, Rule

__all__ = ["OwnedGradients"]

_FULL_PRECISION = (torch.float32, torch.float64)
#: the parameters the owning rules (Conv2d, Linear) compute per-sample gradients of
_OWNABLE = frozenset({"weight", "bias"})


def _autocast(device_type: str) -> bool:
    """Whether autocast may run this call in a lower precision (the input's device, and CPU autocast)."""
    return torch.is_autocast_enabled(device_type) or torch.is_autocast_enabled("cpu")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _batched_tangent(x: Tensor) -> bool:
    """Whether ``x`` carries a forward-mode tangent that is a vmapped batch (``autograd.functional.jacobian`` with
    ``strategy="forward-mode", vectorize=True``): the node's jvp cannot hand such a tangent on as a view of itself,
    which autograd requires of a Function whose output is a view of its input."""
    if fwAD._current_level < 0:  # no forward-mode AD under way: the common case, one comparison
        return False
    tangent = fwAD.unpack_dual(x).tangent
    return tangent is not None and is_batched_grad(tangent)


class _Stash:
    """What the backward pass measured of one call, per local parameter name (raw δ, unscaled): per-sample
    ‖g_i‖² (B,), Σ_i g_i and, when asked for, Σ_i g_i ⊙ g_i (float64)."""

    def __init__(self) -> None:
        self.sq_norms: dict[str, Tensor] = {}
        self.sums: dict[str, Tensor] = {}
        self.sq_sums: dict[str, Tensor] = {}


class _State:
    """What the autograd node of one owned call shares with the engine. It holds nothing that leads back to the
    graph (the module weakly, δ only until the node used it): the graph holds it, and a cycle through the graph
    would keep every step's activations alive until the garbage collector runs."""

    __slots__ = ("chunk_bytes", "delta", "elementwise", "hooked", "input", "module", "names", "passes", "rule",
                 "stash", "version")

    def __init__(self, module: nn.Module, rule: Rule, names: tuple[str, ...], elementwise: bool,
                 chunk_bytes: int) -> None:
        self.module = weakref.ref(module)
        self.rule, self.names, self.elementwise, self.chunk_bytes = rule, names, elementwise, chunk_bytes
        self.delta: Tensor | None = None  # δ of the backward pass under way, until the node used it
        # δ as the engine's record saw it (before later hooks on the output), weakly: when the output's gradient
        # is only captured (autograd.grad of the output) no node of this call runs to drop it
        self.hooked: weakref.ref[Tensor] | None = None
        self.passes = 0  # backward passes that reached the output: a stash of one of several misses part of δ
        self.stash: _Stash | None = None
        # the input the layer received when a forward pre-hook registered after the engine's replaced x′ (detached:
        # it may derive from x′, whose node holds this state), and its version then
        self.input: Tensor | None = None
        self.version = 0


def _see_delta(state: _State, grad: Tensor) -> None:
    """Tensor hook on an owned call's output, the first one registered on it: δ before any later hook on the output
    (the engine's records it unchanged) could change it. A batched-gradient pass's cotangents are not δ."""
    if not is_batched_grad(grad):
        state.hooked = weakref.ref(grad)


def _take_delta(state: _State, k: int, grads: tuple[Tensor | None, ...]) -> None:
    """Pre-hook of the node that produced an owned call's output (``k``: the output's index among the node's): this
    pass's δ as the layer's own backward receives it — complete (autograd sums every use of the output first) and
    after every tensor hook on the output (a user's hook may scale or clip it). A batched-gradient pass (a vmapped
    backward, :func:`~flowvar.variance.records.is_batched_grad`) hands the node its cotangents too, but does not
    count as a pass of the statistics."""
    state.delta = grads[k]
    if grads[k] is None or not is_batched_grad(grads[k]):
        state.passes += 1


def _will_run(node: Any) -> bool:
    """Whether the current backward pass runs ``node`` (a non-leaf node: autograd answers for those under
    ``torch.autograd.grad`` too)."""
    return node is not None and bool(torch._C._will_engine_execute_node(node))


class _OwnedGrad(torch.autograd.Function):
    """x′ = x, with the owned parameters (as views) for inputs: backward passes ∂L/∂x′ through and returns
    G = Σ_i g_i for the parameters (module docstring)."""

    @staticmethod
    def forward(ctx: Any, state: _State, x: Tensor, *views: Tensor) -> Tensor:
        ctx.state = state
        ctx.shapes = {n: (v.shape, v.dtype) for n, v in zip(state.names, views, strict=True)}
        # x and the weight, as the layer's own backward would save them (an in-place change of either before the
        # backward pass raises, as with autograd); the weight as the call used it (functional_call may swap it)
        ctx.save_for_backward(x, views[state.names.index("weight")])
        return x.view_as(x)

    @staticmethod
    def jvp(ctx: Any, state_tangent: Any, x_tangent: Tensor, *view_tangents: Tensor) -> Tensor:
        return x_tangent.view_as(x_tangent)  # forward-mode AD: the identity (a view, as the output is)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        state: _State = ctx.state
        delta, hooked, state.delta, state.hooked = state.delta, state.hooked, None, None
        x, weight = ctx.saved_tensors
        module = state.module()
        if delta is None or module is None:
            raise RuntimeError("flowvar's gradient-variance engine lost the output gradient (or the module) of a "
                               "layer whose parameter gradients it computes; rerun with "
                               "GradNormEngine(..., own_grads=False) and report this")
        if state.input is not None:  # a later pre-hook gave the layer another input: its gradients come from that
            if state.input._version != state.version or torch.is_grad_enabled():
                raise RuntimeError(
                    f"{type(module).__name__}: a forward pre-hook registered after flowvar's gradient-variance engine "
                    f"replaced the layer's input, and the input was then modified in place or the backward pass "
                    f"has create_graph=True; the engine cannot form this layer's parameter gradients. Register the "
                    f"pre-hook before building the engine, or use GradNormEngine(..., own_grads=False)")
            x = state.input
        # a batched-gradient pass (is_grads_batched=True: a Jacobian) vmaps this backward over many cotangents: the
        # parameters' gradients come from the layer's own weight-gradient operation, as without the engine, and
        # nothing is measured (the statistics are those of an ordinary pass)
        batched = is_batched_grad(delta) or is_batched_grad(grad)
        if torch.is_grad_enabled() and isinstance(module, nn.Linear):
            # create_graph: F.linear saved weight.t() taken while the weight was frozen, so its ∂L/∂x would not
            # depend on the weight when differentiated again; the same ∂L/∂x = δ W, from the weight itself, does
            grad = delta.matmul(weight).reshape(grad.shape)
        node = torch._C._current_autograd_node()
        edges = node.next_functions[1:] if node is not None else ()  # x's edge first, then one per parameter view
        names = {n for k, (n, (fn, _)) in enumerate(zip(state.names, edges, strict=True))
                 if ctx.needs_input_grad[2 + k] and _will_run(fn)}
        if not names:  # this pass does not want the parameters' gradients
            return (None, grad, *(None,) * len(state.names))
        if batched:
            sums = _batched_sums(module, x, delta, weight, names)
            return (None, grad, *(sums.get(n) for n in state.names))
        # the statistics must be those of the δ the engine recorded: not when a later hook on the output changed it
        sums = _measure(state, module, x, delta, weight, {n: ctx.shapes[n] for n in names},
                        stash=state.passes == 1 and hooked is not None and delta is hooked())
        return (None, grad, *(sums.get(n) for n in state.names))


def _measure(state: _State, module: nn.Module, x: Tensor, delta: Tensor, weight: Tensor,
             params: dict[str, tuple[torch.Size, torch.dtype]], stash: bool) -> dict[str, Tensor]:
    """Σ_i g_i of ``params`` (local name → the parameter's shape and dtype, which the sum gets) from per-sample
    gradients materialised chunk by chunk; with ``stash`` their norms (and element-wise squares) go to
    ``state.stash`` for the engine's statistics. Under ``create_graph=True`` (grad mode on in the backward pass) the
    sums come from :func:`_graph_sums` instead, differentiable (the rules' fast kernels write into buffers)."""
    graph = torch.is_grad_enabled()
    kept = _Stash() if stash else None
    sums: dict[str, Tensor] = {}
    if kept is not None or not graph:
        with torch.no_grad():
            sums = _sample_sums(state, module, x.detach(), delta.detach(), set(params), kept)
    out = _graph_sums(module, x, delta, weight, params) if graph else {}
    for name, (shape, dtype) in params.items():
        if name in sums:
            total = sums[name].reshape(shape)
            if kept is not None:
                kept.sums[name] = total
                if name in kept.sq_sums:
                    kept.sq_sums[name] = kept.sq_sums[name].reshape(shape)
            out.setdefault(name, total.to(dtype))
    state.stash = kept
    return out


def _sample_sums(state: _State, module: nn.Module, x: Tensor, delta: Tensor, names: set[str],
                 kept: _Stash | None) -> dict[str, Tensor]:
    """{name: Σ_i g_i} (float64, flat or in the parameter's shape) over chunks of samples bounded by
    ``state.chunk_bytes``; ‖g_i‖² (and Σ_i g_i ⊙ g_i) into ``kept`` when given."""
    B = x.shape[0]
    per_sample = sum(getattr(module, n).numel() for n in names) * delta.element_size() * 3
    per_sample += (x[0].numel() + delta[0].numel()) * delta.element_size()
    size = max(1, min(B, state.chunk_bytes // max(1, per_sample)))
    sums: dict[str, Tensor] = {}
    for start in range(0, B, size):
        stop = min(start + size, B)
        grads = state.rule.per_sample_grads(module, x, delta, start, stop, names)
        for name, g in grads.items():  # (b, *shape) or a kernel's own layout
            part = sample_sum(g)
            sums[name] = sums[name] + part if name in sums else part
            if kept is not None:
                norms = sample_sq_norms(g)
                prev = kept.sq_norms.get(name)
                kept.sq_norms[name] = norms if prev is None else torch.cat([prev, norms])
                if state.elementwise:
                    sq = sample_sum(g, torch.square)
                    kept.sq_sums[name] = kept.sq_sums[name] + sq if name in kept.sq_sums else sq
    return sums


def _graph_sums(module: nn.Module, x: Tensor, delta: Tensor, weight: Tensor,
                params: dict[str, tuple[torch.Size, torch.dtype]]) -> dict[str, Tensor]:
    """create_graph: G = Σ_i g_i as differentiable functions of x and δ (a weight gradient does not depend on the
    weight): the weight's by autograd through the layer's own operation on a detached copy of the weight, the
    bias's as the sum of δ over everything but its channels."""
    out: dict[str, Tensor] = {}
    if "weight" in params:
        w = weight.detach().requires_grad_()
        with torch.enable_grad():
            y = module._conv_forward(x, w, None) if isinstance(module, nn.Conv2d) else F.linear(x, w)
            (out["weight"],) = torch.autograd.grad(y, w, delta, create_graph=True)
    if "bias" in params:
        out["bias"] = _bias_sum(module, delta)
    return out


def _bias_sum(module: nn.Module, delta: Tensor) -> Tensor:
    """Σ_i g_i of the bias: δ summed over everything but its channels (Conv2d: (B, O, H, W) → (O,); Linear: the
    last dimension kept). Differentiable in δ."""
    return delta.sum((0, 2, 3)) if isinstance(module, nn.Conv2d) else delta.reshape(-1, delta.shape[-1]).sum(0)


def _batched_sums(module: nn.Module, x: Tensor, delta: Tensor, weight: Tensor, names: set[str]) -> dict[str, Tensor]:
    """G = Σ_i g_i for a batched-gradient pass, whose δ is a vmapped batch of cotangents that neither the per-sample
    kernels (they write into buffers) nor a nested autograd call (refused under ``torch.func.vmap``) can take: the
    layer's own weight-gradient operation, Conv2d: the convolution backward of (padded x, δ); Linear: Dᵀ A over all
    positions; bias: δ summed over everything but its channels. Differentiable in x and δ (``create_graph=True``)."""
    out: dict[str, Tensor] = {}
    if isinstance(module, nn.Conv2d):
        if "weight" in names:
            out["weight"] = torch.ops.aten.convolution_backward(
                delta, Conv2dRule._padded(module, x), weight, None, module.stride, Conv2dRule._numeric_padding(module),
                module.dilation, False, (0, 0), module.groups, (False, True, False))[1]
    elif "weight" in names:
        out["weight"] = delta.reshape(-1, delta.shape[-1]).mT @ x.reshape(-1, x.shape[-1])
    if "bias" in names:
        out["bias"] = _bias_sum(module, delta)
    return out


class _OwnedCall:
    """One owned call: the layer's own output (the engine's record holds the same tensor unless a forward hook
    replaced it) and the state its node fills."""

    def __init__(self, output: Tensor, state: _State) -> None:
        self.output, self.state = output, state


class OwnedGradients:
    """The owned layers of one engine (module docstring): the forward pre/post hooks that take their parameters
    out of the layer's backward and put them behind an :class:`_OwnedGrad` node on its input.

    ``recording()``: whether the engine records this forward call; ``outside``: the engine's parameters found used
    outside their module (never owned); ``elementwise``: also stash Σ_i g_i²; ``chunk_bytes``: the memory bound of
    one materialised chunk.
    """

    def __init__(self, recording: Callable[[], bool], outside: dict[str, str], elementwise: bool,
                 chunk_bytes: int) -> None:
        self._recording, self._outside = recording, outside
        self.elementwise, self.chunk_bytes = elementwise, chunk_bytes
        # per layer inside its forward: the parameters frozen, the call's state and the input x′ it was given
        self._frozen: dict[int, tuple[list[nn.Parameter], _State, Tensor]] = {}
        self.calls: list[_OwnedCall] = []

    def attach(self, module: nn.Module, rule: Rule, names: dict[str, str]) -> list[Any]:
        """Hooks making ``module`` owned where its rule allows (``names``: its parameters' local → engine names)."""
        return [module.register_forward_pre_hook(partial(self._pre_hook, rule=rule, names=names), with_kwargs=True),
                module.register_forward_hook(partial(self._post_hook, rule=rule), with_kwargs=True,
                                             always_call=True, prepend=True)]

    def clear(self) -> None:
        self.thaw()
        self.calls.clear()

    def thaw(self, *_: Any) -> None:
        """Give back ``requires_grad`` to parameters whose layer's forward never returned (an interrupt, which
        PyTorch's ``always_call`` hooks do not see). Also a forward pre-hook of the whole model (prepended: no
        layer of the model is inside its forward when the model's forward starts)."""
        for params, _, _ in self._frozen.values():
            for p in params:
                p.requires_grad_(True)
        self._frozen.clear()

    def _eligible(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], rule: Rule,
                  names: dict[str, str]) -> dict[str, nn.Parameter]:
        if kwargs or not args or not isinstance(args[0], Tensor) or not args[0].requires_grad:
            return {}
        if not rule.ownable(module, args[0]):  # the cheap shape test first: most calls stop here
            return {}
        if args[0].dtype not in _FULL_PRECISION or _autocast(args[0].device.type):
            return {}
        if not self._recording() or torch._C._current_graph_task_id() != -1 or _distributed() or \
                torch.compiler.is_compiling():
            return {}
        if torch._C._autograd._top_saved_tensors_default_hooks(False) is not None or _batched_tangent(args[0]):
            return {}
        local = {k: p for k, p in module._parameters.items() if p is not None and p.requires_grad}
        # a trainable weight: owning a bias alone saves nothing (its gradient is a sum of δ)
        if "weight" not in local or not local.keys() <= _OWNABLE or any(names.get(k) in self._outside for k in local):
            return {}
        if any(not p.is_leaf or p.dtype not in _FULL_PRECISION for p in local.values()):
            return {}
        return local

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], rule: Rule,
                  names: dict[str, str]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        stale = self._frozen.pop(id(module), None)  # this layer's previous forward was interrupted
        if stale is not None:
            for p in stale[0]:
                p.requires_grad_(True)
        params = self._eligible(module, args, kwargs, rule, names)
        if not params:
            return None
        state = _State(module, rule, tuple(params), self.elementwise, self.chunk_bytes)
        views = [p.view_as(p) for p in params.values()]  # taken while the parameters still require grad
        for p in params.values():
            p.requires_grad_(False)
        x = _OwnedGrad.apply(state, args[0], *views)
        self._frozen[id(module)] = (list(params.values()), state, x)
        return (x, *args[1:]), kwargs

    def _post_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
                   rule: Rule) -> None:
        """Prepended to the layer's forward hooks: it sees the layer's own output, before a hook of someone else
        replaces it, and gives the parameters ``requires_grad`` back before such hooks use them."""
        entry = self._frozen.pop(id(module), None)
        if entry is None:
            return
        params, state, x = entry
        for p in params:  # always_call: restored even when the forward raised
            p.requires_grad_(True)
        if not isinstance(output, Tensor) or not output.requires_grad:
            return
        if args and args[0] is not x and isinstance(args[0], Tensor):
            # a forward pre-hook registered after the engine's replaced the input (the rules read any shape)
            state.input, state.version = args[0].detach(), args[0]._version
        output.register_hook(partial(_see_delta, state))
        output.grad_fn.register_prehook(partial(_take_delta, state, output.output_nr))
        self.calls.append(_OwnedCall(output, state))

    def stash_for(self, module: nn.Module, records: list[CallRecord]) -> _Stash | None:
        """The stash of ``module``'s only recorded call, when it measured the call's whole δ; else None (the rule
        then measures the records itself: several calls, several backward passes, or a call left to autograd)."""
        if len(records) != 1:
            return None
        for call in self.calls:
            if call.output is records[0].outputs[0]:
                return call.state.stash if call.state.passes == 1 else None
        return None
