"""A time-conditioned UNet for images: ``v = UNetField(...)(x, t)`` with x (B, C, H, W), t (B,) or a scalar.

The layout follows the DDPM / guided-diffusion UNet that TorchCFM uses for CIFAR-10 (PAPER.md §4 "Images"),
scaled down for CPU runs:

* time: t ∈ [0, 1] → :class:`SinusoidalTimeEmbedding` (parameter-free) → Linear → SiLU → Linear;
* an input 3×3 convolution, then per resolution level ``num_res_blocks`` residual blocks (GroupNorm → SiLU →
  conv, plus a per-channel bias from the time embedding, GroupNorm → SiLU → dropout → conv, with a 1×1 skip
  when the width changes), optional self-attention, and a stride-2 convolution between levels;
* a middle residual block / attention / residual block at the coarsest resolution;
* the mirrored decoder (``num_res_blocks + 1`` blocks per level, each concatenating one encoder activation),
  nearest-neighbour ×2 upsampling followed by a 3×3 convolution, and GroupNorm → SiLU → 3×3 output conv.

Every parameter lives in an ``nn.Conv2d``, ``nn.Linear`` or ``nn.GroupNorm`` (attention projections are 1×1
convolutions), so per-sample gradient rules for those three layer types cover the whole model. The forward
pass has no data-dependent control flow, so ``torch.func.vmap`` works on it. No layer is zero-initialised:
every parameter gets a non-zero gradient at initialisation (TorchCFM zero-initialises some output
convolutions, which makes the gradients of everything upstream exactly zero at step 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError, check_positive_int
from flowvar.models.base import embedding_dtype, input_mismatch, time_column


def check_time_scale(scale: object) -> float:
    """``scale`` of :func:`sinusoidal_embedding` (a model's ``time_scale``) as a float, if it is a finite number > 0
    (not a bool), else a :class:`ConfigError`: a NaN scale makes every time feature NaN, a negative one mirrors t."""
    if isinstance(scale, bool) or not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"time_scale must be a finite number > 0, got {scale!r}; 1000 is the usual choice")
    return float(scale)


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Transformer-style features of a time: ``[cos(s·t·ω_k), sin(s·t·ω_k)]``, ω_k = max_period^(−k/half).

    ``t``: (B,) → (B, dim) on t's dtype (an odd ``dim`` gets a trailing zero column). ``scale`` stretches
    t ∈ [0, 1] over the frequency range (1000 as in DDPM's integer steps; TorchCFM feeds t unscaled, i.e.
    ``scale=1``, which leaves most channels nearly constant in t).

    A float16 or bfloat16 t is embedded in float32 (as guided-diffusion and DiT compute it) and the features rounded
    to t's dtype: computed in bfloat16, s·t·ω_k up to 1000 has a spacing of 4 there and the features were off by up to 2
    (a sign flip). float32 and float64 t are computed in their own dtype, as before.
    """
    if t.ndim != 1:
        raise ShapeError(f"sinusoidal_embedding expects t of shape (B,), got {tuple(t.shape)}")
    work = embedding_dtype(t.dtype)
    tw = t.to(work)
    half = dim // 2
    k = torch.arange(half, dtype=work, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))
    args = scale * tw[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(t.dtype)


class SinusoidalTimeEmbedding(nn.Module):
    """Parameter-free module wrapping :func:`sinusoidal_embedding`: (B,) → (B, dim).

    It has no parameters, so a per-sample gradient engine needs no rule for it: it is a fixed feature map of
    each sample's own t, and the learnable layers after it are ordinary ``nn.Linear`` layers.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        self.dim = check_positive_int("time embedding dim", dim)
        self.scale = check_time_scale(scale)
        self.max_period = float(max_period)

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.dim, self.scale, self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}, max_period={self.max_period}"


class ResBlock(nn.Module):
    """Residual block with time conditioning: (B, c_in, H, W), (B, c_emb) → (B, c_out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_ch, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        # p = 0 uses Identity, so that vmap over the model never meets a random op it does not need.
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip: nn.Module = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, with a residual: (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int, groups: int, head_channels: int) -> None:
        super().__init__()
        if channels > head_channels and channels % head_channels:
            raise ConfigError(f"attention over {channels} channels cannot be split into heads of {head_channels} "
                              f"channels; choose a head_channels dividing {channels}")
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        weights = torch.einsum("bnci,bncj->bnij", q, k).mul(1.0 / math.sqrt(c // self.heads)).softmax(dim=-1)
        out = torch.einsum("bnij,bncj->bnci", weights, v).reshape(b, c, h, w)
        return x + self.proj(out)


class _Stage(nn.Module):
    """A residual block optionally followed by attention: (B, c_in, H, W), (B, c_emb) → (B, c_out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, groups: int, dropout: float, attention: bool,
                 head_channels: int) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_ch, groups, dropout)
        self.attn: nn.Module = AttentionBlock(out_ch, groups, head_channels) if attention else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.res(x, emb))


class Downsample(nn.Module):
    """Stride-2 3×3 convolution: (B, C, H, W) → (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 convolution: (B, C, H, W) → (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def allowed_resolutions(n_levels: int, up_to: int = 256) -> list[int]:
    """Image sizes a UNet with ``n_levels`` resolution levels accepts: multiples of 2^(n_levels − 1)."""
    step = 2 ** (n_levels - 1)
    return list(range(step, up_to + 1, step))


class UNetField(nn.Module):
    """Time-conditioned UNet vector field on square images: ``forward(x, t)`` with x (B, C, S, S), t (B,) or
    a scalar in [0, 1]; returns a velocity (B, out_channels, S, S) (``out_channels`` defaults to C).

    Args:
        image_size: S, the side of the (square) input; must be divisible by 2^(len(channel_mult) − 1).
        in_channels: C (1 for grey, 3 for RGB).
        base_channels: width of the first level; every level is ``base_channels * mult``; divisible by
            ``groups``.
        channel_mult: width multiplier per resolution level (one level per entry, halving the size each).
        num_res_blocks: residual blocks per level on the encoder side (the decoder has one more).
        attention_resolutions: pixel sizes (among the level sizes S, S/2, …) where self-attention follows
            each residual block, e.g. ``(8,)``.
        dropout: dropout probability inside residual blocks (0 for memorisation runs, PAPER.md §4).
        groups: GroupNorm groups.
        head_channels: channels per attention head (a block of width c gets c // head_channels heads, or one
            head when c <= head_channels).
        mid_attention: self-attention in the middle block at the coarsest resolution.
        time_scale: the ``scale`` of :func:`sinusoidal_embedding`.

    Defaults are TorchCFM's CIFAR-10 UNet scaled down for CPU (128 → 32 channels, mult (1, 2, 2, 2) →
    (1, 2, 2), 2 → 1 residual blocks, dropout 0.1 → 0), with attention only in the middle block (TorchCFM also
    attends at 16 px: ``attention_resolutions=(16,)``) and 32-channel heads (TorchCFM's are 64:
    ``head_channels=64``). TorchCFM's own configuration with those two settings has 35.7M parameters; the head
    size changes how channels are split, not the parameter count.
    """

    def __init__(self, image_size: int, in_channels: int = 3, base_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: Sequence[int] = (), dropout: float = 0.0, groups: int = 8,
                 out_channels: int | None = None, head_channels: int = 32, mid_attention: bool = True,
                 time_scale: float = 1000.0) -> None:
        super().__init__()
        mult = self._check_mult(channel_mult)
        n_levels = len(mult)
        image_size = self._check_image_size(image_size, n_levels)
        in_channels = check_positive_int("in_channels", in_channels)
        out_channels = in_channels if out_channels is None else check_positive_int("out_channels", out_channels)
        base_channels = check_positive_int("base_channels", base_channels)
        num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
        groups = check_positive_int("groups", groups)
        head_channels = check_positive_int("head_channels", head_channels)
        if base_channels % groups:
            raise ConfigError(f"base_channels={base_channels} is not divisible by groups={groups} (GroupNorm needs "
                              f"every width divisible by the group count); use a base_channels that is a multiple "
                              f"of {groups} or a groups dividing {base_channels}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        level_sizes = [image_size // 2**i for i in range(n_levels)]
        attn = self._check_attention(attention_resolutions, level_sizes)

        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.level_sizes = tuple(level_sizes)
        self.config: dict[str, Any] = {
            "image_size": image_size, "in_channels": in_channels, "base_channels": base_channels,
            "channel_mult": list(mult), "num_res_blocks": num_res_blocks,
            "attention_resolutions": sorted(attn), "dropout": float(dropout), "groups": groups,
            "out_channels": out_channels, "head_channels": head_channels, "mid_attention": bool(mid_attention),
            "time_scale": float(time_scale),
        }

        emb_ch = 4 * base_channels
        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(base_channels, scale=time_scale),
            nn.Linear(base_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch),
        )
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def stage(c_in: int, c_out: int, attention: bool) -> _Stage:
            return _Stage(c_in, c_out, emb_ch, groups, float(dropout), attention, head_channels)

        # Encoder: remember the width of every activation that the decoder will concatenate.
        self.down = nn.ModuleList()
        skip_widths = [base_channels]
        ch = base_channels
        for level, m in enumerate(mult):
            for _ in range(num_res_blocks):
                self.down.append(stage(ch, base_channels * m, level_sizes[level] in attn))
                ch = base_channels * m
                skip_widths.append(ch)
            if level < n_levels - 1:
                self.down.append(Downsample(ch))
                skip_widths.append(ch)

        self.mid1 = ResBlock(ch, ch, emb_ch, groups, float(dropout))
        self.mid_attn: nn.Module = AttentionBlock(ch, groups, head_channels) if mid_attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_ch, groups, float(dropout))

        # Decoder: each stage consumes one skip; an Upsample closes every level but the finest.
        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(ch + skip_widths.pop(), base_channels * mult[level], level_sizes[level] in attn))
                ch = base_channels * mult[level]
            if level > 0:
                self.up.append(Upsample(ch))

        self.out_norm = nn.GroupNorm(groups, ch)
        self.out_conv = nn.Conv2d(ch, out_channels, 3, padding=1)

    @staticmethod
    def _check_mult(channel_mult: Sequence[int]) -> tuple[int, ...]:
        if isinstance(channel_mult, str | bytes) or not isinstance(channel_mult, Sequence) or not channel_mult:
            raise ConfigError(f"channel_mult must be a non-empty sequence of positive integers such as (1, 2, 2), "
                              f"got {channel_mult!r}")
        return tuple(check_positive_int("channel_mult entry", m) for m in channel_mult)

    @staticmethod
    def _check_image_size(image_size: int, n_levels: int) -> int:
        step = 2 ** (n_levels - 1)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1 or image_size % step:
            allowed = ", ".join(str(s) for s in allowed_resolutions(n_levels, max(64, 4 * step))[:8])
            raise ConfigError(f"image_size={image_size!r} does not fit a UNet with {n_levels} resolution levels "
                              f"(channel_mult of length {n_levels} halves the size {n_levels - 1} times); it must "
                              f"be a positive multiple of {step}: allowed sizes are {allowed}, …; or shorten "
                              f"channel_mult")
        return image_size

    @staticmethod
    def _check_attention(attention_resolutions: Sequence[int], level_sizes: list[int]) -> set[int]:
        if isinstance(attention_resolutions, str | bytes) or not isinstance(attention_resolutions, Sequence):
            raise ConfigError(f"attention_resolutions must be a sequence of pixel sizes, got "
                              f"{attention_resolutions!r}")
        bad = [r for r in attention_resolutions if r not in level_sizes]
        if bad:
            raise ConfigError(f"attention_resolutions {bad} are not resolutions of this UNet; its levels run at "
                              f"{level_sizes} px")
        return set(attention_resolutions)

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`ShapeError` unless x is (B, in_channels, image_size, image_size)."""
        expected = f"(B, {self.in_channels}, {self.image_size}, {self.image_size})"
        if x.ndim != 4:
            raise ShapeError(f"UNetField expects images of shape {expected}, got a tensor of shape "
                             f"{tuple(x.shape)}; reshape flat vectors with x.view(-1, C, H, W)")
        if x.shape[1] != self.in_channels:
            raise ShapeError(f"UNetField was built for {self.in_channels} channel(s) but got x with {x.shape[1]} "
                             f"(shape {tuple(x.shape)}); build it with in_channels={x.shape[1]} or convert the "
                             f"images")
        if x.shape[2] != x.shape[3]:
            raise ShapeError(f"UNetField needs square images, got {x.shape[2]}x{x.shape[3]} (shape "
                             f"{tuple(x.shape)}); crop or resize to {self.image_size}x{self.image_size}")
        if x.shape[2] != self.image_size:
            raise ShapeError(f"UNetField was built for {self.image_size}x{self.image_size} images but got "
                             f"{x.shape[2]}x{x.shape[3]}; build it with image_size={x.shape[2]} or resize")

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """x: (B, C, S, S); t: (B,), (B, 1) or a scalar → velocity (B, out_channels, S, S)."""
        self.check_input(x)
        try:
            # times and their sinusoidal features in float32 for a half-precision x (t = 0.5 and 0.501 are one
            # bfloat16 number), rounded to x's dtype only as the first Linear's input; no-op for float32/float64
            times = time_column(t, x, dtype=embedding_dtype(x.dtype))
            emb = self.time_embed[1:](self.time_embed[0](times).to(x.dtype))
            h = self.input_conv(x)
            skips = [h]
            for block in self.down:
                h = block(h, emb) if isinstance(block, _Stage) else block(h)
                skips.append(h)
            h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
            for block in self.up:
                h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, _Stage) else block(h)
            return self.out_conv(F.silu(self.out_norm(h)))
        except RuntimeError:
            problem = input_mismatch(self, x)  # a dtype/device mismatch named, instead of torch's conv message
            if problem is not None:
                raise problem from None
            raise


__all__ = ["AttentionBlock", "Downsample", "ResBlock", "SinusoidalTimeEmbedding", "UNetField", "Upsample",
           "allowed_resolutions", "sinusoidal_embedding"]
