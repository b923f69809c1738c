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
        raise DataError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or Inf) out of {x.numel()}; "
            f"clean or filter the data before passing it to flowvar"
        )


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
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


__all__ = ["ConfigError", "DataError", "FlowvarError", "ShapeError", "SolverError", "TrainingError", "check_finite",
           "check_positive_int", "check_sigma", "describe", "printable"]
