"""The fallback for parameters no rule covers: exact per-sample vector-Jacobian products of their module alone.

g_i = Σ_calls J_θ(module at x_i)ᵀ δ_i, computed with ``torch.func.vmap(vjp)`` over samples, or, when vmap
cannot run the module (data-dependent control flow, a custom ``torch.autograd.Function`` without functorch
support, an op without a batching rule such as the fused recurrent kernels), by one plain autograd backward per
sample. The module's output is recomputed and checked against the captured one, so a module that is random
(dropout) or couples samples is reported rather than mis-measured. The engine also runs the whole model through
this function for parameters used outside their own module's forward. The recomputation runs under the autocast
state of the recorded call (:attr:`~flowvar.variance.records.CallRecord.autocast`): a call under ``torch.autocast``
is recomputed in the autocast precision, as the training step ran it, and one outside autocast outside it.

Buffers: the recomputation runs on copies of the module's buffers as the recorded call began
(:class:`~flowvar.variance.records.ForwardState`, taken by the engine's forward pre-hook), a fresh copy for each vmap
call and each sample of the loop, and never writes to the model's own: a forward that updates its buffers (running
statistics of ``InstanceNorm(track_running_stats=True)``, a counter, an EMA of its input) would otherwise update them
again once per sample on every measured step, and be recomputed from the updated ones.

Reparametrised weights go here too (:func:`reparametrized`): a layer whose weight ``torch.nn.utils.parametrize``
computes from other parameters (``parametrizations.weight_norm``, ``spectral_norm``, ``orthogonal``, a user's
parametrisation), or whose weight an old-style ``torch.nn.utils.weight_norm`` / ``spectral_norm`` forward pre-hook
computes. Their trainable tensors (``parametrizations.weight.original0``/``original1``, ``weight_g``/``weight_v``,
``weight_orig``) are not the weight the layer's rule differentiates: the vjp of the layer's recomputation runs
through the parametrisation, g_i(θ) = (∂W/∂θ)ᵀ g_i(W), for every sample at once under vmap (W(θ) itself is formed
once: the parameters are not batched). Spectral norms are recomputed as the recorded forward ran them
(:func:`_recomputation`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.stateless import _reparametrize_module
from torch.nn.utils.weight_norm import WeightNorm
from torch.utils._pytree import tree_flatten, tree_unflatten

from flowvar.errors import ConfigError
from flowvar.variance.records import F64, AutocastState, CallRecord, ForwardState
from flowvar.variance.rules.base import batched

__all__ = ["fallback_call", "forward_state", "parametrization_children", "recorded_buffers", "reparametrized",
           "settle_state", "spectral_vectors"]

#: The start of torch's warning that vmap runs an op without a batching rule in a loop.
_SLOW_VMAP = "There is a performance drop because we have not yet implemented the batching rule"

#: the old-style reparametrisations: forward pre-hooks that compute the weight from other parameters
_OLD_STYLE = (WeightNorm, SpectralNorm)


def reparametrized(module: nn.Module) -> str | None:
    """Why ``module``'s forward does not use its trainable tensors directly (its weight is computed from them), or
    None: a ``torch.nn.utils.parametrize`` parametrisation, or an old-style weight_norm / spectral_norm pre-hook."""
    if parametrize.is_parametrized(module):
        names = ", ".join(module.parametrizations)  # type: ignore[union-attr, arg-type]
        return f"{names} computed by a torch.nn.utils.parametrize parametrisation (weight_norm, spectral_norm, ...)"
    hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, _OLD_STYLE)]
    if hooks:
        return ", ".join(f"{h.name} computed by torch.nn.utils.{type(h).__name__.lower().replace('norm', '_norm')}"
                         for h in hooks)
    return None


def parametrization_children(module: nn.Module) -> list[str]:
    """The submodules holding a parametrised module's tensors (``parametrizations``, its ``ParametrizationList`` per
    tensor, their parametrisation modules): measured with the module, whose forward computes the weight from them
    (they are called without the batch); [] for a module without parametrisations."""
    if not parametrize.is_parametrized(module):
        return []
    tree = module.parametrizations  # type: ignore[union-attr]
    assert isinstance(tree, nn.Module)
    return ["parametrizations", *(f"parametrizations.{n}" for n, _ in tree.named_modules() if n)]


def forward_state(module: nn.Module, copy: bool) -> ForwardState:
    """``module``'s buffers as its forward begins (the engine's forward pre-hook): the live ones with their version
    counters, and copies of them when ``copy``."""
    live = {name: (b, b._version) for name, b in module.named_buffers()}
    return ForwardState(live, {name: b.detach().clone() for name, (b, _) in live.items()} if copy else None)


def spectral_vectors(module: nn.Module) -> list[str]:
    """The names (as in ``module.named_buffers()``) of the power-iteration vectors u, v of the spectral norms inside
    ``module``, new style (``parametrizations.weight.0._u``) and old style (``weight_u``): the recomputation runs the
    spectral norms in eval mode (:func:`_recomputation`), so it takes these as the recorded forward *left* them."""
    names: list[str] = []
    for prefix, m in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(m, _SpectralNorm):
            names += [dot + k for k, b in m._buffers.items() if b is not None]
        names += [dot + f"{h.name}{end}" for h in m._forward_pre_hooks.values() if isinstance(h, SpectralNorm)
                  for end in ("_u", "_v")]
    return names


def settle_state(module: nn.Module, state: ForwardState, vectors: list[str]) -> None:
    """After the recorded forward (the engine's forward hook): ``state``'s copies of the spectral norms' ``vectors``
    (:func:`spectral_vectors`) replaced by the values the forward left."""
    if state.copies is not None:
        for name in vectors:
            state.copies[name] = module.get_buffer(name).detach().clone()


def recorded_buffers(module: nn.Module, state: ForwardState | None) -> dict[str, Tensor]:
    """The buffers a recomputation of a recorded call of ``module`` starts from: the copies taken as the call began;
    without them (a call recorded before the module was planned for the fallback), the current ones, which
    :func:`fallback_call` copies before use as well."""
    if state is not None and state.copies is not None:
        return state.copies
    return {name: b.detach() for name, b in module.named_buffers()}


@contextmanager
def _recomputation(module: nn.Module) -> Iterator[None]:
    """Recompute ``module`` as its recorded forward ran, without side effects. Spectral norms (new and old style) in
    eval mode: in training mode each forward runs a power iteration that updates their vectors u, v in place, and
    the recorded forward normalised by the u, v it left, which eval mode reuses without iterating. The weights the
    old-style pre-hooks store as plain attributes are put back afterwards (the recomputation sets them to tensors
    of the vmapped transform)."""
    training: list[nn.Module] = []
    saved: list[tuple[nn.Module, str, Any]] = []
    for m in module.modules():
        if isinstance(m, _SpectralNorm) and m.training:
            training.append(m)
        for h in m._forward_pre_hooks.values():
            if isinstance(h, _OLD_STYLE):
                saved.append((m, h.name, m.__dict__.get(h.name)))
                if isinstance(h, SpectralNorm) and m.training:
                    training.append(m)
    for m in training:
        m.training = False  # this module alone (``eval()`` would recurse into its children)
    try:
        yield
    finally:
        for m in training:
            m.training = True
        for m, name, value in saved:
            m.__dict__[name] = value


@contextmanager
def _autocast_as(state: AutocastState) -> Iterator[None]:
    """Autocast on or off, per device type, as it was for the recorded call (:attr:`CallRecord.autocast`): a module
    called under ``torch.autocast`` received half-precision inputs from the layers before it and ran its ops in the
    autocast dtype with float32 weights, which only the same autocast state reproduces (outside it, ``h @ W`` or a
    ConvTranspose meets a bfloat16 input and a float32 weight and raises); and a pass recorded outside autocast is
    recomputed outside it even when ``compute()`` is called inside."""
    with ExitStack() as stack:
        for device_type, dtype in state:
            stack.enter_context(torch.autocast(device_type, dtype=dtype) if dtype is not None
                                else torch.autocast(device_type, enabled=False))
        yield


def _autocast_text(state: AutocastState) -> str:
    """'torch.autocast(cpu, bfloat16)' for the device types autocast was on for, '' when it was off."""
    return ", ".join(f"torch.autocast({device}, {str(dtype).removeprefix('torch.')})"
                     for device, dtype in state if dtype is not None)


def _relative_gap(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / (b.norm() + a.norm() + 1e-300)) * 2


def fallback_call(module: nn.Module, module_name: str, wanted: dict[str, str], call: CallRecord, start: int,
                  stop: int, B: int, buffers: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Per-sample gradients {local name: (b, *shape)} of ``module``'s parameters ``wanted`` for one call and
    samples [start, stop): vmap over samples of vjp(module at x_i, δ_i); a loop when vmap cannot. ``buffers``: the
    module's buffers as the call began (:func:`recorded_buffers`), never written: each vmap call and each sample of
    the loop runs on fresh copies of them. Sparse gradients (``Embedding(sparse=True)``) come back dense."""
    params = {k: p.detach() for k, p in module.named_parameters() if k in wanted}
    fixed = {k: p.detach() for k, p in module.named_parameters() if k not in wanted}

    def fresh() -> dict[str, Tensor]:
        # a forward that writes its buffers in place writes these, and the next sample (or chunk) must not see it
        return {k: b.clone() for k, b in buffers.items()}

    state = fresh()
    leaves, spec = tree_flatten((call.args, call.kwargs))
    # the recorded inputs as constants: a recomputation must not reach back into the (freed) graph of the pass
    leaves = [x.detach() if isinstance(x, Tensor) else x for x in leaves]
    in_dim, out_dim = _batch_dims(module)
    batch_leaves = [k for k, x in enumerate(leaves)
                    if isinstance(x, Tensor) and x.ndim > in_dim(k) and x.shape[in_dim(k)] == B]
    out_idx = [k for k, g in enumerate(call.grads) if g is not None]
    for k in out_idx:
        batched(call.outputs[k].movedim(out_dim(k), 0), B, f"output {k} of {module_name!r}")
    xs = [leaves[k].movedim(in_dim(k), 0)[start:stop] for k in batch_leaves]
    cots = [call.grads[k].movedim(out_dim(k), 0)[start:stop] for k in out_idx]  # type: ignore[union-attr]

    def call_one(sample: list[Tensor], run: Callable[..., Any]) -> list[Tensor]:
        full = list(leaves)
        for k, x in zip(batch_leaves, sample):
            full[k] = x.unsqueeze(in_dim(k))
        args, kwargs = tree_unflatten(full, spec)
        outs, _ = tree_flatten(run(*args, **kwargs))
        return [outs[k].select(out_dim(k), 0) for k in out_idx]

    def forward(p: dict[str, Tensor], sample: list[Tensor]) -> list[Tensor]:
        return call_one(sample, lambda *a, **kw: functional_call(module, (p, fixed, state), a, kw))

    def one(p: dict[str, Tensor], sample: list[Tensor], cot: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
        out, pullback = vjp(lambda q: forward(q, sample), p)
        return pullback(cot)[0], out

    how = "fallback-vmap"
    under = _autocast_text(call.autocast)
    with _recomputation(module), _autocast_as(call.autocast), _eager(), warnings.catch_warnings():
        # an op without a batching rule (nn.Bilinear's _trilinear) runs in a loop inside vmap, exact but slower:
        # torch says so on every call, which would be every logged step; the fallback is reported in stats.fallback
        warnings.filterwarnings("ignore", message=_SLOW_VMAP, category=UserWarning)
        try:
            grads, outs = vmap(one, in_dims=(None, 0, 0), randomness="error")(params, xs, cots)
        except (RuntimeError, NotImplementedError, TypeError, AssertionError) as error:
            # AssertionError: only from torch.compile's tracer (without _eager(), torch < 2.6, dynamo traces a compiled
            # module inside vmap and fails an internal assertion: model.compile(backend="eager")); any other is a bug
            if isinstance(error, AssertionError) and not _raised_by_compiler(error):
                raise
            if "random" in str(error):
                raise ConfigError(f"module {module_name!r} ({type(module).__name__}) draws random numbers in its "
                                  f"forward pass (e.g. dropout), so its per-sample gradients cannot be recomputed; put "
                                  f"it in eval mode while measuring or register a rule for it "
                                  f"(flowvar.variance.register_rule)") from None
            # vmap cannot run this module: data-dependent control flow, a custom autograd.Function without functorch
            # support, an op without a batching rule. One ordinary backward pass per sample runs anything autograd
            # does.
            how = "fallback-loop"
            grads, outs = _autograd_loop(module, module_name, lambda sample: call_one(sample, module), fixed,
                                         fresh, params, xs, cots, stop - start, error, under)
    # recomputation in the outputs' own precision: float64 agrees to rounding, float32 to ~1e-6, half types less —
    # and so does a float32 output computed under autocast from half-precision products
    tol = 1e-9 if all(o.dtype == F64 for o in outs) else \
        1e-3 if all(o.dtype == torch.float32 for o in outs) and not under else 3e-2
    for j, k in enumerate(out_idx):
        gap = _relative_gap(outs[j], call.outputs[k].movedim(out_dim(k), 0)[start:stop])
        if not gap <= tol:  # NaN too
            with _recomputation(module), _autocast_as(call.autocast), _eager():
                raise ConfigError(_recomputation_error(module, module_name, call, fresh(), gap, tol))
    # an Embedding(sparse=True) inside the module (tied to another layer) gives sparse per-sample gradients, which the
    # collectors' dense norms and sums cannot take
    return {k: g.detach().to_dense() if g.is_sparse else g.detach() for k, g in grads.items()}, how


def _eager() -> AbstractContextManager[Any]:
    """Run compiled code eagerly inside the recomputation (torch >= 2.6; else nothing). ``model.compile()`` compiles a
    module in place, and the fallback recomputes that very module: under vmap dynamo would trace it again with batched
    tensors, which fails deep inside torch for backend="eager" (an AssertionError in its fake-tensor code) and
    recompiles per sample in the loop. The recomputation differentiates the module's own Python forward, which is
    what the compiled code computes."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return nullcontext() if set_stance is None else set_stance("force_eager")


def _raised_by_compiler(error: BaseException) -> bool:
    """Whether ``error`` was raised inside torch.compile's machinery (dynamo, its fake tensors)."""
    tb = error.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/torch/_dynamo/" in name or "/torch/_subclasses/" in name:
            return True
        tb = tb.tb_next
    return False


def _recomputation_error(module: nn.Module, module_name: str, call: CallRecord, buffers: dict[str, Tensor],
                         gap: float, tol: float) -> str:
    """The error of a recomputation one sample at a time that missed the recorded output by ``gap``, naming the cause
    that a recomputation of the whole recorded batch (no gradients; ``buffers``: copies of those the call began with)
    tells apart: a forward that couples the samples (batch statistics, an EMA of the batch it uses at once)
    reproduces its batch output, while parameters changed since the forward pass (monitor.step() after
    optimizer.step()) do not."""
    who = f"module {module_name!r} ({type(module).__name__})"
    leaves, spec = tree_flatten((call.args, call.kwargs))
    args, kwargs = tree_unflatten([x.detach() if isinstance(x, Tensor) else x for x in leaves], spec)
    state = {**dict(module.named_parameters()), **buffers}
    try:
        with torch.no_grad():
            outs, _ = tree_flatten(functional_call(module, state, args, kwargs))
        whole = max(_relative_gap(outs[k], call.outputs[k]) for k, g in enumerate(call.grads) if g is not None)
    except Exception:  # only a diagnosis: the per-sample message below stands without it
        whole = 0.0
    if not whole <= tol:
        return (f"{who} does not reproduce its recorded output even on the whole recorded batch (relative gap "
                f"{whole:.2g}): its parameters changed since the forward pass — was optimizer.step() (or another "
                f"in-place update of the weights) run before monitor.step()? Call monitor.step() after backward and "
                f"before optimizer.step(). Otherwise its forward is random or its recorded output was modified in "
                f"place, and per-sample gradients cannot be recomputed for it")
    return (f"{who} gives a different output when recomputed one sample at a time (relative gap {gap:.2g}), while "
            f"the whole recorded batch is reproduced: its forward couples the samples of a batch (batch statistics), "
            f"so per-sample gradients are not defined for it. Put it in eval mode or change it to act on each sample "
            f"separately")


def _autograd_loop(module: nn.Module, module_name: str, forward: Callable[[list[Tensor]], list[Tensor]],
                   others: dict[str, Tensor], buffers: Callable[[], dict[str, Tensor]], params: dict[str, Tensor],
                   xs: list[Tensor], cots: list[Tensor], n: int, why: BaseException,
                   under: str = "") -> tuple[dict[str, Tensor], list[Tensor]]:
    """Per-sample vector-Jacobian products by one ordinary backward pass per sample into fresh leaf copies of the
    parameters (the only tensors of the recomputation that require gradients), with ``others`` (the parameters not
    measured) and fresh copies of the buffers (``buffers()``) for each sample: slower than vmap but runs anything
    the training step's own backward pass runs. Errors become one
    :class:`ConfigError` line naming the module (``why``: the error that made vmap give up; ``under``: the autocast
    the call was recorded and recomputed under, named as a possible cause)."""
    keys = list(params)
    rows: list[list[Tensor]] = []
    outs: list[list[Tensor]] = []
    try:
        with torch.enable_grad():
            for i in range(n):
                leaves = {k: params[k].detach().requires_grad_(True) for k in keys}
                # the module's tensors swapped for the whole forward *and* backward pass (non-reentrant checkpointing
                # recomputes the forward inside the backward, after torch.func.functional_call would have returned)
                with _reparametrize_module(module, {**others, **buffers(), **leaves}):
                    out = forward([x[i] for x in xs])
                    pairs = [(o, c[i]) for o, c in zip(out, cots) if o.requires_grad]
                    if pairs:  # backward() rather than autograd.grad: reentrant checkpointing refuses the latter
                        torch.autograd.backward([o for o, _ in pairs], [c for _, c in pairs])
                rows.append([torch.zeros_like(params[k]) if leaves[k].grad is None else leaves[k].grad for k in keys])
                outs.append([o.detach() for o in out])
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
        raise ConfigError(f"module {module_name!r} ({type(module).__name__}) cannot be recomputed one sample at a "
                          f"time for its per-sample gradients ({_first_line(error)}; vmap: {_first_line(why)}). "
                          f"{_autocast_cause(under)}Register a rule for it (flowvar.variance.register_rule) or use "
                          f"flowvar.variance.gradient_variance(method='autograd')") from error
    grads = {k: torch.stack([r[j] for r in rows]) for j, k in enumerate(keys)}
    return grads, [torch.stack([o[j] for o in outs]) for j in range(len(cots))]


def _autocast_cause(under: str) -> str:
    if not under:
        return ""
    return (f"The call ran under {under} and was recomputed under it: if the module cannot run one sample under "
            f"autocast, measure on steps whose forward runs outside autocast. ")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _batch_dims(module: nn.Module) -> tuple[Callable[[int], int], Callable[[int], int]]:
    """Where the batch lies in the k-th input leaf and output leaf of a call: the first dimension, except for
    recurrent layers (``nn.RNN``/``GRU``/``LSTM``): the input and output sequence have it first only when
    ``batch_first``, the hidden states always second."""
    if isinstance(module, nn.RNNBase):
        seq = 0 if module.batch_first else 1
        return (lambda k: seq if k == 0 else 1), (lambda k: seq if k == 0 else 1)
    return (lambda k: 0), (lambda k: 0)
