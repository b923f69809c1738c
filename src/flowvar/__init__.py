"""flowvar: flow matching, the closed-form Gaussian theory, gradient-variance diagnostics and memorisation
metrics, reproducing "Gradient Variance Reveals Failure Modes in Flow-Based Generative Models"
(Reu, Dromigny, Bronstein, Vargas; NeurIPS 2025, arXiv 2510.18118).

The public API, by concept (each name also lives in its module; see docs/architecture.md):

* couplings — ``Pairs``, ``Coupling``, ``IndependentCoupling``, ``ExactOTCoupling``, ``RotatedOTCoupling``,
  ``FixedPairs``, ``MapCoupling``, ``ReflowCoupling``; exact OT: ``exact_ot_permutation``;
* interpolants and the loss — ``Interpolant``, ``PathSample``, ``ConstantNoise``, ``BrownianBridgeNoise``,
  ``UniformTime``, ``CFMLoss``;
* models (every field is an ``nn.Module`` called as ``model(x, t)``) — ``MLPField``, ``UNetField``,
  ``GaussianParametricField``, ``EmpiricalField``, ``MemorisingField``, ``CounterexampleField``;
* the Gaussian theory — ``GaussianProblem``, ``gaussian_ot_matrix``, ``singular_times``;
* sampling — ``integrate``;
* gradient variance — ``gradient_variance``, ``fast_gradient_variance``, ``estimate_variance``,
  ``variance_t_profile``, ``VarianceReport``, ``GradientVarianceMonitor``;
* metrics — ``mmd2``, ``pairing_accuracy``, ``nearest_neighbours``, ``nn_distance_ratio``, ``partner_distances``;
* training — ``TrainConfig``, ``train_cfm`` (``flowvar.train.train`` is the general loop);
* the audit of a user's model — ``AuditReport`` (``flowvar.audit.audit`` runs one).

``train`` and ``audit`` are not root names: they are also the names of the submodules ``flowvar.train`` and
``flowvar.audit``, which Python binds on the package once imported.
* errors — ``FlowvarError``, ``ConfigError``, ``DataError``, ``ShapeError``, ``SolverError``, ``TrainingError``.

Names are imported on first use (PEP 562), so ``import flowvar`` stays cheap and the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from flowvar._version import __version__

_PUBLIC: dict[str, str] = {
    **dict.fromkeys(["Pairs", "Coupling", "IndependentCoupling", "ExactOTCoupling", "RotatedOTCoupling",
                     "FixedPairs", "MapCoupling", "ReflowCoupling"], "flowvar.couplings"),
    "exact_ot_permutation": "flowvar.ot",
    **dict.fromkeys(["Interpolant", "PathSample", "ConstantNoise", "BrownianBridgeNoise", "UniformTime"],
                    "flowvar.interpolants"),
    "CFMLoss": "flowvar.loss",
    **dict.fromkeys(["MLPField", "UNetField", "GaussianParametricField", "EmpiricalField", "MemorisingField",
                     "CounterexampleField"], "flowvar.models"),
    **dict.fromkeys(["GaussianProblem", "gaussian_ot_matrix", "singular_times"], "flowvar.gaussian"),
    "integrate": "flowvar.sampling",
    **dict.fromkeys(["gradient_variance", "fast_gradient_variance", "estimate_variance", "variance_t_profile",
                     "VarianceReport", "GradientVarianceMonitor"], "flowvar.variance"),
    **dict.fromkeys(["mmd2", "pairing_accuracy", "nearest_neighbours", "nn_distance_ratio", "partner_distances"],
                    "flowvar.metrics"),
    **dict.fromkeys(["TrainConfig", "train_cfm"], "flowvar.train"),
    "AuditReport": "flowvar.audit",
    **dict.fromkeys(["FlowvarError", "ConfigError", "DataError", "ShapeError", "SolverError", "TrainingError"],
                    "flowvar.errors"),
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'flowvar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = ["AuditReport", "BrownianBridgeNoise", "CFMLoss", "ConfigError", "ConstantNoise", "CounterexampleField",
           "Coupling", "DataError", "EmpiricalField", "ExactOTCoupling", "FixedPairs", "FlowvarError",
           "GaussianParametricField", "GaussianProblem", "GradientVarianceMonitor", "IndependentCoupling",
           "Interpolant", "MLPField", "MapCoupling", "MemorisingField", "Pairs", "PathSample", "ReflowCoupling",
           "RotatedOTCoupling", "ShapeError", "SolverError", "TrainConfig", "TrainingError", "UNetField",
           "UniformTime", "VarianceReport", "__version__", "estimate_variance", "exact_ot_permutation",
           "fast_gradient_variance", "gaussian_ot_matrix", "gradient_variance", "integrate", "mmd2",
           "nearest_neighbours", "nn_distance_ratio", "pairing_accuracy", "partner_distances", "singular_times",
           "train_cfm", "variance_t_profile"]
