"""Prop 2's zero-loss level, shared by the experiments that judge "CFM(σ = 0) memorises" on trained networks
(prop2, memorisation_phase).

Prop 2 is a statement about the minimiser of the deterministic loss on fixed pairs, which interpolates every
training line and so has loss 0. A network is judged against it only once it is there; "there" is measured against
the geometry of the pairs, not the size of the targets: in d = 2 the training lines are 0.01–0.1 apart, so a loss
that is small relative to E‖x1 − x0‖² can still be an RMS velocity residual many spacings wide.

* :func:`loss_over_spacing_sq` — per seed, the final σ = 0 loss over (median line spacing)² (≤ r means an RMS
  velocity residual of at most √r of the spacing);
* :func:`sigma0_precondition` — memorisation_phase's precondition for "the minimiser memorises": some setting's
  seed-mean ratio is ≤ ``zero_loss_ratio`` (the network is at the minimiser the claim is about). It is not a
  precondition for "optimising *converges* to the minimiser", whose outcome it is: prop2 judges that claim with the
  level inside its rule and a budget precondition (``prop2.sigma0_memorises_precondition``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from flowvar.results import Precondition


def loss_over_spacing_sq(final_loss: Sequence[float], spacing: Sequence[float]) -> list[float]:
    """Per seed: final σ = 0 loss / (median line spacing)². A seed whose spacing is 0 counts as infinite (no residual
    is small against it); a NaN loss stays NaN (it never reaches the level)."""
    return [float(loss) / float(sp) ** 2 if sp > 0 else math.inf for loss, sp in zip(final_loss, spacing, strict=True)]


def sigma0_precondition(cells: Mapping[str, Mapping[str, Any]], zero_loss_ratio: float) -> Precondition:
    """Some σ = 0 setting (a cell of ``cells``, each with its seed-mean ``loss_over_spacing_sq``) was trained to
    Prop 2's minimiser: ratio ≤ ``zero_loss_ratio``. With one setting the statement names it."""
    ratios = {k: float(c["loss_over_spacing_sq"]) for k, c in cells.items()}
    at_zero = [k for k, r in ratios.items() if r <= zero_loss_ratio]  # NaN compares False: never at zero
    where = f"{next(iter(ratios))}:" if len(ratios) == 1 else "in at least one cell"
    return Precondition(f"{where} σ = 0 was trained to the zero-loss level (seed-mean loss ≤ {zero_loss_ratio} × "
                        f"median line spacing²)", bool(at_zero),
                        {"loss_over_spacing_sq": ratios, "cells_at_zero_loss": at_zero},
                        "" if at_zero else "more training steps or width, or fewer pairs N (wider line spacing)")


__all__ = ["loss_over_spacing_sq", "sigma0_precondition"]
