"""The experiments beside sigma_tradeoff that declare fields a sweep must not map (review sweepR, 1 and 2): fig6's
``primary_steps`` and ``n_plot`` reach no metric and no verdict (the README's and docs/sweeps.md's first example
swept primary_steps, retraining every network for a map that was flat by construction). Each declaration is checked
against the run itself, and the docs' sweep examples must plan."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, parse_overrides, run_experiment
from flowvar.sweep import Options, flatten, parse_seeds, plan

ROOT = Path(__file__).resolve().parents[1]


def scores(name: str, folder: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A run's flattened metrics (runtimes left out: wall-clock) and its verdicts by claim id."""
    result = run_experiment(name, folder, quick=True, overrides=overrides)
    flat = {k: v for k, v in flatten(result.metrics).items() if "runtime" not in k}
    return flat, {c.id: str(c.verdict) for c in result.claims}


@pytest.mark.parametrize(("grid", "field"), [(["primary_steps=11,51"], "primary_steps"), (["n_plot=5,40"], "n_plot")])
def test_fig6_refuses_an_axis_over_a_field_no_metric_or_verdict_reads(tmp_path: Path, grid: list[str],
                                                                      field: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan(Options("fig6", grid=grid, seeds=[0, 2], quick=True, out=tmp_path / "o"))
    text = str(info.value)
    assert text.startswith(f"sweeping {field}: fig6 does not read {field} for any metric or verdict: ")
    assert "would compute the same metrics and verdicts (a flat map that nothing tested)" in text
    assert text.endswith(f"drop {field} from the grid") and "\n" not in text
    assert not (tmp_path / "o").exists()


def test_fig6_declares_the_same_fields_at_every_config() -> None:
    spec = get_experiment("fig6")
    for overrides in ({}, {"sigmas": "[0,0.2]", "steps": "500"}):
        assert set(spec.ignores(build_config(spec, quick=True, overrides=overrides))) == {"primary_steps", "n_plot"}


def test_fig6_gives_the_same_metrics_and_verdicts_whatever_primary_steps_and_n_plot(tmp_path: Path) -> None:
    """The declaration checked against the run: another primary_steps and n_plot change no metric (runtimes
    aside) and no verdict, while steps, which the example now sweeps, changes the metrics."""
    tiny = {"n_seeds": 1, "steps": 20, "width": 16, "n_eval": 20, "euler_steps": (3, 11, 4), "primary_steps": 11,
            "n_plot": 5, "max_dopri_steps": 2000}
    base = scores("fig6", tmp_path / "a", tiny)
    assert scores("fig6", tmp_path / "b", {**tiny, "primary_steps": 3, "n_plot": 2}) == base
    assert scores("fig6", tmp_path / "c", {**tiny, "steps": 30})[0] != base[0]


def example_commands() -> list[tuple[str, str]]:
    """Every ``flowvar sweep`` command line of README.md and docs/sweeps.md (file name, line)."""
    found = []
    for doc in ("README.md", "docs/sweeps.md"):
        for line in (ROOT / doc).read_text().splitlines():
            if re.match(r"\s*flowvar sweep ", line):
                found.append((doc, line.strip()))
    return found


@pytest.mark.parametrize(("doc", "line"), example_commands())
def test_the_docs_sweep_examples_plan(doc: str, line: str, tmp_path: Path) -> None:
    """Each example is planned as written (on local processes; a plugin of the docs' own is not there to load):
    an axis an experiment declares unread, or an invalid value, would be refused here as the user would see it."""
    words = shlex.split(line, comments=True)[2:]
    experiment, flags = words[0], words[1:]
    if "--plugin" in flags:
        pytest.skip("the docs' plugin file (my_experiments.py) is the user's own")
    grid, sets, seeds, preset, quick = [], [], None, None, False
    i = 0
    while i < len(flags):
        flag = flags[i]
        if flag == "--quick":
            quick, i = True, i + 1
            continue
        value = flags[i + 1]
        if flag == "--grid":
            grid.append(value)
        elif flag == "--set":
            sets.append(value)
        elif flag == "--seeds":
            seeds = parse_seeds(value)
        elif flag == "--preset":
            preset = value
        else:
            assert flag in ("--jobs", "--backend", "--ray-address", "--out"), f"{doc}: unexpected {flag} in {line}"
        i += 2
    planned = plan(Options(experiment, grid=grid, seeds=seeds, preset=preset, quick=quick,
                           overrides=parse_overrides(sets), out=tmp_path / "o"))
    assert len(planned.points) >= 2


FULL_M = "[[4,1.5],[1.5,1]]"


@pytest.mark.parametrize("name", ["prop1", "fig4", "fig5"])
def test_cov_diag_is_refused_as_an_axis_while_cov_is_set(tmp_path: Path, name: str) -> None:
    """The review's prop1 sweep over cov_diag with cov set computed two keys with 162 of 162 metrics identical."""
    with pytest.raises(ConfigError) as info:
        plan(Options(name, grid=["cov_diag=[4,0.25],[1,1]"], quick=True, overrides={"cov": FULL_M},
                     out=tmp_path / "o"))
    assert str(info.value) == (
        f"sweeping cov_diag: {name} does not read cov_diag when cov is set: M is the full matrix cov, and cov_diag "
        f"is its diagonal only when cov is null (sweep cov, or --set cov=null to sweep cov_diag); the grid points "
        f"cov_diag=[4,0.25] and cov_diag=[1,1] would compute the same metrics and verdicts (a flat map that nothing "
        f"tested): drop cov_diag from the grid")
    assert not (tmp_path / "o").exists()
    # with cov null cov_diag is M's diagonal: swept; and a grid over cov itself (null among its values) is too
    assert len(plan(Options(name, grid=["cov_diag=[4,0.25],[1,1]"], quick=True, out=tmp_path / "p")).points) == 2
    assert len(plan(Options(name, grid=[f"cov=null,{FULL_M}"], quick=True, out=tmp_path / "q")).points) == 2


@pytest.mark.parametrize(("name", "tiny"), [
    ("prop1", {"n_samples": 500, "angles": "[0,90]"}),
    ("fig5", {"n_samples": 300, "repeats": 4, "angles": "[0,120]", "sigmas": "[0,0.5]"}),
])
def test_cov_diag_changes_nothing_while_cov_is_set(tmp_path: Path, name: str, tiny: dict[str, Any]) -> None:
    """The declaration checked against the run (the kit's problem_of, which prop1, fig4 and fig5 all build M
    with): with cov set, another cov_diag gives the same metrics and verdicts; with cov null it changes them."""
    spec = get_experiment(name)
    with_cov = {**tiny, "cov": FULL_M}
    assert set(spec.ignores(build_config(spec, quick=True, overrides=with_cov))) == {"cov_diag"}
    assert spec.ignores(build_config(spec, quick=True, overrides=tiny)) == {}
    base = scores(name, tmp_path / "a", {**with_cov, "cov_diag": "[4,0.25]"})
    assert scores(name, tmp_path / "b", {**with_cov, "cov_diag": "[1,2]"}) == base
    assert scores(name, tmp_path / "c", {**tiny, "cov_diag": "[4,0.25]"})[0] != \
        scores(name, tmp_path / "d", {**tiny, "cov_diag": "[1,2]"})[0]
