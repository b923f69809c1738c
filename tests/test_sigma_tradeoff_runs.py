"""The σ advisor on data: ``advise_sigma``'s and the config's errors on ``.npy`` and image-folder inputs, the
file-data noise floor, tiny end-to-end runs of ``sigma_tradeoff`` (GMM, digits, ``.npy``, a folder) and
``advise_sigma``, and the advice they print. The rules these runs apply are tested on synthetic evidence in
tests/test_sigma_tradeoff.py; the data resolution and split in tests/test_data_split.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvar.advise import Advice, advise_sigma
from flowvar.advisor import advise_over_seeds
from flowvar.data import load_split
from flowvar.distributions import GaussianMixture
from flowvar.errors import ConfigError, DataError
from flowvar.experiments import sigma_tradeoff as st
from flowvar.experiments.base import build_config, get_experiment, run_experiment

# --------------------------------------------------------------------------------------- data inputs and configuration


def test_advise_sigma_error_messages(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        advise_sigma(tmp_path / "missing.npy")
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((10, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"holds 10 item\(s\).*provide at least 80 items for n_train=64 \(at least "
                                        r"20 with --set n_train=4"):
        advise_sigma(small, quick=True)
    mid = tmp_path / "mid.npy"
    np.save(mid, np.zeros((20, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"lower n_train to at most 12 \(--set n_train=12\)"):
        advise_sigma(mid, quick=True, min_heldout=8, n_train=16)
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((2, 2, 2, 2, 2), dtype=np.float32))
    with pytest.raises(DataError, match="expected"):
        advise_sigma(cube, quick=True)
    with pytest.raises(ConfigError, match="unknown option"):
        advise_sigma("gmm", quick=True, stepz=3)
    with pytest.raises(ConfigError, match="must include 0"):
        advise_sigma("gmm", quick=True, sigmas=[0.05, 0.1])
    with pytest.raises(ConfigError, match="own argument"):
        advise_sigma("gmm", quick=True, data_dir="x")


def test_config_validation_names_key_and_fix() -> None:
    spec = get_experiment("sigma_tradeoff")
    with pytest.raises(ConfigError, match="dataset=folder needs data_dir"):
        build_config(spec, quick=True, overrides={"dataset": "folder"})
    with pytest.raises(ConfigError, match="drop data_dir"):
        build_config(spec, quick=True, overrides={"data_dir": "/x"})
    with pytest.raises(ConfigError, match="model=unet needs image data"):
        build_config(spec, quick=True, overrides={"model": "unet"})
    # a repeated σ is named as such (it used to read "at least two distinct values", which [0, 0.1, 0.1] has)
    with pytest.raises(ConfigError, match=r"lists σ = 0\.1 more than once.*--sigmas 0,0\.1 "):
        build_config(spec, quick=True, overrides={"sigmas": "[0,0.1,0.1]"})
    with pytest.raises(ConfigError, match="distinct"):
        build_config(spec, quick=True, overrides={"sigmas": "[0]"})
    # a σ lost in float32 rounding is refused (it overflowed the figure's symlog axis at 1e-300)
    with pytest.raises(ConfigError, match=r"σ = 1e-300, below 1e-06.*float32"):
        build_config(spec, quick=True, overrides={"sigmas": "[0,1e-300]"})
    assert list(build_config(spec, quick=True, overrides={"sigmas": "[0,1e-6]"}).sigmas) == [0.0, 1e-6]


def test_sigma_grid_errors_name_the_option_of_each_command() -> None:
    # advise-sigma refuses --set sigmas, so "--set sigmas=[0,...]" alone was a fix it could not apply
    spec = get_experiment("sigma_tradeoff")
    with pytest.raises(ConfigError, match=r"must include 0 .*got \[0\.05, 0\.1\]; e\.g\. --set sigmas=\[0,0\.05,"
                                          r"0\.1\] \(flowvar run / sweep\) or --sigmas 0,0\.05,0\.1 \(flowvar "
                                          r"advise-sigma\)$"):
        build_config(spec, quick=True, overrides={"sigmas": "[0.05,0.1]"})
    with pytest.raises(ConfigError, match=r"distinct finite values >= 0, got \[0\.0, 0\.0\]; e\.g\. --set "
                                          r"sigmas=\[0,0\.05,0\.1\] \(flowvar run / sweep\) or --sigmas "
                                          r"0,0\.05,0\.1 \(flowvar advise-sigma\)$"):
        build_config(spec, quick=True, overrides={"sigmas": "[0,0]"})


def test_data_far_from_the_source_scale_is_refused_or_warned_before_training(tmp_path: Path) -> None:
    # N(0, 1e20²) data diverged at every σ, and the training error blamed the learning rate
    rng = np.random.default_rng(0)
    np.save(tmp_path / "huge.npy", (rng.normal(size=(100, 4)) * 1e20).astype(np.float32))
    with pytest.raises(DataError, match=r"huge\.npy holds values up to 2\.\d+e\+20, far beyond the scale of the "
                                        r"N\(0, I\) source .*standardise your data first"):
        advise_sigma(tmp_path / "huge.npy", quick=True, n_train=8, n_eval=16, min_heldout=8, steps=1)
    np.save(tmp_path / "wide.npy", (rng.normal(size=(40, 3)) * 1e3).astype(np.float32))
    with pytest.warns(UserWarning, match=r"wide\.npy has values spread with std \d+.*standardise your data"):
        load_split("npy", str(tmp_path / "wide.npy"), 8, 16, resolution=8, channels=None, seed=0, min_heldout=8)


# ------------------------------------------------------------------------------------------- the file-data noise floor


def test_null_floor_is_rescaled_to_the_scored_sample_sizes() -> None:
    """The file-data null compares two halves of the held-out set; G compares n_eval outputs with every held-out item.
    Rescaled by (1/m + 1/n)/(1/p + 1/q), the halves' null RMS is the RMS of a null drawn directly at G's sizes
    (Monte Carlo on a GMM, 150 replicates each); unscaled it is 2.4× wider."""
    from flowvar.metrics import median_heuristic, null_generalisation

    gmm = GaussianMixture.random(4, 4, mean_scale=3.0, std=0.5, seed=0)
    gen = torch.Generator().manual_seed(0)
    halves = [(gmm.sample(200, gen), gmm.sample(200, gen)) for _ in range(150)]
    direct = [(gmm.sample(600, gen), gmm.sample(400, gen)) for _ in range(150)]
    bw = median_heuristic(gmm.sample(1000, gen))
    truth = null_generalisation(direct, bw)
    scaled = null_generalisation(halves, bw, scored_sizes=(600, 400))
    unscaled = null_generalisation(halves, bw)
    assert scaled["size_scale"] == pytest.approx((1 / 600 + 1 / 400) / (2 / 200))
    assert scaled["sample_sizes"] == [(200, 200)] and scaled["scored_sizes"] == [600, 400]
    assert 0.75 < scaled["rms"] / truth["rms"] < 1.33
    assert unscaled["rms"] / truth["rms"] > 1.8
    same = null_generalisation(halves[:3], bw, scored_sizes=(200, 200))  # equal sizes (the GMM path): unchanged
    assert same["values"] == null_generalisation(halves[:3], bw)["values"] and same["size_scale"] == 1.0
    with pytest.raises(DataError, match="scored_sizes must be two sample sizes"):
        null_generalisation(halves[:1], bw, scored_sizes=(1, 400))


# --------------------------------------------------------------------------------------------- tiny end-to-end runs


TINY = {"n_train": 12, "n_eval": 32, "min_heldout": 8, "steps": 10, "batch_size": 16, "width": 16, "depth": 2,
        "euler_steps": 4, "null_repeats": 2, "sigmas": [0.0, 0.05, 0.2]}


def test_advise_sigma_on_npy_and_folder(tmp_path: Path) -> None:
    from PIL import Image

    arr = np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", arr)
    knobs = {k: v for k, v in TINY.items() if k != "sigmas"}
    advice = advise_sigma(tmp_path / "v.npy", sigmas=TINY["sigmas"], quick=True, out=tmp_path / "out", **knobs)
    assert isinstance(advice, Advice)
    assert [r["sigma"] for r in advice.table] == [0.0, 0.05, 0.2]
    assert advice.outcome in ("recommended", "undecided", "none", "untestable")
    assert advice.recommended_sigma in ((0.0, 0.05, 0.2) if advice.rule_satisfied or advice.fallback else (None,))
    assert not (advice.rule_satisfied and advice.fallback)
    assert (tmp_path / "out" / "sigma_tradeoff" / "result.json").is_file() and advice.result_dir is not None
    assert "rule:" in advice.summary() and advice.summary().startswith(
        {"recommended": "recommended σ", "undecided": "undecided: ", "none": "no σ",
         "untestable": "untestable here: "}[advice.outcome])
    json.dumps(advice.to_dict())
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    advice = advise_sigma(str(folder), sigmas=[0, 0.1], quick=True, seed=1, resolution=8,
                          **{k: v for k, v in knobs.items() if k != "n_eval"}, n_eval=12)
    assert advice.result_dir is None and len(advice.table) == 2 and "folder" in advice.data
    # a grey folder is read in its own mode, one channel (the loader's RGB default tripled D and σ√D's scale √3×)
    assert "8x8, grey" in advice.data and "identical channels" not in advice.data


def test_file_data_null_is_scaled_to_g(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", arr)
    knobs = {k: v for k, v in TINY.items() if k != "sigmas"}
    run_experiment("sigma_tradeoff", tmp_path / "out", quick=True, overrides={
        **knobs, "sigmas": [0.0, 0.05], "dataset": "npy", "data_dir": str(tmp_path / "v.npy")})
    stored = json.loads((tmp_path / "out" / "sigma_tradeoff" / "result.json").read_text())
    null = stored["metrics"]["null_generalisation"]
    held = min(48 - knobs["n_train"], knobs["n_eval"])
    assert null["scored_sizes"] == [knobs["n_eval"], held]
    assert null["sample_sizes"] == [[held // 2, held // 2]]
    assert null["size_scale"] == pytest.approx((1 / knobs["n_eval"] + 1 / held) / (2 / (held // 2)))


def test_digits_quick_path_with_unet(tmp_path: Path) -> None:
    result = run_experiment("sigma_tradeoff", tmp_path, quick=True, overrides={
        "dataset": "digits", "model": "auto", "resolution": "8", "base_channels": "8", "channel_mult": "[1]",
        "n_train": "16", "n_eval": "24", "steps": "4", "batch_size": "8", "euler_steps": "3", "sigmas": "[0,0.05]",
        "null_repeats": "1", "grid_columns": "3", "eval_batch": "64"})
    assert "UNet" in result.choices["model"]
    assert "sigma_tradeoff_samples.png" in result.figures
    assert len(result.metrics["per_sigma"]) == 2


def test_gmm_smoke_result_json(tmp_path: Path) -> None:
    overrides = {k: json.dumps(v) for k, v in TINY.items()} | {"n_seeds": "2", "sigmas": "[0,0.02,0.2]"}
    run_experiment("sigma_tradeoff", tmp_path, quick=True, overrides=overrides)
    result = json.loads((tmp_path / "sigma_tradeoff" / "result.json").read_text())
    ids = {c["id"]: c for c in result["claims"]}
    # compare_sigma = 0.05 is not in the grid: claims 2 and 3 use the smallest positive σ and say so
    assert set(ids) == {"sigma_tradeoff.sigma0_memorises", "sigma_tradeoff.sigma0.02_reduces_memorisation",
                        "sigma_tradeoff.sigma0.02_keeps_generalisation",
                        "sigma_tradeoff.sigma_satisfying_both_margins_exists"}
    assert any("compare_sigma" in n for n in result["notes"])
    for c in result["claims"]:
        assert c["verdict"] in {"confirmed", "refuted", "inconclusive", "untestable"} and c["rule"] and c["evidence"]
        assert c["replicates"].startswith("2 training seed(s)") and c["min_effect"]
    # the verdicts are the rules applied to the per-seed evidence recorded with them
    mem, red = ids["sigma_tradeoff.sigma0_memorises"], ids["sigma_tradeoff.sigma0.02_reduces_memorisation"]
    ev = mem["evidence"]
    assert len(ev["pairing_accuracy_per_seed"]) == 2
    assert (mem["verdict_if_testable"] or mem["verdict"]) == st.sigma0_memorises_rule(
        ev["pairing_accuracy_per_seed"], 12, memorise_accuracy=0.9, mem_margin=0.05)
    memorised, can_act = red["precondition"]["measured"]["[1]"], red["precondition"]["measured"]["[2]"]
    assert memorised["pairing_accuracy_sigma0_per_seed"] == ev["pairing_accuracy_per_seed"]
    ev = red["evidence"]
    exact = result["metrics"]["exact_minimiser"]
    assert exact["sigma"] == 0.02 and len(exact["per_seed"]) == 2
    assert ev["exact_minimiser_memorisation_sigma0.02_per_seed"] == [e["memorisation"] for e in exact["per_seed"]]
    pre = st.noise_can_act_precondition(ev["exact_minimiser_memorisation_sigma0.02_per_seed"], 0.1, sigma=0.02,
                                        spacing=can_act["median_line_spacing"], sigma_sqrt_d=0.02 * math.sqrt(2))
    assert pre.holds == can_act["holds"] and pre.measured["seed_mean"] == can_act["seed_mean"]
    # the advisor reads the same check for every σ > 0 of the grid (review adv1 case 1: a σ without one counted as a
    # cut), measured on the same sources; claims 2 and 3 read compare_sigma's entry, the one measurement
    by_sigma = exact["by_sigma"]
    assert set(by_sigma) == {"sigma=0.02", "sigma=0.2"} and by_sigma["sigma=0.02"] == exact["per_seed"]
    assert [e["n_sources"] for e in by_sigma["sigma=0.2"]] == [e["n_sources"] for e in exact["per_seed"]]
    checks = result["metrics"]["advice"]["noise_checks"]
    assert set(checks) == {"0.02", "0.2"}
    for sigma in (0.02, 0.2):
        seeds = by_sigma[f"sigma={sigma}"]
        again = st.noise_checks({sigma: seeds}, 0.1)[sigma]
        assert checks[f"{sigma:g}"]["holds"] == again.holds
        assert checks[f"{sigma:g}"]["measured"]["seed_mean"] == again.measured["seed_mean"]
    assert checks["0.02"]["measured"]["seed_mean"] == can_act["seed_mean"]
    got = st.reduces_memorisation_rule(ev["memorisation_score_sigma0_per_seed"],
                                       ev["memorisation_score_sigma0.02_per_seed"], sigma=0.02, reduce_margin=0.1,
                                       alpha=0.05, n_train=ev["n_train"], seeds=ev["seeds"])
    assert got.verdict == (red["verdict_if_testable"] or red["verdict"]) and got.n_seeds == 2
    keep = ids["sigma_tradeoff.sigma0.02_keeps_generalisation"]
    ev = keep["evidence"]
    got = st.keeps_generalisation_rule(ev["gen_mmd2_unbiased_sigma0.02_per_seed"],
                                       ev["gen_mmd2_unbiased_sigma0_per_seed"], ev["noise_floor"], sigma=0.02,
                                       alpha=0.05)
    # claim 3 carries claim 2's "the noise can act" (the Remark-2 policy), the same measurement
    assert got.verdict == (keep["verdict_if_testable"] or keep["verdict"])
    assert keep["precondition"]["measured"] == {k: v for k, v in can_act.items() if k != "holds"}
    # τ is the null's noise floor, measured on real data only
    assert ev["tolerance"] == ev["noise_floor"] == result["metrics"]["null_generalisation"]["floor"]
    per_sigma = result["metrics"]["per_sigma"]
    assert [r["sigma"] for r in per_sigma] == [0.0, 0.02, 0.2]
    for row in per_sigma:
        assert row["n_seeds"] == 2
        assert all(not isinstance(v, dict | list) for v in row.values())  # flat, sweep-friendly
        for key in ("pairing_accuracy", "memorisation", "generalisation", "gen_mmd2.unbiased", "gen_mmd2.biased",
                    "fresh_copy_fraction", "nn_train_over_heldout", "l2_partner.mean"):
            assert key in row
    rec = result["metrics"]["recommended_sigma"]
    assert rec in (0.0, 0.02, 0.2, None)
    assert "rule" in result["choices"] and "against σ = 0 over the training seeds" in result["choices"]["rule"]
    assert "sigma_tradeoff.png" in result["figures"]
    assert (tmp_path / "sigma_tradeoff" / "sigma_tradeoff.png").is_file()
    advice = Advice.from_metrics(result["metrics"])
    assert advice.recommended_sigma == rec
    both = ids["sigma_tradeoff.sigma_satisfying_both_margins_exists"]
    assert (both["verdict"] == "confirmed") == advice.rule_satisfied == (advice.outcome == "recommended")
    # claim 4 and the answer are the seed-level rule applied to the per-seed scores recorded beside them
    per_seed = {float(k.split("=")[1]): rows for k, rows in result["metrics"]["per_seed"].items()}
    again = advise_over_seeds(per_seed, 12, 0.25, 0.05, gen_floor=result["metrics"]["null_generalisation"]["floor"],
                              alpha=0.05, reduce_margin=0.1, memorise_accuracy=0.9,
                              noise_can_act=st.noise_checks({0.02: by_sigma["sigma=0.02"], 0.2: by_sigma["sigma=0.2"]},
                                                            0.1))
    assert again.outcome == advice.outcome == both["evidence"]["outcome"]
    assert again.unattributed_cut == result["metrics"]["advice"]["unattributed_cut"]
    assert both["evidence"]["margins"]["gen_floor_relative_sd"] == pytest.approx(0.5)  # 1/√(2 · 2 null replicates)
    checks = result["metrics"]["advice"]["noise_checks"]
    assert (both["verdict_if_testable"] or both["verdict"]) == st.both_margins_rule(
        [j.verdict for j in again.judgements], [checks.get(f"{j.sigma:g}", {"holds": True})["holds"]
                                               for j in again.judgements])
    # claim 4 is tested only where σ = 0 memorised (the advisor's gate), as the answer is
    gate = st.memorised_precondition(ev_acc0 := mem["evidence"]["pairing_accuracy_per_seed"], 0.9)
    assert (both["verdict"] == "untestable") == (not gate.holds) == (again.outcome == "untestable"), ev_acc0
    assert rec == (again.sigma if again.outcome == "recommended" else again.fallback_sigma)


def test_diverged_runs_give_nan_rows_and_no_recommendation(tmp_path: Path) -> None:
    overrides = {k: json.dumps(v) for k, v in TINY.items()} | {"sigmas": "[0,0.05]", "lr": "1e12"}
    result = run_experiment("sigma_tradeoff", tmp_path, quick=True, overrides=overrides)
    assert result.metrics["recommended_sigma"] is None
    assert "no σ has finite scores" in result.metrics["advice"]["reason"]
    assert all(math.isnan(r["pairing_accuracy"]) for r in result.metrics["per_sigma"])
    verdicts = {c.id: c.verdict for c in result.claims}
    # nothing measured: inconclusive; "σ > 0 memorises less" needs a σ = 0 model that memorised, "σ = 0 memorises"
    # a σ = 0 run that ran its course: untestable
    assert verdicts.pop("sigma_tradeoff.sigma0.05_reduces_memorisation") == "untestable"
    assert verdicts.pop("sigma_tradeoff.sigma0_memorises") == "untestable"
    assert verdicts.pop("sigma_tradeoff.sigma_satisfying_both_margins_exists") == "untestable"  # the advisor's gate
    # claim 3: the exact CFM(0.05) minimiser keeps every pair at d = 8, N = 12 (the noise cannot act): untestable,
    # its rule's "inconclusive" (no finite seed) kept
    assert verdicts == {"sigma_tradeoff.sigma0.05_keeps_generalisation": "untestable"}
    keep = next(c for c in result.claims if c.id == "sigma_tradeoff.sigma0.05_keeps_generalisation")
    assert keep.verdict_if_testable == "inconclusive"
    assert sum("diverged" in n for n in result.notes) == 2 * result.config["n_seeds"]  # one per σ and seed
    stored = json.loads((tmp_path / "sigma_tradeoff" / "result.json").read_text())
    advice = Advice.from_metrics(stored["metrics"], notes=stored["notes"])
    assert advice.summary().startswith("no σ can be recommended") and advice.all_diverged
    # the terminal shows why (without --out, result.json and its notes are gone) and what to do
    assert len(advice.diverged) == 2 * result.config["n_seeds"]
    assert all(n.startswith("σ = ") and "Lower the learning rate" in n for n in advice.diverged)
    summary = advice.summary()
    assert f"diverged ({len(advice.diverged)} training(s)):" in summary and advice.diverged[0] in summary
    assert "every σ diverged, so there is no advice" in summary and "standardise them first" in summary
    assert not Advice.from_metrics(stored["metrics"]).diverged  # notes are what it reads


# --------------------------------------------------------------------------------------------- the printed advice


def test_advice_of_a_run_with_finite_scores_is_not_all_diverged() -> None:
    row = {"sigma": 0.0, "pairing_accuracy": 1.0, "memorisation": 1.0, "generalisation": 0.1,
           "gen_mmd2.unbiased": 0.1, "fresh_copy_fraction": 0.0}
    nan_row = {**row, "sigma": 0.5, "memorisation": "nan", "generalisation": "nan"}
    advice = Advice(None, False, False, "r", "rule", [row, nan_row], dict.fromkeys(
        ("gen_margin", "mem_margin", "gen_floor", "gen_best", "gen_tolerance", "chance"), 0.1), "data")
    assert not advice.all_diverged and "every σ diverged" not in advice.summary()
    assert Advice(None, False, False, "r", "rule", [nan_row], advice.margins, "data").all_diverged


def test_a_fallback_is_never_printed_as_recommended() -> None:
    row = {"sigma": 0.2, "pairing_accuracy": 0.5, "memorisation": 0.5, "generalisation": 0.01,
           "gen_mmd2.unbiased": 0.01, "fresh_copy_fraction": 0.0}
    margins = dict.fromkeys(("gen_margin", "mem_margin", "gen_floor", "gen_best", "gen_tolerance", "chance"), 0.1)
    head = Advice(0.2, False, True, "FALLBACK, …", "rule", [row], margins, "data").summary().splitlines()[0]
    assert "recommended" not in head.replace("not a recommendation", "") and "fallback σ = 0.2" in head
    assert Advice(0.2, True, False, "r", "rule", [row], margins, "data").summary().startswith("recommended σ = 0.2")
    # the seed rule's other outcomes: undecided names the σ and the seeds; none without a fallback says so
    undecided = Advice(None, False, False, "r", "rule", [row], margins, "data", outcome="undecided",
                       candidates=[0.2], seeds_needed=7)
    assert undecided.summary().startswith("undecided: no σ passes both margins with confidence, but σ = 0.2 is not "
                                          "excluded either; add seeds (--set n_seeds=...) (about 7 seeds in all)")
    judged = {"sigma": 0.2, "mem_mean": 0.01, "mem_lower": 0.0, "mem_upper": 0.04, "mem_side": "within",
              "gen_difference": 0.001, "gen_lower": -0.001, "gen_upper": 0.003, "gen_side": "undecided",
              "verdict": "undecided"}
    undecided.judgements = [judged]
    assert "σ = 0.2: M = 0.01 [0, 0.04] within; G − G(0) = +0.001 [-0.001, +0.003] undecided → undecided" in \
        undecided.summary()
    none = Advice(None, False, False, "r", "rule", [row], margins, "data", outcome="none")
    assert none.summary().startswith("no σ satisfies both margins") and "recommended σ" not in none.summary()
