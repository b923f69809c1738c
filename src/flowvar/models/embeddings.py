"""Time embeddings with learnable parameters that the gradient-variance engine measures exactly."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError, check_positive_int

__all__ = ["FourierTimeEmbedding", "time_vector"]


class FourierTimeEmbedding(nn.Module):
    """Learnable Fourier features of time: t (B,) or (B, 1) → [cos 2πtω, sin 2πtω] of shape (B, 2n).

    ``frequencies`` ω (n,) start as N(0, scale²) draws (Gaussian Fourier features); ``learnable=False`` makes
    ω a buffer. The gradient-variance engine has an exact per-sample rule for ω
    (:class:`flowvar.variance.rules.FourierTimeRule`):
    g_i(ω) = 2π t_i (δ_i^sin ⊙ cos 2πt_iω − δ_i^cos ⊙ sin 2πt_iω).
    """

    def __init__(self, n_frequencies: int, scale: float = 1.0, learnable: bool = True,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n = check_positive_int("n_frequencies", n_frequencies)
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"scale must be a finite number > 0, got {scale!r}")
        omega = scale * torch.randn(n, generator=generator, dtype=dtype)
        if learnable:
            self.frequencies = nn.Parameter(omega)
        else:
            self.register_buffer("frequencies", omega)

    def forward(self, t: Tensor) -> Tensor:
        """[cos 2πtω, sin 2πtω]: (B, 2n) for t of shape (B,) or (B, 1)."""
        t = time_vector(t)
        angle = 2 * math.pi * t[:, None].to(self.frequencies.dtype) * self.frequencies
        return torch.cat([angle.cos(), angle.sin()], dim=1)


def time_vector(t: Tensor) -> Tensor:
    """t of shape (B,) or (B, 1) as a (B,) vector (a view); any other shape raises :class:`ShapeError`."""
    if t.ndim == 2 and t.shape[1] == 1:
        return t[:, 0]
    if t.ndim != 1:
        raise ShapeError(f"FourierTimeEmbedding expects t of shape (B,) or (B, 1), got {tuple(t.shape)}")
    return t
