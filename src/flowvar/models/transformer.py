"""A DiT/SiT-style transformer velocity field on images: patches as tokens, adaLN time conditioning.

``DiTField(x, t)``: x (B, C, H, W) and t (B,) (or a scalar) → v (B, C, H, W).

1. Patchify: a p×p convolution with stride p maps x to (B, D, H/p, W/p), flattened to N = HW/p² tokens (B, N, D),
   plus fixed 2-D sine-cosine position embeddings (a buffer, not a parameter).
2. Time: c = MLP(sinusoidal(t)) (B, D), the conditioning of every block.
3. ``depth`` blocks, each (with LN the LayerNorm without affine parameters, and the six (B, D) vectors
   (shift₁, scale₁, gate₁, shift₂, scale₂, gate₂) = Linear(SiLU(c)), zero-initialised as in DiT's adaLN-Zero):

       h ← h + gate₁ ⊙ Attn(LN(h) ⊙ (1 + scale₁) + shift₁)
       h ← h + gate₂ ⊙ MLP(LN(h) ⊙ (1 + scale₂) + shift₂)

   Attn: one qkv Linear (D → 3D) on (B, N, D), ``heads`` heads through ``F.scaled_dot_product_attention``, an
   output Linear; MLP: Linear(D → rD), GELU (tanh), Linear(rD → D).
4. Final layer: LN(h) ⊙ (1 + scale) + shift (from Linear(SiLU(c))), Linear(D → p²C) per token, unpatchified to
   (B, C, H, W).

Every parameter sits in an ``nn.Linear`` or ``nn.Conv2d`` (the LayerNorms have no affine parameters), so the
gradient-variance engine measures all of them with its exact layer rules (the token-wise Linears as linear maps
along the sequence: ghost norm or materialised per-sample gradients, whichever is cheaper), without the fallback.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError, check_positive_int
from flowvar.models.base import embedding_dtype, input_mismatch, time_column
from flowvar.models.unet import check_time_scale, sinusoidal_embedding

__all__ = ["DiTBlock", "DiTField", "sincos_position_embedding"]


def sincos_position_embedding(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (grid_h·grid_w, dim), float32: half the channels encode the row,
    half the column, each as [sin(pos·ω_k), cos(pos·ω_k)] with ω_k = 10000^(−k/(dim/4)). ``dim`` divisible by 4."""
    if dim % 4:
        raise ConfigError(f"the position embedding needs a width divisible by 4 (a quarter of the channels for each "
                          f"of sin/cos of rows/columns), got {dim}; use a width that is a multiple of 4 (e.g. "
                          f"{4 * max(1, round(dim / 4))})")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for pos in (rows.reshape(-1), cols.reshape(-1)):
        angle = pos[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, 1).float()


def check_block_config(width: int, heads: int, mlp_ratio: float) -> tuple[int, int, int]:
    """(width, heads, hidden) of a :class:`DiTBlock` after checking them, hidden = int(width · mlp_ratio) the MLP's
    width; a :class:`ConfigError` naming the fix for a width or heads that is not a positive integer, a width not
    divisible by heads, and an mlp_ratio that is not a finite number > 0 or leaves the MLP no unit."""
    width, heads = check_positive_int("width", width), check_positive_int("heads", heads)
    if width % heads:
        divisors = ", ".join(str(h) for h in range(1, width + 1) if width % h == 0)
        raise ConfigError(f"width {width} must be divisible by heads {heads} (each head gets width / heads channels); "
                          f"choose heads among {divisors}, or a width that is a multiple of {heads}")
    ok = isinstance(mlp_ratio, int | float) and not isinstance(mlp_ratio, bool)
    if not ok or not math.isfinite(mlp_ratio) or mlp_ratio <= 0 or int(width * mlp_ratio) < 1:
        raise ConfigError(f"mlp_ratio must be a finite number > 0 with int(width · mlp_ratio) >= 1 (the MLP's "
                          f"hidden width), got {mlp_ratio!r} for width {width}; 4.0 is DiT's choice")
    return width, heads, int(width * mlp_ratio)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, N, D) ⊙ (1 + scale) + shift, with shift, scale (B, D) broadcast over the tokens."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """One transformer block with adaLN-Zero conditioning: (h (B, N, D), c (B, D)) → (B, N, D) (module docstring)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        width, heads, hidden = check_block_config(width, heads, mlp_ratio)
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        B, N, D = h.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c)).chunk(6, dim=1)
        qkv = self.qkv(_modulate(self.norm1(h), shift1, scale1))  # (B, N, 3D)
        q, k, v = qkv.view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        h = h + gate1[:, None, :] * self.proj(attn)
        mlp = self.fc2(F.gelu(self.fc1(_modulate(self.norm2(h), shift2, scale2)), approximate="tanh"))
        return h + gate2[:, None, :] * mlp


