"""Layers whose parameter gradients the engine computes itself: the per-sample gradients, once.

Why. For a layer whose rule materialises the per-sample weight gradients g_i (a convolution on a large feature
map, where the ghost norm would cost S²(K + O) > S·K·O per sample), the backward pass and the engine both form
the same product: the backward its sum G = Σ_i g_i (one GEMM over B·S positions), the engine each g_i (B GEMMs
over S positions). The batch gradient is the sum of the per-sample ones, so one of the two is redundant: the
engine takes the layer's parameters out of the backward pass (``requires_grad`` off for the duration of the
layer's forward call, so autograd computes only ∂L/∂input there) and, when the backward pass ends, materialises
each g_i once and writes G = Σ_i g_i into ``.grad`` itself (accumulating, as autograd does). On a UNet this
removes about half of every such convolution's backward cost.

What a user sees: after ``loss.backward()`` returns, every ``.grad`` holds what autograd would have put there (the
sum is formed in float64 from the per-sample gradients, so it is if anything more accurate), whether or not the
engine's ``compute`` is called; gradient clipping, optimisers and accumulation over micro-batches work as usual.
What does not fire for these parameters: tensor hooks and post-accumulate-grad hooks registered by others on them
(they see no autograd gradient).

When a call is left to autograd (the engine then measures it after the backward pass, as for every other layer):
the engine is not armed; the input does not require grad (the layer's output would then not either); the layer
runs in a half-precision dtype; a ``torch.distributed`` process group is initialised (DDP's reducer hooks the
parameters' autograd gradients); saved-tensor hooks are active (activation checkpointing, offloading: a forward
recomputed inside the backward pass would compute the gradient again); the forward runs inside a backward pass;
the parameter was found used outside its module's forward (:attr:`GradNormEngine.outside`); or the rule prefers
the ghost norm for the call's shape (:meth:`~flowvar.variance.rules.base.Rule.ownable`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from flowvar.variance.records import CallRecord, sample_sq_norms, sample_sum
from flowvar.variance.rules import Rule

__all__ = ["OwnedGradients"]

_FULL_PRECISION = (torch.float32, torch.float64)


def _autocast(device_type: str) -> bool:
    """Whether autocast may run this call in a lower precision (the input's device, and CPU autocast)."""
    return torch.is_autocast_enabled(device_type) or torch.is_autocast_enabled("cpu")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _Stash:
    """What :meth:`OwnedGradients.finish` measured of one call, per local parameter name (raw δ, unscaled):
    per-sample ‖g_i‖² (B,), Σ_i g_i and, when asked for, Σ_i g_i ⊙ g_i (float64)."""

    def __init__(self) -> None:
        self.sq_norms: dict[str, Tensor] = {}
        self.sums: dict[str, Tensor] = {}
        self.sq_sums: dict[str, Tensor] = {}


class _OwnedCall:
    """One call of an owned layer: its record (inputs and δ, filled by the engine's hooks), the parameters taken
    out of the backward pass, the δ already turned into ``.grad`` and the stash of that measurement."""

    def __init__(self, module: nn.Module, rule: Rule, record: CallRecord, params: dict[str, nn.Parameter]) -> None:
        self.module, self.rule, self.record, self.params = module, rule, record, params
        self.processed: Tensor | None = None
        self.stash: _Stash | None = None
        self.valid = True  # False once a second backward pass reached the call: the stash then misses part of δ


def _schedule(owner: weakref.ref[OwnedGradients], grad: Tensor) -> None:
    """Output-gradient hook of owned calls: queues the owner's :meth:`~OwnedGradients.finish` once per backward
    pass. The owner is held weakly: no reference cycle output → hook → records → output keeps a step's graph
    alive (and a deep copy of the model, hooks and all, never shares it: the hook lives on this pass's tensors)."""
    owned = owner()
    if owned is not None:
        task = torch._C._current_graph_task_id()
        if task != owned.queued_task:
            owned.queued_task = task
            torch.autograd.Variable._execution_engine.queue_callback(owned.finish)


class OwnedGradients:
    """The owned layers of one engine (module docstring): the forward pre/post hooks that take their parameters
    out of the backward pass and the end-of-backward step that writes their gradients.

    ``recording()``: whether the engine records this forward call; ``outside``: the engine's parameters found used
    outside their module (never owned); ``param_grads``, ``accumulated``: the engine's per-parameter gradients of
    this pass (the owned sums are added there, so the engine's check and mean gradient see them as autograd's);
    ``records``: the engine's call records by module id; ``elementwise``: also stash Σ_i g_i²; ``chunk_bytes``:
    the memory bound of one materialised chunk.
    """

    def __init__(self, recording: Callable[[], bool], outside: dict[str, str], param_grads: dict[int, Tensor],
                 accumulated: dict[int, Tensor], records: dict[int, list[CallRecord]], elementwise: bool,
                 chunk_bytes: int) -> None:
        self._recording, self._outside = recording, outside
        self._param_grads, self._accumulated, self._records = param_grads, accumulated, records
        self.elementwise, self.chunk_bytes = elementwise, chunk_bytes
        self._frozen: dict[int, list[nn.Parameter]] = {}
        self.calls: list[_OwnedCall] = []
        self.queued_task = -2  # the backward pass (graph task) for which finish() is queued

    def attach(self, module: nn.Module, rule: Rule, names: dict[str, str]) -> list[Any]:
        """Hooks making ``module`` owned where its rule allows (``names``: its parameters' local → engine names);
        call after the engine registered its forward hook (the post hook reads the record that hook appends)."""
        return [module.register_forward_pre_hook(partial(self._pre_hook, rule=rule, names=names), with_kwargs=True),
                module.register_forward_hook(partial(self._post_hook, rule=rule), with_kwargs=True,
                                             always_call=True)]

    def clear(self) -> None:
        self.calls.clear()

    def _eligible(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], rule: Rule,
                  names: dict[str, str]) -> list[nn.Parameter]:
        if kwargs or not args or not isinstance(args[0], Tensor) or not args[0].requires_grad:
            return []
        if not rule.ownable(module, args[0]):  # the cheap shape test first: most calls stop here
            return []
        if args[0].dtype not in _FULL_PRECISION or _autocast(args[0].device.type):
            return []
        if not self._recording() or torch._C._current_graph_task_id() != -1 or _distributed():
            return []
        if torch._C._autograd._top_saved_tensors_default_hooks(False) is not None:
            return []
        local = {k: p for k, p in module._parameters.items() if p is not None and p.requires_grad}
        if not local or any(names.get(k) in self._outside for k in local):
            return []
        if any(p.dtype not in _FULL_PRECISION for p in local.values()):
            return []
        return list(local.values())

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], rule: Rule,
                  names: dict[str, str]) -> None:
        params = self._eligible(module, args, kwargs, rule, names)
        if params:
            for p in params:
                p.requires_grad_(False)
            self._frozen[id(module)] = params

    def _post_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
                   rule: Rule) -> None:
        params = self._frozen.pop(id(module), None)
        if params is None:
            return
        for p in params:  # always_call: restored even when the forward raised
            p.requires_grad_(True)
        records = self._records.get(id(module))
        if not isinstance(output, Tensor) or not output.requires_grad or not records or records[-1].outputs[0] \
                is not output:
            # no δ will come for these parameters through this call: they got no gradient from it, as with autograd
            return
        local = {k: p for k, p in module._parameters.items() if p is not None and any(p is q for q in params)}
        self.calls.append(_OwnedCall(module, rule, records[-1], local))
        output.register_hook(partial(_schedule, weakref.ref(self)))

    def finish(self) -> None:
        """At the end of a backward pass: for every owned call that received δ, materialise its per-sample gradients
        chunk by chunk, add their sum to ``.grad`` and stash their norms (and element-wise squares)."""
        with torch.no_grad():
            for call in self.calls:
                delta = call.record.grads[0]
                if delta is None or delta is call.processed:
                    continue
                fresh = delta if call.processed is None else delta - call.processed
                if call.processed is not None:
                    call.valid = False
                call.processed = delta
                self._measure(call, fresh)

    def _measure(self, call: _OwnedCall, delta: Tensor) -> None:
        x = call.record.args[0]
        B = x.shape[0]
        stash = _Stash() if call.valid else None
        sums: dict[str, Tensor] = {}
        per_sample = sum(p.numel() for p in call.params.values()) * delta.element_size() * 3
        per_sample += (x[0].numel() + delta[0].numel()) * delta.element_size()
        size = max(1, min(B, self.chunk_bytes // max(1, per_sample)))
        for start in range(0, B, size):
            stop = min(start + size, B)
            grads = call.rule.per_sample_grads(call.module, x, delta, start, stop, set(call.params))
            for name, g in grads.items():  # (b, *shape) or a kernel's own layout
                part = sample_sum(g)
                sums[name] = sums[name] + part if name in sums else part
                if stash is not None:
                    norms = sample_sq_norms(g)
                    prev = stash.sq_norms.get(name)
                    stash.sq_norms[name] = norms if prev is None else torch.cat([prev, norms])
                    if self.elementwise:
                        sq = sample_sum(g, torch.square)
                        stash.sq_sums[name] = stash.sq_sums[name] + sq if name in stash.sq_sums else sq
        for name, p in call.params.items():
            total = sums[name].reshape(p.shape)
            if stash is not None:
                stash.sums[name] = total
                if name in stash.sq_sums:
                    stash.sq_sums[name] = stash.sq_sums[name].reshape(p.shape)
            grad = total.to(p.dtype)
            if p.grad is None:
                p.grad = torch.empty_like(p, memory_format=torch.preserve_format).copy_(grad)
            else:
                p.grad.add_(grad)
            key = id(p)
            self._param_grads[key] = self._param_grads[key] + grad if key in self._param_grads else grad
            self._accumulated[key] = self._accumulated[key] + grad if key in self._accumulated else grad
        call.stash = stash

    def stash_for(self, module: nn.Module, records: list[CallRecord]) -> _Stash | None:
        """The stash of ``module``'s only recorded call, when it measured the call's whole δ; else None (the rule
        then measures the records itself: several calls, several backward passes, or a call left to autograd)."""
        if len(records) != 1:
            return None
        for call in self.calls:
            if call.record is records[0]:
                return call.stash if call.valid and call.processed is records[0].grads[0] else None
        return None
