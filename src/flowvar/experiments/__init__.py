"""The paper's experiments, one module each, registered by name (see :mod:`flowvar.experiments.base`)."""

from flowvar.experiments.base import (
    RunContext,
    build_config,
    experiments,
    get_experiment,
    register,
    run_experiment,
)

__all__ = ["RunContext", "build_config", "experiments", "get_experiment", "register", "run_experiment"]