class DiTField(nn.Module):
    """A DiT/SiT-style velocity field v(x, t) on (B, channels, size, size) images (module docstring).

    ``size``, ``channels``, ``patch``, ``width`` and ``heads`` are positive integers (a bool is refused; 8.0 is 8);
    ``size`` must be divisible by ``patch``; ``width`` by ``heads`` and by 4 (position embedding). ``depth`` >= 0
    blocks: depth 0 is a per-patch linear map with time modulation (the final layer alone), which isolates the
    patchify / unpatchify path in tests. ``mlp_ratio``: finite > 0, the blocks' MLP width over ``width``.
    ``time_scale``: finite > 0, stretches t ∈ [0, 1] over the sinusoidal frequencies
    (:func:`~flowvar.models.unet.sinusoidal_embedding`; the check is :func:`~flowvar.models.unet.check_time_scale`,
    UNetField's). Each is a :class:`ConfigError` naming the fix otherwise.
    The final projection is zero-initialised (as in DiT), so the untrained field is 0; ``zero_init=False`` draws it
    at random instead (a non-trivial field for tests).
    """

    def __init__(self, size: int, *, channels: int = 1, patch: int = 2, width: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, time_scale: float = 1000.0, zero_init: bool = True) -> None:
        super().__init__()
        size, channels = check_positive_int("size", size), check_positive_int("channels", channels)
        patch = check_positive_int("patch", patch)
        width, heads, _ = check_block_config(width, heads, mlp_ratio)  # checked here too: depth 0 builds no block
        if (isinstance(depth, bool) or not isinstance(depth, int | float) or not math.isfinite(depth)
                or depth != int(depth) or depth < 0):
            raise ConfigError(f"depth must be an integer >= 0 (the number of transformer blocks), got {depth!r}")
        depth = int(depth)
        if size % patch:
            patches = [p for p in range(1, size + 1) if size % p == 0]
            raise ConfigError(f"image size {size} must be divisible by the patch size {patch}; choose patch among "
                              f"{patches}")
        self.size, self.channels, self.patch, self.width, self.heads = size, channels, patch, width, heads
        self.time_scale = check_time_scale(time_scale)
        self.grid = size // patch
        self.patchify = nn.Conv2d(channels, width, patch, stride=patch)
        self.register_buffer("position", sincos_position_embedding(width, self.grid, self.grid)[None],
                             persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList([DiTBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.head = nn.Linear(width, patch * patch * channels)
        if zero_init:
            for layer in (self.final_modulation, self.head):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """x (B, C, H, W), t (B,) or scalar → v (B, C, H, W)."""
        if x.ndim != 4 or x.shape[1:] != (self.channels, self.size, self.size):
            raise ShapeError(f"DiTField expects x of shape (B, {self.channels}, {self.size}, {self.size}), got "
                             f"{tuple(x.shape)}")
        try:
            B, p, g = x.shape[0], self.patch, self.grid
            tokens = self.patchify(x).flatten(2).transpose(1, 2) + self.position.to(x.dtype)  # (B, N, D)
            # times and features in float32 for a half-precision x, rounded to x's dtype as time_mlp's input
            times = time_column(t, x, dtype=embedding_dtype(x.dtype))
            c = self.time_mlp(sinusoidal_embedding(times, self.width, scale=self.time_scale).to(x.dtype))
            for block in self.blocks:
                tokens = block(tokens, c)
            shift, scale = self.final_modulation(F.silu(c)).chunk(2, dim=1)
            out = self.head(_modulate(self.final_norm(tokens), shift, scale))  # (B, N, p·p·C)
            out = out.view(B, g, g, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
            return out.reshape(B, self.channels, g * p, g * p)
        except RuntimeError:
            problem = input_mismatch(self, x)  # a dtype/device mismatch named, instead of torch's matmul message
            if problem is not None:
                raise problem from None
            raise

    def extra_repr(self) -> str:
        return (f"size={self.size}, channels={self.channels}, patch={self.patch}, width={self.width}, "
                f"depth={len(self.blocks)}, heads={self.heads}, tokens={self.grid ** 2}, "
                f"time_scale={self.time_scale:g}")
