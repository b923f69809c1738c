"""Embeddings: ``nn.Embedding`` (g_i(weight) has row r equal to Σ_{s: idx_is = r} δ_is; rows summed per sample
with a scatter over unique (sample, index) keys; ``padding_idx`` rows get nothing) and flowvar's
:class:`~flowvar.models.FourierTimeEmbedding` (g_i(ω) = 2π t_i (δ_i^sin ⊙ cos 2πt_iω − δ_i^cos ⊙ sin 2πt_iω)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowvar.models.embeddings import FourierTimeEmbedding, time_vector
from flowvar.variance.records import F64, CallRecord, Collector, RuleContext
from flowvar.variance.rules.base import Rule, batched

__all__ = ["EmbeddingRule", "FourierTimeRule"]


class EmbeddingRule(Rule):
    """``nn.Embedding``: per sample, rows of g_i are δ summed over equal indices (scatter over unique keys). Read off
    the indices and δ alone, so ``sparse=True`` (which changes only the layout of the backward pass's ``.grad``) is
    measured the same way."""

    name = "embedding"
    fills_check = True

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        assert isinstance(module, nn.Embedding)
        w = collectors.get("weight")
        if w is None:
            return self.name
        B, V, Dm = ctx.B, module.num_embeddings, module.embedding_dim
        keys, rows = [], []
        for c in calls:
            idx = batched(c.args[0], B, "the Embedding input").reshape(B, -1)
            d = c.grad().reshape(B, -1, Dm)
            if module.padding_idx is not None:
                d = d * (idx != module.padding_idx)[..., None].to(d.dtype)
            keys.append((torch.arange(B, device=idx.device)[:, None] * V + idx).reshape(-1))
            rows.append(d.reshape(-1, Dm))
        key = torch.cat(keys)
        uniq, inverse = torch.unique(key, return_inverse=True)
        U = rows[0].new_zeros(uniq.shape[0], Dm).index_add_(0, inverse, torch.cat(rows))
        sample, row = uniq // V, uniq % V
        U2 = U.pow(2)
        w.sq_norms.index_add_(0, sample, U2.sum(1).to(F64))
        target = w.sum_target()
        if target is not None:
            target.index_add_(0, row, U.to(F64))
        if w.sq_sum is not None:
            w.sq_sum.index_add_(0, row, U2.to(F64))
        if w.wants_segments:
            assert ctx.segments is not None
            flat = w.seg_sum().view(ctx.n_segments * V, Dm)
            flat.index_add_(0, ctx.segments[sample] * V + row, U.to(F64))
        return self.name


class FourierTimeRule(Rule):
    """:class:`FourierTimeEmbedding`: g_i(ω) = 2π t_i (δ_i^sin ⊙ cos 2πt_iω − δ_i^cos ⊙ sin 2πt_iω)."""

    name = "fourier-time"
    fills_check = True

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        assert isinstance(module, FourierTimeEmbedding)
        if "frequencies" not in collectors:
            return self.name
        omega = module.frequencies.detach()
        n = omega.shape[0]
        total: Tensor | None = None
        for c in calls:
            t = batched(time_vector(c.args[0]), ctx.B, "the time input").to(omega.dtype)
            d = c.grad()
            angle = 2 * math.pi * t[:, None] * omega
            g = 2 * math.pi * t[:, None] * (d[:, n:] * angle.cos() - d[:, :n] * angle.sin())
            total = g if total is None else total + g
        assert total is not None
        collectors["frequencies"].add_per_sample(0, total)
        return self.name
