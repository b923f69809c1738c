"""One exception family for everything a user can get wrong.

Every error is raised where the bad input enters flowvar, and its message names the offending value
and the fix. The CLI prints ``str(error)`` on one line and exits with status 2.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class FlowvarError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(FlowvarError):
    """An unknown, missing or ill-typed configuration value."""


class ShapeError(FlowvarError):
    """Tensors whose shapes or dimensions do not fit together."""


class DataError(FlowvarError):
    """Data that cannot be used: empty, non-finite, missing files, mismatched pairs."""


class WriteError(DataError):
    """A file flowvar could not write (disk full, read-only or forbidden folder): ``"{problem}; {remedy}"``.

    The parts are kept apart for a caller that knows better where the file lies than the writer did (a result
    computed inside the result cache is the cache's full disk, not the output folder's)."""

    def __init__(self, path: object, problem: str, remedy: str) -> None:
        super().__init__(f"{problem}; {remedy}")
        self.path = path  # the file that could not be written (a pathlib.Path)
        self.problem = problem  # "cannot write {what} {path}: {reason}"
        self.remedy = remedy


class TrainingError(FlowvarError):
    """Training that cannot go on (for example a non-finite loss)."""


class SolverError(FlowvarError):
    """An ODE integration that produced non-finite values or could not proceed."""


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\r``): a message quoting what a user typed stays one
    line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise :class:`DataError` if ``x`` holds NaN or Inf, saying how many entries and where to look."""
    if not torch.is_floating_point(x):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise nonfinite_error(name, int(bad.sum()), x.numel())


def nonfinite_error(name: str, count: int, total: int) -> DataError:
    """The :class:`DataError` for data ``name`` holding ``count`` NaN/Inf values out of ``total``:
    :func:`check_finite`'s, and that of a file counted block by block without one tensor of it."""
    return DataError(f"{name} holds {count} non-finite value(s) (NaN or Inf) out of {total}; clean or filter the data "
                     f"before passing it to flowvar")


def describe(value: object, limit: int = 80) -> str:
    """A short one-line description of ``value`` for an error message: a tensor or array by its type, shape and dtype
    (never its entries: a message quoting a 10⁶-entry tensor is unreadable), anything else by its ``repr`` cut to
    ``limit`` characters."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        kind = type(value).__name__
        if tuple(shape) == () and hasattr(value, "item"):  # a 0-d tensor or a numpy scalar: its one value is short
            return f"{value.item()!r} (0-d {kind}, dtype {value.dtype})"  # type: ignore[attr-defined]
        return f"a {kind} of shape {tuple(shape)} and dtype {value.dtype}"  # type: ignore[attr-defined]
    text = printable(repr(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_sigma(sigma: float) -> float:
    """Validate an interpolant noise level: a finite float >= 0."""
    # float(True) == 1.0: a bool passed by mistake (e.g. a flag in the wrong position) would silently mean σ = 1
    if isinstance(sigma, bool | np.bool_) or (isinstance(sigma, torch.Tensor) and sigma.dtype == torch.bool):
        raise ConfigError(f"sigma must be a number >= 0, got the bool {describe(sigma)}; pass a number, e.g. "
                          f"sigma=0.1 (or sigma=0 for the deterministic interpolant)")
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(f"sigma must be a number >= 0, got {describe(sigma)}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma}; use sigma=0 for the "
                          f"deterministic interpolant")
    return value


def check_positive_int(name: str, value: object) -> int:
    """Validate a strictly positive integer (batch sizes, step counts, dimensions)."""
    # a NaN or infinite float is refused before int(), which would raise its own ValueError/OverflowError
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_generator(generator: object) -> torch.Generator | None:
    """``generator`` if it is a ``torch.Generator`` or None, else a one-line :class:`ConfigError`.

    flowvar takes no integer seeds where a generator is expected: a seed turned into a fresh generator on every call
    would draw the same numbers at every call (the same minibatch at every training step), silently. Called at the
    entry points that draw (couplings, distributions, interpolants, time samplers), before torch's own 20-line
    ``TypeError`` about ``generator=int``.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int | np.integer) and not isinstance(generator, bool | np.bool_):
        raise ConfigError(f"generator must be a torch.Generator or None, got int {int(generator)}; pass "
                          f"torch.Generator().manual_seed({int(generator)}) (create it once and reuse it across calls)")
    raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                      f"{describe(generator)}; pass torch.Generator().manual_seed(seed), or None for torch's global "
                      f"generator")


