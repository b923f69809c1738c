"""Claims, verdicts and results (flowvar.results): judging, preconditions, counts by kind, the round trip of
result.json, and the one atomic writer (permissions, failed writes, staging folders)."""

import json
from dataclasses import asdict

import pytest

from flowvar.results import Precondition, Result, claim_counts, headline, judge, judgement_text, to_jsonable


def test_judge_and_result_roundtrip() -> None:
    c = judge("x.y", "s", {"v": float("inf"), "p": 0.001}, confirmed=True, refuted=False, rule="p < 0.01",
              kind="reproduction", min_effect="Δ ≥ 1", replicates="3 training seeds")
    assert c.verdict == "confirmed" and c.evidence["v"] == "inf"
    assert judge("x", "s", {}, confirmed=False, refuted=False, rule="r", kind="finding").verdict == "inconclusive"
    assert judge("x", "s", {}, verdict="refuted", rule="r", kind="identity").verdict == "refuted"
    with pytest.raises(ValueError):
        judge("x", "s", {}, confirmed=True, refuted=True, rule="r", kind="finding")
    with pytest.raises(ValueError, match="kind"):
        judge("x", "s", {}, confirmed=True, refuted=False, rule="r", kind="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either verdict"):
        judge("x", "s", {}, rule="r", kind="finding")
    with pytest.raises(ValueError, match="not both"):
        judge("x", "s", {}, verdict="confirmed", confirmed=True, refuted=False, rule="r", kind="finding")
    r = Result(experiment="demo", title="t", config={"a": 1}, quick=True, claims=[c], metrics={"m": 1.5})
    again = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.claims[0].verdict == "confirmed" and again.metrics == {"m": 1.5}
    assert again.claims[0].kind == "reproduction" and again.claims[0].replicates == "3 training seeds"
    assert "| `x.y` | reproduction | **confirmed** |" in r.summary_markdown()
    assert "minimum effect: Δ ≥ 1" in r.summary_markdown()


def test_unmet_precondition_makes_a_claim_untestable_and_keeps_the_rules_outcome() -> None:
    unmet = Precondition("σ = 0 memorised", holds=False, measured={"pairing_accuracy": 0.1}, remedy="train longer")
    c = judge("x", "s", {"a": 1}, confirmed=False, refuted=True, rule="r", kind="reproduction", precondition=unmet)
    assert c.verdict == "untestable" and c.verdict_if_testable == "refuted"
    assert c.precondition == {"statement": "σ = 0 memorised", "holds": False, "measured": {"pairing_accuracy": 0.1},
                              "remedy": "train longer"}
    text = judgement_text(c)
    assert "does NOT hold" in text and "pairing_accuracy = 0.1" in text and "train longer" in text
    met = Precondition("σ = 0 memorised", holds=True, measured={"pairing_accuracy": 1.0})
    c = judge("x", "s", {}, confirmed=True, refuted=False, rule="r", kind="reproduction", precondition=met)
    assert c.verdict == "confirmed" and c.verdict_if_testable is None
    with pytest.raises(ValueError, match="identity"):
        judge("x", "s", {}, confirmed=True, refuted=False, rule="r", kind="identity", precondition=met)


def test_counts_by_kind_and_the_headline() -> None:
    claims = [judge("i1", "s", {}, verdict="confirmed", rule="r", kind="identity"),
              judge("i2", "s", {}, verdict="confirmed", rule="r", kind="identity"),
              judge("r1", "s", {}, verdict="confirmed", rule="r", kind="reproduction"),
              judge("r2", "s", {}, verdict="refuted", rule="r", kind="reproduction"),
              judge("r3", "s", {}, verdict="confirmed", rule="r", kind="reproduction",
                    precondition=Precondition("p", holds=False)),
              judge("f1", "s", {}, verdict="inconclusive", rule="r", kind="finding")]
    counts = claim_counts(claims)
    assert counts["reproduction"] == {"confirmed": 1, "refuted": 1, "inconclusive": 0, "untestable": 1}
    assert counts["identity"]["confirmed"] == 2 and counts["finding"]["inconclusive"] == 1
    assert claim_counts([asdict(c) for c in claims]) == counts
    text = headline(counts)
    assert text.startswith("1 of 3 reproductions confirmed, 1 refuted, 0 inconclusive, 1 untestable here ·")
    # an untestable claim whose rule alone refutes it is said so: a failed precondition must not hide a refutation
    aside = judge("r4", "s", {}, verdict="refuted", rule="r", kind="reproduction",
                  precondition=Precondition("p", holds=False))
    counts4 = claim_counts([*claims, aside])
    assert counts4["reproduction"]["untestable"] == 2 and counts4["untestable_refuted"]["reproduction"] == 1
    assert headline(counts4).startswith("1 of 4 reproductions confirmed, 1 refuted, 0 inconclusive, 2 untestable "
                                        "here (1 of them refuted by their rule alone) ·")
    assert claim_counts([asdict(c) for c in [*claims, aside]]) == counts4
    assert "2 of 2 identities hold" in text and "findings: 0 confirmed, 0 refuted, 1 inconclusive" in text
    broken = claim_counts([*claims, judge("i3", "s", {}, verdict="refuted", rule="r", kind="identity")])
    assert "2 of 3 identities hold (1 do not: an implementation defect)" in headline(broken)
    # kinds without claims are not listed ("0 of 0 identities hold"), except the reproductions, the headline proper
    only_reproductions = headline(claim_counts(claims[2:5]))
    assert "identities" not in only_reproductions and "findings" not in only_reproductions
    # no reproduction claims: said in words (a row of zeros, "0 of 0 reproductions confirmed, 0 refuted, ...", reads
    # as a result), still first: the reproductions are the headline proper
    assert headline(claim_counts(claims[:2])) == "no reproduction claims in this run · 2 of 2 identities hold"
    assert headline(claim_counts([])) == "no reproduction claims in this run"


    assert to_jsonable({"t": (1, float("nan"))}) == {"t": [1, "nan"]}


def test_a_result_file_flowvar_did_not_write_is_refused_by_name() -> None:
    """result.json with a verdict or kind flowvar never writes, or with fields missing or unknown: a ValueError
    saying which (load_results turns it into one DataError line), never a constructor's internals."""
    good = {"experiment": "x", "title": "t", "config": {}, "quick": True,
            "claims": [{"id": "x.a", "statement": "s", "verdict": "confirmed", "evidence": {}, "rule": "r"}]}
    assert Result.from_dict(good).claims[0].verdict == "confirmed"
    maybe = {**good, "claims": [{**good["claims"][0], "verdict": "maybe"}]}
    with pytest.raises(ValueError, match=r"claim x\.a has verdict 'maybe'"):
        Result.from_dict(maybe)
    with pytest.raises(ValueError, match=r"result: missing config"):
        Result.from_dict({"experiment": "x", "title": "t", "quick": True})
    with pytest.raises(ValueError, match="unknown colour"):
        Result.from_dict({**good, "colour": "red"})
    with pytest.raises(ValueError, match="expected a JSON object"):
        Result.from_dict([])  # type: ignore[arg-type]
