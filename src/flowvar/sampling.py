"""One entry point for integrating a vector field: dx/dt = v(x, t), x(t0) = x0, up to t1.

:func:`integrate` runs either a fixed-grid method implemented here or any solver of ``torchdiffeq``
(:func:`integrate_chunked`: its end states, a block of sources at a time, for fixed-grid methods):

* fixed grid — ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (below, h = t_{k+1} − t_k):

  - euler:    x_{k+1} = x_k + h v(x_k, t_k)                                     (order 1, 1 NFE/step)
  - midpoint: x_{k+1} = x_k + h v(x_k + ½h v(x_k, t_k), t_k + ½h)               (order 2, 2 NFE/step)
  - heun:     k1 = v(x_k, t_k), k2 = v(x_k + h k1, t_{k+1}),
              x_{k+1} = x_k + ½h (k1 + k2)                                      (order 2, 2 NFE/step)
  - rk4:      the classical Runge–Kutta scheme, stages at t_k, t_k + ½h (twice), t_{k+1}
                                                                                (order 4, 4 NFE/step)

  on the uniform grid t_k = t0 + (k / steps)(t1 − t0), k = 0..steps (see :func:`time_grid`), or on an
  explicit increasing ``grid``;
* adaptive — ``"dopri5"`` (default tolerances rtol=1e-7, atol=1e-9) and every other ``torchdiffeq``
  method name (``"dopri8"``, ``"bosh3"``, ``"adaptive_heun"``, ``"heun3"``, ``"explicit_adams"``, …).
  torchdiffeq's fixed-grid methods step along the same grid as ours. Adaptive methods step onto t1 (torchdiffeq's
  ``step_t``, unless ``options`` names its own), so the field is only ever called on [t0, t1]; ``explicit_adams``
  runs at order 4 unless ``options`` sets ``max_order`` (torchdiffeq's default 12 diverges as the grid is refined).

**The grid matters** (PAPER.md §2, Counter Example 1). Under the 180° coupling every straight line
meets at t = ½, where the exact field μ − 2(x − tμ)/(1 − 2t) is undefined. On [0, 1], an even step
count puts a grid node exactly at t = ½, so Euler and Heun evaluate the field there; an odd count jumps
over it (Euler then lands exactly on the rotation partner −x0 + μ). Midpoint and RK4 also evaluate at the
half-steps t_k + h/2, which hit t = ½ for *odd* counts, so every uniform grid on [0, 1] meets t = ½ with
them; pass an explicit ``grid`` whose nodes and midpoints avoid it. (Euler on *any* grid that avoids ½
telescopes to exactly −x0 + μ for this field: y_{k+1} = y_k (1 − 2t_{k+1}) / (1 − 2t_k) with y = x − tμ.)
When the field returns NaN/Inf, :class:`SolverError` names the time at which it happened. In half precision
(float16/bfloat16 x0) the times and step sizes stay in float32 and only the t handed to the field is rounded to
x0's dtype — and rounding, not parity, then decides whether the field sees ½: every odd count from 257 steps in
bfloat16 (2049 in float16) rounds a node onto it; the SolverError's advice counts in x0's dtype.

The field is called as ``field(x, t)`` with ``x``: (B, *shape) and ``t``: a (B,) tensor (every entry
the current time, in ``x0``'s dtype and device), and must return a (B, *shape) velocity; the state keeps ``x0``'s
dtype when the velocity has it (see :func:`integrate` for a field of another dtype). A first call that fails
inside a user's model (a ``forward(t, x)``, parameters of another dtype) is a :class:`ConfigError` naming the fix,
as in :func:`flowvar.train.train` (:func:`flowvar.models.base.first_call`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowvar.errors import ConfigError, ShapeError, SolverError, check_finite, check_positive_int, describe
from flowvar.models.base import first_call

Field = Callable[[Tensor, Tensor], Tensor]

#: Fixed-grid methods implemented here, with their number of field evaluations per step.
FIXED_METHODS: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
#: Dtypes the adaptive torchdiffeq solvers refuse (their error control does not work at this precision).
HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)


def _torchdiffeq_solvers() -> dict[str, bool]:
    """torchdiffeq method names → whether the method steps on a fixed grid (``scipy_solver`` excluded)."""
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.solvers import FixedGridODESolver

    return {name: issubclass(cls, FixedGridODESolver) for name, cls in SOLVERS.items()
            if name != "scipy_solver" and name not in FIXED_METHODS}


def valid_methods() -> list[str]:
    """Every accepted ``method`` name: the fixed-grid methods implemented here, then torchdiffeq's."""
    return [*FIXED_METHODS, *sorted(_torchdiffeq_solvers())]


