"""The reference the engine and rule tests compare against: torch.func per-sample gradients in float64.

The reference is always vmap(grad) in float64 on a float64 copy of the module, so float32 results are held
to 1e-5 and float64 results to 1e-10 relative error (:data:`TOL`). Imported by the test modules of this
folder (pytest puts the folder of a test module on ``sys.path``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.variance import GradNormEngine

F64 = torch.float64
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
N_BINS = 3


B = 12


def rel(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b| (both float64)."""
    a, b = a.to(F64), b.to(F64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def reference(module: nn.Module, x: Tensor, y: Tensor, loop: bool = False) -> dict[str, Tensor]:
    """float64 per-sample gradients of ℓ_i = ‖module(x_i) − y_i‖² (a float64 copy of the module; ``loop``:
    one grad call per sample, for modules vmap rejects)."""
    m64 = copy.deepcopy(module).to(F64)
    params = {k: v.detach() for k, v in m64.named_parameters() if v.requires_grad}
    xx = x.to(F64) if torch.is_floating_point(x) else x

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return (functional_call(m64, p, (xi[None],)) - yi[None]).pow(2).sum()

    if loop:
        rows = [grad(loss)(params, xx[i], y[i].to(F64)) for i in range(x.shape[0])]
        return {k: torch.stack([r[k] for r in rows]) for k in params}
    return vmap(grad(loss), in_dims=(None, 0, 0))(params, xx, y.to(F64))


def engine_stats(module: nn.Module, x: Tensor, y: Tensor, reduction: str = "mean", **kw):
    """One forward/backward pass with the engine attached; all statistics requested."""
    segments = torch.arange(x.shape[0]) % N_BINS
    with GradNormEngine(module, elementwise=True, **kw) as engine:
        losses = (module(x) - y).pow(2).flatten(1).sum(1)
        (losses.mean() if reduction == "mean" else losses.sum()).backward()
        return engine.compute(reduction=reduction, losses=losses, segments=segments, n_segments=N_BINS,
                              validate=True)


def assert_matches(stats, ref: dict[str, Tensor], tol: float) -> None:
    """Per-sample norms, sums, element-wise sums of squares and per-segment norms all equal the reference."""
    assert set(stats.param_sq_norms) == set(ref)
    segments = stats.segments
    for name, g in ref.items():
        flat = g.reshape(g.shape[0], -1)
        assert rel(stats.param_sq_norms[name], flat.pow(2).sum(1)) < tol, name
        assert rel(stats.grad_sum[name].reshape(-1), flat.sum(0)) < tol, name
        assert rel(stats.sq_sum[name].reshape(-1), flat.pow(2).sum(0)) < tol, name
        seg = torch.zeros(N_BINS, flat.shape[1], dtype=F64).index_add_(0, segments, flat)
        assert rel(stats.seg_sq_norms[name], seg.pow(2).sum(1)) < tol, name
    total = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in ref.values())
    assert rel(stats.sq_norms, total) < tol


def first_tensor(out: object) -> Tensor:
    """The velocity of a model output: the tensor itself, the first element of a tuple, or ``.sample`` (diffusers)."""
    if isinstance(out, tuple):
        out = out[0]
    return out.sample if hasattr(out, "sample") else out  # type: ignore[return-value,union-attr]


def reference_loop(model: nn.Module, inputs: tuple[Tensor, ...], y: Tensor) -> dict[str, Tensor]:
    """Per-sample gradients of ℓ_i = ‖model(*inputs_i) − y_i‖² by one ordinary backward pass per sample, in the
    model's own dtype (runs anything autograd runs: custom autograd.Functions, checkpointing, fused RNN kernels)."""
    model = copy.deepcopy(model)  # its .grad fields are used (backward(): reentrant checkpointing refuses .grad())
    rows = []
    params = dict(model.named_parameters())
    for i in range(y.shape[0]):
        model.zero_grad(set_to_none=True)
        out = first_tensor(model(*(x[i:i + 1] for x in inputs)))
        (out - y[i:i + 1]).pow(2).sum().backward()
        rows.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params.values()])
    return {k: torch.stack([r[j] for r in rows]) for j, k in enumerate(params)}


def measure(model: nn.Module, inputs: tuple[Tensor, ...], y: Tensor, reduction: str = "mean", **compute: object):
    """One forward/backward pass of the reduced ℓ_i = ‖model(*inputs)_i − y_i‖² with the engine attached
    (default compute options: the cheap check on, no full validation)."""
    with GradNormEngine(model) as engine:
        losses = (first_tensor(model(*inputs)) - y).pow(2).flatten(1).sum(1)
        (losses.mean() if reduction == "mean" else losses.sum()).backward()
        return engine.compute(reduction=reduction, losses=losses, **compute)


def assert_exact(stats, ref: dict[str, Tensor], tol: float) -> None:
    """Per-sample squared norms and the mean gradient of every parameter equal the reference, relative to the
    parameter's own size or, for parameters whose true gradient cancels to 0 (a key bias under softmax), to a
    floor of 1e-6 of the largest per-sample norm of the model."""
    assert set(stats.param_sq_norms) == set(ref), set(stats.param_sq_norms) ^ set(ref)
    flat = {k: g.reshape(g.shape[0], -1).to(F64) for k, g in ref.items()}
    floor = max(float(f.pow(2).sum(1).max()) for f in flat.values()) * 1e-6
    for name, f in flat.items():
        want = f.pow(2).sum(1)
        got = stats.param_sq_norms[name].to(F64)
        assert float((got - want).abs().max()) <= tol * max(float(want.max()), floor), name
        mean = stats.mean_grad[name].reshape(-1).to(F64)
        assert float((mean - f.mean(0)).abs().max()) <= tol * max(float(f.mean(0).abs().max()), floor ** 0.5), name
