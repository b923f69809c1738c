"""Two audit hints from a hostile user's review (userA, s28): a network whose forward requires an argument beyond x and
t is told to bind it (findings 2), and noise given as --data with the data as --pairs — audited as a time-reversed
model — gets a note asking whether the files were swapped (finding 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from audit_checks import importable_module, run_cli
from flowvar.audit import audit
from flowvar.audit.fit import missing_arguments
from flowvar.audit.rules import SOURCE_MEAN_TOL, SOURCE_VAR_TOL, SOURCE_Z, looks_like_noise, swapped_files_suspect
from flowvar.errors import DataError

D = 8
SMALL = {"samples": 20, "steps": 10, "coarse_steps": 2, "grad_samples": 2, "t_bins": 1, "device": "cpu"}

NETS = '''
import torch
from torch import nn


class AffineFlow(nn.Module):
    """The straight-line flow of z -> 2 + 0.5 z in 8-D: v(x, t) = a + (b - 1) z, z = (x - a t)/(1 + (b - 1) t)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.full((8,), 2.0))
        self.b = nn.Parameter(torch.full((8,), 0.5))

    def forward(self, x, t):
        t = t.reshape(-1, 1)
        z = (x - self.a * t) / (1 + (self.b - 1) * t)
        return self.a + (self.b - 1) * z


class KwFlow(AffineFlow):
    """The user's KwMLP: forward needs a keyword-only argument beyond x and t."""

    def forward(self, x, t, *, scale):
        return scale * super().forward(x, t)


class Bound(KwFlow):
    """The fix the error names: a subclass whose forward(x, t) binds it (same weight names)."""

    def forward(self, x, t):
        return super().forward(x, t, scale=1.0)


def kw():
    return KwFlow()


def bound():
    return Bound()
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    yield from importable_module(tmp_path_factory, "hint_nets", NETS)


def data(n: int = 64, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x1): noise and the affine model's image of it, x1 = 2 + 0.5 x0 (pairs the model follows exactly)."""
    x0 = torch.randn(n, D, generator=torch.Generator().manual_seed(seed))
    return x0, 2 + 0.5 * x0


# ------------------------------------------------------------------------------ 2. a required extra argument


def test_a_forward_requiring_an_extra_keyword_is_told_to_bind_it(nets: ModuleType) -> None:
    x0, x1 = data()
    with pytest.raises(DataError) as caught:
        audit(nets.KwFlow(), x1, pairs=x0, **SMALL)
    text = str(caught.value)
    assert "missing 1 required keyword-only argument: 'scale'" in text  # each call's cause, as before
    assert "its forward requires 'scale' besides x and t, which the audit does not pass" in text, text
    assert "super().forward(x, t, scale=...)" in text and "--label-arg scale with --labels FILE.npy" in text
    # the shape / integer-timestep advice belongs to other causes
    assert "integer timesteps" not in text and "shape and channels" not in text
    # the fix it names works: the subclass runs under the convention of the underlying field
    report = audit(nets.Bound(), x1, pairs=x0, **SMALL)
    assert str(report.convention.chosen).startswith("xt (data_at_1")


def test_the_hint_says_the_data_carry_labels_when_they_do(nets: ModuleType, tmp_path: Path) -> None:
    _, x1 = data()
    path = tmp_path / "d.npz"
    np.savez(path, x=x1.numpy(), labels=np.zeros(x1.shape[0], dtype=np.int64))
    with pytest.raises(DataError, match=r"if scale is each item's class label or condition, which the data carry, "
                                        r"pass --label-arg scale"):
        audit(nets.KwFlow(), str(path), **SMALL)


