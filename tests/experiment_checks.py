"""Checks shared by the experiment test files. Each experiment's tests live in ``tests/test_<name>.py``; what two
of them share (the shape of a complete result, a tiny size, a list of bad configs) lives here, once.

Not a test module (pytest collects only ``test_*.py``); imported as ``from experiment_checks import ...``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from flowvar.experiments.base import build_config, get_experiment
from flowvar.results import to_jsonable

VERDICTS = {"confirmed", "refuted", "inconclusive", "untestable"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------- prop2 and table1


def assert_complete_gmm_result(name: str, folder: Path, overrides: dict[str, str]) -> None:
    """prop2's and table1's ``result.json``: every claim judged with its evidence, rule, kind, effect and replicates,
    an untestable claim's precondition measured with a remedy, every trained-model claim with a precondition, the
    config the one :func:`build_config` builds, PNG figures and a summary."""
    result = json.loads((folder / "result.json").read_text())
    assert result["experiment"] == name and result["quick"] is True
    assert result["claims"]
    for claim in result["claims"]:
        assert claim["verdict"] in VERDICTS
        assert claim["evidence"] and claim["rule"] and claim["statement"] and claim["id"].startswith(name)
        assert claim["kind"] in {"identity", "reproduction"} and claim["min_effect"] and claim["replicates"]
        if claim["verdict"] == "untestable":  # the precondition was measured and says why, and how to fix it
            pre = claim["precondition"]
            assert not pre["holds"] and pre["measured"] and pre["remedy"] and claim["verdict_if_testable"]
    # every trained-model reproduction states a measured precondition
    trained = [c for c in result["claims"] if ".neural." in c["id"] or name == "table1"]
    assert trained and all(c["precondition"] is not None for c in trained)
    assert result["metrics"] and result["paper"] and result["choices"]
    expected = build_config(get_experiment(name), quick=True, overrides=overrides)
    assert result["config"] == to_jsonable(dataclasses.asdict(expected))
    assert result["figures"]
    for fig in result["figures"]:
        assert (folder / fig).read_bytes()[:8] == PNG_MAGIC
    assert (folder / "summary.md").exists()


# ------------------------------------------------------------------------------------- fig6 and lemma2


def has_number(value: Any) -> bool:
    """Whether ``value`` (a JSON value) holds a number anywhere (booleans are not numbers)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, dict):
        return any(has_number(v) for v in value.values())
    if isinstance(value, list):
        return any(has_number(v) for v in value)
    return False


def check_claims_result(out: Path, name: str, claim_ids: set[str]) -> dict[str, Any]:
    """fig6's and lemma2's ``result.json``: exactly ``claim_ids``, each judged on numeric evidence, untestable exactly
    when its precondition fails; metrics, choices, config, PNG figures and a summary. Returns the parsed result."""
    folder = out / name
    data = json.loads((folder / "result.json").read_text())
    assert data["experiment"] == name and data["quick"] is True
    assert {c["id"] for c in data["claims"]} == claim_ids
    for c in data["claims"]:
        assert c["verdict"] in VERDICTS and c["rule"] and c["statement"]
        assert c["kind"] in {"reproduction", "finding"} and c["min_effect"] and c["replicates"], c["id"]
        assert has_number(c["evidence"]), c["id"]
        if c["precondition"] is not None:
            assert has_number(c["precondition"]["measured"]), c["id"]
            assert (c["verdict"] == "untestable") is (not c["precondition"]["holds"]), c["id"]
    assert data["metrics"] and data["choices"] and data["config"]
    assert data["figures"]
    for fig in data["figures"]:
        assert (folder / fig).read_bytes()[:8] == PNG_MAGIC
    assert (folder / "summary.md").exists()
    return data


# ------------------------------------------------------------------------------------- fig4 and fig5

FULL_M = "[[4,0.5,0],[0.5,1,0],[0,0,0.25]]"
"""A full (non-diagonal) 3 × 3 target covariance M."""

BAD_GAUSSIAN_CONFIGS: list[tuple[dict[str, str], str]] = [
    ({"cov": "[[4,0.5],[0.4,1]]"}, "cov must be symmetric"),
    ({"cov": "[[1,2],[2,1]]"}, "cov must be positive definite"),
    ({"cov": FULL_M}, "cov must be a 2×2 matrix"),
    ({"mean": "[5,5,5]", "cov": "[[1,0],[0,1]]"}, "cov must be a 3×3 matrix"),
    ({"cov_diag": "1,2,3"}, "cov_diag must hold d = 2"),
    ({"mean": "[5]", "cov_diag": "1"}, "d >= 2"),
    ({"plane": "0,2"}, "plane must be two distinct axes"),
    ({"repeats": "1"}, "repeats must be >= 2"),
    ({"sigmas": "-0.1,0.5"}, "sigmas must be >= 0, got"),
    ({"noise_forms": "constant,nope"}, "noise_forms must be distinct members of"),
]
"""Overrides that fig4's and fig5's shared Gaussian-problem schema refuses, with (part of) the one-line message."""


