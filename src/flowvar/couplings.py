"""Couplings: which target x1 goes with which source x0.

Every coupling returns :class:`Pairs`. Variants override only how ``x1`` is attached to ``x0``:

* :class:`IndependentCoupling` — x0 ~ π0, x1 ~ π1 independently (standard CFM).
* :class:`ExactOTCoupling` — independent draws re-paired by an exact minibatch assignment on squared
  L2 cost (a bijection; never resampled with replacement from the plan; solver picked by size, see
  :func:`flowvar.ot.exact_ot_permutation` and docs/exact_ot.md).
* :class:`MapCoupling` — a deterministic map x1 = T(x0); :class:`RotatedOTCoupling` is
  T(x0) = T_OT(R x0) for the Gaussian problem (PAPER.md §1.1).
* :class:`FixedPairs` — a finite dataset of N pairs (optionally re-paired by a derangement: the
  adversarial / shuffled coupling); minibatches draw pair indices.
* :class:`ReflowCoupling` — x1 = ODE-integrate a trained model (in eval mode) from x0 (1-ReFlow pairs).

Dtypes: :class:`Pairs` refuses x0 and x1 of different dtypes, and so do the couplings that take both sides as given
(:class:`FixedPairs`; :class:`MapCoupling`, whose map must return x0's dtype). The couplings that draw each side
from its own distribution (:class:`IndependentCoupling`, :class:`ExactOTCoupling`) convert the targets to the
source's dtype instead: the source decides the precision of the pairs, so a float32 ``StandardNormal`` with a
float64 target gives float32 pairs (build the source in float64 for float64 pairs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flowvar.distributions import Distribution, StandardNormal
from flowvar.errors import (
    ConfigError,
    DataError,
    ShapeError,
    check_finite,
    check_floating,
    check_generator,
    check_positive_int,
    check_same_device,
    check_same_dtype,
    describe,
    tensor_input,
)
from flowvar.gaussian import GaussianProblem, check_angle, rotation_matrix
from flowvar.ot.exact import OTSolver, check_solver, exact_ot_permutation


@dataclass(frozen=True)
class Pairs:
    """A batch of coupled points.

    ``x0``, ``x1``: (B, *shape), floating point, of one dtype, on one device (numpy arrays are converted; anything
    else is a :class:`DataError` naming the fix: integer data would fail deep inside the interpolant or the time
    sampler, mixed float32/float64 pairs inside ``torch.lerp``, and pairs split across devices there too);
    ``index``: (B,) long, the training-pair index of each row when the pairs come from a finite set, else None.
    Finiteness is not checked (a coupling builds Pairs for every batch; :class:`FixedPairs` checks its data once,
    and the variance estimators check each path they measure).
    """

    x0: Tensor
    x1: Tensor
    index: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x0, Tensor) or not isinstance(self.x1, Tensor):  # frozen: set through object
            object.__setattr__(self, "x0", tensor_input("x0", self.x0))
            object.__setattr__(self, "x1", tensor_input("x1", self.x1))
        if self.x0.shape != self.x1.shape:
            raise ShapeError(f"paired x0 and x1 must have the same shape, got {tuple(self.x0.shape)} and "
                             f"{tuple(self.x1.shape)}")
        if self.x0.ndim < 2 or self.x0.shape[0] == 0:
            raise ShapeError(f"pairs need a batch dimension and at least one row, got x0 of shape "
                             f"{tuple(self.x0.shape)}; reshape a single point to (1, d)")
        if self.index is not None and self.index.shape != (self.x0.shape[0],):
            raise ShapeError(f"index must have shape ({self.x0.shape[0]},), got {tuple(self.index.shape)}")
        check_floating("x0", self.x0)
        check_floating("x1", self.x1)
        check_same_dtype("x0", self.x0, "x1", self.x1)
        check_same_device("x0", self.x0, "x1", self.x1)

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __repr__(self) -> str:
        # the dataclass repr printed every entry of both tensors (and of a 10⁵-row index)
        index = "None" if self.index is None else f"({len(self.index)},)"
        return (f"Pairs(B={len(self)}, shape={tuple(self.x0.shape[1:])}, dtype={self.x0.dtype}, "
                f"device={self.x0.device}, index={index})")


class Coupling(ABC):
    """Draws paired batches. Subclasses implement :meth:`sample`.

    ``pairs_within_batch``: True for a coupling whose pairs depend on the whole batch drawn together (minibatch OT:
    the batch size is part of the coupling), so that a consumer drawing in chunks
    (:func:`flowvar.variance.estimate_variance`) keeps every chunk the same size; False (default) when each pair is
    drawn on its own.
    """

    pairs_within_batch: bool = False

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        """Return ``batch_size`` pairs."""


class IndependentCoupling(Coupling):
    """π0 ⊗ π1: x0 and x1 drawn independently; x1 is converted to x0's dtype (the source decides the precision)."""

    def __init__(self, source: Distribution, target: Distribution) -> None:
        if source.event_shape != target.event_shape:
            raise ShapeError(f"source and target must have the same event shape, got {source.event_shape} "
                             f"and {target.event_shape}")
        self.source, self.target = source, target

    def draw(self, batch_size: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        batch_size = check_positive_int("batch_size", batch_size)
        check_generator(generator)
        x0 = self.source.sample(batch_size, generator)
        x1 = self.target.sample(batch_size, generator)
        if x1.dtype != x0.dtype:
            x1 = x1.to(x0.dtype)
        return x0, x1

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        return Pairs(*self.draw(batch_size, generator))


class ExactOTCoupling(IndependentCoupling):
    """Minibatch exact OT: draw B sources and B targets, pair them by the optimal assignment (a bijection). As in
    :class:`IndependentCoupling`, the targets are converted to the source's dtype.

    ``solver``: ``"auto"`` (default), ``"lsa"`` (scipy's linear_sum_assignment), ``"emd"`` (POT's network simplex)
    or ``"sparse"`` (the certified sparse solve); ``"auto"`` takes lsa below 256 points, emd below 1024 and sparse
    from there on; always an exact optimum (:func:`flowvar.ot.exact_ot_permutation`).

    The batch size is part of this coupling (the larger B, the closer the pairs come to the OT plan), hence
    ``pairs_within_batch = True``.
    """

    pairs_within_batch = True

    def __init__(self, source: Distribution, target: Distribution, solver: OTSolver = "auto"):
        super().__init__(source, target)
        self.solver = check_solver(solver)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        x0, x1 = self.draw(batch_size, generator)
        return Pairs(x0, x1[exact_ot_permutation(x0, x1, self.solver)])


class MapCoupling(Coupling):
    """Deterministic coupling x1 = T(x0), x0 ~ source. ``map_fn``: (B, *shape) → (B, *shape)."""

    def __init__(self, source: Distribution, map_fn: Callable[[Tensor], Tensor]) -> None:
        self.source, self.map_fn = source, map_fn

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        x0 = self.source.sample(check_positive_int("batch_size", batch_size), check_generator(generator))
        return Pairs(x0, self.map_fn(x0))


class RotatedOTCoupling(MapCoupling):
    """T_R(x0) = T_OT(R x0) = μ + M^{1/2} R x0 for x0 ~ N(0, I_d) (R = I: the OT coupling).

    Pass ``angle_deg`` (and ``plane`` for d > 2) or an explicit orthogonal ``rotation`` matrix, not both (a
    :class:`ConfigError`: the angle would be ignored, so a sweep over ``angle_deg`` with a fixed ``rotation`` gave the
    same coupling at every angle); neither is R = I, the OT coupling. In 1-D the only rotations are R = ±1:
    ``angle_deg`` 0 gives R = 1 (the OT map, x1 = μ + M^{1/2} x0) and 180 gives R = −1 (the anti-monotone map
    x1 = μ − M^{1/2} x0), modulo 360; any other angle is a :class:`ConfigError`, and ``plane`` is ignored.

    ``rotation`` may be any orthogonal matrix, reflections (det R = −1) included: T_R is a valid coupling of the
    two Gaussians for every orthogonal R, and :func:`flowvar.gaussian.counterexample_problem` passes R = −I, the
    point reflection in odd d. ``angle_deg`` always builds a proper rotation (det R = +1).
    """

    def __init__(self, problem: GaussianProblem, angle_deg: float | None = None, plane: tuple[int, int] = (0, 1),
                 rotation: Tensor | None = None, dtype: torch.dtype = torch.float64) -> None:
        if rotation is not None and angle_deg is not None:
            raise ConfigError(f"RotatedOTCoupling: angle_deg={describe(angle_deg)} would be ignored, because "
                              f"rotation= gives R itself; pass one of them (rotation=rotation_matrix(angle_deg, d, "
                              f"plane) builds R from the angle)")
        if rotation is None:
            angle_deg = 0.0 if angle_deg is None else angle_deg
            rotation = rotation_matrix(angle_deg, problem.dim, plane) if problem.dim >= 2 else _rotation_1d(angle_deg)
        self.problem = problem
        self.rotation = torch.as_tensor(rotation, dtype=torch.float64)
        problem.rotated_map_matrix(self.rotation)  # validates shape and orthogonality
        super().__init__(StandardNormal(problem.dim, dtype), lambda x0: problem.ot_map(x0, self.rotation))


def _rotation_1d(angle_deg: float) -> Tensor:
    """The 1-D "rotation" by ``angle_deg``: [[1]] at 0°, [[−1]] at 180° (modulo 360), else a :class:`ConfigError`
    (a rotation of a line is ±1; any other angle used to give R = 1, the OT coupling, silently)."""
    angle = check_angle(angle_deg) % 360.0
    if angle not in (0.0, 180.0):
        raise ConfigError(f"a rotation in 1-D is ±1, so angle_deg must be 0 or 180 (modulo 360), got {angle_deg}; "
                          f"pass angle_deg=0 or 180, or rotation=torch.tensor([[-1.0]])")
    return torch.tensor([[1.0 if angle == 0.0 else -1.0]], dtype=torch.float64)


def derangement(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random permutation of range(n) with no fixed point (rejection sampling; n >= 2).

    Acceptance probability → 1/e, so the expected number of draws is about 2.7.
    """
    n = check_positive_int("n", n)
    if n < 2:
        raise ConfigError(f"a derangement needs n >= 2 (one element cannot be moved), got n={n}; pass n >= 2")
    check_generator(generator)
    ar = torch.arange(n)
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == ar).any()):
            return perm


class FixedPairs(Coupling):
    """A finite training set of N pairs (x0_i, x1_i); minibatches draw indices uniformly with replacement.

    ``shuffle=True`` re-pairs the targets with a derangement (the adversarial coupling of Table 2): each
    x0_i gets x1_{π(i)} with π(i) ≠ i (so it needs N >= 2). ``original_x1`` keeps the partners before shuffling.
    ``x0`` and ``x1`` must have one dtype and lie on one device, with values (not on the meta device).
    """

    def __init__(self, x0: Tensor, x1: Tensor, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> None:
        x0, x1 = tensor_input("x0", x0), tensor_input("x1", x1)
        if x0.ndim < 2:
            raise ShapeError(f"FixedPairs needs x0 and x1 of shape (N, *shape), got x0 of shape {tuple(x0.shape)}; "
                             f"reshape N scalars to (N, 1)")
        if x0.shape[0] == 0:
            raise DataError("FixedPairs got an empty pair set; pass at least one pair")
        if x0.shape != x1.shape:
            raise ShapeError(f"FixedPairs needs x0 and x1 of the same shape, got {tuple(x0.shape)} and "
                             f"{tuple(x1.shape)} (one target per source)")
        check_floating("x0", x0)
        check_floating("x1", x1)
        check_same_dtype("x0", x0, "x1", x1)
        check_same_device("x0", x0, "x1", x1)
        if x0.device.type == "meta":  # else torch's "Tensor.item() cannot be called on meta tensors" in check_finite
            raise DataError("FixedPairs needs pairs with values, got tensors on the meta device (shapes without "
                            "data); pass them on the CPU or a GPU")
        check_finite("x0", x0)
        check_finite("x1", x1)
        if shuffle and x0.shape[0] < 2:
            raise ConfigError(f"FixedPairs(shuffle=True) re-pairs the targets by a derangement, which needs at least "
                              f"2 pairs, got {x0.shape[0]}; pass at least 2 pairs, or shuffle=False")
        self.original_x1 = x1
        self.permutation = derangement(x0.shape[0], generator) if shuffle else torch.arange(x0.shape[0])
        self.x0, self.x1 = x0, x1[self.permutation]

    def __len__(self) -> int:
        return self.x0.shape[0]

    def all(self) -> Pairs:
        """Every training pair, in order, with ``index = arange(N)``."""
        return Pairs(self.x0, self.x1, torch.arange(len(self)))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        idx = torch.randint(0, len(self), (check_positive_int("batch_size", batch_size),),
                            generator=check_generator(generator))
        return Pairs(self.x0[idx], self.x1[idx], idx)


class ReflowCoupling(Coupling):
    """1-ReFlow pairs: x0 ~ source, x1 = Φ_model(x0), the endpoint of the learned ODE.

    ``solve`` maps a batch of sources to endpoints (defaults to :func:`flowvar.sampling.integrate` with
    the given ``method``/``steps`` — "euler" and 100 when not given — validated here: an unknown method or a step
    count that is not a positive integer is a :class:`ConfigError` when the coupling is built). ``method`` and
    ``steps`` describe the default solve only, so passing either together with ``solve`` is a :class:`ConfigError`
    (they would be ignored: the pairs would come from whatever ``solve`` integrates). Use :meth:`materialise` to
    freeze N pairs into :class:`FixedPairs`.

    **The model is run in eval mode.** Φ is the flow of the deterministic field: :meth:`sample` puts the model in
    eval mode for the solve and restores every submodule's mode afterwards (also after an error). A model left in
    training mode (:func:`flowvar.train.train` leaves it so) would otherwise apply dropout masks drawn from the
    global RNG — not from the generator passed to :meth:`sample`, so the same generator gave other pairs — and a
    batch norm would use and update batch statistics. With the model in eval mode the pairs depend only on the
    generator (and the model's weights).
    """

    def __init__(self, model: torch.nn.Module, source: Distribution, method: str | None = None,
                 steps: int | None = None, solve: Callable[[Tensor], Tensor] | None = None) -> None:
        from flowvar.sampling import integrate, valid_methods  # (sampling imports torchdiffeq: loaded when needed)

        if solve is not None and (method is not None or steps is not None):
            given = ", ".join(f"{k}={v!r}" for k, v in (("method", method), ("steps", steps)) if v is not None)
            raise ConfigError(f"ReflowCoupling: {given} would be ignored, because solve= integrates the pairs itself; "
                              f"pass the method and steps to your solve function, or drop solve= to integrate with "
                              f"flowvar.sampling.integrate(method, steps)")
        method = "euler" if method is None else method
        steps = 100 if steps is None else steps
        if not isinstance(method, str) or method not in valid_methods():
            raise ConfigError(f"ReflowCoupling: unknown ODE method {method!r}; choose one of {valid_methods()}")
        try:
            steps = check_positive_int("steps", steps)
        except ConfigError as err:
            raise ConfigError(f"ReflowCoupling: {err}") from None
        self.model, self.source = model, source
        if solve is None:

            def solve(x0: Tensor) -> Tensor:
                return integrate(model, x0, method=method, steps=steps).x1

        self.solve = solve

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        x0 = self.source.sample(check_positive_int("batch_size", batch_size), check_generator(generator))
        return Pairs(x0, self._endpoints(x0))

    @torch.no_grad()
    def _endpoints(self, x0: Tensor) -> Tensor:
        """Φ_model(x0): ``solve`` with the model in eval mode (every submodule's mode restored afterwards, also after
        an error); non-finite endpoints are a :class:`DataError`."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            x1 = self.solve(x0).detach()
        finally:
            for module, training in modes:
                module.training = training
        check_finite("ReFlow endpoints", x1)
        return x1

    def materialise(self, n: int, generator: torch.Generator | None = None, chunk: int = 4096) -> FixedPairs:
        """Draw ``n`` ReFlow pairs once and return them as a fixed training set.

        All ``n`` sources are drawn first, by one ``source.sample(n, generator)``, and then integrated ``chunk`` rows
        at a time (``chunk`` bounds the solve's memory only). So the sources do not depend on ``chunk`` (drawing
        them chunk by chunk, as before, gave another training set for another chunk with the same generator); the
        endpoints depend on it only through the solve's batch: up to rounding (batched arithmetic may round
        differently at another batch size), and within the tolerance of an adaptive solver (``dopri5``), whose step
        sizes follow the error of the whole chunk.
        """
        n = check_positive_int("n", n)
        chunk = check_positive_int("chunk", chunk)
        x0 = self.source.sample(n, check_generator(generator))
        return FixedPairs(x0, torch.cat([self._endpoints(x0[s:s + chunk]) for s in range(0, n, chunk)]))


__all__ = ["Coupling", "ExactOTCoupling", "FixedPairs", "IndependentCoupling", "MapCoupling", "Pairs",
           "ReflowCoupling", "RotatedOTCoupling", "derangement"]
