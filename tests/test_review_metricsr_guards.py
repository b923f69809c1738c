"""flowvar.metrics after the metricsR review (session 35): the small guards of memorisation.py and rotation.py."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from flowvar import metrics
from flowvar.errors import ConfigError, DataError, ShapeError

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- 6. small guards


@pytest.mark.parametrize("accuracy", [2.0, -0.1, math.nan, math.inf])
def test_memorisation_score_refuses_accuracies_outside_0_1(accuracy: float) -> None:
    with pytest.raises(DataError, match=r"accuracy must be a number in \[0, 1\]"):
        metrics.memorisation_score(accuracy, 10)  # 2.0 gave 2.11
    assert metrics.memorisation_score(1.0, 10) == 1.0
    assert metrics.memorisation_score(0.1, 10) == 0.0
    assert metrics.memorisation_score(0.0, 10) == pytest.approx(-1 / 9)


def test_null_generalisation_refuses_no_pairs() -> None:
    with pytest.raises(DataError, match=r"no pairs of real samples.*null_repeats"):
        metrics.null_generalisation([], 1.0)  # gave floor 0.0: a zero margin for the σ rule


def test_reference_build_takes_lists_and_refuses_bad_targets(gen: torch.Generator) -> None:
    x1, held = randn(gen, 12, 3), randn(gen, 10, 3)
    ref = metrics.Reference.build(x1.tolist(), held, 1 / 3, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    # a list converts as torch.as_tensor does (torch's default dtype), as every metric's input
    assert isinstance(ref.x1_train, torch.Tensor) and torch.equal(ref.x1_train, torch.tensor(x1.tolist()))
    assert ref.nn_train.shape == ref.nn_heldout.shape == (10, 3)
    bad = x1.clone()
    bad[2, 1] = math.nan
    with pytest.raises(DataError, match="x1_train holds 1 non-finite"):
        metrics.Reference.build(bad, held, 1 / 3, torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match="x1_train is None"):
        metrics.Reference.build(None, held, 1 / 3, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"x1_train must have shape \(n, \*point_shape\)"):
        metrics.Reference.build(x1[:, 0], held, 1 / 3, torch.Generator().manual_seed(0))


def test_nn_train_over_heldout_warns_when_the_heldout_median_is_zero(gen: torch.Generator) -> None:
    # half the outputs sit on held-out items: the ratio is undefined; NaN is what the audit and the σ advisor read as
    # "inconclusive", and the warning names the likely cause
    heldout, train = randn(gen, 10, 2), randn(gen, 10, 2)
    with pytest.warns(UserWarning, match="held-out"):
        rho = metrics.nn_train_over_heldout(heldout, train, heldout)
    assert math.isnan(rho)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.nn_train_over_heldout(train, train, heldout) == 0.0


def test_rotation_pairing_status_reads_any_nan_as_partial() -> None:
    # a NaN measurement is no evidence either way ('partial', as test_seed_replicates relies on); a NaN beside a
    # fraction below one half fell through to 'fails'
    assert metrics.rotation_pairing_status(math.nan, math.nan, math.nan, math.nan) == "partial"
    assert metrics.rotation_pairing_status(0.3, math.nan, math.nan, math.nan) == "partial"
    assert metrics.rotation_pairing_status(0.3, 0.5, math.nan, 1.0) == "partial"
    assert metrics.rotation_pairing_status(0.95, math.nan, 0.1, 1.0) == "partial"
    assert metrics.rotation_pairing_status(0.3, 0.5, 0.9, 1.0) == "fails"
    assert metrics.rotation_pairing_status(0.95, 0.05, 0.1, 1.0) == "reproduces"


def test_counterexample_min_loss_takes_tensors_and_refuses_strings() -> None:
    got = metrics.counterexample_min_loss(torch.tensor(0.05))  # type: ignore[arg-type]
    assert type(got) is float and got == pytest.approx(metrics.counterexample_min_loss(0.05))
    with pytest.raises(ConfigError, match="sigma must be a number"):
        metrics.counterexample_min_loss("0.05")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sigma must be a number"):
        metrics.counterexample_min_loss(True)  # type: ignore[arg-type]
