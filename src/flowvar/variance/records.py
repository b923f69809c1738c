"""What the one-pass engine records and accumulates for its layer rules.

* :class:`CallRecord`: one forward call of a module, captured by the engine's hooks: its inputs, its output
  leaves and δ = ∂L/∂(output leaves) from the backward pass;
* :class:`RuleContext`: what one :meth:`~flowvar.variance.engine.GradNormEngine.compute` call wants (batch
  size, sums, segments, memory budget), shared by every rule;
* :class:`Blocked`: per-sample gradients in a kernel's own layout (reduced without copying them into the
  parameter's);
* :class:`Collector`: the float64 per-sample accumulators of one parameter for one batch, which a rule
  fills (per-sample squared norms, the sums the context asks for, and what the engine needs to check that the
  per-sample gradients add up to the backward pass's gradient: Σ_i g_i where a rule materialises g_i, random
  rank-one projections uᵀ(Σ_i g_i)v where it does not).

Rules (:mod:`flowvar.variance.rules`) read the first and fill the last; the engine
(:mod:`flowvar.variance.engine`) builds all three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_CHUNK_BYTES", "F64", "N_PROBES", "BatchedPasses", "Blocked", "CallRecord", "Collector",
           "ForwardState", "PerSample", "ProbeSet", "RngState", "RuleContext", "autocast_state", "is_batched_grad",
           "sample_sq_norms", "sample_sum", "segment_sums"]

F64 = torch.float64

#: Default memory budget (bytes) of one materialised chunk inside a rule (per-sample gradients of a layer,
#: unfolded patches, Gram matrices) and of one fallback chunk. Peak extra memory is O(this), not O(B·P).
DEFAULT_CHUNK_BYTES = 1 << 26


@dataclass
class Blocked:
    """Per-sample gradients of b samples in a kernel's own layout: ``blocks`` (n_blocks, b, m), sample i's gradient
    being the entries ``blocks[:, i, :]``; ``to_param`` maps (n_blocks, n, m) to (n, *param.shape) (a view).

    Norms and sums over samples reduce the blocks as they lie (fast, contiguous); only what is per parameter entry
    (a sum over samples, n of them) is moved into the parameter's layout. :meth:`dense` gives (b, *param.shape).
    """

    blocks: Tensor
    to_param: Callable[[Tensor], Tensor]

    @property
    def n(self) -> int:
        return self.blocks.shape[1]

    def dense(self) -> Tensor:
        return self.to_param(self.blocks)



PerSample = Tensor | Blocked  # (b, *param.shape) per-sample gradients, or the same in a kernel's layout


def sample_sq_norms(g: PerSample) -> Tensor:
    """(b,) float64 ‖g_i‖² (a fused norm kernel: no squared copy, and no copy of a strided view)."""
    if isinstance(g, Blocked):
        return torch.linalg.vector_norm(g.blocks, dim=(0, 2)).to(F64).square()
    if g.ndim == 1:
        return g.to(F64).square()
    return torch.linalg.vector_norm(g, dim=tuple(range(1, g.ndim))).to(F64).square()


def sample_sum(g: PerSample, fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Σ_i fn(g_i) in the parameter's shape, float64 (fn element-wise, e.g. squaring; summed in g's dtype, then
    converted: summing in float64 would first copy the whole chunk)."""
    if isinstance(g, Blocked):
        x = g.blocks if fn is None else fn(g.blocks)
        return g.to_param(x.sum(1, keepdim=True))[0].to(F64)
    x = g if fn is None else fn(g)
    return x.sum(0).to(F64)


def segment_sums(g: PerSample, segments: Tensor, n_segments: int) -> Tensor:
    """(n_segments, *param.shape) float64 Σ_{i ∈ k} g_i (``segments`` (b,) in [0, n_segments))."""
    if isinstance(g, Blocked):
        part = g.blocks.new_zeros(g.blocks.shape[0], n_segments, g.blocks.shape[2])
        return g.to_param(part.index_add_(1, segments, g.blocks)).to(F64)
    part = g.new_zeros(n_segments, *g.shape[1:])
    return part.index_add_(0, segments, g).to(F64)


# looked up once: the check runs in every gradient hook of the engine (absent from older torch builds: never batched)
_IS_LEGACY_BATCHED = getattr(torch._C._functorch, "is_legacy_batchedtensor", lambda t: False)
_IS_BATCHED = getattr(torch._C._functorch, "is_batchedtensor", lambda t: False)


