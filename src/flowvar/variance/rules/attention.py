"""``nn.MultiheadAttention`` (and so ``nn.TransformerEncoderLayer`` / ``DecoderLayer``): its forward passes its own
in-projection weights and ``out_proj``'s weight and bias to ``F.multi_head_attention_forward`` directly, so the
hooks never see ``out_proj`` run. The rule measures all of them from the module's recorded call.

With x_q, x_k, x_v the inputs (B, L, ·), q = x_q W_qᵀ + b_q (likewise k, v), c the concatenated heads of
softmax(q kᵀ/√d + mask) v and y = c W_oᵀ + b_o, every weight is a linear map applied along a sequence, so

    g_i(W_o) = Σ_l δy_il c_ilᵀ,   g_i(W_q) = Σ_l δq_il x_q,ilᵀ   (W_k, W_v over the source positions),

and the biases are the sums of the same δ. δy is recorded by the hooks; c, δq, δk and δv come from one batched
recomputation of the attention core and its backward pass (the samples do not mix: attention acts within a
sample), checked against the recorded output. The sequence sums are then :func:`~.linear.seq_linear`'s (ghost
norm or materialised, whichever is cheaper); the packed ``in_proj_weight`` is three groups of one such map.
``bias_k`` / ``bias_v`` (``add_bias_kv``) are extra key/value positions whose per-sample gradients are δk, δv there.

**Captured projections** (no recomputation). While the engine records, each armed forward of the module runs with
its projections observed (:func:`capture_projections`): ``torch.nn.functional.linear`` — what
``F.multi_head_attention_forward`` calls for the in-projections and ``out_proj`` — is wrapped for the duration of
the forward, and every call on one of *this* module's projection weights keeps its input and a hook on its output
for δ. The wrapper changes no number (it calls the ``F.linear`` it replaced — torch's, or a library's own patch —
and returns its result; calls on other weights, and calls on other threads, pass straight through). Then x_q, x_k,
x_v, c and δy, δq, δk, δv are the pass's own tensors: no attention is recomputed. A call whose projections were not
all seen (``add_bias_kv``, whose δbias needs the attention core; a forward under a transform or ``torch.compile``; a
capture closed early) takes the recomputation above.

The wrapper is installed while any capture is open (on any thread) and removed when the last one closes. A capture
is one forward on one thread, opened and closed by its owner (the engine's forward pre-hook and ``always_call``
forward hook); PyTorch runs no ``always_call`` hook for a ``KeyboardInterrupt``, so the engine also closes its
captures left open at the model's or the module's next call, ``clear()`` and ``detach()``. The wrapper guards
itself against others' patches of ``F.linear``: one installed over it is left in place (the wrapper, reached again
from inside it, computes with the ``F.linear`` of flowvar's import), and the wrapper put back after its removal
removes itself at its next call.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError
from flowvar.variance.records import F64, CallRecord, Collector, RuleContext
from flowvar.variance.rules.base import Rule, batched
from flowvar.variance.rules.fallback import reparametrized
from flowvar.variance.rules.linear import seq_linear

__all__ = ["Capture", "MultiheadAttentionRule", "Projection", "capture_projections", "end_capture"]

_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


@dataclass
class Projection:
    """One ``F.linear`` call of a recorded MultiheadAttention forward on the module's own projection weights:
    ``weight`` (``in_proj_weight``, ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` or ``out_proj.weight``),
    the rows ``[start, stop)`` of it that the call used, the call's input (detached, (…, in)) and output, and
    ``grads[0]`` = δ of that output once the backward pass has reached it."""

    weight: str
    rows: tuple[int, int]
    input: Tensor
    output: Tensor
    grads: list[Tensor | None]

    def delta(self) -> Tensor:
        """δ of the output (zeros when the backward pass did not reach it), as :meth:`CallRecord.grad`."""
        return torch.zeros_like(self.output) if self.grads[0] is None else self.grads[0]


#: ``F.linear`` as it was when flowvar was imported (torch's own unless something had patched it before)
_ORIGINAL_LINEAR = F.linear
_LOCAL = threading.local()  # .active: this thread's open captures, innermost last; .inside: in the wrapped F.linear
_LOCK = threading.Lock()  # guards _OPEN, _WRAPPED and the installation of the wrapper


@dataclass(eq=False)  # compared by identity: a capture is one forward call
class Capture:
    """One open capture: a forward of ``module`` observed on one thread. ``found``: the :class:`Projection` s
    observed so far; ``on_output``: registers the δ hook on a projection's output; ``owner``: who opened it (an
    engine); ``stack``: the open captures of the thread it was opened on."""

    module: nn.MultiheadAttention
    found: list[Projection]
    on_output: Callable[[Tensor], list[Tensor | None]]
    owner: object
    stack: list[Capture]


_OPEN: set[Capture] = set()  # the captures open on any thread: the wrapper is installed while there are any
_WRAPPED: list[Callable[..., Tensor]] = [_ORIGINAL_LINEAR]  # what the wrapper computes with: the F.linear it replaced


def _which(module: nn.MultiheadAttention, weight: Tensor) -> tuple[str, tuple[int, int]] | None:
    """Which projection weight of ``module`` (and which rows of it) ``weight`` is, or None."""
    if weight is module.out_proj.weight:
        return "out_proj.weight", (0, weight.shape[0])
    packed = module.in_proj_weight
    if packed is not None:
        if weight is packed:
            return "in_proj_weight", (0, weight.shape[0])
        if weight._base is packed and weight.ndim == 2 and weight.stride() == packed.stride():
            start = (weight.storage_offset() - packed.storage_offset()) // packed.stride(0)
            return "in_proj_weight", (start, start + weight.shape[0])
        return None
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        if weight is getattr(module, name):
            return name, (0, weight.shape[0])
    return None


def _restore() -> None:
    """Put back the F.linear the wrapper replaced, if the wrapper is what is installed and no capture is open (a patch
    installed over the wrapper since is left in place: it may call the wrapper, which then passes calls through)."""
    with _LOCK:
        if not _OPEN and torch.nn.functional.linear is _observing_linear:
            torch.nn.functional.linear = _WRAPPED[0]


def _observing_linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` that also records the calls on the projection weights of this thread's innermost open capture
    (and of the captures of the same module under it: several engines on one model).

    It computes with the F.linear it replaced (:data:`_WRAPPED`), so it changes no number. Reached again from inside
    that one — a patch installed over the wrapper while it was in place keeps the wrapper as its "original" — it
    computes with :data:`_ORIGINAL_LINEAR`, which predates the wrapper and so cannot lead back to it. Called while no
    capture is open (someone put the wrapper back after it was removed), it first restores what it replaced."""
    local = _LOCAL.__dict__
    if local.get("inside"):
        return _ORIGINAL_LINEAR(input, weight, bias)
    if not _OPEN and torch.nn.functional.linear is _observing_linear:
        _restore()
    local["inside"] = True
    try:
        out = _WRAPPED[0](input, weight, bias)
    finally:
        local["inside"] = False
    active = local.get("active")
    if active and isinstance(out, Tensor) and out.requires_grad:
        innermost = None
        for capture in reversed(list(active)):  # (a copy: another thread's detach() may close one meanwhile)
            if innermost is None:
                innermost = capture.module
                which = _which(innermost, weight)
                if which is None:
                    break
            elif capture.module is not innermost:
                break
            capture.found.append(Projection(which[0], which[1], input.detach(), out, capture.on_output(out)))
    return out


def capture_projections(module: nn.MultiheadAttention, on_output: Callable[[Tensor], list[Tensor | None]],
                        owner: object = None) -> Capture:
    """Start observing ``module``'s projections on this thread, until :func:`end_capture` of the returned capture,
    whose ``found`` the forward's :class:`Projection` s are appended to. ``on_output(y)`` registers the caller's δ
    hook on a projection's output y and returns the list its δ lands in. The wrapper goes in when the first capture
    opens (on any thread) and out when the last one closes. A capture left open (a forward interrupted by a
    ``KeyboardInterrupt``, which runs no ``always_call`` hook) is the caller's to close."""
    stack = _LOCAL.__dict__.setdefault("active", [])
    capture = Capture(module, [], on_output, owner, stack)
    with _LOCK:
        if not _OPEN:
            current = torch.nn.functional.linear
            if current is not _observing_linear:  # (the wrapper left in place keeps what it replaced)
                _WRAPPED[0] = current
                # F.multi_head_attention_forward looks `linear` up in its module at every call
                torch.nn.functional.linear = _observing_linear
        _OPEN.add(capture)
        stack.append(capture)
    return capture


def end_capture(capture: Capture) -> list[Projection] | None:
    """Stop observing: the projections the capture's forward used, or None if it was closed already. Any thread may
    close any capture (``engine.detach()`` while another thread is inside the forward)."""
    with _LOCK:
        if capture not in _OPEN:
            return None
        _OPEN.discard(capture)
        if capture in capture.stack:  # (identity: eq=False)
            capture.stack.remove(capture)
    _restore()
    return capture.found


def _additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True = not allowed) as an additive float mask (−inf there), a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)
    return mask.to(dtype)


