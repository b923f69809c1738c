"""The fallback for parameters no rule covers: exact per-sample vector-Jacobian products of their module alone.

g_i = Σ_calls J_θ(module at x_i)ᵀ δ_i, computed with ``torch.func.vmap(vjp)`` over samples (a loop over single
samples when the module has data-dependent control flow). The module's output is recomputed and checked
against the captured one, so a module that is random (dropout) or couples samples is reported rather than
mis-measured.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from flowvar.errors import ConfigError
from flowvar.variance.autograd import is_vmap_control_flow_error
from flowvar.variance.records import F64, CallRecord
from flowvar.variance.rules.base import batched

__all__ = ["fallback_call"]


def _relative_gap(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / (b.norm() + a.norm() + 1e-300)) * 2


def fallback_call(module: nn.Module, module_name: str, wanted: dict[str, str], call: CallRecord, start: int,
                  stop: int, B: int) -> tuple[dict[str, Tensor], str]:
    """Per-sample gradients {local name: (b, *shape)} of ``module``'s parameters ``wanted`` for one call and
    samples [start, stop): vmap over samples of vjp(module at x_i, δ_i); a loop when vmap cannot."""
    params = {k: p.detach() for k, p in module.named_parameters() if k in wanted}
    fixed = {k: p.detach() for k, p in module.named_parameters() if k not in wanted}
    buffers = dict(module.named_buffers())
    leaves, spec = tree_flatten((call.args, call.kwargs))
    batch_leaves = [k for k, x in enumerate(leaves) if isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == B]
    out_idx = [k for k, g in enumerate(call.grads) if g is not None]
    for k in out_idx:
        batched(call.outputs[k], B, f"output {k} of {module_name!r}")
    xs = [leaves[k][start:stop] for k in batch_leaves]
    cots = [call.grads[k][start:stop] for k in out_idx]  # type: ignore[index]

    def forward(p: dict[str, Tensor], sample: list[Tensor]) -> list[Tensor]:
        full = list(leaves)
        for k, x in zip(batch_leaves, sample):
            full[k] = x.unsqueeze(0)
        args, kwargs = tree_unflatten(full, spec)
        outs, _ = tree_flatten(functional_call(module, (p, fixed, buffers), tuple(args), dict(kwargs)))
        return [outs[k][0] for k in out_idx]

    def one(p: dict[str, Tensor], sample: list[Tensor], cot: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
        out, pullback = vjp(lambda q: forward(q, sample), p)
        return pullback(cot)[0], out

    how = "fallback-vmap"
    try:
        grads, outs = vmap(one, in_dims=(None, 0, 0), randomness="error")(params, xs, cots)
    except RuntimeError as error:
        msg = str(error)
        if "random" in msg:
            raise ConfigError(f"module {module_name!r} ({type(module).__name__}) draws random numbers in its forward "
                              f"pass (e.g. dropout), so its per-sample gradients cannot be recomputed; put it in eval "
                              f"mode while measuring or register a rule for it (flowvar.variance.register_rule)"
                              ) from None
        if not is_vmap_control_flow_error(error):
            raise
        how = "fallback-loop"
        rows = [one(params, [x[i] for x in xs], [c[i] for c in cots]) for i in range(stop - start)]
        grads = {k: torch.stack([r[0][k] for r in rows]) for k in params}
        outs = [torch.stack([r[1][j] for r in rows]) for j in range(len(out_idx))]
    tol = 1e-3 if any(o.dtype != F64 for o in outs) else 1e-9
    for j, k in enumerate(out_idx):
        gap = _relative_gap(outs[j], call.outputs[k][start:stop])
        if gap > tol:
            raise ConfigError(
                f"module {module_name!r} ({type(module).__name__}) gives a different output when recomputed one "
                f"sample at a time (relative gap {gap:.2g}): its forward couples the samples of a batch (batch "
                f"statistics) or is random, so per-sample gradients are not defined for it. Put it in eval mode or "
                f"change it to act on each sample separately")
    return {k: g.detach() for k, g in grads.items()}, how
