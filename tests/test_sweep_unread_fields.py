"""A sweep over a config field the experiment does not read at its points is refused (review E, 3): sigma_tradeoff
computed `--grid resolution=8,16` on GMM vectors twice, identically, and drew a flat map that nothing tested. The
experiment declares its unread fields per config (``flowvar.experiments.ignoring``, beside ``register``); the
declaration is checked against the run itself."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, load_plugin, run_experiment
from flowvar.sweep import Options, flatten, plan
from sweep_checks import PLUGIN, toy

KNOB = '''
from dataclasses import dataclass

from flowvar.experiments.base import RunContext, ignoring, register


@dataclass
class KnobConfig:
    seed: int = 0
    x: float = 1.0
    mode: str = "a"
    knob: int = 1  # read only in mode "b"


@register("review_e_knob", title="a knob read in one mode", config=KnobConfig)
def run(config: KnobConfig, ctx: RunContext) -> None:
    ctx.metric("y", config.x + (config.knob if config.mode == "b" else 0))


@ignoring("review_e_knob")
def unused(config: KnobConfig) -> dict[str, str]:
    return {"knob": "with mode=a (set mode=b to sweep it)"} if config.mode == "a" else {}
'''


@pytest.fixture(scope="module")
def knob(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A plugin experiment declaring a field it reads in one mode only."""
    path = tmp_path_factory.mktemp("plugin") / "review_e_knob.py"
    path.write_text(textwrap.dedent(KNOB))
    load_plugin(PLUGIN)
    load_plugin(str(path))
    return str(path)


def sigma_plan(tmp_path: Path, grid: list[str], **sets: str) -> Any:
    return plan(Options("sigma_tradeoff", grid=grid, quick=True, out=tmp_path / "o",
                        overrides={"n_seeds": "1", **sets}))


@pytest.mark.parametrize(("grid", "sets", "message"), [
    (["resolution=8,16"], {}, "sweeping resolution: sigma_tradeoff does not read resolution with dataset=gmm: it is "
                              "for image data, and GMM vectors have none (set dataset=digits, lfw, celeba, folder or "
                              "npy to sweep it); the grid points resolution=8 and resolution=16 would compute the same "
                              "metrics and verdicts (a flat map that nothing tested): drop resolution from the grid"),
    (["base_channels=8,16"], {}, "sweeping base_channels: sigma_tradeoff does not read base_channels with "
                                 "dataset=gmm: it configures the UNet"),
    (["channel_mult=[1],[1,2]"], {}, "does not read channel_mult with dataset=gmm"),
    (["dropout=0,0.1"], {"dataset": "digits"}, "does not read dropout with model=mlp: it configures the UNet (set "
                                               "model=unet to sweep it)"),
    (["width=16,32"], {"dataset": "digits", "model": "unet"}, "does not read width with model=unet"),
    (["dim=4,8"], {"dataset": "digits"}, "does not read dim with dataset=digits: it configures the GMM data"),
    (["dataset=gmm,digits", "resolution=8,16"], {},
     "the grid points dataset=gmm resolution=8 and dataset=gmm resolution=16 would compute the same metrics and "
     "verdicts (a flat map that nothing tested): drop resolution from the grid, or sweep it in a sweep of its own "
     "where it is read"),
])
def test_a_grid_over_a_field_sigma_tradeoff_does_not_read_is_refused(tmp_path: Path, grid: list[str],
                                                                     sets: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        sigma_plan(tmp_path, grid, **sets)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("grid", "sets"), [
    (["resolution=8,16"], {"dataset": "digits"}),                  # images: read
    (["base_channels=8,16"], {"dataset": "digits", "model": "unet"}),
    (["width=16,32"], {}),                                         # the GMM's MLP
    (["dim=4,8"], {}),
    (["model=mlp,auto"], {"dataset": "digits"}),                   # auto on images may build a UNet: not declared
])
def test_a_grid_over_fields_it_reads_is_planned(tmp_path: Path, grid: list[str], sets: dict[str, str]) -> None:
    assert len(sigma_plan(tmp_path, grid, **sets).points) == 2


def test_sigma_tradeoff_gives_the_same_result_whatever_the_fields_it_declares_unread(tmp_path: Path) -> None:
    """The declaration is checked against the run: on the GMM with the MLP, changing every field ignored_fields
    names changes no metric (runtimes aside) and no verdict, while a field it reads (width) changes them."""
    from flowvar.experiments.sigma_tradeoff import ignored_fields

    tiny = {"n_train": "12", "n_eval": "32", "min_heldout": "8", "steps": "10", "batch_size": "16", "width": "16",
            "depth": "2", "euler_steps": "4", "null_repeats": "2", "sigmas": "[0,0.2]", "n_seeds": "1",
            "exact_max": "8", "threads": "1"}
    spec = get_experiment("sigma_tradeoff")
    unread = ignored_fields(build_config(spec, quick=True, overrides=tiny))
    assert set(unread) == {"resolution", "channels", "base_channels", "channel_mult", "num_res_blocks",
                           "attention_resolutions", "dropout", "grid_columns"}
    changed = {"resolution": "32", "channels": "3", "base_channels": "8", "channel_mult": "[1]",
               "num_res_blocks": "2", "attention_resolutions": "[4]", "dropout": "0.3", "grid_columns": "2"}
    assert set(changed) == set(unread)

    def scores(overrides: dict[str, str], name: str) -> tuple[dict[str, Any], dict[str, str]]:
        result = run_experiment("sigma_tradeoff", tmp_path / name, quick=True, overrides=overrides)
        flat = {k: v for k, v in flatten(result.metrics).items() if "runtime" not in k}
        return flat, {c.id: str(c.verdict) for c in result.claims}

    base = scores(tiny, "a")
    assert scores({**tiny, **changed}, "b") == base
    assert scores({**tiny, "width": "24"}, "c")[0] != base[0]


def test_a_plugin_declares_its_unread_fields_with_ignoring(tmp_path: Path, knob: str) -> None:
    """The hook is the registry's (``ignoring``, as ``assembles``): a plugin's knob read only in mode b is refused
    as an axis in mode a, planned in mode b, and an experiment that declares nothing is not checked."""
    spec = get_experiment("review_e_knob")
    assert dict(spec.ignores(build_config(spec, overrides={"mode": "a"}))) == {
        "knob": "with mode=a (set mode=b to sweep it)"}
    opts = dict(out=tmp_path / "o", plugins=[knob], quiet=True)
    with pytest.raises(ConfigError, match="sweeping knob: review_e_knob does not read knob with mode=a"):
        plan(Options("review_e_knob", grid=["knob=1,2"], **opts))
    assert len(plan(Options("review_e_knob", grid=["knob=1,2"], overrides={"mode": "b"}, **opts)).points) == 2
    assert get_experiment("toy_sweep").ignores is None
    assert len(plan(toy(tmp_path / "t", ["label=a,b"])).points) == 2  # toy_sweep never reads label: not declared


def test_dataclass_fields_cover_what_sigma_tradeoff_declares() -> None:
    """Every field the hook can name is a config field (a typo would never match an axis)."""
    from flowvar.experiments.sigma_tradeoff import GMM_FIELDS, MLP_FIELDS, UNET_FIELDS, SigmaTradeoffConfig

    names = {f.name for f in dataclasses.fields(SigmaTradeoffConfig)}
    assert {*GMM_FIELDS, *MLP_FIELDS, *UNET_FIELDS, "resolution", "channels"} <= names