@dataclass(frozen=True)
class ODESolution:
    """The result of :func:`integrate`.

    * ``x1``: (B, *shape), the state at the final time.
    * ``times``: (T,) the times of the saved states when ``return_trajectory=True``, else None; in x0's dtype
      (float32 for a float16/bfloat16 x0: the grid the integration stepped on, before the field's rounding).
    * ``trajectory``: (T, B, *shape) the saved states (first = x0, last = x1), else None.
    * ``nfe``: the number of field evaluations (calls of ``field``).
    * ``method``: the solver name.
    * ``steps``: the number of grid intervals for fixed-grid methods; None for adaptive ones (their step
      count is chosen by the error control; ``nfe`` measures their cost).
    """

    x1: Tensor
    times: Tensor | None
    trajectory: Tensor | None
    nfe: int
    method: str
    steps: int | None


def time_grid(steps: int, t0: float = 0.0, t1: float = 1.0, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> Tensor:
    """The uniform grid t_k = t0 + (k / steps)(t1 − t0), k = 0..steps: shape (steps + 1,).

    k / steps is computed by one correctly rounded division, so on [0, 1] an even ``steps`` gives a node
    at exactly t = ½ (k = steps/2) and an odd ``steps`` never does — in float64, and in float32 below 1.6·10⁷
    steps. Rounded to a half-precision ``dtype`` a node next to ½ lands on it for every odd count from 257 in
    bfloat16 (2049 in float16), and nodes merge: :func:`integrate` keeps its grid in float32 for half-precision x0
    and rounds only the t handed to the field. The end points are exactly t0 and t1.
    """
    steps = check_positive_int("steps", steps)
    t0, t1 = _check_interval(t0, t1)
    return _uniform_nodes(torch.arange(steps + 1), steps, t0, t1).to(dtype=dtype, device=device)


def _uniform_nodes(k: Tensor, steps: int | Tensor, t0: float, t1: float) -> Tensor:
    """Nodes ``k`` (a long tensor of indices in 0..steps) of :func:`time_grid`, in float64: t0 + (k / steps)(t1 − t0),
    exactly t0 at k = 0 and t1 at k = steps (``steps``: an int, or a long tensor broadcasting with ``k``). One formula
    for the whole grid and for the nodes :func:`_node_free_steps` inspects, so both give the same numbers."""
    nodes = t0 + (k.to(torch.float64) / steps) * (t1 - t0)
    return torch.where(k == 0, t0, torch.where(k == steps, t1, nodes))


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the times and step sizes of an integration of x0 in ``dtype``: x0's, but float32 for a
    half-precision x0. bfloat16 resolves 2⁻⁸ ≈ 0.004 in [½, 1) (float16: 2⁻¹¹), so a grid in it merges nodes
    (bfloat16: the 1002 nodes of steps=1001 become 507, half the steps taking h = 0); the field is still handed its
    t rounded to x0's dtype, which is what a half-precision model takes."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _check_interval(t0: float, t1: float) -> tuple[float, float]:
    try:
        a, b = float(t0), float(t1)
    except (TypeError, ValueError):
        raise ConfigError(f"t0 and t1 must be numbers, got t0={t0!r}, t1={t1!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ConfigError(f"the time interval must satisfy t0 < t1 (both finite), got t0={t0}, t1={t1}")
    if a == b:
        raise ConfigError(f"the time interval [t0, t1] = [{a:g}, {b:g}] is empty: t0 < t1 is needed")
    if a > b:
        raise ConfigError(f"the time interval must satisfy t0 < t1, got t0={t0}, t1={t1}; to integrate backwards "
                          f"from t0 to t1, integrate the reversed field -v(x, 1 - t) forwards on [1 - t0, 1 - t1] = "
                          f"[{1 - a:g}, {1 - b:g}]")
    return a, b


def _check_grid(grid: Tensor | Any) -> Tensor:
    grid = torch.as_tensor(grid).detach()
    if not torch.is_floating_point(grid):
        grid = grid.to(torch.float64)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ConfigError(f"grid must be a 1-D tensor of at least 2 times, got shape {tuple(grid.shape)}")
    if not bool(torch.isfinite(grid).all()):
        raise ConfigError("grid holds NaN or Inf; pass finite times")
    diffs = grid[1:] - grid[:-1]
    if not bool((diffs > 0).all()):
        k = int(torch.nonzero(diffs <= 0)[0])
        raise ConfigError(f"grid must be strictly increasing, but grid[{k}] = {float(grid[k]):.6g} >= "
                          f"grid[{k + 1}] = {float(grid[k + 1]):.6g}; sort it and drop repeated times")
    return grid


def _check_tolerance(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _node_free_steps(t_bad: float, steps: int, t0: float, t1: float, dtype: torch.dtype) -> int | None:
    """A step count whose uniform grid on [t0, t1], as the field sees it (the nodes of :func:`time_grid` in
    :func:`_working_dtype`, rounded to x0's ``dtype``), has no node within 1e-9 of ``t_bad``: the smallest in
    steps + 1 .. 2·steps + 2, else the largest below ``steps`` (in half precision every count from 256 (bfloat16)
    or 2048 (float16) on rounds a node onto ½: the advice is then 255 or 2047), else None.

    Only the four nodes around t_bad are inspected, for every candidate count at once: rounding is monotone, so if
    any node rounds onto t_bad, so does one next to it."""
    candidates = torch.cat([torch.arange(steps + 1, 2 * steps + 3), torch.arange(steps - 1, 0, -1)])
    pos = (t_bad - t0) / (t1 - t0)
    k = (torch.floor(pos * candidates.to(torch.float64)).long()[:, None] + torch.arange(-1, 3)).clamp(min=0)
    k = torch.minimum(k, candidates[:, None])
    seen = _uniform_nodes(k, candidates[:, None], t0, t1).to(_working_dtype(dtype)).to(dtype).to(torch.float64)
    free = ~((seen - t_bad).abs() <= 1e-9).any(dim=1)
    return int(candidates[free][0]) if bool(free.any()) else None


def _singular_message(method: str, t_bad: float, where: str, uniform: bool, steps: int,
                      t0: float, t1: float, dtype: torch.dtype, raised: SolverError | None = None) -> str:
    """The SolverError text: where it failed (``t_bad``: the time the field was handed, in x0's ``dtype``) and which
    grid avoids the singular time in that dtype.

    ``raised``: the SolverError the field itself raised there (a closed-form field such as
    :class:`~flowvar.models.GaussianParametricField` raises where I + tΘ is singular instead of returning NaN). Its
    own text comes first, unchanged (callers record the part before its first ';'), followed by where it happened and
    the same grid advice: the field cannot know that RK4's half-steps meet t = ½ on every uniform grid."""
    if raised is not None:
        head = (f"{raised} (the vector field raised this at t = {t_bad:.6g}, {where}, while integrating with "
                f"method={method!r}). ")
    else:
        head = (f"the vector field returned non-finite values (NaN or Inf) at t = {t_bad:.6g} ({where}) while "
                f"integrating with method={method!r}; either the field is singular there (for example the lines of "
                f"a 180° coupling all cross at t = 0.5) or it overflows — a trained network whose training diverged "
                f"(lower its learning rate) or one fed data far from its training scale, which no time grid fixes. ")
    # the odd-step-count advice is about t = ½ (where crossing lines meet); elsewhere it would mislead
    at_half = abs(t_bad - 0.5) <= 1e-9
    if method in ("euler", "heun"):
        fix = "Use a time grid whose nodes avoid that time"
        alt = _node_free_steps(t_bad, steps, t0, t1, dtype) if uniform else None
        if alt is not None and dtype in HALF_DTYPES:
            # rounding decides, not parity: an odd count above 511 (bfloat16) puts a node on ½ all the same
            why = f"its nodes, rounded to x0's {dtype}, miss t = {t_bad:.6g}"
            fix += (f", e.g. steps={alt} (--steps {alt}) instead of {steps} ({why}), or integrate in float32 "
                    f"(x0.float() and a float32 model) to keep {steps} steps")
        elif alt is not None:
            why = "an odd step count on [0, 1] skips t = 0.5" if at_half else f"its nodes miss t = {t_bad:.6g}"
            fix += f", e.g. steps={alt} (--steps {alt}) instead of {steps} ({why})"
        else:
            fix += " (pass an explicit `grid` that does not contain it)"
        return head + fix + "."
    if method in ("midpoint", "rk4"):
        if at_half:
            return head + (f"{method} also evaluates at the half-steps t_k + h/2, so every uniform grid on [0, 1] "
                           f"meets t = 0.5; use method='euler' or 'heun' with an odd step count (e.g. steps=101), "
                           f"or pass an explicit `grid` whose nodes and midpoints avoid t = 0.5.")
        return head + (f"{method} evaluates at the nodes and half-steps t_k + h/2: use a step count whose nodes and "
                       f"half-steps miss t = {t_bad:.6g}, or an explicit `grid` that does.")
    return head + (f"Use a fixed-grid method with a grid that avoids t = {t_bad:.6g} (e.g. method='euler'"
                   + (", steps=101" if at_half else "") + "), or check the model for overflow.")


class _CountingField:
    """Wraps ``field``: broadcasts t to (B,), checks the output shape, counts evaluations; ``last_t`` is the time
    of the latest call, as the field was handed it (x0's dtype), for naming where a field raised."""

    def __init__(self, field: Field, x0: Tensor) -> None:
        self.field, self.nfe = field, 0
        self.batch, self.dtype, self.device = x0.shape[0], x0.dtype, x0.device
        self.last_t = math.nan

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=self.dtype, device=self.device).reshape(()).expand(self.batch)
        self.last_t = float(tt[0])
        # the first call names a model written for (t, x) or for another dtype, as train() and the estimators do
        v = self.field(x, tt) if self.nfe else first_call(lambda: self.field(x, tt), self.field, x, tt)
        self.nfe += 1
        if not isinstance(v, Tensor) or v.shape != x.shape:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ShapeError(f"the vector field returned {got} for x of shape {tuple(x.shape)}; "
                             f"field(x, t) must return one velocity per point, of the same shape as x")
        return v


def _fixed_step(f: _CountingField, method: str, x: Tensor, t: Tensor, h: Tensor
                ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """One step of a fixed-grid method; returns the new state and the (stage time, stage value) list."""
    if method == "euler":
        k1 = f(x, t)
        return x + h * k1, [(t, k1)]
    if method == "midpoint":
        k1 = f(x, t)
        tm = t + h / 2
        k2 = f(x + (h / 2) * k1, tm)
        return x + h * k2, [(t, k1), (tm, k2)]
    if method == "heun":
        k1 = f(x, t)
        k2 = f(x + h * k1, t + h)
        return x + (h / 2) * (k1 + k2), [(t, k1), (t + h, k2)]
    # classical RK4
    tm = t + h / 2
    k1 = f(x, t)
    k2 = f(x + (h / 2) * k1, tm)
    k3 = f(x + (h / 2) * k2, tm)
    k4 = f(x + h * k3, t + h)
    return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), [(t, k1), (tm, k2), (tm, k3), (t + h, k4)]


def _saved_indices(n_nodes: int, save_every: int) -> list[int]:
    """Grid indices 0, save_every, 2·save_every, … plus the last one."""
    idx = list(range(0, n_nodes, save_every))
    if idx[-1] != n_nodes - 1:
        idx.append(n_nodes - 1)
    return idx


def integrate(field: Field, x0: Tensor, method: str = "euler", steps: int = 100, grid: Tensor | None = None,
              t0: float = 0.0, t1: float = 1.0, rtol: float = 1e-7, atol: float = 1e-9,
              return_trajectory: bool = False, save_every: int = 1, grad: bool = False,
              options: dict[str, Any] | None = None) -> ODESolution:
    """Integrate dx/dt = field(x, t) from x(t0) = x0 to t1 (see the module docstring for the methods).

    Args:
        field: ``field(x, t)`` with x: (B, *shape), t: (B,) → (B, *shape); an ``nn.Module`` or callable, used
            in the mode it is in (call ``model.eval()`` first for a model with dropout: :func:`flowvar.train.train`
            leaves it in training mode, and a sampler that switched modes would hide it).
        x0: (B, *shape) floating-point start states, on the device the integration runs on. The time grid and t are
            in x0's dtype (the grid in float32 for half precision, below); the state x_{k+1} = x_k + h·v has torch's
            promoted dtype, which is x0's when the field returns x0's dtype (the learned fields refuse another) but
            float64 for a float64 closed-form field given float32 x0
            (:class:`~flowvar.models.GaussianParametricField` casts x to its own dtype): pass x0 in the field's dtype
            to integrate in one precision. For a float16/bfloat16 x0 the times and step sizes are float32 (rounded
            to x0's dtype, the nodes of a fine grid would merge into steps of h = 0) and only t is in x0's dtype: on
            [0, 1] an odd step count then skips ½ only below 257 steps (bfloat16) or 2049 (float16).
        method: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` or a torchdiffeq method (``"dopri5"``…).
        steps: number of intervals of the uniform grid on [t0, t1]; ignored when ``grid`` is given. For
            adaptive methods it only sets the times at which the trajectory is saved.
        grid: an explicit strictly increasing 1-D tensor of times (its ends replace t0 and t1).
        rtol, atol: tolerances of adaptive methods. torchdiffeq's error control takes one norm over the whole
            batch, so the step sizes, and with them each row's end state (at the tolerance level), depend on the
            other rows integrated with it.
        return_trajectory: also return the states at every ``save_every``-th grid node (and the last).
        save_every: the stride of saved grid nodes.
        grad: keep the autograd graph (default: integrate under ``torch.no_grad()``).
        options: extra keyword options for a torchdiffeq solver (e.g. ``{"max_num_steps": 10_000}``); refused for
            the fixed-grid methods implemented here (``FIXED_METHODS``), which take none.

    Raises:
        ConfigError: an unknown method or invalid steps/grid/tolerances/save_every/options; a float16/bfloat16 x0
            with an adaptive torchdiffeq method; a first call of the field that fails inside a user's model (a
            forward(t, x), parameters of another dtype or device).
        DataError: non-finite entries in ``x0``.
        ShapeError: a field output whose shape differs from ``x``'s.
        SolverError: the field produced NaN/Inf, or raised a SolverError itself (a closed-form field at a singular
            time); the message names the time and a grid avoiding it.
    """
    if not isinstance(method, str) or method not in valid_methods():
        raise ConfigError(f"unknown ODE method {method!r}; choose one of {valid_methods()}")
    if not isinstance(x0, Tensor) or not torch.is_floating_point(x0) or x0.ndim < 1 or x0.shape[0] == 0:
        desc = f"shape {tuple(x0.shape)}, dtype {x0.dtype}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ShapeError(f"x0 must be a floating-point tensor (B, *shape) with B >= 1, got {desc}")
    if x0.ndim == 1:  # B scalar points or one point of B coordinates? The field's shape error would blame the field
        raise ShapeError(f"x0 must be (B, d) (or (B, *shape)), got a 1-D tensor of shape {tuple(x0.shape)}; reshape "
                         f"one point to (1, {x0.shape[0]}) with x0[None] or {x0.shape[0]} scalar points to "
                         f"({x0.shape[0]}, 1) with x0[:, None]")
    check_finite("x0", x0)
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"options must be a dict of torchdiffeq solver options or None, got {describe(options)}")
    if options and method in FIXED_METHODS:
        # these methods are implemented here and take no options: accepting them would ignore them silently
        raise ConfigError(f"options={list(options)} apply to torchdiffeq solvers only; method={method!r} is one of "
                          f"flowvar's own fixed-grid methods {list(FIXED_METHODS)}, which take none (set the grid "
                          f"with steps or grid); use a torchdiffeq method such as 'dopri5' to pass options")
    if x0.dtype in HALF_DTYPES and method not in FIXED_METHODS and not _torchdiffeq_solvers()[method]:
        # torchdiffeq's error control in half precision: step sizes underflow and the solve fails with a misleading
        # "singular at t = nan"
        raise ConfigError(f"adaptive solvers (method={method!r}) need x0 in float32 or float64, got {x0.dtype}: "
                          f"their step-size control does not work in half precision; pass x0.float() (and a float32 "
                          f"model), or use a fixed-grid method such as 'euler' or 'rk4'")
    save_every = check_positive_int("save_every", save_every)
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    work = _working_dtype(x0.dtype)  # the times' and step sizes' dtype; the field gets t in x0's
    if grid is None:
        steps = check_positive_int("steps", steps)
        t0, t1 = _check_interval(t0, t1)
        times = time_grid(steps, t0, t1, dtype=work, device=x0.device)
        if not bool((times[1:] > times[:-1]).all()):
            raise ConfigError(f"steps={steps} on [{t0:.9g}, {t1:.9g}] is finer than {work} resolves: its nodes "
                              f"repeat, and those steps would take h = 0; use fewer steps or x0 in float64")
        uniform = True
    else:
        times = _check_grid(grid).to(dtype=work, device=x0.device)
        if not bool((times[1:] > times[:-1]).all()):
            raise ConfigError(f"grid is not strictly increasing in {work} (the dtype of the times for x0 in "
                              f"{x0.dtype}); its times are closer together than that precision resolves")
        steps, t0, t1, uniform = times.numel() - 1, float(times[0]), float(times[-1]), False
    f = _CountingField(field, x0)
    with torch.set_grad_enabled(grad):
        if method in FIXED_METHODS:
            return _integrate_fixed(f, x0, method, times, uniform, return_trajectory, save_every)
        return _integrate_torchdiffeq(f, x0, method, times, uniform, rtol, atol, return_trajectory, save_every,
                                      options)


def integrate_chunked(field: Field, x0: Tensor, method: str = "euler", steps: int = 100, *, rows: int = 1024,
                      device: torch.device | str | None = None) -> Tensor:
    """End states x(1) of :func:`integrate` from ``x0`` (n, *shape), ``rows`` sources at a time: (n, *shape).

    Integrating consecutive blocks of ``rows`` rows and concatenating their end states bounds the memory of one
    call: the (rows × N) posterior weights of an :class:`~flowvar.models.EmpiricalField`, the activations of a UNet.
    What equals one call on all n: with a fixed-grid method every row takes the same steps whatever its block, so
    the result is bit-identical when the field computes each row on its own (elementwise or per-row operations);
    for a field built on batched kernels (float32 matrix products, whose BLAS kernels and summation order change
    with the number of rows) it is equal up to rounding (~1e-7 relative in float32). Adaptive methods are refused:
    they choose their steps by one error norm over the whole block, so each row's answer would depend on ``rows``
    at the tolerance level (call :func:`integrate` on the whole batch for them).

    ``device``: each block is moved there before integrating (the results stay there); None keeps ``x0``'s device.
    ``method`` (a fixed-grid method: :data:`FIXED_METHODS` or a fixed-grid torchdiffeq method), ``steps``: as in
    :func:`integrate` (on [0, 1]).

    Raises:
        ConfigError: an adaptive ``method``, or ``rows`` not a positive integer; otherwise as :func:`integrate`.
    """
    rows = check_positive_int("rows", rows)
    if isinstance(method, str) and method not in FIXED_METHODS and _torchdiffeq_solvers().get(method) is False:
        raise ConfigError(f"integrate_chunked takes fixed-grid methods only, got the adaptive method={method!r}: its "
                          f"step sizes are chosen by one error norm over each block of rows={rows}, so every row's "
                          f"end state would depend on the chunk size; call integrate(field, x0, method={method!r}) "
                          f"on the whole batch, or use a fixed-grid method such as 'rk4'")
    if not isinstance(x0, Tensor) or x0.ndim < 1 or x0.shape[0] == 0:
        return integrate(field, x0, method=method, steps=steps).x1  # not a batch: integrate's own one-line error
    return torch.cat([integrate(field, b if device is None else b.to(device), method=method, steps=steps).x1
                      for b in x0.split(rows)])

def _integrate_fixed(f: _CountingField, x0: Tensor, method: str, times: Tensor, uniform: bool,
                     return_trajectory: bool, save_every: int) -> ODESolution:
    steps = times.numel() - 1
    keep = set(_saved_indices(steps + 1, save_every)) if return_trajectory else set()
    saved: list[Tensor] = [x0] if 0 in keep else []
    x = x0
    t0, t1 = float(times[0]), float(times[-1])
    for k in range(steps):
        t, h = times[k], times[k + 1] - times[k]
        try:
            x_new, stages = _fixed_step(f, method, x, t, h)
        except SolverError as err:  # the field raised at a singular time: add which grid avoids it
            raise SolverError(_singular_message(method, f.last_t, f"step {k + 1} of {steps}", uniform, steps, t0, t1,
                                                f.dtype, raised=err)) from None
        if not bool(torch.isfinite(x_new).all()):  # one reduction per step; stages are inspected only on failure
            for ts, value in stages:
                if not bool(torch.isfinite(value).all()):  # named by the time the field was handed
                    raise SolverError(_singular_message(method, float(ts.to(f.dtype)), f"step {k + 1} of {steps}",
                                                        uniform, steps, t0, t1, f.dtype))
            raise SolverError(f"the state overflowed to NaN/Inf during step {k + 1} of {steps} "
                              f"(t = {float(t):.6g} to {float(times[k + 1]):.6g}) with method={method!r} although "
                              f"every field value was finite; use more steps or a higher-precision dtype "
                              f"(x0.double())")
        x = x_new
        if k + 1 in keep:
            saved.append(x)
    idx = sorted(keep)
    return ODESolution(x1=x, times=times[idx] if return_trajectory else None,
                       trajectory=torch.stack(saved) if return_trajectory else None,
                       nfe=f.nfe, method=method, steps=steps)


def _integrate_torchdiffeq(f: _CountingField, x0: Tensor, method: str, times: Tensor, uniform: bool,
                           rtol: float, atol: float, return_trajectory: bool, save_every: int,
                           options: dict[str, Any] | None) -> ODESolution:
    from torchdiffeq import odeint

    fixed = _torchdiffeq_solvers()[method]
    steps = times.numel() - 1
    t0, t1 = float(times[0]), float(times[-1])
    idx = _saved_indices(steps + 1, save_every) if return_trajectory else [0, steps]
    # Fixed-grid torchdiffeq solvers step along the times they are given, so give them the whole grid.
    query = times if fixed else times[idx]
    solver_options = dict(options or {})  # the caller's dict is left as it was; its messages name only its own keys
    if not fixed:
        # an adaptive step would otherwise cross t1 and interpolate back: the field is then called at t up to 1.59
        # (a learned model extrapolating in time) and dopri8/bosh3 missed their rtol by 1e3-1e6 (dopri8 at 1e-9:
        # 1.1e-6); stepping onto t1 keeps every evaluation in [t0, t1] at the same cost. A user's step_t is kept.
        solver_options.setdefault("step_t", times[-1:])
    elif method == "explicit_adams":
        # torchdiffeq's default max_order=12 Adams-Bashforth is unstable on ordinary grids: its error grew from 8e-3
        # at 16 steps to 1e2 at 128 on a linear field; order 4 converges (5e-7 at 128)
        solver_options.setdefault("max_order", 4)

    def rhs(t: Tensor, x: Tensor) -> Tensor:
        try:
            v = f(x, t)
        except SolverError as err:  # the field raised at a singular time: add which grid avoids it
            raise SolverError(_singular_message(method, f.last_t, f"evaluation {f.nfe + 1}", uniform, steps, t0, t1,
                                                f.dtype, raised=err)) from None
        if not bool(torch.isfinite(v).all()):
            raise SolverError(_singular_message(method, float(t), f"evaluation {f.nfe}", uniform, steps, t0, t1,
                                                f.dtype))
        return v

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*Unexpected arguments.*")
            out = odeint(rhs, x0, query, rtol=rtol, atol=atol, method=method,
                         options=solver_options or None)
    except UserWarning as err:  # torchdiffeq only warns about misspelt options; we refuse them
        raise ConfigError(f"torchdiffeq rejected options={options!r} for method {method!r}: {err}") from None
    except AssertionError as err:  # torchdiffeq signals step-size underflow with bare asserts
        if options and "max_num_steps" in options and "max_num_steps" in str(err):
            # the user's own step limit was reached: not evidence of a singular field
            raise SolverError(f"{method} reached the step limit options['max_num_steps']={options['max_num_steps']} "
                              f"that was passed before reaching t = {t1:.6g} ({err}); raise max_num_steps, loosen "
                              f"rtol/atol, or use a fixed-grid method") from None
        raise SolverError(f"{method} could not proceed ({err}); the field is probably singular or very stiff "
                          f"on [{t0:.6g}, {t1:.6g}]; try a fixed-grid method on a grid that avoids the singular "
                          f"time, or looser rtol/atol") from None
    except (TypeError, ValueError) as err:
        if options:
            raise ConfigError(f"torchdiffeq rejected options={options!r} for method {method!r}: {err}") from None
        raise
    if fixed:
        out = out[idx]
    x1 = out[-1]
    if not bool(torch.isfinite(x1).all()):
        raise SolverError(f"{method} returned non-finite end states although every field value was finite; "
                          f"tighten rtol/atol or use a higher-precision dtype (x0.double())")
    return ODESolution(x1=x1, times=times[idx] if return_trajectory else None,
                       trajectory=out if return_trajectory else None, nfe=f.nfe, method=method,
                       steps=steps if fixed else None)


__all__ = ["FIXED_METHODS", "HALF_DTYPES", "ODESolution", "integrate", "integrate_chunked", "time_grid",
           "valid_methods"]
