"""The one model signature: ``model(x, t) -> velocity``, and the first-call check that names it when a user's model
does not follow it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, FlowvarError, ShapeError, describe

Result = TypeVar("Result")

#: What a user's own model raises when it is called against flowvar's convention: a forward(t, x) indexes or
#: concatenates the wrong tensor (IndexError, RuntimeError), a float64 model meets float32 data (RuntimeError).
CALL_ERRORS: tuple[type[Exception], ...] = (IndexError, RuntimeError, TypeError, ValueError)


def check_floating_input(x: Tensor) -> None:
    """Raise :class:`ConfigError` unless the field input ``x`` is floating point, naming the fix (``x.float()``).

    An integer x is never what a user means: cast to a float field's own dtype it computes on the truncated input,
    and a result cast back to x's dtype truncates (uint8: wraps) the velocity, all silently.
    """
    if not torch.is_floating_point(x):
        raise ConfigError(f"x must be a floating-point tensor, got dtype {x.dtype}; pass x.float() (or x.double() "
                          f"for a float64 model)")


#: Half-precision dtypes: a time column in one of them resolves t only to 2^-9 (bfloat16) near t = ½, and the
#: sinusoidal time features (frequencies up to 1000 t) need far more, so those are computed in float32.
HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)


def time_column(t: Tensor | float, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Return t as a (B,) tensor on x's dtype, broadcasting a scalar and flattening (B, 1); reject any other shape.

    ``x`` must be floating point: t is cast to x's dtype, and an integer x would turn t = 0.5 into 0 silently.
    ``dtype``: the dtype of the returned times instead of x's (UNetField and DiTField keep float32 times for a
    half-precision x, see :func:`embedding_dtype`).
    """
    check_floating_input(x)
    try:  # None, a string, a ragged list: named as interpolants.expand_time names them, not torch's bare TypeError
        t = torch.as_tensor(t, dtype=x.dtype if dtype is None else dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"t must be a number or a tensor of times, got {describe(t)}") from None
    if t.ndim == 0:
        return t.expand(x.shape[0])
    t = t.reshape(-1) if t.ndim == 2 and t.shape[1] == 1 else t
    if t.shape != (x.shape[0],):
        raise ShapeError(f"t must be a scalar or have shape ({x.shape[0]},) or ({x.shape[0]}, 1) to match x of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}")
    return t


def embedding_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which a field on inputs of ``dtype`` computes its time features: float32 for float16 and
    bfloat16 (:data:`HALF_DTYPES`), else ``dtype`` itself (float32 and float64 runs are unchanged)."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def model_weight(model: nn.Module) -> tuple[Tensor, str] | None:
    """The tensor that stands for ``model``'s dtype and device, with what it is: its first floating parameter
    ("parameters"), else its first floating buffer ("buffers": the closed-form and empirical fields hold only
    buffers, e.g. EmpiricalField's training pairs), else None."""
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is not None:
        return weight, "parameters"
    buffer = next((b for b in model.buffers() if b.is_floating_point()), None)
    return None if buffer is None else (buffer, "buffers")


def device_mismatch(name: str, x: Tensor, weight: Tensor, kind: str) -> ConfigError | None:
    """The :class:`ConfigError` naming both moves when x and ``weight`` (a model's ``kind``, "parameters" or
    "buffers") are on different devices, or None: the one text for the learned and the buffer-only fields."""
    if x.device == weight.device:
        return None
    return ConfigError(f"{name} got x on {x.device} but its {kind} are on {weight.device}; move one to the other "
                       f"(model.to({str(x.device)!r}) or x.to({str(weight.device)!r}))")


def check_same_device(model: nn.Module, x: Tensor, weight: Tensor) -> None:
    """Raise :func:`device_mismatch`'s :class:`ConfigError` unless x is on the device of ``weight``, one of
    ``model``'s buffers or parameters.

    Called first in the forward of the fields that cast x to their own dtype (closed forms, empirical, parametric):
    they fail no dtype check, so only the device can differ, and without this a CUDA x meets CPU training data in
    torch's "Tensor on device cuda:0 is not on the expected device cpu!", or an x on ``meta`` in
    :func:`~flowvar.errors.check_finite`'s ``.item()``. A device comparison: a correct call pays nothing measurable.
    """
    kind = "parameters" if isinstance(weight, nn.Parameter) else "buffers"
    problem = device_mismatch(type(model).__name__, x, weight, kind)
    if problem is not None:
        raise problem


