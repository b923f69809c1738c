"""`flowvar assemble` of a sweep with a seed axis names the rerun that can be assembled (review E, 5): the sweep
ran `--set n_seeds=1 --seeds 0,1`, as the docs suggest for one replicate per point, and the refusal named no fix."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flowvar.errors import ConfigError
from flowvar.sweep.assemble import _joined_config


def test_assembling_a_sweep_with_a_seed_axis_names_the_rerun_that_can_be_assembled() -> None:
    """The review's s4 (memorisation_phase, --set n_seeds=1 --seeds 0,1): the refusal named no fix."""
    axes = [{"key": "dims", "values": [[2], [4]]}, {"key": "seed", "values": [0, 1]}]
    parts = [SimpleNamespace(experiment="memorisation_phase", config={"dims": [2], "seed": 0, "n_seeds": 1})]
    with pytest.raises(ConfigError) as info:
        _joined_config(axes, parts)
    assert str(info.value) == ("the sweep's axis seed makes each seed ([0, 1]) a point of its own; an assembled run "
                               "needs the seeds inside every point: rerun the sweep without --seeds and with --set "
                               "n_seeds=2 (seeds 0 … 1 at each point), then assemble that")
    axes[1]["values"] = [4, 6]
    parts[0].config["n_seeds"] = 2  # seeds 4, 5 and 6, 7
    with pytest.raises(ConfigError, match=r"--set n_seeds=4 --set seed=4 \(seeds 4 … 7 at each point\)"):
        _joined_config(axes, parts)
    with pytest.raises(ConfigError, match="fig5 runs one seed per run: assemble a sweep without --seeds"):
        _joined_config(axes, [SimpleNamespace(experiment="fig5", config={"dims": [2], "seed": 0})])
