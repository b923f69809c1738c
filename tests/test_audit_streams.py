"""The audit's random streams (flowvar.audit.streams): derived from ``--seed`` by name, never torch's seed-k stream.

A hostile user's finding (userA, s28): data made from torch's seed-0 stream (``torch.manual_seed(0)``, the most common
line of a synthetic-data script) and a model that learned the near-affine map z ↦ 2 + 0.5 z read as 80 % copies at
``--seed 0`` and generalising at ``--seed 1``: the audit drew its fresh noise from that same stream, so it integrated
the very noise the training items were made of.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from flowvar.audit import audit
from flowvar.audit.core import AuditReport
from flowvar.audit.streams import PARTS, audit_generator, audit_seeds
from flowvar.errors import ConfigError
from flowvar.results import Claim
from flowvar.seeding import derive_seed

D = 8


class AffineFlow(nn.Module):
    """The straight-line flow of z ↦ a + b z (a = 2, b = 0.5 per coordinate): along x_t = z + t (a + (b − 1) z) the
    velocity a + (b − 1) z is constant, with z = (x − a t)/(1 + (b − 1) t), so Euler reproduces the map exactly (up to
    rounding). What a model trained on fresh noise toward N(2, 0.25 I) data converges to, without the training."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.full((D,), 2.0))
        self.b = nn.Parameter(torch.full((D,), 0.5))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1)
        z = (x - self.a * t) / (1 + (self.b - 1) * t)
        return self.a + (self.b - 1) * z


def claim(report: AuditReport, claim_id: str) -> Claim:
    return next(c for c in report.result.claims if c.id == claim_id)


def seed0_data(n: int) -> torch.Tensor:
    """Training data as a user's script makes them: 2 + 0.5·randn from torch's seed-0 stream (``torch.manual_seed(0)``
    then ``torch.randn`` draws the same numbers as this generator)."""
    return 2 + 0.5 * torch.randn(n, D, generator=torch.Generator().manual_seed(0))


def test_data_from_torch_seed_0_are_not_read_as_copies_at_audit_seed_0() -> None:
    # 600 items cover the first 4800 numbers of the seed-0 stream, where an audit seeded with manual_seed(0) drew its
    # 100 fresh samples' noise after the convention probes (numbers 1792–2591): every sample was a training item
    x1 = seed0_data(600)
    held = 2 + 0.5 * torch.randn(200, D, generator=torch.Generator().manual_seed(12345))
    report = audit(AffineFlow(), x1, heldout=held, samples=100, grad_samples=2, t_bins=1, device="cpu")
    copying = claim(report, "audit.copying")
    assert copying.evidence["copy_fraction"] <= 0.05, copying.evidence  # before: 1.0 (all 100 samples copies)
    assert copying.verdict == "refuted", report.reasons
    assert report.verdict == "generalising", report.reasons
    # the seed and the derived seeds are recorded, and they are not the seed itself
    config = report.result.config
    assert config["seed"] == 0 and config["seed_streams"] == audit_seeds(0)
    assert any("not torch's seed-0 stream" in n for n in report.result.notes), report.result.notes


def test_every_part_has_its_own_stream_derived_by_name() -> None:
    seeds = audit_seeds(0)
    assert tuple(seeds) == PARTS
    assert seeds == {p: derive_seed(0, "audit", p) for p in PARTS}
    assert len(set(seeds.values())) == len(PARTS) and not set(seeds.values()) & set(range(1000))
    assert audit_seeds(1) != seeds
    # no part's first draws are those of torch's seed-k stream for a small k
    torch_streams = [torch.randn(64, generator=torch.Generator().manual_seed(k)) for k in range(8)]
    for part in PARTS:
        own = torch.randn(64, generator=audit_generator(0, part))
        assert not any(torch.equal(own, s) for s in torch_streams)


def test_one_parts_draw_count_leaves_the_others_draws_alone() -> None:
    # before, one generator ran through every part: more samples shifted the gradient test's pairs and times
    x1 = seed0_data(200)
    reports = [audit(AffineFlow(), x1, samples=s, steps=10, coarse_steps=2, grad_samples=4, t_bins=2, device="cpu")
               for s in (40, 60)]
    grads = [claim(r, "audit.gradient_signal").evidence["profiles"] for r in reports]
    assert grads[0] == grads[1]
    conventions = [r.result.metrics["convention"]["candidates"] for r in reports]
    assert conventions[0] == conventions[1]


def test_a_seed_outside_the_range_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    try:
        audit(AffineFlow(), seed0_data(40), seed=-1, device="cpu")
    except ConfigError as error:
        assert "--seed" in str(error) and "[0, 2**63)" in str(error), error
    else:
        raise AssertionError("a negative seed was accepted")


def test_result_json_records_the_derived_seeds(tmp_path: Path) -> None:
    report = audit(AffineFlow(), seed0_data(60), samples=20, steps=5, coarse_steps=2, grad_samples=2, t_bins=1,
                   seed=7, device="cpu")
    saved = json.loads((report.write(tmp_path / "a") / "result.json").read_text())
    assert saved["config"]["seed"] == 7
    assert saved["config"]["seed_streams"] == {p: derive_seed(7, "audit", p) for p in PARTS}


def test_audit_generators_are_the_one_place_the_streams_are_made(monkeypatch) -> None:
    """One generator per part, seeded with that part's derived seed, fresh on every call; audit_generator is one of
    them, and the audit draws from exactly these (no generator built beside them by hand)."""
    import flowvar.audit.core as core
    from flowvar.audit.streams import audit_generators

    gens, again = audit_generators(3), audit_generators(3)
    assert tuple(gens) == PARTS
    for part, g in gens.items():
        assert g.initial_seed() == audit_seeds(3)[part] == derive_seed(3, "audit", part)
        assert g is not again[part]
        assert torch.equal(torch.randn(16, generator=g), torch.randn(16, generator=audit_generator(3, part)))
    made: list[int] = []

    def recorded(seed: int) -> dict[str, torch.Generator]:
        made.append(seed)
        return audit_generators(seed)

    monkeypatch.setattr(core, "audit_generators", recorded)
    x1 = seed0_data(40)
    held = 2 + 0.5 * torch.randn(40, D, generator=torch.Generator().manual_seed(12345))
    audit(AffineFlow(), x1, heldout=held, samples=20, grad_samples=2, t_bins=1, device="cpu", seed=5)
    assert made == [5]
