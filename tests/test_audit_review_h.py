"""A hostile user's review of ``flowvar audit`` (fixH): untestable lines say why, the gap test names the short set,
the class-conditional pair-recovery rule names its class-wise chance, a copy baseline of 100 % prints no NaN."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowvar.audit.adapters import AdaptedField, Convention, LabelArg
from flowvar.audit.core import untestable_why
from flowvar.audit.sections import RealCopyBaseline, copying, generalisation_gap, pair_recovery


def test_gap_precondition_names_the_short_training_set_not_the_heldout_set() -> None:
    gen = torch.Generator().manual_seed(0)
    train, held, samples = torch.randn(16, 3, generator=gen), torch.randn(64, 3, generator=gen), torch.randn(50, 3)
    claim = generalisation_gap(samples, train, held, gen).claim
    assert claim.verdict == "untestable"
    pre = claim.precondition
    assert pre["measured"]["m"] == 16 and pre["measured"]["n_train"] == 16 and pre["measured"]["n_heldout"] == 64
    assert "training items (now 16)" in pre["remedy"] and "held-out" not in pre["remedy"], pre["remedy"]
    # and the other way round: the held-out set short
    claim = generalisation_gap(samples, torch.randn(64, 3, generator=gen), held[:12], gen).claim
    assert "held-out items (now 12)" in claim.precondition["remedy"]
    assert "training items" not in claim.precondition["remedy"]


def test_untestable_reason_line_states_the_failed_precondition_and_remedy() -> None:
    gen = torch.Generator().manual_seed(0)
    claim = generalisation_gap(torch.randn(50, 3), torch.randn(16, 3, generator=gen),
                               torch.randn(64, 3, generator=gen), gen).claim
    why = untestable_why(claim)
    assert why.startswith(" (precondition not met: at least 20 training and 20 held-out items")
    assert "m = 16" in why and "to make it testable: pass at least 20 training items (now 16)" in why
    testable = generalisation_gap(torch.randn(50, 3), torch.randn(40, 3, generator=gen),
                                  torch.randn(40, 3, generator=gen), gen).claim
    assert testable.verdict != "untestable" and untestable_why(testable) == ""


def test_copy_text_says_p_undefined_at_a_baseline_of_one() -> None:
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(40, 2, generator=gen)
    real = RealCopyBaseline(torch.zeros(40), 1.0, 40, "held-out items", True)
    section = copying(train[:30] + 1e-4, train, train[:40], real=real)
    assert section.claim.evidence["copy_share_beyond_baseline"] in ("NaN", "nan") or math.isnan(
        section.claim.evidence["copy_share_beyond_baseline"])
    assert "p = (c − b)/(1 − b) undefined (baseline 100%)" in section.text, section.text
    assert "nan" not in section.text
    assert section.claim.verdict == "untestable" and "baseline" in untestable_why(section.claim)


class _ZeroConditional(nn.Module):
    """f(x, t, y) = 0: endpoints stay at their sources (no memorisation), enough to read the rule text."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_class_conditional_pair_rule_names_the_classwise_chance() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(40, 2, generator=gen), torch.randn(40, 2, generator=gen)
    labels = torch.arange(40) % 4
    field = AdaptedField(_ZeroConditional(), Convention("xt"), LabelArg("y"))
    claim = pair_recovery(field, x0, x1, method="euler", steps=4, coarse_steps=2, labels=labels).claim
    assert "1/N_c" in claim.rule and "c = 1/N " not in claim.rule, claim.rule
    assert abs(claim.evidence["chance"] - 0.1) < 1e-6  # 1/10 per class, not 1/40
    unconditional = pair_recovery(_Zero(), x0, x1, method="euler", steps=4, coarse_steps=2).claim
    assert "c = 1/N " in unconditional.rule


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_a_lightning_checkpoint_gets_the_extract_the_state_dict_advice(tmp_path, monkeypatch) -> None:
    """A Lightning checkpoint (save_hyperparameters with an argparse.Namespace) is refused by weights_only; the
    advice must be the state_dict extraction that works, not the whole-model route that refuses a state_dict."""
    import argparse

    import pytest

    from flowvar.audit.loading import load_model
    from flowvar.errors import DataError

    net = nn.Linear(3, 3)
    path = tmp_path / "lt.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"args": argparse.Namespace(lr=1e-3)}, "pytorch-lightning_version": "2.4"}, path)
    module_file = tmp_path / "lt_nets.py"
    module_file.write_text("from torch import nn\n\ndef net():\n    return nn.Linear(3, 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DataError) as err:
        load_model("lt_nets:net", path)
    text = str(err.value)
    assert "Lightning checkpoint" in text and "['state_dict'], 'weights.pt')" in text, text
    assert "without --model" not in text
    # the advice works: the extracted state_dict loads under --model
    torch.save(torch.load(path, weights_only=False)["state_dict"], tmp_path / "weights.pt")
    loaded = load_model("lt_nets:net", tmp_path / "weights.pt").module
    assert torch.equal(loaded.weight, net.weight)
    # a non-Lightning file holding a Namespace keeps the general advice
    torch.save({"model": net.state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "other.pt")
    with pytest.raises(DataError) as err:
        load_model("lt_nets:net", tmp_path / "other.pt")
    assert "Lightning" not in str(err.value) and "without --model" in str(err.value)


class _ScaledTime(nn.Module):
    """The exact straight-line field toward a point mu for a network that reads its time as s = 37 · t: it fits
    only under time scale 37, which neither default candidate (1, 1000) is."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mu", mu)
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        t = (torch.as_tensor(s, dtype=x.dtype) / 37.0).reshape(-1, *([1] * (x.dim() - 1)))
        return self.w * (self.mu - x) / (1 - t).clamp(min=1e-2)


def test_time_scale_alone_adds_its_scale_to_the_detection() -> None:
    import pytest

    from flowvar.audit import audit
    from flowvar.errors import ConfigError

    gen = torch.Generator().manual_seed(0)
    mu = torch.full((3,), 4.0)
    data = mu + 0.05 * torch.randn(60, 3, generator=gen)
    settings = {"samples": 30, "steps": 20, "coarse_steps": 5, "grad_samples": 8, "t_bins": 2, "device": "cpu"}
    report = audit(_ScaledTime(mu), data, time_scale=37.0, **settings)
    assert report.convention.chosen.time_scale == 37.0 and report.convention.chosen.call == "xt"
    assert any(c.convention.time_scale == 37.0 for c in report.convention.candidates)
    # without it the detection knows only 1 and 1000, and settles for the poorer fit at 1
    assert audit(_ScaledTime(mu), data, **settings).convention.chosen.time_scale == 1.0
    with pytest.raises(ConfigError, match=r"--time \(time=\) refines a --convention"):
        audit(_ScaledTime(mu), data, time="data_at_1", **settings)
    with pytest.raises(ConfigError, match="time scale must be a finite number > 0"):
        audit(_ScaledTime(mu), data, time_scale=-1.0, **settings)