def input_mismatch(model: nn.Module, x: Tensor) -> ConfigError | None:
    """The :class:`ConfigError` naming how ``x`` differs from ``model``'s parameters (else, for a model with none,
    its floating buffers: :func:`model_weight`) in dtype or device, or None.

    Called only after a forward pass failed with a RuntimeError, so that a correct call pays nothing and
    torch.autocast (which mixes dtypes legally) still works: the learned fields do not cast their input.
    """
    found = model_weight(model)
    if found is None:
        return None
    weight, kind = found
    name = type(model).__name__
    if not torch.is_floating_point(x):  # converting the model to an integer dtype is no fix: torch refuses it
        return ConfigError(f"{name} got x of dtype {x.dtype}, but x must be floating point; pass "
                           f"x.to({weight.dtype}) (x.float() for float32)")
    problem = device_mismatch(name, x, weight, kind)
    if problem is not None:
        return problem
    if x.dtype != weight.dtype:
        shorthand = {torch.float64: "model.double()", torch.float32: "model.float()"}.get(x.dtype)
        to_model = f"model.to({x.dtype})" + (f", i.e. {shorthand}" if shorthand else "")
        return ConfigError(f"{name} got x of dtype {x.dtype} but its {kind} are {weight.dtype}; convert the model "
                           f"({to_model}) or the input (x.to({weight.dtype}))")
    return None


def _weight_kind(model: object) -> str | None:
    """"parameters" or "buffers", what :func:`input_mismatch` compared x with, or None (no module, no floats)."""
    found = model_weight(model) if isinstance(model, nn.Module) else None
    return None if found is None else found[1]


def _plain_call_fails(model: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor) -> bool:
    """Whether ``model(x, t)`` on two of the rows, without gradients, raises one of :data:`CALL_ERRORS`: the failure
    is the model's own call, not the computation around it (torch.func's vmap, a meta tensor's .item())."""
    try:
        with torch.no_grad():
            model(x[:2], t[:2])
    except CALL_ERRORS:
        return True
    except Exception:  # any other failure is not a calling-convention one: the original error is kept
        return False
    return False


def first_call(run: Callable[[], Result], model: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor) -> Result:
    """``run()``, the first computation that calls ``model(x, t)`` (x: (B, *shape), t: (B,), as the model gets them),
    with a failure inside a user's model re-raised as one :class:`ConfigError` naming the fix.

    Used by :func:`flowvar.train.train`, the variance estimators and :func:`flowvar.sampling.integrate` on their first
    call of the model, so the same mistake gets the same message everywhere: an ``nn.Module`` whose parameters differ
    from x in dtype or device (:func:`input_mismatch`; a module with only buffers is compared by them, when its own
    call of two rows fails too), else a model that fails on ``model(x, t)`` itself, most often
    one written for ``(t, x)`` (torchcfm's order), which fails with a bare IndexError or shape error deep in its
    forward. flowvar's own errors, running out of memory, and failures of the computation around the model (a plain
    call of two rows succeeds) pass unchanged. A correct call pays nothing: the diagnosis runs only on failure.
    """
    try:
        return run()
    except (FlowvarError, torch.OutOfMemoryError):  # flowvar's own errors say what to do; memory is no convention
        raise
    except CALL_ERRORS as err:
        problem = input_mismatch(model, x) if isinstance(model, nn.Module) else None
        # a model holding only buffers may cast x to their dtype itself (the closed-form and empirical fields do), so
        # a dtype differing from x's is blamed only when the model's own call fails, not the computation around it
        buffers_only = problem is not None and _weight_kind(model) == "buffers"
        own_call_fails = _plain_call_fails(model, x, t) if problem is None or buffers_only else True
        if buffers_only and not own_call_fails:
            problem = None
        elif problem is None and own_call_fails:
            first = str(err).splitlines()[0] if str(err) else ""
            # a plain callable hides its weights from input_mismatch: torch's own text says whether dtype or device
            if re.search(r"dtype|scalar type|same device|on device|device type", first, re.IGNORECASE):
                fix = (f"x is {x.dtype} on {x.device}: convert the weights the callable uses, or x, so both have "
                       f"one dtype and device (e.g. x.to(the weights' dtype))")
            else:
                fix = ("flowvar calls model(x, t) with one time per sample: a model taking (t, x) needs a wrapper, "
                       "e.g. an nn.Module whose forward(x, t) returns net(t, x)")
            problem = ConfigError(
                f"the model failed on its first call model(x, t) with x of shape {tuple(x.shape)} and t of shape "
                f"{tuple(t.shape)} ({type(err).__name__}: {first}); {fix}")
        if problem is None:
            raise
        raise problem from err


class VectorField(nn.Module):
    """Base class for vector fields on vectors of dimension ``dim``: checks the input shape once."""

    dim: int

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__} expects x of shape (B, {self.dim}), got {tuple(x.shape)}")


__all__ = ["CALL_ERRORS", "HALF_DTYPES", "VectorField", "check_floating_input", "check_same_device",
           "device_mismatch", "embedding_dtype", "first_call", "input_mismatch", "model_weight", "time_column"]