def _cat(xs: list[Tensor]) -> Tensor:
    """Several calls' (B, S_c, ·) tensors along the sequence (one call: itself)."""
    return xs[0] if len(xs) == 1 else torch.cat(xs, 1)


class MultiheadAttentionRule(Rule):
    """``nn.MultiheadAttention``: in-projections, ``out_proj`` and ``bias_k``/``bias_v`` from the pass's own captured
    projections, or from one batched recomputation of the attention core (module docstring). Dropout on the attention
    weights in training mode is fine on the captured path (its δ come from the pass that drew the masks); a call that
    needs the recomputation would redraw them, so it is refused with the fix (eval mode or ``dropout=0``)."""

    name = "mha"
    fills_check = True
    captures = True  # the engine opens capture_projections around each recorded forward

    def unsupported(self, module: nn.Module) -> str | None:
        # a parametrised out_proj (weight_norm, spectral_norm, ...): the rule would measure the computed weight, and
        # the tensors it is computed from would be measured by nobody; the fallback differentiates through it
        computed = reparametrized(module.out_proj) if isinstance(module, nn.MultiheadAttention) else None
        return None if computed is None else f"out_proj.{computed}"

    def children(self, module: nn.Module) -> tuple[str, ...]:
        return ("out_proj",)

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        assert isinstance(module, nn.MultiheadAttention)
        parts = [self._from_projections(module, c, ctx.B) or self._recompute(module, c, ctx.B) for c in calls]
        E = module.embed_dim
        labels = []
        # out_proj: A = the concatenated heads c, D = δy, over the target positions of every call
        A_o, D_o = _cat([p["c"] for p in parts]), _cat([p["dy"] for p in parts])
        out_c = {k.split(".", 1)[1]: c for k, c in collectors.items() if k.startswith("out_proj.")}
        if out_c:
            labels.append(seq_linear(lambda s, e: (A_o[s:e, None], D_o[s:e, None]), 1, A_o.shape[1], E, E, out_c,
                                     ctx, lambda g: g[:, 0], module.out_proj.bias is not None, A_o.element_size()))
        X = {k: _cat([p["x" + k] for p in parts]) for k in "qkv"}
        D = {k: _cat([p["d" + k] for p in parts]) for k in "qkv"}
        if module._qkv_same_embed_dim and all("dqkv" in p for p in parts):
            # self-attention through one packed projection: the in-projection is one Linear (E → 3E) along the
            # sequence, measured as such (one Gram of x, not three)
            if "in_proj_weight" in collectors or "in_proj_bias" in collectors:
                A1, D1 = _cat([p["xqkv"] for p in parts]), _cat([p["dqkv"] for p in parts])
                packed = {n: collectors[f"in_proj_{n}"] for n in ("weight", "bias") if f"in_proj_{n}" in collectors}
                labels.append(seq_linear(lambda s, e: (A1[s:e, None], D1[s:e, None]), 1, A1.shape[1], E, 3 * E,
                                         packed, ctx, lambda g: g[:, 0], "bias" in packed, A1.element_size()))
        elif module._qkv_same_embed_dim:
            if "in_proj_weight" in collectors or "in_proj_bias" in collectors:
                S = max(X[k].shape[1] for k in "qkv")
                A3 = torch.stack([F.pad(X[k], (0, 0, 0, S - X[k].shape[1])) for k in "qkv"], 1)  # (B, 3, S, E)
                D3 = torch.stack([F.pad(D[k], (0, 0, 0, S - D[k].shape[1])) for k in "qkv"], 1)  # zero rows add 0
                packed = {n: collectors[f"in_proj_{n}"] for n in ("weight", "bias") if f"in_proj_{n}" in collectors}
                weight_c = {"weight": packed["weight"]} if "weight" in packed else {}
                if weight_c:
                    labels.append(seq_linear(lambda s, e: (A3[s:e], D3[s:e]), 3, S, E, E, weight_c, ctx,
                                             lambda g: g.reshape(g.shape[0], 3 * E, E), False, A3.element_size()))
                if "bias" in packed:
                    packed["bias"].add_per_sample(0, D3.sum(2).reshape(ctx.B, 3 * E))
        else:
            for k in "qkv":
                c = collectors.get(f"{k}_proj_weight")
                if c is not None:
                    x, d = X[k], D[k]
                    labels.append(seq_linear(lambda s, e, x=x, d=d: (x[s:e, None], d[s:e, None]), 1, x.shape[1],
                                             x.shape[2], E, {"weight": c}, ctx, lambda g: g[:, 0], False,
                                             x.element_size()))
            if "in_proj_bias" in collectors:
                collectors["in_proj_bias"].add_per_sample(0, torch.cat([D[k].sum(1) for k in "qkv"], 1))
        for k in "kv":
            c = collectors.get(f"bias_{k}")
            if c is not None:
                c.add_per_sample(0, sum(p["db" + k] for p in parts).reshape(ctx.B, 1, 1, E))
        how = "ghost" if labels and all(x == "ghost" for x in labels) else "materialised"
        return f"{self.name}-{how}"

    @staticmethod
    def _from_projections(module: nn.MultiheadAttention, call: CallRecord, B: int) -> dict[str, Tensor] | None:
        """The recompute's tensors from the call's captured projections (sequence-first inside
        ``F.multi_head_attention_forward``; returned batch first), or None when they do not cover the call: q, k and v
        each from exactly one projection call, one ``out_proj`` call, no ``bias_k``/``bias_v``."""
        found = call.captured
        if not found or module.bias_k is not None or module.bias_v is not None:
            return None
        E = module.embed_dim
        outs = [p for p in found if p.weight == "out_proj.weight"]
        if len(outs) != 1:
            return None
        blocks: dict[str, tuple[Tensor, Tensor]] = {}  # q/k/v → (input, δ), (L, B, ·) sequence first
        for p in found:
            if p.weight == "out_proj.weight":
                continue
            delta = p.delta()
            if p.input.ndim != 3 or p.input.shape[1] != B:
                return None
            if p.weight == "in_proj_weight":
                start, stop = p.rows
                if start % E or stop % E:
                    return None
                for j in range(start // E, stop // E):
                    k = "qkv"[j]
                    if k in blocks:
                        return None
                    blocks[k] = (p.input, delta[..., (j - start // E) * E:(j - start // E + 1) * E])
            else:
                k = p.weight[0]
                if k in blocks:
                    return None
                blocks[k] = (p.input, delta)
        if sorted(blocks) != ["k", "q", "v"]:
            return None
        o = outs[0]
        L = blocks["q"][0].shape[0]
        if o.input.shape[0] != L * B:
            return None
        dy = o.delta()
        first = {"x" + k: x.transpose(0, 1) for k, (x, _) in blocks.items()}
        first.update({"d" + k: d.transpose(0, 1) for k, (_, d) in blocks.items()})
        packed = [p for p in found if p.weight == "in_proj_weight" and p.rows == (0, 3 * E)]
        if packed:  # self-attention: x and δ of the one packed projection, (B, L, E) and (B, L, 3E)
            first["xqkv"], first["dqkv"] = packed[0].input.transpose(0, 1), packed[0].delta().transpose(0, 1)
        first["c"] = o.input.reshape(L, B, E).transpose(0, 1)
        first["dy"] = dy.reshape(L, B, -1).transpose(0, 1)
        dtype = module.out_proj.weight.dtype  # under autocast: float32 inputs, half-precision δ → one dtype
        return {k: v.to(dtype) if v.dtype != dtype else v for k, v in first.items()}

    @staticmethod
    def _recompute(module: nn.MultiheadAttention, call: CallRecord, B: int) -> dict[str, Tensor]:
        """One recorded call, batch first: inputs x_q, x_k, x_v, heads c, and δy, δq, δk, δv (δbias_k, δbias_v)."""
        if module.training and module.dropout > 0:
            raise ConfigError(f"MultiheadAttention with dropout={module.dropout} in training mode draws random "
                              f"numbers in its forward pass, and this call's per-sample gradients need the attention "
                              f"recomputed (add_bias_kv, or a forward the engine could not observe): put it in eval "
                              f"mode while measuring or build it with dropout=0")
        bound = _SIGNATURE.bind(module, *call.args, **call.kwargs)
        bound.apply_defaults()
        a: dict[str, Any] = bound.arguments
        query, key, value = a["query"], a["key"], a["value"]
        if query.ndim != 3:
            raise ShapeError(f"MultiheadAttention input of shape {tuple(query.shape)} has no batch dimension; "
                             f"per-sample gradients need batched (B, L, E) or (L, B, E) inputs")
        if not module.batch_first:  # (L, B, E) → (B, L, E)
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        xq, xk, xv = (batched(x.detach(), B, "the MultiheadAttention input") for x in (query, key, value))
        E, H = module.embed_dim, module.num_heads
        hd = E // H
        if module._qkv_same_embed_dim:
            Wq, Wk, Wv = module.in_proj_weight.detach().chunk(3)
        else:
            Wq, Wk, Wv = (w.detach() for w in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight))
        bq = bk = bv = None
        if module.in_proj_bias is not None:
            bq, bk, bv = module.in_proj_bias.detach().chunk(3)
        y_rec = call.outputs[0]
        y_rec = y_rec if module.batch_first else y_rec.transpose(0, 1)
        dy = call.grad(0)
        dy = dy if module.batch_first else dy.transpose(0, 1)
        dtype = xq.dtype
        with torch.enable_grad():
            q = F.linear(xq, Wq, bq).requires_grad_()
            k = F.linear(xk, Wk, bk).requires_grad_()
            v = F.linear(xv, Wv, bv).requires_grad_()
            kk, vv = k, v
            am = _additive(a["attn_mask"], dtype)
            kpm = _additive(a["key_padding_mask"], dtype)
            extra: dict[str, Tensor] = {}
            if module.bias_k is not None and module.bias_v is not None:
                extra["bk"] = module.bias_k.detach().reshape(1, 1, E).expand(B, 1, E).clone().requires_grad_()
                extra["bv"] = module.bias_v.detach().reshape(1, 1, E).expand(B, 1, E).clone().requires_grad_()
                kk, vv = torch.cat([kk, extra["bk"]], 1), torch.cat([vv, extra["bv"]], 1)
                am = None if am is None else F.pad(am, (0, 1))
                kpm = None if kpm is None else F.pad(kpm, (0, 1))
            L, S = q.shape[1], kk.shape[1]
            qh = q.view(B, L, H, hd).transpose(1, 2)
            kh = kk.view(B, S, H, hd).transpose(1, 2)
            vh = vv.view(B, S, H, hd).transpose(1, 2)
            if module.add_zero_attn:
                kh = torch.cat([kh, kh.new_zeros(B, H, 1, hd)], 2)
                vh = torch.cat([vh, vh.new_zeros(B, H, 1, hd)], 2)
                am = None if am is None else F.pad(am, (0, 1))
                kpm = None if kpm is None else F.pad(kpm, (0, 1))
            mask = None if am is None else (am.view(B, H, *am.shape[1:]) if am.ndim == 3 else am)
            if kpm is not None:
                mask = kpm.view(B, 1, 1, -1) if mask is None else mask + kpm.view(B, 1, 1, -1)
            weights_used = len(call.outputs) > 1 and call.grads[1] is not None
            if weights_used:  # the attention weights are an output: form them
                attn = ((qh / math.sqrt(hd)) @ kh.transpose(-1, -2) + (0 if mask is None else mask)).softmax(-1)
                ch = attn @ vh
            else:  # the fused kernel, forward and backward (what the module itself runs without need_weights)
                ch = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
            c = ch.transpose(1, 2).reshape(B, L, E)
            y = F.linear(c, module.out_proj.weight.detach(),
                         None if module.out_proj.bias is None else module.out_proj.bias.detach())
            outs, cots = [y], [dy]
            if weights_used:  # the attention weights were used too
                weights = attn.mean(1) if a["average_attn_weights"] else attn
                outs.append(weights)
                cots.append(call.grads[1])
            tol = 1e-9 if dtype == F64 else 1e-3 if dtype == torch.float32 else 3e-2
            y_rec = y_rec.detach()
            gap = float((y.detach() - y_rec).norm() / (y_rec.norm() + y.detach().norm() + 1e-300)) * 2
            if not gap <= tol:  # NaN too: a row whose every key is masked
                raise ConfigError(f"recomputing MultiheadAttention from its recorded inputs gives a different output "
                                  f"(relative gap {gap:.2g}): its forward was called in a way the rule does not "
                                  f"reproduce, or its output was modified in place. Register another rule for it "
                                  f"(flowvar.variance.register_rule)")
            wrt = [q, k, v, *extra.values()]
            grads = torch.autograd.grad(outs, wrt, cots, allow_unused=True)
        zero = [torch.zeros_like(w) for w in wrt]
        dq, dk, dv, *dextra = (z if g is None else g for g, z in zip(grads, zero))
        out = {"xq": xq, "xk": xk, "xv": xv, "c": c.detach(), "dy": dy, "dq": dq, "dk": dk, "dv": dv}
        for name, g in zip(extra, dextra):
            out["d" + name] = g
        return out
