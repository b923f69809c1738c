"""fig4's figure: the contrast row draws the OT field once where its angles' curves coincide in the numbers
(readerB 10: four overlapping 'OT field 30°…120°' curves were listed as four legend entries), and only there."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from flowvar.experiments.base import build_config, get_experiment
from flowvar.experiments.fig4 import _figure, curves_coincide, pooled_mean_std

RESULTS = Path(__file__).resolve().parents[1] / "results"
ANGLES = [30.0, 60.0, 90.0, 120.0]
SIGMAS = [0.1, 1.0, 3.0]


def rows(ot_means: dict[float, list[float]], *, form: str = "constant", sd: float = 1.0) -> dict[str, dict]:
    """Contrast rows: per angle and σ, the OT field's mean ``ot_means[σ][angle index]`` with sd ``sd`` over R, the
    pair-optimal field's 10 × larger (its curve is angle-dependent, as in the data)."""
    return {f"{a:g}deg/{form}/σ={s:g}": {"angle": a, "noise": form, "sigma": s, "a_mean": ot_means[s][i],
                                         "a_std": sd, "b_mean": 10.0 * (i + 1) * ot_means[s][i], "b_std": sd}
            for i, a in enumerate(ANGLES) for s in SIGMAS}


def test_pooled_mean_std_is_that_of_all_the_estimates_together() -> None:
    rng = np.random.default_rng(0)
    groups = [rng.normal(loc, 2.0, size=30) for loc in (5.0, 5.5, 4.8, 5.2)]
    mean, sd = pooled_mean_std([g.mean() for g in groups], [g.std(ddof=1) for g in groups], 30)
    everything = np.concatenate(groups)
    assert mean == pytest.approx(everything.mean(), rel=1e-12)
    assert sd == pytest.approx(everything.std(ddof=1), rel=1e-12)
    with pytest.raises(ValueError, match="R ≥ 2"):
        pooled_mean_std([1.0, 2.0], [0.1, 0.1], 1)


def test_curves_coincide_within_the_smallest_error_bar_and_not_beyond() -> None:
    near = {s: [100.0 * s, 100.0 * s + 0.9, 100.0 * s - 0.05, 100.0 * s + 0.5] for s in SIGMAS}  # spread 0.95 ≤ 1
    assert curves_coincide(list(rows(near).values()))
    off = {**near, 1.0: [100.0, 100.0, 100.0, 101.2]}  # one σ spreads 1.2 > sd 1: no longer one curve
    assert not curves_coincide(list(rows(off).values()))
    # an angle missing at one σ, or a single angle, is not "the same at every angle"
    assert not curves_coincide([p for k, p in rows(near).items() if k != "90deg/constant/σ=3"])
    assert not curves_coincide([p for p in rows(near).values() if p["angle"] == 30.0])


def _draw(on_ind: dict[str, dict]) -> Any:
    config = build_config(get_experiment("fig4"), quick=True, overrides={
        "angles": ",".join(f"{a:g}" for a in ANGLES), "noise_forms": "constant", "independent_contrast": "true",
        "repeats": "30"})
    # reading (i): the OT field on each angle's rotated pairs, angle-dependent (its curves stay one per angle)
    on_rot = rows({s: [10.0 * (i + 1) for i in range(4)] for s in SIGMAS})
    own = rows({s: [7.0] * 4 for s in SIGMAS})
    series = {f"{a:g}deg/constant": {"crossover_sigma": None} for a in ANGLES}
    drawn: dict[str, Any] = {}
    _figure(SimpleNamespace(figure=lambda name, fig: drawn.__setitem__(name, fig)), config, ANGLES, own, on_rot,
            on_ind, series)  # type: ignore[arg-type]
    return drawn["variance_vs_sigma"]


def _entries(ax: Any) -> dict[str, Any]:
    """Legend label → the errorbar container drawn under it."""
    return {c.get_label(): c for c in ax.containers}


def test_the_contrast_draws_coinciding_ot_curves_once_as_their_pooled_estimate() -> None:
    near = {s: [100.0 * s, 100.0 * s + 0.9, 100.0 * s - 0.05, 100.0 * s + 0.5] for s in SIGMAS}
    fig = _draw(rows(near))
    (own_ax,), (rot_ax,), (ind_ax,) = fig.axes[0:1], fig.axes[1:2], fig.axes[2:3]
    ind = _entries(ind_ax)
    assert [label for label in ind if label.startswith("OT field")] == ["OT field (any angle)"]
    assert [label for label in ind if label.startswith("pair-optimal")] == [f"pair-optimal {a:g}°" for a in ANGLES]
    line = ind["OT field (any angle)"].lines[0]
    assert list(line.get_xdata()) == SIGMAS
    assert list(line.get_ydata()) == pytest.approx([pooled_mean_std(near[s], [1.0] * 4, 30)[0] for s in SIGMAS])
    assert ind_ax.get_legend() is not None and "OT field (any angle)" in [
        t.get_text() for t in ind_ax.get_legend().get_texts()]
    # the other rows as before: reading (i) one OT curve per angle, reading (ii) the one shared OT estimate
    assert [label for label in _entries(rot_ax) if label.startswith("OT field")] == [
        f"OT field {a:g}°" for a in ANGLES]
    assert [label for label in _entries(own_ax) if label.startswith("OT field")] == ["OT field"]
    plt.close(fig)


def test_the_contrast_keeps_one_curve_per_angle_where_they_differ() -> None:
    apart = {s: [100.0 * s + 5.0 * i for i in range(4)] for s in SIGMAS}  # 15 apart at sd 1: four curves
    fig = _draw(rows(apart))
    assert [label for label in _entries(fig.axes[2]) if label.startswith("OT field")] == [
        f"OT field {a:g}°" for a in ANGLES]
    plt.close(fig)


@pytest.mark.parametrize("form", ["constant", "bridge"])
def test_published_contrast_ot_curves_coincide_and_reading_i_ones_do_not(form: str) -> None:
    """The decision on the published paper-scale numbers: the OT field's four contrast curves lie within each
    other's error bars at every σ (so the figure draws one), its reading (i) curves are far apart (so it draws
    four)."""
    path = RESULTS / "full" / "fig4" / "result.json"
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    metrics = json.loads(path.read_text())["metrics"]

    def noisy(arm: str) -> list[dict]:
        return [p for p in metrics[arm].values() if p["noise"] == form and p["sigma"] > 0]

    assert curves_coincide(noisy("contrast_independent_data"))
    assert not curves_coincide(noisy("reading_i_rotated_data"))