def claims_of(folder: Path) -> tuple[dict, dict]:
    """The parsed ``result.json`` in ``folder`` and its claims by id."""
    result = json.loads((folder / "result.json").read_text())
    return result, {c["id"]: c for c in result["claims"]}


# ------------------------------------------------------------------------------------- table2 and table3

IMAGE_TINY = {"resolution": "8", "base_channels": "8", "channel_mult": "1,2", "steps": "3", "batch_size": "4",
              "warmup_steps": "1", "euler_steps": "3", "n_seeds": "2", "grid_columns": "4"}
"""A toy size for the image experiments: 8 × 8 px, a two-level UNet, three training steps, two seeds."""


#: table2's and table3's claims of kind "finding" (the exact CFM(σ) minimiser's), by the last part of their id.
IMAGE_FINDINGS = ("exact_minimiser_breaks_pairing", "exact_minimiser_breaks_copying")


def check_image_result(out: Path, name: str, n_claims: int, figures: list[str]) -> dict[str, Any]:
    """table2's and table3's ``result.json`` after a run: ``n_claims`` seed-replicated claims — reproductions on
    the networks, each with a precondition (the networks fitted), and the exact minimiser's findings, without one —
    untestable exactly when the precondition fails, ``figures`` as real images, the device, the comparison with the
    paper and the summary."""
    data = json.loads((out / name / "result.json").read_text())
    assert len(data["claims"]) == n_claims
    for claim in data["claims"]:
        finding = claim["id"].rsplit(".", 1)[1] in IMAGE_FINDINGS
        assert claim["verdict"] in VERDICTS and claim["rule"] and claim["evidence"]
        assert claim["kind"] == ("finding" if finding else "reproduction")
        assert "seed" in claim["replicates"] and "α = 0.05" in claim["min_effect"]
        assert claim["evidence"]["comparison"]["n_seeds"] == data["config"]["n_seeds"]
        pre = claim["precondition"]
        assert (pre is None) == finding  # every claim on a network needs it to have fitted
        if pre is not None:
            assert (claim["verdict"] == "untestable") == (not pre["holds"]) and pre["measured"]
    assert sorted(data["figures"]) == sorted(figures)
    for fig in figures:
        with Image.open(out / name / fig) as img:
            assert img.size[0] > 100 and img.size[1] > 100
    assert data["metrics"]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")  # device "auto"
    assert data["metrics"]["comparison_with_paper"]
    assert (out / name / "summary.md").read_text().startswith(f"# {name}")
    return data


__all__ = ["BAD_GAUSSIAN_CONFIGS", "FULL_M", "IMAGE_FINDINGS", "IMAGE_TINY", "PNG_MAGIC", "VERDICTS",
           "assert_complete_gmm_result", "check_claims_result", "check_image_result", "claims_of", "has_number"]


# ------------------------------------------------------------------------------------- flowvar assemble


def assemble_in_place_unchanged(folder: Path, whole: Any, capsys: Any, metrics: tuple[str, ...] | None = None) -> Any:
    """``flowvar assemble FOLDER`` (a copy of ``whole``'s stored result) judges it again in place by the same code:
    "verdicts changed: none", and the same claims, choices, figures and notes (the last note added says so) as
    ``whole``; the same metrics — every one but ``assembled_from``, or only ``metrics`` where given (compared as
    JSON). Returns the re-judged result."""
    from flowvar.cli import main
    from flowvar.results import Result

    assert main(["assemble", str(folder)]) == 0
    assert "verdicts changed: none" in capsys.readouterr().out
    again = Result.load(folder / "result.json")
    assert again.to_dict()["claims"] == whole.to_dict()["claims"]
    if metrics is None:
        assert {k: v for k, v in again.metrics.items() if k != "assembled_from"} == whole.metrics
    for key in metrics or ():
        assert json.dumps(again.metrics[key]) == json.dumps(whole.metrics[key])
    assert again.choices == whole.choices and again.figures == whole.figures and again.notes[:-1] == whole.notes
    return again


def rejudge_with_outdated_verdicts(stored: Path, out: Path, expected: Any) -> tuple[Any, Path, list[str]]:
    """Set every verdict of ``stored``/result.json to refuted (what another rule might have stored), judge it again
    (:func:`flowvar.sweep.assemble.rejudge_result`, into ``out``) and check that the verdicts are ``expected``'s (the
    result this code computes) and that every one that changed is named in the note. Returns the re-judged result,
    its folder and the claims that changed (``expected``'s claims not refuted)."""
    from flowvar.sweep.assemble import rejudge_result

    data = json.loads((stored / "result.json").read_text())
    for claim in data["claims"]:
        claim["verdict"] = "refuted"
    (stored / "result.json").write_text(json.dumps(data))
    result, folder = rejudge_result(stored, out)
    assert [c.verdict for c in result.claims] == [c.verdict for c in expected.claims]
    changed = [c.id for c in expected.claims if c.verdict != "refuted"]
    assert all(f"{cid}: refuted → " in result.notes[-1] for cid in changed)
    return result, folder, changed
