"""The published reference run (``results/``): it parses, it covers every claim the code can make, the README's
verdict section is generated from it, and every claim in it is judged the way the verdicts issue asks."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from pathlib import Path

import pytest

from flowvar.report import README_BEGIN, README_END, readme_section
from flowvar.results import KINDS, VERDICTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
EXPERIMENTS = ROOT / "src" / "flowvar" / "experiments"
ID = re.compile(r"^[a-z0-9_]+\.[A-Za-z0-9_.*=\-]+$")

NOT_IN_REFERENCE_RUN: dict[str, str] = {}
"""Claim-id patterns of the code that the reference run cannot contain, with the reason (none at present)."""


def claim_patterns(path: Path) -> set[str]:
    """The claim ids an experiment module can emit, read from its source: the id-shaped string or f-string passed
    to any call whose name ends in ``claim`` (``ctx.claim``, a module's own ``_..._claim`` helper). An f-string's
    placeholders become ``*``, except names of module-level string constants (``NAME``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                 if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if not name.endswith("claim"):
            continue
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value
            elif isinstance(arg, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else
                               constants.get(v.value.id, "*") if isinstance(v.value, ast.Name) else "*"
                               for v in arg.values)
            else:
                continue
            if ID.match(text):
                found.add(text)
                break
    return found


def test_the_claim_extractor_finds_literal_and_formatted_ids(tmp_path: Path) -> None:
    source = tmp_path / "demo.py"
    source.write_text('NAME = "demo"\n'
                      'def run(ctx, key, s):\n'
                      '    ctx.claim("demo.plain", "statement", {}, kind="identity", rule="r", verdict="confirmed")\n'
                      '    ctx.claim(f"demo.{key}.sigma{s:g}_x", "s", {}, kind="finding", rule="r")\n'
                      '    _my_claim(ctx, f"{NAME}.from_constant", "statement")\n'
                      '    ctx.metric("demo.not_a_claim", 1)\n')
    assert claim_patterns(source) == {"demo.plain", "demo.*.sigma*_x", "demo.from_constant"}


def _collection() -> dict:
    path = RESULTS / "results.json"
    if not path.is_file():
        pytest.fail("results/results.json is missing: run the reference run (see results/README.md)")
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_reference_run_parses_and_every_experiment_has_a_result() -> None:
    collection = _collection()
    assert collection["meta"]["mode"] in ("quick", "full") and collection["meta"]["git_commit"]
    names = {e["name"] for e in collection["experiments"]}
    from flowvar.experiments.registry import MACHINERY

    modules = {p.stem for p in EXPERIMENTS.glob("*.py") if not p.stem.startswith("_") and p.stem not in MACHINERY}
    assert names == modules
    for e in collection["experiments"]:
        # computed by this folder's last command, or kept from an earlier run of it ('reproduce --only' reruns one
        # experiment into the folder) with that run's provenance: never a result of unknown origin
        origin = (e.get("kept_from") or {}) if e["status"] == "kept" else e
        if e["status"] == "assembled":  # re-judged by `flowvar assemble` from its own run's stored points
            source = e.get("assembled_from") or {}
            rejudged = source.get("rejudged") or {}
            assert rejudged.get("result") and source.get("assembled_by"), f"{e['name']}: assembled without provenance"
            assert "unknown" not in str(source.get("computed_by", "unknown")), f"{e['name']}: computed by whom?"
            assert (RESULTS / e["name"] / "result.json").is_file()
            continue
        assert origin.get("status") in ("computed", "cached"), f"{e['name']}: {e['status']} {e.get('error')}"
        if e["status"] == "kept":
            assert origin.get("command") and origin.get("created"), f"{e['name']}: kept without provenance"
        assert (RESULTS / e["name"] / "result.json").is_file()


def test_every_claim_of_the_code_is_in_the_reference_run() -> None:
    ids = [c["id"] for e in _collection()["experiments"] for c in (e.get("result") or {}).get("claims", [])]
    missing = []
    for module in sorted(EXPERIMENTS.glob("*.py")):
        for pattern in claim_patterns(module):
            if pattern not in NOT_IN_REFERENCE_RUN and not any(fnmatch.fnmatchcase(i, pattern) for i in ids):
                missing.append(f"{module.stem}: {pattern}")
    assert not missing, f"claims the code makes but the reference run lacks: {missing}"


def test_every_claim_states_how_it_was_judged() -> None:
    for e in _collection()["experiments"]:
        for c in e["result"]["claims"]:
            where = f"{e['name']}: {c['id']}"
            assert c["kind"] in KINDS and c["verdict"] in VERDICTS, where
            assert c["rule"] and c["statement"], where
            if c["kind"] != "identity":
                assert c["min_effect"] and c["replicates"], f"{where} lacks its minimum effect or its replicates"
            if c["verdict"] == "untestable":
                pre = c["precondition"]
                assert pre and not pre["holds"] and pre["measured"] and pre["remedy"], where


def test_the_readme_section_is_generated_from_the_reference_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    assert 0 <= start < end, "README.md lacks the reference-run block"
    expected = readme_section(_collection(), "results")
    assert readme[start:end + len(README_END)] == expected, (
        "README.md's verdict section is stale: run `flowvar show results --update-readme README.md`")


def test_the_paper_scale_run_parses_and_the_readme_block_is_generated_from_it() -> None:
    """``results/full/``: the experiments whose full mode fits the 2-core machine, at paper scale. Every experiment
    in it ran in full mode with every claim judged; the README's paper-scale block is generated from it."""
    from flowvar.report import README_FULL_BEGIN, README_FULL_END

    folder = RESULTS / "full"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.find(README_FULL_BEGIN), readme.find(README_FULL_END)
    assert 0 <= start < end, "README.md lacks the paper-scale block"
    if not (folder / "results.json").is_file():
        assert readme[start:end + len(README_FULL_END)] == f"{README_FULL_BEGIN}\n{README_FULL_END}", (
            "README.md's paper-scale block has content but results/full/ has no run")
        return
    collection = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert collection["meta"]["mode"] == "full"
    done = [e for e in collection["experiments"] if e["status"] in ("computed", "cached")]
    assert done, "the paper-scale run holds no finished experiment"
    for e in done:
        assert e["result"]["quick"] is False, e["name"]
        assert (folder / e["name"] / "result.json").is_file(), e["name"]
        for c in e["result"]["claims"]:
            assert c["kind"] in KINDS and c["verdict"] in VERDICTS and c["rule"], c["id"]
    expected = readme_section(collection, "results/full")
    assert readme[start:end + len(README_FULL_END)] == expected, (
        "README.md's paper-scale block is stale: run `flowvar show results/full --update-readme README.md`")


def test_the_digits_full_n_runs_parse_are_judged_and_say_their_scale() -> None:
    """``results/digits_full_n/``: single-experiment runs of Tables 2 and 3 on the full digits set. Each loads as a
    Result of its experiment at N = 1797 with every claim judged (kind, verdict, rule, minimum effect, replicates), its
    summary.md is what the current report code renders, and the folder's README names each run."""
    from flowvar.experiments.registry import get_experiment
    from flowvar.report.markdown import result_markdown
    from flowvar.results import Result

    folder = RESULTS / "digits_full_n"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    runs = sorted(p.parent for p in folder.glob("*/result.json"))
    assert runs, "results/digits_full_n holds no run"
    for run in runs:
        result = Result.load(run / "result.json")
        assert get_experiment(result.experiment).name == run.name
        n = result.config["ns"] if run.name == "table2" else [result.config["n"]]
        assert n == [1797] and result.config["dataset"] == "digits"
        assert f"`{run.name}/`" in readme
        for c in result.claims:
            assert c.kind in KINDS and c.verdict in VERDICTS and c.rule and c.min_effect and c.replicates, c.id
        assert (run / "summary.md").read_text(encoding="utf-8") == result_markdown(result), (
            f"{run}/summary.md is stale: rewrite it with flowvar.report.markdown.result_markdown")
        for fig in result.figures:
            assert (run / fig).is_file(), fig


@pytest.mark.parametrize("folder", ["results", "results/full"])
def test_each_experiment_summary_of_the_published_runs_is_the_current_rendering(folder: str) -> None:
    """summary.md of every experiment in the published runs is what the current report code renders from its
    result.json (`flowvar show FOLDER --write-report` rewrites them with report.html and report.md)."""
    from flowvar.report.markdown import result_markdown
    from flowvar.results import Result

    runs = sorted(p.parent for p in (ROOT / folder).glob("*/result.json"))
    assert runs
    for run in runs:
        assert (run / "summary.md").read_text(encoding="utf-8") == result_markdown(Result.load(run / "result.json")), (
            f"{run}/summary.md is stale: run `flowvar show {folder} --write-report`")


def _reproductions(collection: Path) -> dict[str, str]:
    """{claim id: verdict} of every reproduction in a published collection's results.json."""
    data = json.loads(collection.read_text())
    return {c["id"]: c["verdict"] for e in data["experiments"] for c in (e.get("result") or {}).get("claims", [])
            if c.get("kind", "reproduction") == "reproduction"}


def test_the_readme_says_how_the_two_headlines_claim_sets_differ() -> None:
    """readerB 4 (session 28): both headlines read "of 36 reproductions" though the two runs judge different claims;
    the README's sentence saying which (counts and experiments) is checked against the two results.json."""
    quick = _reproductions(RESULTS / "results.json")
    full = _reproductions(RESULTS / "full" / "results.json")
    both = set(quick) & set(full)
    same = sum(quick[c] == full[c] for c in both)
    only_quick = sorted({c.split(".")[0] for c in set(quick) - set(full)})
    only_full = sorted({c.split(".")[0] for c in set(full) - set(quick)})
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"The two headlines count different claims: {len(both)} reproductions are judged at both scales ({same} "
            f"with the same verdict), {len(set(quick) - set(full))} only in the quick run") in readme
    assert f"and {len(set(full) - set(quick))} only here (" in readme
    assert only_quick == ["table2", "table3"]
    assert only_full == ["memorisation_phase", "prop2", "solver_resolution"]
