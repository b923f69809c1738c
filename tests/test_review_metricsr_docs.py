"""flowvar.metrics after the metricsR review (session 35): the docs of pairing_accuracy (tie-breaking) and of the
package (which functions take point sets)."""

from __future__ import annotations

from flowvar import metrics
from flowvar.metrics import pairing_accuracy

# ---------------------------------------------------------------------------------------------- 7. docs


def test_docs_state_tie_breaking_and_the_package_scope() -> None:
    assert "broken arbitrarily" in (pairing_accuracy.__doc__ or "")
    doc = metrics.__doc__ or ""
    assert "polar_decomposition" in doc and "(d, d) matrix" in doc and "(K+1, B, *shape)" in doc
