"""``nn.Linear``: g_i = Σ_s δ_is a_isᵀ over the positions s of sample i (one position for 2-D inputs).

Input (B, in): ‖g_i‖² = ‖δ_i‖² ‖a_i‖² and Σ_i g_i² = (δ²)ᵀ(a²). Input (B, S, in) (sequence or extra dims),
or a module called several times per forward pass (the calls are concatenated along S):
‖g_i‖² = Σ_{s,s'} (a_is·a_is')(δ_is·δ_is') (the "ghost norm", cost S²(in + out) per sample) or, when cheaper
or when element-wise sums are wanted, g_i materialised chunk by chunk (cost S·in·out per sample).
Bias: g_i = Σ_s δ_is. :func:`seq_linear` is shared with the Conv2d rule (a convolution is a linear map of
its input patches).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowvar.variance.records import F64, CallRecord, Collector, PerSample, RuleContext
from flowvar.variance.rules.base import Rule, batched

__all__ = ["OWN_MIN_POSITIONS", "LinearRule", "ghost_sq_norms", "seq_linear"]

#: Fewest positions per sample for which the engine computes a sequence Linear's gradient itself (below, the
#: per-sample products are too small to run as fast as the backward pass's one batched product)
OWN_MIN_POSITIONS = 16


def seq_linear(provider: Callable[[int, int], tuple[Tensor, Tensor]], G: int, S: int, K: int, O: int,
               collectors: dict[str, Collector], ctx: RuleContext, weight_view: Callable[[Tensor], Tensor],
               bias: bool, itemsize: int) -> str:
    """Per-sample statistics of g_i[g] = Σ_s D_igs A_igsᵀ (weight) and Σ_s D_igs (bias).

    ``provider(start, stop)`` → A (b, G, S, K), D (b, G, S, O). ``weight_view`` maps (b, G, O, K) to the
    parameter's (b, *shape). Ghost norms when cheaper and no element-wise sums are wanted; else materialise.
    """
    w = collectors.get("weight")
    ghost = w is not None and not ctx.want_sq_sum and S * S * (K + O) < S * K * O
    per_sample_bytes = itemsize * G * (S * S * 2 if ghost else O * K) + itemsize * G * S * (K + O)
    for start, stop in ctx.chunks(per_sample_bytes):
        A, D = provider(start, stop)
        b = stop - start
        if w is not None:
            if ghost:
                w.sq_norms[start:stop] = ghost_sq_norms(A, D)
                if w.grad_sum is not None:
                    w.grad_sum += weight_view(torch.einsum("bgso,bgsk->gok", D, A)[None])[0].to(F64).view(w.shape)
                else:  # the check of Σ_i g_i by random projections, without the weight-gradient product
                    w.add_probe(D, A, weight_view)
                if w.wants_segments:
                    assert ctx.segments is not None
                    seg = ctx.segments[start:stop]
                    for k in range(ctx.n_segments):
                        m = seg == k
                        if bool(m.any()):
                            part = torch.einsum("bgso,bgsk->gok", D[m], A[m])[None]
                            w.seg_sum()[k] += weight_view(part)[0].to(F64).view(w.shape)
            else:
                w.add_per_sample(start, weight_view(D.transpose(-1, -2) @ A))
        if bias and "bias" in collectors:
            collectors["bias"].add_per_sample(start, D.sum(2).reshape(b, G * O))
    return "ghost" if ghost else "materialised"


def ghost_sq_norms(A: Tensor, D: Tensor) -> Tensor:
    """(b,) float64 ‖g_i‖² of g_i[g] = Σ_s D_igs A_igsᵀ without forming g_i: Σ_g Σ_{s,s'} (A_igs·A_igs')(D_igs·D_igs')
    (the ghost norm; ``A`` (b, G, S, K), ``D`` (b, G, S, O))."""
    gram = (A @ A.transpose(-1, -2)) * (D @ D.transpose(-1, -2))  # (b, G, S, S)
    return gram.sum((1, 2, 3)).to(F64)


def _segment_outer_sq_norms(a: Tensor, d: Tensor, ctx: RuleContext) -> Tensor:
    """‖Σ_{i∈k} d_i a_iᵀ‖² for every segment k, float64 (n_seg,); a (B, K), d (B, O).

    Thin layers (min(K, O) ≤ 8): the per-segment sums Σ_{i∈k} d_i a_iᵀ by one scatter-add of the outer products
    (cost B·K·O; chunked to ``ctx.chunk_bytes``). Otherwise all
    segments at once on zero-padded blocks (n_seg, n_max, ·): the Gram form Σ_{i,j∈k} (a_i·a_j)(d_i·d_j)
    (cost n_seg·n_max²·(K + O)) or the per-segment products (cost n_seg·n_max·K·O), whichever is cheaper.
    """
    assert ctx.segments is not None
    K, O = a.shape[1], d.shape[1]
    if min(K, O) <= 8:
        dtype = torch.promote_types(a.dtype, d.dtype)
        sums = torch.zeros(ctx.n_segments, O * K, dtype=dtype, device=d.device)
        for start, stop in ctx.chunks(O * K * dtype.itemsize):
            outer = (d[start:stop, :, None] * a[start:stop, None, :]).reshape(stop - start, O * K)
            sums.index_add_(0, ctx.segments[start:stop], outer)
        return torch.linalg.vector_norm(sums, dim=1, dtype=F64).square()
    ap, dp = ctx.padded(a), ctx.padded(d)
    if ap.shape[1] * (K + O) < K * O:
        return ((ap @ ap.transpose(1, 2)) * (dp @ dp.transpose(1, 2))).sum((1, 2)).to(F64)
    return torch.linalg.vector_norm(dp.transpose(1, 2) @ ap, dim=(1, 2), dtype=F64).square()


def _first_group(g: Tensor) -> Tensor:
    """(n, 1, O, K) → (n, O, K): a Linear weight's layout of one group."""
    return g[:, 0]


class LinearRule(Rule):
    """``nn.Linear``: 2-D inputs by outer-product norms; inputs with extra dims or several calls by
    :func:`seq_linear` (ghost norm or chunked materialisation, whichever costs fewer flops)."""

    name = "linear"
    fills_check = True

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        assert isinstance(module, nn.Linear)
        B, K, O = ctx.B, module.in_features, module.out_features
        if len(calls) == 1 and calls[0].args[0].ndim == 2:  # the common case: no reshapes or concatenation
            c = calls[0]
            self._two_d(batched(c.args[0], B, "the Linear input"), c.grad(), collectors, ctx, c.in_norm,
                        None if c.grad_norms is None else c.grad_norms[0])
            return "linear"
        A_parts = [batched(c.args[0], B, "the Linear input").reshape(B, -1, K) for c in calls]
        D_parts = [c.grad().reshape(B, -1, O) for c in calls]
        A = A_parts[0] if len(A_parts) == 1 else torch.cat(A_parts, 1)
        D = D_parts[0] if len(D_parts) == 1 else torch.cat(D_parts, 1)
        if A.shape[1] == 1:
            self._two_d(A[:, 0], D[:, 0], collectors, ctx)
            return "linear"
        S = A.shape[1]
        label = seq_linear(lambda s, e: (A[s:e, None], D[s:e, None]), 1, S, K, O, collectors, ctx,
                           lambda g: g[:, 0], module.bias is not None, A.element_size())
        return f"linear-{label}"

    def ownable(self, module: nn.Module, x: Tensor) -> bool:
        """A sequence input (B, S, …, in) with S ≥ OWN_MIN_POSITIONS positions: materialising g_i = D_iᵀA_i (one
        batched matmul) then costs about one weight-gradient product, which owning the gradient saves, while the
        ghost norm (S²(in + out) per sample) comes on top of it (2-D inputs: the outer-product norms are free)."""
        return type(module) is nn.Linear and x.ndim >= 3 and x[0].numel() // x.shape[-1] >= OWN_MIN_POSITIONS

    def per_sample_grads(self, module: nn.Module, x: Tensor, delta: Tensor, start: int, stop: int,
                         names: set[str]) -> dict[str, PerSample]:
        """g_i = D_iᵀ A_i (weight, one batched matmul) and Σ_s D_is (bias), samples [start, stop)."""
        assert isinstance(module, nn.Linear)
        b = stop - start
        A = x[start:stop].reshape(b, -1, module.in_features)
        D = delta[start:stop].reshape(b, -1, module.out_features)
        out: dict[str, PerSample] = {}
        if "weight" in names:
            out["weight"] = D.transpose(1, 2) @ A
        if "bias" in names:
            out["bias"] = D.sum(1)
        return out

    @staticmethod
    def _two_d(a: Tensor, d: Tensor, collectors: dict[str, Collector], ctx: RuleContext, a_norm: Tensor | None = None,
               d_norm: Tensor | None = None) -> None:
        """``a_norm``, ``d_norm``: the row norms ‖a_i‖, ‖δ_i‖ when the hooks computed them already."""
        w = collectors.get("weight")
        b = collectors.get("bias")
        if d_norm is None:
            d_norm = torch.linalg.vector_norm(d, dim=1)
        # δ² once for the weight's and the bias's element-wise sums (x * x: pow(2) is a slower kernel)
        d2 = d * d if (w is not None and w.sq_sum is not None) or (b is not None and b.sq_sum is not None) else None
        if w is not None:
            if a_norm is None:
                a_norm = torch.linalg.vector_norm(a, dim=1)
            w.sq_norms.copy_((d_norm * a_norm).square())  # ‖δ_i‖²‖a_i‖², to float64
            if w.grad_sum is not None:
                w.grad_sum += (d.T @ a).to(F64)
            else:  # the check of Σ_i g_i = δᵀa by random projections: cost B(K + O) per probe, not B·K·O
                w.add_probe_rows(d, a, _first_group)
            if w.sq_sum is not None:
                assert d2 is not None
                w.sq_sum += (d2.T @ (a * a)).to(F64)
            if w.seg_sq is not None:
                w.seg_sq += _segment_outer_sq_norms(a, d, ctx)
        if b is not None:
            if b.grad_sum is None and b.seg_sq is None:  # what add_per_sample does, with the norms and δ² shared
                b.sq_norms.copy_(d_norm.square())
                if b.sq_sum is not None:
                    assert d2 is not None
                    b.sq_sum += d2.sum(0).to(F64)
                check = b.sum_target()
                if check is not None:
                    check += d.sum(0).to(F64)
            elif b.grad_sum is None and b.sq_sum is None:  # + per-segment sums (what add_per_sample does, directly)
                assert ctx.segments is not None and b.seg_sq is not None
                b.sq_norms.copy_(d_norm.to(F64).square())
                part = d.new_zeros(ctx.n_segments, d.shape[1]).index_add_(0, ctx.segments, d)
                b.seg_sq += part.to(F64).pow(2).sum(1)
                check = b.sum_target()
                if check is not None:
                    check += part.sum(0).to(F64)
            else:
                b.add_per_sample(0, d)