def tensor_input(name: str, value: object) -> torch.Tensor:
    """``value`` as a tensor: a tensor unchanged (no copy), a numpy array or a nested list of numbers converted
    with ``torch.as_tensor`` (numpy's dtype kept: float64 stays float64), anything else a one-line
    :class:`ConfigError` naming ``name``.

    The entry points that take point sets (``FixedPairs``, ``exact_ot_permutation``, the metrics, ``GaussianProblem``)
    accept numpy as well as torch, so that a user need not guess which do.
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray | list | tuple):
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):  # object arrays, ragged lists, strings
            raise ConfigError(f"{name} must be a tensor of numbers, got {describe(value)}, which does not convert "
                              f"to one; pass a torch.Tensor") from None
    raise ConfigError(f"{name} must be a torch.Tensor (or a numpy array of numbers), got {describe(value)}")


def check_floating(name: str, x: torch.Tensor) -> None:
    """Raise :class:`DataError` if ``x`` is not floating point (integer, bool or complex data), naming the fix
    (``x.float()``): flowvar's interpolants, fields and losses are defined on real vectors, and torch's own errors for
    integer input come from deep inside (``"lerp_kernel_tensor" not implemented for 'Long'``)."""
    if not torch.is_floating_point(x):
        raise DataError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; pass {name}.float() (or "
                        f"{name}.double() for float64)")


def check_same_dtype(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise :class:`DataError` if ``a`` and ``b`` (each already floating point) differ in dtype, naming the fix."""
    if a.dtype != b.dtype:
        raise DataError(f"{name_a} and {name_b} must have the same dtype, got {name_a} {a.dtype} and {name_b} "
                        f"{b.dtype}; convert one, e.g. {name_b}.to({name_a}.dtype)")


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise :class:`DataError` if ``a`` and ``b`` lie on different devices, naming the fix (else torch's own device
    error comes later, from deep inside the interpolant or the model)."""
    if a.device != b.device:
        raise DataError(f"{name_a} and {name_b} must be on the same device, got {name_a} on {a.device} and {name_b} "
                        f"on {b.device}; move one, e.g. {name_b}.to({name_a}.device)")


#: check_unit_times lets times stray this far outside [0, 1]: rounding (1/9 added nine times is 1 + 2.2e-16)
UNIT_TIME_ROUNDING = 1e-12


def check_unit_times(t: torch.Tensor | float, tt: torch.Tensor) -> None:
    """Raise :class:`DataError` unless every time lies in [0, 1]: ``t`` as given, ``tt`` the same times as a tensor.

    A Python number is checked as is; a tensor by one min/max reduction (skipped on the data-less meta device).
    """
    if isinstance(t, int | float):
        lo = hi = float(t)
    elif tt.device.type == "meta" or tt.numel() == 0:
        return
    else:
        lo, hi = torch.stack(torch.aminmax(tt.detach())).tolist()  # NaN propagates to both: one sync
    if not (lo >= -UNIT_TIME_ROUNDING and hi <= 1.0 + UNIT_TIME_ROUNDING):  # False for NaN
        got = ("NaN" if math.isnan(lo) or math.isnan(hi) else f"{lo:.6g}" if lo == hi else
               f"times from {lo:.6g} to {hi:.6g}")
        raise DataError(f"t must lie in [0, 1] (x_t runs from x0 at t = 0 to x1 at t = 1), got {got}; rescale times "
                        f"given in another convention (e.g. t / 1000 for diffusion-style steps), and make a custom "
                        f"TimeSampler return times in [0, 1]")


__all__ = [
    "UNIT_TIME_ROUNDING",
    "ConfigError",
    "DataError",
    "FlowvarError",
    "ShapeError",
    "SolverError",
    "TrainingError",
    "WriteError",
    "check_finite",
    "check_floating",
    "check_generator",
    "check_positive_int",
    "check_same_device",
    "check_same_dtype",
    "check_sigma",
    "check_unit_times",
    "describe",
    "nonfinite_error",
    "printable",
    "tensor_input",
]