def is_batched_grad(grad: Tensor) -> bool:
    """Whether a gradient seen by a hook is a batch of cotangents vmapped over the backward pass rather than this
    pass's δ: ``torch.autograd.grad(..., is_grads_batched=True)`` (also ``torch.autograd.functional.jacobian`` with
    ``vectorize=True``) runs the backward under PyTorch's legacy vmap, a ``torch.func.vmap`` around
    ``torch.autograd.grad`` under functorch's. Such a tensor carries one cotangent per vmapped row, and it cannot
    even be detached (no batching rule): hooks must leave it alone."""
    return bool(_IS_LEGACY_BATCHED(grad) or _IS_BATCHED(grad))


class BatchedPasses:
    """Whether a hook of the engine saw a batched-gradient pass (:func:`is_batched_grad`) since the last clear: the
    hooks skip such passes, and ``compute()`` says so when nothing else reached the recorded forward pass. Hooks on
    the pass's tensors hold this small object, never the engine (whose records hold the graph: a cycle). ``repeated``:
    whether a hook on a recorded call's output fired twice (it fires once per backward pass, so two backward passes
    went through that call: ``retain_graph=True``), which ``compute()`` refuses."""

    __slots__ = ("repeated", "seen")

    def __init__(self) -> None:
        self.seen = False
        self.repeated = False


#: torch's default generators' states: (the CPU one, {CUDA device index: its state})
RngState = tuple[Tensor, dict[int, Tensor]]

#: ((device type, autocast dtype, or None where autocast is off), ...)
AutocastState = tuple[tuple[str, torch.dtype | None], ...]


def autocast_state(leaves: list[Any]) -> AutocastState:
    """Whether ``torch.autocast`` is on, and in which dtype, for each device type of the tensors ``leaves`` (a call's
    outputs: where its ops ran). Device types autocast does not know (``meta``) are left out."""
    state = []
    for device_type in sorted({x.device.type for x in leaves if isinstance(x, Tensor)}):
        try:
            on = torch.is_autocast_enabled(device_type)
            state.append((device_type, torch.get_autocast_dtype(device_type) if on else None))
        except RuntimeError:
            continue
    return tuple(state)


@dataclass
class ForwardState:
    """A module's buffers as one of its recorded forward calls began, for the exact fallback, which recomputes the call
    from them (:func:`~flowvar.variance.rules.fallback.fallback_call`): a forward may update its buffers (running
    statistics, a counter, an EMA of its input) before ``compute()`` runs, and the recomputation must neither start
    from the updated ones nor write to the model's own.

    ``live``: {buffer name: (the module's buffer, its version counter ``Tensor._version``)}, which every in-place write
    advances but one through ``.data``: a buffer found with the same tensor and version later has not been written
    since, except so. ``copies``: {name:
    copy} taken then (the modules the fallback measures: always; the whole model only once its fallback is planned —
    copying every buffer of a model, a data set held as buffers included, on each recorded pass would cost every
    step); the vectors u, v of spectral norms as the forward left them (their training-mode forward iterates them in
    place and normalises by the result, which the fallback's eval-mode recomputation reuses)."""

    live: dict[str, tuple[Tensor, int]]
    copies: dict[str, Tensor] | None = None
    #: the whole model's call only, while the engine's ``keep_rng`` is set: torch's default generators' states as the
    #: call began (:func:`~flowvar.variance.probe.rng_state`), which the per-sample probe of a validating
    #: ``compute()`` replays so that a forward drawing random numbers (dropout) is recomputed with the same draws
    rng: RngState | None = None


