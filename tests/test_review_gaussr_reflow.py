"""Review gaussR, findings 1–2: Lemma 2's closed-form ReFlow angle (``ideal_reflow_angle``) near 180°, at σ = 0,
near θ = 0 and on bad σ.

The reference is an independent high-accuracy quadrature of θ' = ∫₀¹ sin θ / (|A_t|² + σ²) dt, |A_t|² =
(1 − t + t cos θ)² + (t sin θ)², split at the spike t = ½: scipy's adaptive quad and mpmath's tanh-sinh at 40
digits. The former Simpson rule on a fixed 20,001-node grid missed the spike (width ~ √(cos²(θ/2) + σ²)) near 180°:
it gave 173.72° for 179.99° at σ = 0 and 15.258° (for 15.647°) at 179.999°, σ = 1e-4.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from scipy.integrate import quad

from flowvar.errors import ConfigError
from flowvar.experiments._reflow_stagnation import ideal_angles, ideal_reflow_angle, stagnation_band
from flowvar.experiments.lemma2 import min_testable_coupling_angle

mpmath = pytest.importorskip("mpmath")


def _integrand(theta_deg: float, sigma: float) -> Callable[[float], float]:
    r = math.radians(theta_deg)
    c, s = math.cos(r), math.sin(r)
    return lambda t: s / ((1 - t + t * c) ** 2 + (t * s) ** 2 + sigma**2)


def scipy_reference(theta_deg: float, sigma: float) -> float:
    value, _ = quad(_integrand(theta_deg, sigma), 0.0, 1.0, points=[0.5], epsabs=0.0, epsrel=1e-13, limit=1000)
    return math.degrees(value)


def mpmath_reference(theta_deg: float, sigma: float) -> float:
    with mpmath.workdps(40):
        r = mpmath.radians(mpmath.mpf(theta_deg))  # the float θ exactly, then 40 digits throughout
        c, s, s2 = mpmath.cos(r), mpmath.sin(r), mpmath.mpf(sigma) ** 2
        value = mpmath.quad(lambda t: s / ((1 - t + t * c) ** 2 + (t * s) ** 2 + s2), [0, mpmath.mpf(1) / 2, 1])
        return float(mpmath.degrees(value))


NEAR_180 = [179.99, 179.999, -179.999]


@pytest.mark.parametrize("theta", NEAR_180)
@pytest.mark.parametrize("sigma", [0.0, 1e-4])
def test_near_180_matches_high_accuracy_quadrature(theta: float, sigma: float) -> None:
    got = ideal_reflow_angle(theta, sigma)
    assert got == pytest.approx(mpmath_reference(theta, sigma), rel=1e-13)
    assert got == pytest.approx(scipy_reference(theta, sigma), rel=1e-9)  # quad's own error at the spike is ~1e-10


def test_near_180_known_values() -> None:
    """At σ = 0 the coupling stays (Lemma 2); σ = 1e-4 already turns 179.999° down to 15.6°, 179.99° to 118.3°."""
    assert ideal_reflow_angle(179.99, 0.0) == 179.99  # the former quadrature gave 173.72
    assert ideal_angles(179.99, 0.0, 3) == [179.99, 179.99, 179.99]
    assert ideal_reflow_angle(179.999, 1e-4) == pytest.approx(15.6474912416, abs=1e-9)  # formerly 15.258
    assert ideal_reflow_angle(179.99, 1e-4) == pytest.approx(118.341341372, abs=1e-8)


@pytest.mark.parametrize("theta", [-179.999, -120.0, -1e-9, 0.0, 1e-300, 1e-6, 30.0, 90.0, 120.0, 179.9, 179.999999])
def test_sigma_zero_returns_theta_exactly(theta: float) -> None:
    assert ideal_reflow_angle(theta, 0.0) == theta
    assert ideal_reflow_angle(theta, 0) == theta  # an int σ reads the same
    # the formula itself (not the σ = 0 shortcut) tends to θ: a σ far below every scale leaves θ to rounding
    assert ideal_reflow_angle(theta, 1e-200) == pytest.approx(theta, rel=4e-16, abs=1e-300)


@pytest.mark.parametrize("theta", [1e-10, 1e-6, 1e-3])
@pytest.mark.parametrize("sigma", [0.05, 1.0])
def test_small_angles_keep_full_relative_precision(theta: float, sigma: float) -> None:
    """As θ → 0, |A_t| → 1 and θ'/θ → 1/(1 + σ²) (exactly to first order in θ²): no 1 − cos θ cancellation."""
    got = ideal_reflow_angle(theta, sigma)
    assert got == pytest.approx(mpmath_reference(theta, sigma), rel=1e-14)
    assert got / theta == pytest.approx(1 / (1 + sigma**2), rel=max(1e-14, math.radians(theta) ** 2))
    assert ideal_reflow_angle(-theta, sigma) == -got  # odd in θ


@pytest.mark.parametrize("theta", [1.0, 60.0, 120.0, 150.0, 179.0, 179.9, -120.0])
@pytest.mark.parametrize("sigma", [1e-3, 0.05, 0.5, 2.0])
def test_agrees_with_quadrature_away_from_180(theta: float, sigma: float) -> None:
    assert ideal_reflow_angle(theta, sigma) == pytest.approx(mpmath_reference(theta, sigma), rel=1e-13)


def test_lemma2_published_closed_form_numbers_unchanged() -> None:
    """The digits lemma2.md and the stored results (results/lemma2, results/full/lemma2) quote."""
    quick_band, quick_drift = stagnation_band(120.0, 5.0, 2)
    full_band, full_drift = stagnation_band(120.0, 5.0, 3)
    assert (round(quick_drift, 3), round(full_drift, 3)) == (2.457, 3.234)
    assert (round(quick_band, 4), round(full_band, 4)) == (1.2287, 1.6172)
    assert [round(a, 10) for a in ideal_angles(120.0, 0.05, 4)] == [119.1585172348, 118.3399076626, 117.5426904352,
                                                                    116.7655342044]
    assert [round(a, 10) for a in ideal_angles(120.0, 0.5, 4)] == [71.7974722732, 53.8334636898, 41.6663762571,
                                                                   32.709690911]
    # the smallest testable coupling angles the stored results hold (a scan and bisection on the closed form)
    assert [min_testable_coupling_angle(s, k, 10.0) for s, k in [(0.05, 3), (0.5, 3), (0.05, 4), (0.5, 4)]] == [
        153.8515625, 20.3125, 149.515625, 16.8671875]


@pytest.mark.parametrize("sigma", [math.nan, math.inf, -math.inf, -0.05, True, "0.05", None])
def test_bad_sigma_is_a_config_error(sigma: object) -> None:
    with pytest.raises(ConfigError, match="sigma >= 0"):
        ideal_reflow_angle(120.0, sigma)  # type: ignore[arg-type]


@pytest.mark.parametrize("theta", [math.nan, math.inf, 180.0, -180.0, 181.0, "120"])
def test_bad_theta_is_a_config_error(theta: object) -> None:
    with pytest.raises(ConfigError, match="180°"):
        ideal_reflow_angle(theta, 0.05)  # type: ignore[arg-type]