def test_the_cli_prints_the_hint_on_one_line(nets: ModuleType, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    x0, x1 = data()
    np.save(tmp_path / "x1.npy", x1.numpy())
    np.save(tmp_path / "x0.npy", x0.numpy())
    torch.save(nets.KwFlow().state_dict(), tmp_path / "kw.pt")
    common = ["--checkpoint", str(tmp_path / "kw.pt"), "--data", str(tmp_path / "x1.npy"), "--pairs",
              str(tmp_path / "x0.npy"), "--samples", "20", "--steps", "10", "--coarse-steps", "2", "--grad-samples",
              "2", "--t-bins", "1", "--device", "cpu"]
    code, out, err = run_cli(["--model", "hint_nets:kw", *common, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and err.count("\n") == 1 and "bind it in the module your --model factory returns" in err, err
    assert not (tmp_path / "a").exists()
    # the subclass the hint names loads the same checkpoint
    code, out, err = run_cli(["--model", "hint_nets:bound", *common, "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert "convention: xt (data_at_1" in out


def test_missing_arguments_skips_the_time_a_cat_call_leaves_out() -> None:
    from flowvar.audit.adapters import Convention
    from flowvar.audit.fit import CandidateScore

    err = "TypeError: Net.forward() missing 2 required positional arguments: 't' and 'y'"
    scores = [CandidateScore(Convention("cat"), False, error=err),
              CandidateScore(Convention("xt"), False, error="TypeError: Net.forward() missing 1 required positional "
                                                            "argument: 'y'"),
              CandidateScore(Convention("flow_matching"), False, error="TypeError: Net.forward() missing 2 required "
                                                                       "keyword-only arguments: 'y' and 'w'")]
    assert missing_arguments(scores) == ["y", "w"]
    assert missing_arguments(scores[:1]) == []  # cat passes one tensor: its missing 't' is the network's time


# ------------------------------------------------------------------------------ 3. --data and --pairs swapped


def test_noise_like_rule_against_its_sampling_error() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (32, 256, 4096):  # real noise passes (z = 4 plus the fixed allowance)
        x = torch.randn(200, n, generator=gen, dtype=torch.float64)
        passed = [looks_like_noise(float(r.mean()), float(r.var(correction=0)), n) for r in x]
        assert all(passed), n
    # the user's data N(2, 0.25 I) (256 entries), and images in [−1, 1] (uniform: variance 1/3), are not noise
    assert not looks_like_noise(2.0, 0.25, 256)
    assert not looks_like_noise(0.0, 1 / 3, 64 * 64)
    # the bounds as stated: mean tolerance + z/√n, variance tolerance + z·√(2/n)
    n = 400
    assert looks_like_noise(SOURCE_MEAN_TOL + SOURCE_Z / 20 - 1e-9, 1.0, n)
    assert not looks_like_noise(SOURCE_MEAN_TOL + SOURCE_Z / 20 + 1e-9, 1.0, n)
    assert looks_like_noise(0.0, 1 + SOURCE_VAR_TOL + SOURCE_Z * (2 / n) ** 0.5 - 1e-9, n)
    assert not looks_like_noise(0.0, 1 + SOURCE_VAR_TOL + SOURCE_Z * (2 / n) ** 0.5 + 1e-9, n)
    # asked only for data-at-0 outside diffusers, noise-like data and sources that are not
    assert swapped_files_suspect(True, False, "data_at_0", "xt")
    assert not swapped_files_suspect(True, False, "data_at_0", "diffusers")
    assert not swapped_files_suspect(True, False, "data_at_1", "xt")
    assert not swapped_files_suspect(True, True, "data_at_0", "tx")
    assert not swapped_files_suspect(False, False, "data_at_0", "tx")


def test_swapped_data_and_pairs_get_a_note_asking_and_the_right_order_none(nets: ModuleType) -> None:
    x0, x1 = data()
    swapped = audit(nets.AffineFlow(), x0, pairs=x1, **SMALL)  # noise as --data, the data as --pairs
    assert swapped.convention.chosen.time == "data_at_0"  # read as a time-reversed model, as the user saw
    notes = [r for r in swapped.reasons if r.startswith("sources: were --data and --pairs swapped?")]
    assert len(notes) == 1, swapped.reasons
    mean, var = float(x1.double().mean()), float(x1.double().var(correction=0))
    assert f"(entry mean {mean:.3g}, variance {var:.3g}) while the training data (--data) do" in notes[0], notes[0]
    assert notes[0] in swapped.summary()
    check = swapped.result.metrics["source_check"]
    assert check["swapped_suspect"] and check["data_noise_like"] and not check["pairs_noise_like"]
    assert check["pairs_mean"] == pytest.approx(float(x1.double().mean()))
    memorises = next(c for c in swapped.result.claims if c.id == "audit.memorises")
    assert notes[0] in memorises.evidence["notes"]  # what `flowvar show` prints beside the verdict
    right = audit(nets.AffineFlow(), x1, pairs=x0, **SMALL)
    assert right.convention.chosen.time == "data_at_1"
    assert not any("swapped" in r for r in right.reasons)
    assert not right.result.metrics["source_check"]["swapped_suspect"]


def test_no_note_without_pairs(nets: ModuleType) -> None:
    _, x1 = data()
    report = audit(nets.AffineFlow(), x1, **SMALL)
    assert "source_check" not in report.result.metrics
    assert not any("swapped" in r for r in report.reasons)