@dataclass
class CallRecord:
    """One recorded forward call of a module: its inputs, its output leaves and ∂L/∂(output leaves)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[Any]
    grads: list[Tensor | None]
    #: for 2-D ``nn.Linear`` calls: ‖a_i‖ of the input rows (computed in the forward hook, while the input is in
    #: cache) and ‖δ_i‖ of each output gradient (in the gradient hook; None when several gradients were summed)
    in_norm: Tensor | None = None
    grad_norms: list[Tensor | None] | None = None
    #: what a capturing rule observed inside the call (``Rule.captures``: the MultiheadAttention rule's projections)
    captured: list[Any] | None = None
    #: recorded inside a backward pass (a forward recomputed by activation checkpointing): the losses' graph runs
    #: through the checkpoint's node, not through this call's outputs
    in_backward: bool = False
    #: the autocast state the call ran under, per device type of its outputs (:func:`autocast_state`): the fallback
    #: recomputes the call under the same state, so that it runs the ops in the precision the recorded call did
    autocast: AutocastState = ()
    #: the module's buffers as the call began (:class:`ForwardState`): recorded for the modules the fallback measures
    #: and for the whole model's call
    state: ForwardState | None = None

    def grad(self, k: int = 0) -> Tensor:
        """δ of output leaf ``k`` (zeros when the backward pass did not reach it)."""
        g = self.grads[k]
        return torch.zeros_like(self.outputs[k]) if g is None else g


@dataclass
class RuleContext:
    """What one compute() call wants, shared by every rule."""

    B: int
    want_grad_sum: set[str]
    want_sq_sum: bool
    segments: Tensor | None
    n_segments: int
    chunk_bytes: int
    fallback_chunk: int
    device: torch.device | str = "cpu"  # of the measured parameters: every accumulator lives there
    #: check Σ_i g_i against the backward pass's gradient (:attr:`Collector.check_sum`, :meth:`Collector.add_probe`)
    check: bool = False
    _pad: tuple[Tensor, int] | None = None

    def padded(self, x: Tensor) -> Tensor:
        """(B, F) → (n_seg, n_max, F): the rows of each segment, zero-padded to the largest segment."""
        if self._pad is None:
            assert self.segments is not None
            order = torch.argsort(self.segments, stable=True)
            counts = torch.bincount(self.segments, minlength=self.n_segments)
            n_max = int(counts.max())
            starts = torch.cumsum(counts, 0) - counts
            seg_sorted = self.segments[order]
            slot = seg_sorted * n_max + torch.arange(self.B, device=self.device) - starts[seg_sorted]  # sorted slots
            source = torch.full((self.n_segments * n_max,), self.B, dtype=torch.long, device=self.device)  # B: zero row
            source[slot] = order
            self._pad = (source, n_max)
        source, n_max = self._pad
        rows = torch.cat([x, x.new_zeros(1, x.shape[1])]).index_select(0, source)
        return rows.view(self.n_segments, n_max, x.shape[1])

    def chunks(self, bytes_per_sample: int) -> Iterator[tuple[int, int]]:
        """[start, stop) sample ranges whose materialised size stays within ``chunk_bytes``."""
        size = max(1, min(self.B, self.chunk_bytes // max(1, bytes_per_sample)))
        for start in range(0, self.B, size):
            yield start, min(start + size, self.B)


#: Random rank-one probes per checked weight (uᵀMv ≈ ‖M‖ z/√P for a mismatch M, z roughly standard normal): two
#: are cheap (two thin products per layer) and miss a mismatch only when both |z| are small; the mismatches that
#: matter (≥ 0.1% of the trace) exceed the tolerance by orders of magnitude.
N_PROBES = 2


class ProbeSet(NamedTuple):
    """The random rank-one probes R_j = u_j v_jᵀ of one parameter (:meth:`Collector.add_probe`)."""

    u: Tensor
    """(G, O, N_PROBES)"""
    v: Tensor
    """(G, K, N_PROBES)"""
    u_rows: Tensor
    """(N_PROBES, O): the first group's u_j, contiguous (the layout F.linear takes fast)"""
    v_rows: Tensor
    """(N_PROBES, K)"""
    R: Tensor
    """(N_PROBES, *shape): R_j in the parameter's layout (``weight_view`` of u_j v_jᵀ)"""
    scale: Tensor
    """(N_PROBES,): ‖R_j‖/√P"""
    plain: bool
    """R_j is u_j v_jᵀ in the parameter's own (O, K) row-major layout (Linear, ungrouped Conv2d): the engine then
    forms ⟨G, R_j⟩ as u_jᵀ G v_j, reading G once and not R"""


