"""``nn.Conv2d`` and ``nn.Conv1d`` (any stride, padding, dilation, groups, padding mode): g_i = Σ_l δ_il a_ilᵀ per
group, a_il the input patch at output position l: ghost norms on ``F.unfold`` patches when the feature map is small,
else per-sample weight gradients materialised chunk by chunk by one convolution backward with the batch folded
into the groups, or one batched matmul per kernel offset (whichever is faster for the shape, timed once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.errors import ShapeError
from flowvar.variance.records import Blocked, CallRecord, Collector, PerSample, RuleContext
from flowvar.variance.rules.base import Rule, batched
from flowvar.variance.rules.linear import ghost_sq_norms, seq_linear

__all__ = ["Conv1dRule", "Conv2dRule"]


class Conv2dRule(Rule):
    """``nn.Conv2d``: per group, g_i = Σ_l δ_il a_ilᵀ over output positions l, a_il the input patch at l.

    Few output positions (S²(K + O) < S·K·O, K = C/G·kh·kw, O = out/G) and no element-wise sums: the ghost
    norm on unfolded patches. Otherwise the per-sample weight gradients are materialised chunk by chunk,
    either as the weight gradient of one convolution with the batch folded into the groups (input
    (1, b·C, H, W), groups b·G) or by one batched matmul per kernel offset; both are exact, and the faster
    for a layer shape is picked by timing both on its first call (``F.unfold`` is much slower than either).
    """

    name = "conv2d"
    fills_check = True

    def __init__(self) -> None:
        self._fastest: dict[tuple[Any, ...], str] = {}
        self._fastest_norms: dict[tuple[Any, ...], str] = {}

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        assert isinstance(module, nn.Conv2d)
        G = module.groups
        O = module.out_channels // G
        K = (module.in_channels // G) * module.kernel_size[0] * module.kernel_size[1]
        xs = []
        for c in calls:
            x = c.args[0]
            if x.ndim != 4:
                raise ShapeError(f"Conv2d input of shape {tuple(x.shape)} has no batch dimension; pass (B, C, H, W)")
            xs.append(self._padded(module, batched(x, ctx.B, "the Conv2d input")))
        ds = [c.grad() for c in calls]
        S = sum(d.shape[2] * d.shape[3] for d in ds)
        w = collectors.get("weight")
        shape = module.weight.shape
        itemsize = xs[0].element_size()
        if w is not None and w.grad_sum is None and w.sq_sum is None and not w.wants_segments and len(calls) == 1:
            label = self._norms_only(module, xs[0], ds[0], w, ctx)
            if "bias" in collectors:
                collectors["bias"].add_per_sample(0, ds[0].sum((2, 3)))
            return label
        if w is not None and not ctx.want_sq_sum and S * S * (K + O) < S * K * O:
            def provider(start: int, stop: int) -> tuple[Tensor, Tensor]:
                A_parts, D_parts = [], []
                for x, d in zip(xs, ds):
                    A_parts.append(self._patches(module, x[start:stop]))
                    D_parts.append(d[start:stop].reshape(stop - start, G, O, -1).transpose(-1, -2))
                return (torch.cat(A_parts, 2) if len(A_parts) > 1 else A_parts[0],
                        torch.cat(D_parts, 2) if len(D_parts) > 1 else D_parts[0])

            seq_linear(provider, G, S, K, O, collectors, ctx, lambda g: g.reshape(g.shape[0], *shape),
                       module.bias is not None, itemsize)
            return "conv2d-ghost"
        per_sample = itemsize * (3 * shape.numel() + sum(x[0].numel() for x in xs) + sum(d[0].numel() for d in ds))
        for start, stop in ctx.chunks(per_sample):
            if w is not None:
                gw = None
                for x, d in zip(xs, ds):
                    part = self._weight_grads(module, x[start:stop], d[start:stop])
                    if len(xs) > 1:  # several calls: their per-sample gradients add, in the parameter's layout
                        part = part.dense() if isinstance(part, Blocked) else part
                        gw = part if gw is None else gw + part
                    else:
                        gw = part
                assert gw is not None
                w.add_per_sample(start, gw)
            if "bias" in collectors:
                gb = sum(d[start:stop].sum((2, 3)) for d in ds)
                collectors["bias"].add_per_sample(start, gb)  # type: ignore[arg-type]
        return "conv2d-materialised"

    def _norms_only(self, module: nn.Conv2d, x: Tensor, d: Tensor, w: Collector, ctx: RuleContext) -> str:
        """Only ‖g_i‖² of the weight is wanted (the trace): the faster of the ghost norm on unfolded patches and the
        materialised per-sample gradients for this layer shape, timed on its first call (both exact). The flop
        count alone picks badly near the break-even S(K + O) ≈ K·O, where memory traffic decides."""
        G = module.groups
        O, K = module.out_channels // G, (module.in_channels // G) * module.kernel_size[0] * module.kernel_size[1]
        S = d.shape[2] * d.shape[3]
        shape = module.weight.shape
        view = partial(_as_weight, shape=shape)

        def ghost(start: int, stop: int) -> None:
            b = stop - start
            A = self._patches(module, x[start:stop])  # (b, G, S, K)
            D = d[start:stop].reshape(b, G, O, S).transpose(-1, -2)  # (b, G, S, O)
            w.sq_norms[start:stop] = ghost_sq_norms(A, D)
            w.add_probe(D, A, view)

        def materialised(start: int, stop: int) -> None:
            w.add_per_sample(start, self._weight_grads(module, x[start:stop], d[start:stop]))

        kernels = {"materialised": materialised}
        if S * (K + O) < 4 * K * O:  # far beyond its flop break-even the ghost norm cannot win: do not time it
            kernels["ghost"] = ghost
        per_sample = x.element_size() * (G * max(2 * S * S + S * K, 3 * O * K) + x[0].numel() + d[0].numel())
        key = (tuple(x.shape), tuple(d.shape), tuple(shape), module.stride, module.dilation, G, x.dtype)
        choice = self._fastest_norms.get(key) if len(kernels) > 1 else "materialised"
        for start, stop in ctx.chunks(per_sample):
            if choice is None:  # time both on the first chunk of a new shape; the winner runs last, for real
                runs = {k: partial(f, start, stop) for k, f in kernels.items()}
                choice = self._fastest_norms[key] = _fastest_of(runs, before=w.reset)
                w.reset()
            kernels[choice](start, stop)
        return f"conv2d-{choice}"

    def ownable(self, module: nn.Module, x: Tensor) -> bool:
        """Where the per-sample gradients are materialised anyway: S(K + O) ≥ K·O (the ghost norm's flops exceed
        materialising), S the call's output positions (exact for numeric padding; 'same'/'valid' likewise)."""
        if type(module) is not nn.Conv2d or x.ndim != 4:
            return False
        G = module.groups
        O, K = module.out_channels // G, (module.in_channels // G) * module.kernel_size[0] * module.kernel_size[1]
        if module.padding == "same":  # as many positions as the input
            S = x.shape[2] * x.shape[3]
        else:
            pad = (0, 0) if module.padding == "valid" else module.padding
            S = 1
            for k, n in enumerate(x.shape[2:]):
                S *= (n + 2 * pad[k] - module.dilation[k] * (module.kernel_size[k] - 1) - 1) // module.stride[k] + 1
        return S > 0 and S * (K + O) >= K * O

    def per_sample_grads(self, module: nn.Module, x: Tensor, delta: Tensor, start: int, stop: int,
                         names: set[str]) -> dict[str, PerSample]:
        """g_i of the weight (materialised by the faster kernel) and of the bias (Σ_l δ_il)."""
        assert isinstance(module, nn.Conv2d)
        d = delta[start:stop]
        out: dict[str, PerSample] = {}
        if "weight" in names:
            out["weight"] = self._weight_grads(module, self._padded(module, x[start:stop]), d)
        if "bias" in names:
            out["bias"] = d.sum((2, 3))
        return out

    @staticmethod
    def _padded(module: nn.Conv2d, x: Tensor) -> Tensor:
        """Apply string or non-zero-mode padding explicitly, so that the rule works with numeric padding."""
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            return F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        return x

    @staticmethod
    def _numeric_padding(module: nn.Conv2d) -> tuple[int, int]:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return (0, 0)
        return module.padding  # type: ignore[return-value]

    def _weight_grads(self, module: nn.Conv2d, x: Tensor, d: Tensor) -> PerSample:
        """Per-sample weight gradients (b, out, C/G, kh, kw) of padded input x and output gradient d.

        Two exact kernels whose speed ranks differ by layer shape: batch-as-groups convolution backward and
        one batched matmul per kernel offset. The first call for a shape times both; later calls use the faster.
        """
        kernels = {"grouped": self._grouped, "offsets": self._per_offset}
        key = (tuple(x.shape), tuple(d.shape), tuple(module.weight.shape), module.stride, module.dilation,
               module.groups, x.dtype)
        choice = self._fastest.get(key)
        if choice is None:
            choice = self._fastest[key] = _fastest_of({k: partial(f, module, x, d) for k, f in kernels.items()})
        return kernels[choice](module, x, d)

    @classmethod
    def _per_offset(cls, module: nn.Conv2d, x: Tensor, d: Tensor) -> Blocked:
        """g_i[:, :, p, q] = δ_i · (input window at kernel offset (p, q))ᵀ: one batched matmul per offset on the
        channels-last input, each writing one contiguous block (kh·kw blocks of (b, out·C/G))."""
        b, G = x.shape[0], module.groups
        out_ch, cg, kh, kw = module.weight.shape
        ph, pw = cls._numeric_padding(module)
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        Ho, Wo = d.shape[2], d.shape[3]
        (sh, sw), (dh, dw) = module.stride, module.dilation
        xl = x.reshape(b, G, cg, x.shape[2], x.shape[3]).permute(0, 1, 3, 4, 2).contiguous()  # (b, G, H, W, C/G)
        dm = d.reshape(b * G, out_ch // G, Ho * Wo)
        grads = torch.empty(kh, kw, b * G, out_ch // G, cg, dtype=d.dtype, device=d.device)
        for p in range(kh):
            for q in range(kw):
                window = xl[:, :, p * dh: p * dh + sh * (Ho - 1) + 1: sh, q * dw: q * dw + sw * (Wo - 1) + 1: sw]
                torch.bmm(dm, window.reshape(b * G, Ho * Wo, cg), out=grads[p, q])
        return Blocked(grads.view(kh * kw, b, out_ch * cg), partial(_offsets_to_weight, kernel=(kh, kw), cg=cg))

    @classmethod
    def _grouped(cls, module: nn.Conv2d, x: Tensor, d: Tensor) -> Tensor:
        """The weight gradient of one convolution whose groups are the b·G (sample, group) pairs."""
        b, C, H, W = x.shape
        G = module.groups
        shape = module.weight.shape
        folded_weight = torch.empty((b * shape[0], *shape[1:]), dtype=x.dtype, device=x.device)  # shape only
        _, gw, _ = torch.ops.aten.convolution_backward(
            d.reshape(1, b * d.shape[1], d.shape[2], d.shape[3]), x.reshape(1, b * C, H, W), folded_weight, None,
            module.stride, cls._numeric_padding(module), module.dilation, False, (0, 0), b * G, (False, True, False))
        return gw.reshape(b, *shape)

    @classmethod
    def _patches(cls, module: nn.Conv2d, x: Tensor) -> Tensor:
        """Padded (b, C, H, W) → (b, G, L, C/G · kh · kw): the input patch under each output position."""
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=cls._numeric_padding(module),
                        stride=module.stride)
        b, G = x.shape[0], module.groups
        return cols.reshape(b, G, cols.shape[1] // G, cols.shape[2]).transpose(-1, -2)


class Conv1dRule(Conv2dRule):
    """``nn.Conv1d`` as the Conv2d with a (1, k) kernel over (B, C, 1, L) inputs (the same per-sample gradients,
    reshaped; guided-diffusion UNets — torchcfm's, Meta flow_matching's — use it for the attention projections)."""

    name = "conv1d"

    def __init__(self) -> None:
        super().__init__()
        self._as_2d: dict[int, tuple[nn.Conv1d, nn.Conv2d]] = {}

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        assert isinstance(module, nn.Conv1d)
        for c in calls:
            if c.args[0].ndim != 3:
                raise ShapeError(f"Conv1d input of shape {tuple(c.args[0].shape)} has no batch dimension; pass "
                                 f"(B, C, L)")
            batched(c.args[0], ctx.B, "the Conv1d input")  # named as the module's own (the 2-D rule's would say Conv2d)
        lifted = [CallRecord((c.args[0].unsqueeze(2),), {}, [c.outputs[0].unsqueeze(2)],
                             [None if c.grads[0] is None else c.grads[0].unsqueeze(2)]) for c in calls]
        label = super().accumulate(self._lift(module), lifted, collectors, ctx)
        return label.replace("conv2d", self.name)

    def _lift(self, module: nn.Conv1d) -> nn.Conv2d:
        """A weightless (meta-device) Conv2d with the Conv1d's configuration on a (1, k) kernel: what the 2-D rule
        reads (shapes, stride, padding, dilation, groups, padding mode), never its weights."""
        cached = self._as_2d.get(id(module))
        if cached is None or cached[0] is not module:
            padding = module.padding if isinstance(module.padding, str) else (0, module.padding[0])
            conv = nn.Conv2d(module.in_channels, module.out_channels, (1, module.kernel_size[0]),
                             stride=(1, module.stride[0]), padding=padding, dilation=(1, module.dilation[0]),
                             groups=module.groups, bias=module.bias is not None, padding_mode=module.padding_mode,
                             device="meta")
            cached = self._as_2d[id(module)] = (module, conv)
        return cached[1]


def _as_weight(g: Tensor, shape: torch.Size) -> Tensor:
    """(n, G, O, K) per-group products → (n, out, C/G, kh, kw), the Conv2d weight's layout."""
    return g.reshape(g.shape[0], *shape)



def _fastest_of(candidates: dict[str, Callable[[], object]], before: Callable[[], object] = lambda: None) -> str:
    """The name of the fastest of equivalent ``candidates``: each runs once to warm up (its own first-call choices,
    allocations, caches), then the best of two timed runs decides; ``before`` runs before every call (e.g. resetting
    what the candidates accumulate into). One noisy first call must not fix a slow kernel for a whole run."""
    times: dict[str, float] = {}
    for rep in range(3):
        for name, run in candidates.items():
            before()
            begin = time.perf_counter()
            run()
            if rep:
                times[name] = min(times.get(name, float("inf")), time.perf_counter() - begin)
    return min(times, key=times.__getitem__)


def _offsets_to_weight(t: Tensor, kernel: tuple[int, int], cg: int) -> Tensor:
    """(kh·kw, n, out·C/G) blocks of :meth:`Conv2dRule._per_offset` → (n, out, C/G, kh, kw), a view."""
    kh, kw = kernel
    n = t.shape[1]
    return t.view(kh, kw, n, -1, cg).permute(2, 3, 4, 0, 1)
