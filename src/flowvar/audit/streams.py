"""The audit's random streams: one ``torch.Generator`` per independent part of the audit, each seeded from the
user's ``--seed`` by name (:func:`flowvar.seeding.derive_seed`).

Why not ``torch.Generator().manual_seed(seed)``: that is torch's seed-``k`` stream, the very stream a user's script
draws its training data from after ``torch.manual_seed(k)`` (the most common line of a synthetic-data script). An
audit drawing its fresh noise from it integrates noise the training data were made of: a model that learned a
near-affine map z ↦ a + b z then reproduces training items from it and reads as copying (an 8-D Gaussian model
trained on fresh noise read 80 % copies at ``--seed 0`` and 0.4 % at ``--seed 1``). Derived seeds are 63-bit hashes
of ("audit", the part's name) under the user's seed, unrelated to any ``manual_seed(k)`` stream a script uses, to
flowvar's own training streams (other names) and to each other; a part that changes how many numbers it draws
leaves the other parts' draws as they were.
"""

from __future__ import annotations

import torch

from flowvar.seeding import check_seed, derive_seed

#: The name under which every audit stream is derived (``derive_seed(seed, AUDIT, part)``).
AUDIT = "audit"

#: The audit's parts that draw random numbers, each from its own stream: the calling-convention probes
#: (:func:`flowvar.audit.fit.check_conventions`), pair recovery's fresh noise (continuous conditions only), the fresh
#: samples of the copy and gap tests (their noise and labels), the gap test's reference subsets (its half-samples are
#: a stream derived from this one), and the gradient test's pairs and times.
PARTS: tuple[str, ...] = ("conventions", "pairs", "samples", "gap", "gradient")


def audit_seeds(seed: int) -> dict[str, int]:
    """{part: derive_seed(seed, "audit", part)} for every part of :data:`PARTS` (ints in [0, 2**63)); what
    ``result.json`` records as ``config.seed_streams``. ``seed``: an int in [0, 2**63) (else a one-line
    :class:`~flowvar.errors.ConfigError` naming ``--seed``)."""
    seed = check_seed(seed, "--seed (seed=)")
    return {part: derive_seed(seed, AUDIT, part) for part in PARTS}


def audit_generators(seed: int) -> dict[str, torch.Generator]:
    """{part: a fresh CPU generator seeded with ``audit_seeds(seed)[part]``} for every part of :data:`PARTS`: the
    audit's streams, the one place they are made (:func:`audit_generator` takes one of them)."""
    return {part: torch.Generator().manual_seed(s) for part, s in audit_seeds(seed).items()}


def audit_generator(seed: int, part: str) -> torch.Generator:
    """A fresh CPU generator of the audit's stream ``part`` (one of :data:`PARTS`) under ``seed``: the one
    :func:`audit_generators` makes for it."""
    if part not in PARTS:
        raise ValueError(f"unknown audit stream {part!r}; one of {PARTS}")
    return audit_generators(seed)[part]


__all__ = ["AUDIT", "PARTS", "audit_generator", "audit_generators", "audit_seeds"]