class Collector:
    """Float64 accumulators of one parameter for one batch (raw δ; :meth:`finish` applies the scale s).

    The check of Σ_i g_i (``ctx.check``, when ``grad_sum`` is not wanted anyway): :meth:`add_per_sample` adds the
    materialised g_i into ``check_sum``; rules that never materialise a weight's g_i = Σ_s D_s A_sᵀ call
    :meth:`add_probe` instead, which accumulates p_j = Σ_{i,s} (D_is·u_j)(A_is·v_j) = ⟨Σ_i g_i, u_j v_jᵀ⟩ for
    :data:`N_PROBES` random (u_j, v_j) (cost (b·S)(K + O) per probe, not b·K·O); the engine compares p_j with
    ⟨G, u_j v_jᵀ⟩, G the backward pass's gradient. Rules that write a parameter's per-sample results directly
    fill ``grad_sum`` or ``check_sum`` themselves, whichever is not None.
    """

    def __init__(self, name: str, shape: torch.Size, ctx: RuleContext, sq_norms: Tensor | None = None,
                 probes: dict[tuple[object, ...], ProbeSet] | None = None) -> None:
        self.name, self.shape, self.ctx = name, shape, ctx
        # ``sq_norms`` given: a row of the caller's (n_params, B) buffer, which the caller scales (finish() does not)
        self._scale_sq_norms = sq_norms is None
        dev = ctx.device
        self.sq_norms = torch.zeros(ctx.B, dtype=F64, device=dev) if sq_norms is None else sq_norms
        self.grad_sum = torch.zeros(shape, dtype=F64, device=dev) if name in ctx.want_grad_sum else None
        self.sq_sum = torch.zeros(shape, dtype=F64, device=dev) if ctx.want_sq_sum else None
        self.wants_segments = ctx.segments is not None
        self.seg_sq = torch.zeros(ctx.n_segments, dtype=F64, device=dev) if self.wants_segments else None
        self._seg_sum: Tensor | None = None
        self.checking = ctx.check and self.grad_sum is None
        self.check_sum: Tensor | None = None  # created by the first sum_target() call
        #: (N_PROBES,) accumulated ⟨Σ_i g_i, R_j⟩ and the probe tensors R_j (N_PROBES, *shape), once add_probe ran
        self.probe_sum: Tensor | None = None
        self.probe: Tensor | None = None
        self.probe_scale: Tensor | None = None
        #: (u, v) rows (N_PROBES, O), (N_PROBES, K) when R_j = u_j v_jᵀ is the weight's own (O, K) layout, else None
        self.probe_factors: tuple[Tensor, Tensor] | None = None
        self._probe_cache = probes  # the engine's store of probe tensors (fixed per parameter across batches)

    def sum_target(self) -> Tensor | None:
        """The float64 tensor a rule adds its Σ_i g_i into: ``grad_sum`` when wanted, else ``check_sum`` when
        checking (created here), else None (no sum needed: skip computing it)."""
        if self.grad_sum is not None:
            return self.grad_sum
        if self.checking and self.check_sum is None:
            self.check_sum = torch.zeros(self.shape, dtype=F64, device=self.ctx.device)
        return self.check_sum

    def add_probe(self, D: Tensor, A: Tensor, weight_view: Callable[[Tensor], Tensor]) -> None:
        """Check contribution of g_i[g] = Σ_s D_igs A_igsᵀ (weight in ``weight_view`` layout) without forming g_i.

        ``D`` (b, G, S, O), ``A`` (b, G, S, K); ``weight_view`` maps (n, G, O, K) to (n, *shape). Adds
        Σ_{i,g,s} (D_igs·u_jg)(A_igs·v_jg) per probe j; no-op unless this collector checks by probes.
        """
        if not self.checking:
            return
        G, O, K = D.shape[1], D.shape[3], A.shape[3]
        if G == 1 and D.shape[2] == 1:
            self.add_probe_rows(D.reshape(-1, O), A.reshape(-1, K), weight_view)
            return
        probes = self._factors(G, O, K, D.dtype, D.device, weight_view)
        if G == 1:  # sequences, patches: (N, O) @ (b, 1, O, S) on the transposed views, which are usually how the
            # data lie (δ as (b, O, S), unfolded patches as (b, K, S)): no copy of D or A
            du = torch.matmul(probes.u_rows, D.transpose(-1, -2))
            av = torch.matmul(probes.v_rows, A.transpose(-1, -2))
            part = (du * av).sum((0, 1, 3))
        else:
            du = torch.einsum("bgso,goj->bgsj", D, probes.u)
            part = (du * torch.einsum("bgsk,gkj->bgsj", A, probes.v)).sum((0, 1, 2))
        self._add_to_probe_sum(part)

    def add_probe_rows(self, d: Tensor, a: Tensor, weight_view: Callable[[Tensor], Tensor]) -> None:
        """:meth:`add_probe` for one position per sample (a Linear on (B, in)): ``d`` (b, O), ``a`` (b, K). Three
        kernels: (b, O) @ (O, N) and (b, K) @ (K, N) as F.linear with the (N, ·) factors contiguous (a product with
        a transposed N-column factor takes a path ~10× slower), then the column-wise dot products."""
        if not self.checking:
            return
        probes = self._factors(1, d.shape[1], a.shape[1], d.dtype, d.device, weight_view)
        self._add_to_probe_sum(torch.linalg.vecdot(F.linear(d, probes.u_rows), F.linear(a, probes.v_rows), dim=0))

    def _add_to_probe_sum(self, part: Tensor) -> None:
        if self.probe_sum is None:  # the first contribution: its float64 copy starts the sum
            self.probe_sum = part.to(F64)
        else:
            self.probe_sum += part

    def _factors(self, G: int, O: int, K: int, dtype: torch.dtype, device: torch.device,
                 weight_view: Callable[[Tensor], Tensor]) -> ProbeSet:
        """This parameter's :class:`ProbeSet` (``probe``, ``probe_scale`` and ``probe_factors`` set from it), fixed
        per parameter: drawn from a seeded generator once and kept by the engine (a check is reproducible, and costs
        neither drawing nor copies after the first batch)."""
        key = (self.name, G, O, K, dtype, device)
        cache = self._probe_cache if self._probe_cache is not None else {}
        probes = cache.get(key)
        if probes is None:
            gen = torch.Generator(device="cpu").manual_seed(0x5EED + len(cache))
            u = torch.randn(N_PROBES, G, O, generator=gen, dtype=F64)
            v = torch.randn(N_PROBES, G, K, generator=gen, dtype=F64)
            R = weight_view(u[..., :, None] * v[..., None, :]).reshape(N_PROBES, *self.shape)
            scale = torch.linalg.vector_norm(R.reshape(N_PROBES, -1), dim=1) / R[0].numel() ** 0.5
            probes = cache[key] = ProbeSet(
                u.permute(1, 2, 0).to(device, dtype).contiguous(), v.permute(1, 2, 0).to(device, dtype).contiguous(),
                u[:, 0].to(device, dtype).contiguous(), v[:, 0].to(device, dtype).contiguous(),
                R.to(device, dtype), scale.to(device),
                plain=G == 1 and R[0].numel() == O * K and torch.equal(
                    R.reshape(N_PROBES, O, K), u[:, 0, :, None] * v[:, 0, None, :]))
        self.probe, self.probe_scale = probes.R, probes.scale
        self.probe_factors = (probes.u_rows, probes.v_rows) if probes.plain else None
        return probes

    def seg_sum(self) -> Tensor:
        """(n_seg, *shape) float64 running per-segment sums (squared into ``seg_sq`` by :meth:`finish`)."""
        if self._seg_sum is None:
            self._seg_sum = torch.zeros((self.ctx.n_segments, *self.shape), dtype=F64, device=self.ctx.device)
        return self._seg_sum

    def add_per_sample(self, start: int, g: PerSample) -> None:
        """Materialised per-sample gradients of samples [start, start + b): (b, *shape) or :class:`Blocked`, each
        sample once (read in the layout they come in, never copied into the parameter's)."""
        b = g.n if isinstance(g, Blocked) else g.shape[0]
        self.sq_norms[start:start + b] = sample_sq_norms(g)
        target = self.sum_target()
        if target is not None:
            target += sample_sum(g).view(self.shape)
        if self.sq_sum is not None:
            self.sq_sum += sample_sum(g, torch.square).view(self.shape)
        if self.wants_segments:
            assert self.ctx.segments is not None
            seg_sum = self.seg_sum()
            seg_sum += segment_sums(g, self.ctx.segments[start:start + b], self.ctx.n_segments).view_as(seg_sum)

    def reset(self) -> None:
        """Forget everything accumulated (before the engine recomputes this parameter another way)."""
        self.sq_norms.zero_()
        for t in (self.grad_sum, self.sq_sum, self.seg_sq):
            if t is not None:
                t.zero_()
        self._seg_sum = None
        self.probe_sum, self.probe, self.check_sum = None, None, None

    def finish(self, scale: float) -> None:
        """Apply the reduction's scale s to everything accumulated from raw δ (norms and squares by s²), and
        square the per-segment sums into ``seg_sq``."""
        if self._scale_sq_norms:
            self.sq_norms *= scale ** 2
        if self.grad_sum is not None:
            self.grad_sum *= scale
        if self.sq_sum is not None:
            self.sq_sum *= scale ** 2
        if self.seg_sq is not None:
            if self._seg_sum is not None:
                self.seg_sq += self._seg_sum.reshape(self.ctx.n_segments, -1).pow(2).sum(1)
                self._seg_sum = None
            self.seg_sq *= scale ** 2
