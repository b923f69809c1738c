"""Tables 2 and 3 end to end at toy size, their verdict helpers, bad inputs, and UNet checkpoint resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import flowvar.experiments._imaging as imaging
from flowvar.couplings import FixedPairs
from flowvar.errors import ConfigError, DataError
from flowvar.experiments.base import run_experiment
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models.unet import UNetField
from flowvar.train import TrainConfig, train

TINY = {"resolution": "8", "base_channels": "8", "channel_mult": "1,2", "steps": "3", "batch_size": "4",
        "warmup_steps": "1", "euler_steps": "3", "n_seeds": "2", "grid_columns": "4"}


def _check_result(out: Path, name: str, n_claims: int, figures: list[str]) -> dict:
    data = json.loads((out / name / "result.json").read_text())
    assert len(data["claims"]) == n_claims
    for claim in data["claims"]:
        assert claim["verdict"] in ("confirmed", "refuted", "inconclusive")
        assert claim["rule"] and claim["evidence"]
    assert sorted(data["figures"]) == sorted(figures)
    for fig in figures:
        with Image.open(out / name / fig) as img:
            assert img.size[0] > 100 and img.size[1] > 100
    assert data["metrics"]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")  # device "auto"
    assert data["metrics"]["comparison_with_paper"]
    assert (out / name / "summary.md").read_text().startswith(f"# {name}")
    return data


def test_table2_smoke_with_blockwise_ot(tmp_path: Path) -> None:
    overrides = {**TINY, "ns": "6,12", "eval_max": "5", "ot_method": "blockwise", "ot_block_size": "4",
                 "gap_check_n": "8"}
    run_experiment("table2", tmp_path, quick=True, overrides=overrides)
    data = _check_result(tmp_path, "table2", 5, ["table2_grid_N6.png", "table2_grid_N12.png", "table2_l2.png"])
    metrics = data["metrics"]
    for key, n in (("N=6", 6), ("N=12", 12)):
        cell = metrics["table2"][key]
        assert len(cell["runs"]) == 2 and all(run["sigma=0.0"]["loss_first_5pct"] > 0 for run in cell["runs"])
        assert cell["sigma=0.0"]["l2_to_ot"]["n"] == 2 * min(n, 5)  # pooled over 2 seeds × evaluated images
        assert all(ot["method"] == "blockwise" for ot in cell["ot"])
    gap_keys = [k for k in metrics if k.startswith("ot_gap_check.")]
    assert gap_keys and all(metrics[k]["relative_gap"] >= -1e-12 for k in gap_keys)
    ids = {c["id"] for c in data["claims"]}
    assert ids == {"table2.N=6.sigma0_memorises", "table2.N=6.sigma0.05_generalises", "table2.N=12.sigma0_memorises",
                   "table2.N=12.sigma0.05_generalises", "table2.margin_shrinks_with_n"}
    assert data["paper"]["table2"]["N=5000"]["sigma=0.0"]["l2_to_shuffled"] == [28.57, 5.49]


def test_table3_smoke(tmp_path: Path) -> None:
    overrides = {**TINY, "n": "10", "base_steps": "3", "eval_max": "6"}
    run_experiment("table3", tmp_path, quick=True, overrides=overrides)
    data = _check_result(tmp_path, "table3", 2, ["table3_grid.png", "table3_l2.png"])
    table = data["metrics"]["table3"]
    assert table["sigma=0.0"]["l2_to_generated"]["n"] == 12
    assert {c["id"] for c in data["claims"]} == {"table3.sigma0_copies_generated_pairs",
                                                 "table3.sigma0_farther_from_ot"}
    assert data["metrics"]["runs"][0]["base_model"]["loss_first_5pct"] > 0


def test_mixed_size_and_mode_folder_runs(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (size, mode) in enumerate([((20, 30), "RGB"), ((16, 16), "L"), ((40, 24), "RGBA"), ((12, 12), "RGB"),
                                      ((33, 17), "L"), ((25, 25), "RGBA")]):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = rng.integers(0, 255, (size[1], size[0], channels) if channels > 1 else (size[1], size[0]))
        Image.fromarray(arr.astype(np.uint8), mode).save(folder / f"{i}.png")
    overrides = {**TINY, "n_seeds": "1", "dataset": "folder", "data_dir": str(folder), "ns": "6", "channels": "3"}
    result = run_experiment("table2", tmp_path / "out", quick=True, overrides=overrides)
    assert len(result.claims) == 2


@pytest.mark.parametrize(("experiment", "overrides", "error", "message"), [
    ("table2", {"dataset": "folder", "data_dir": "/no/such/folder"}, DataError, "does not exist"),
    ("table2", {"dataset": "celeba", "data_dir": "/no/such/folder", "resolution": "64"}, DataError,
     "CelebA images not found"),
    ("table2", {"dataset": "lfw", "ns": "50,101"}, DataError, "lower n to at most 100"),
    ("table3", {"dataset": "lfw", "n": "101"}, DataError, "lower n to at most 100"),
    ("table2", {"resolution": "10", "channel_mult": "1,2,2"}, ConfigError, "multiple of 4"),
    ("table3", {"resolution": "6", "channel_mult": "1,2,2"}, ConfigError, "does not fit a UNet"),
    ("table2", {"ns": "1"}, ConfigError, "derangement"),
    ("table2", {"sigmas": "0.05,0"}, ConfigError, "sigmas"),
    ("table3", {"device": "tpu"}, ConfigError, "device"),
])
def test_bad_inputs_fail_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, experiment: str,
                                         overrides: dict[str, str], error: type, message: str) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the input was validated")

    monkeypatch.setattr(imaging, "train", no_training)
    with pytest.raises(error, match=message):
        run_experiment(experiment, tmp_path, quick=True, overrides={**TINY, **overrides})
    assert not (tmp_path / experiment).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_requested_without_gpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_experiment("table2", tmp_path, quick=True, overrides={**TINY, "device": "cuda", "ns": "4"})


def test_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delenv(imaging.THREADS_ENV, raising=False)
    assert imaging.resolve_threads(3, 8, cpu) == 3
    assert imaging.resolve_threads(0, 16, cpu) == 1
    assert imaging.resolve_threads(0, 64, cpu) == torch.get_num_threads()
    monkeypatch.setenv(imaging.THREADS_ENV, "2")
    assert imaging.resolve_threads(0, 8, cpu) == 2
    monkeypatch.setenv(imaging.THREADS_ENV, "many")
    with pytest.raises(ConfigError, match=imaging.THREADS_ENV):
        imaging.resolve_threads(0, 8, cpu)


def test_paired_stats_and_verdicts() -> None:
    larger = [torch.tensor([3.0, 4.0, 5.0]), torch.tensor([2.0, 6.0])]
    smaller = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0])]
    stats = imaging.paired_stats(larger, smaller)
    d = np.array([2.0, 3.0, 4.0, 1.0, 5.0])
    assert stats["mean_difference"] == pytest.approx(d.mean())
    assert stats["t_ratio"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(5)))
    assert stats["per_seed_mean_difference"] == pytest.approx([3.0, 3.0])
    assert imaging.direction_verdict(stats, 3.0) == (True, False)
    assert imaging.direction_verdict(stats, 100.0) == (False, False)
    flipped = imaging.paired_stats(smaller, larger)
    assert imaging.direction_verdict(flipped, 3.0) == (False, True)
    mixed = imaging.paired_stats([torch.tensor([5.0, 5.1]), torch.tensor([0.0, 0.1])],
                                 [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])])
    assert imaging.direction_verdict(mixed, 0.1) == (False, False)  # one seed in each direction


def test_unet_run_resumes_bit_identically(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    pairs = FixedPairs(torch.randn(10, 1, 8, 8, generator=g), torch.rand(10, 1, 8, 8, generator=g) * 2 - 1,
                       shuffle=True, generator=g)

    def run(steps: int, directory: Path | None) -> tuple[UNetField, list[float], dict]:
        torch.manual_seed(0)
        model = UNetField(8, 1, base_channels=8, channel_mult=(1, 2))
        res = train(model, CFMLoss(Interpolant(0.05)), pairs,
                    TrainConfig(steps=steps, batch_size=4, lr=1e-3, grad_clip=1.0, warmup_steps=2, ema_decay=0.9,
                                checkpoint_every=2, log_every=0), checkpoint_dir=directory)
        return model, res.losses, res.ema_state  # type: ignore[return-value]

    ref_model, ref_losses, ref_ema = run(6, None)
    run(3, tmp_path)
    model, losses, ema = run(6, tmp_path)
    assert losses == ref_losses
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    assert all(torch.equal(ema[k], v) for k, v in ref_ema.items())
