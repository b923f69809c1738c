"""End-to-end runs of the foundation experiments at tiny sizes: the plumbing, not the science.

Each run must write a complete result.json (claims with verdicts and evidence, metrics, config, the
paper's statement, runtime, versions) and its figures. The science is asserted by the unit tests of the
library modules and by the experiments' own verdicts at --quick and full scale.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from flowvar.experiments.base import RunContext, build_config, experiments, get_experiment, run_experiment
from flowvar.results import KINDS, VERDICTS, to_jsonable

TINY = {
    "lemma1": {"n_samples": "500"},
    "prop1": {"n_samples": "300"},
    # fig4/fig5: R = 5 is the least R whose Mann–Whitney p can fall below α = 0.01 (their precondition), and the
    # angles and σ are chosen for large effects, so these tiny runs are testable (not "untestable")
    "fig4": {"n_samples": "300", "repeats": "5", "angles": "60", "sigmas": "0,0.05,1", "noise_forms": "constant"},
    "fig5": {"n_samples": "300", "repeats": "5", "angles": "0,120,180", "sigmas": "0,0.5", "noise_forms": "constant"},
    "counterexample1": {"n_samples": "200", "euler_steps": "11,10", "rk_steps": "11"},
    "lemma1_mlp": {"widths": "4,8", "stages": "2", "first_stage_steps": "10", "n_seeds": "2", "eval_samples": "500"},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_writes_complete_result(name: str, tmp_path: Path) -> None:
    run_experiment(name, tmp_path, quick=True, overrides=TINY[name])
    folder = tmp_path / name
    result = json.loads((folder / "result.json").read_text())
    assert result["experiment"] == name and result["quick"] is True
    assert result["claims"], "every experiment states at least one claim"
    for claim in result["claims"]:
        assert claim["verdict"] in VERDICTS and claim["kind"] in KINDS
        assert claim["evidence"] and claim["rule"] and claim["statement"]
        if claim["verdict"] == "untestable":  # only ever from a measured precondition that failed
            assert claim["precondition"] and not claim["precondition"]["holds"]
    assert result["metrics"] and result["paper"] and result["versions"]["torch"]
    assert result["runtime_s"] > 0
    expected = build_config(get_experiment(name), quick=True, overrides=TINY[name])
    assert result["config"] == to_jsonable(dataclasses.asdict(expected))
    for fig in result["figures"]:
        assert (folder / fig).stat().st_size > 1000
    assert (folder / "summary.md").exists()


def test_every_registered_experiment_has_a_smoke_run() -> None:
    foundation = {"lemma1", "prop1", "fig4", "fig5", "counterexample1", "lemma1_mlp"}
    assert foundation <= set(experiments())


def test_interrupted_run_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_experiment("prop1", tmp_path, quick=True, overrides={"n_samples": "200"})
    before = (tmp_path / "prop1" / "result.json").read_text()

    def interrupted(self: RunContext, name: str, fig: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(RunContext, "figure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("prop1", tmp_path, quick=True, overrides={"n_samples": "300"})
    # the earlier complete result is untouched and no staging folder is left behind
    assert (tmp_path / "prop1" / "result.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prop1"]
