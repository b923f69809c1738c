"""Review sweepR 2 and 3: ``flowvar assemble`` checks every point folder against the cache entry it was installed
from (an edited ``result.json`` silently turned a verdict; a lost file said nothing of the damage), and a sweep
whose grid changed moves the assembled result of the earlier grid out of ``OUT/assembled/`` (it was left there,
describing another grid, with nothing saying so).

A toy experiment with an ``assemble`` (written into a temporary folder and loaded as a plugin): each point computes
``y = x`` for its ``xs`` and the assembled run judges whether y increases with x."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flowvar.cache import Cache
from flowvar.cli import main
from flowvar.errors import DataError
from flowvar.experiments.registry import load_plugin
from flowvar.results import Result
from flowvar.sweep import Options, sweep
from flowvar.sweep.assemble import assemble_problem, assemble_sweep
from flowvar.sweep.folder import EARLIER_ASSEMBLIES, entry_difference

NAME = "sweepr_rising"
PLUGIN_TEXT = textwrap.dedent(f'''
    """sweepR's toy experiment with an assemble: y = x at each point; the whole run judges y increasing in x."""
    from dataclasses import dataclass

    from flowvar.experiments.base import RunContext, assembles, register


    @dataclass
    class RisingConfig:
        seed: int = 0
        xs: tuple[float, ...] = (1.0, 2.0)


    def judge(ctx: RunContext, ys: dict[str, float]) -> None:
        ctx.metric("ys", ys)
        order = [ys[k] for k in sorted(ys, key=float)]
        rising = all(b > a for a, b in zip(order, order[1:]))
        ctx.claim("rising", "y increases with x", {{"ys": order}}, confirmed=rising, refuted=not rising,
                  rule="each y above the last", kind="finding")


    @register("{NAME}", title="sweepR assemble toy", config=RisingConfig)
    def run(config: RisingConfig, ctx: RunContext) -> None:
        judge(ctx, {{f"{{x:g}}": float(x) for x in config.xs}})


    @assembles("{NAME}")
    def assemble(config: RisingConfig, parts: list, ctx: RunContext) -> None:
        ys = {{}}
        for part in parts:
            ys.update(part["ys"])
        judge(ctx, {{f"{{x:g}}": ys[f"{{x:g}}"] for x in config.xs}})
''')


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sweepr_plugin") / "sweepr_rising_plugin.py"
    path.write_text(PLUGIN_TEXT)
    load_plugin(str(path))
    return str(path)


def _sweep(plugin: str, out: Path, grid: str = "xs=[1],[2]") -> Any:
    summary = sweep(Options(NAME, grid=[grid], out=out, plugins=[plugin], quiet=True))
    assert not summary.failed
    return summary


def _point(out: Path, index: int) -> tuple[dict[str, Any], Path]:
    record = json.loads((out / "sweep.json").read_text())["points"][index]
    return record, out / record["output"]


def _make_falling(out: Path) -> None:
    """Edit point 1's y (x = 2) below point 0's: the assembled run would be refuted, from a number nothing computed."""
    _, folder = _point(out, 1)
    stored = json.loads((folder / "result.json").read_text())
    stored["metrics"]["ys"]["2"] = 0.5
    (folder / "result.json").write_text(json.dumps(stored))


def test_an_edited_point_result_is_refused_as_damaged_and_the_rerun_restores_it(plugin: str, tmp_path: Path) -> None:
    out = tmp_path / "s"
    _sweep(plugin, out)
    _make_falling(out)
    with pytest.raises(DataError) as error:
        assemble_sweep(out)
    message = str(error.value)
    assert message.startswith("point 1 ({'xs': [2.0]}) is damaged: ")
    assert "(result.json edited since the sweep installed it)" in message
    assert f"--out {out} --plugin {plugin}`: it restores the point from its cache {out / '.cache'}" in message
    assert "--force" not in message and "\n" not in message
    assert not (out / "assembled").exists()  # nothing written
    assert assemble_problem(out) == message  # the sweep's closing hint asks the same check
    _sweep(plugin, out)  # the fix the message names: the point is installed again from the cache
    result, _ = assemble_sweep(out)
    assert [c.verdict for c in result.claims] == ["confirmed"]
    assert result.metrics["ys"] == {"1": 1.0, "2": 2.0}


def test_a_point_folder_with_a_file_lost_says_it_is_damaged_and_how_to_fix_it(plugin: str, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s"
    _sweep(plugin, out)
    _, folder = _point(out, 0)
    (folder / "summary.md").unlink()
    capsys.readouterr()
    assert main(["assemble", str(out), "--plugin", plugin]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "point 0 ({'xs': [1.0]}) is damaged" in err and "(summary.md lost since the sweep installed it)" in err
    assert "restores the point from its cache" in err


def test_what_cannot_change_a_number_is_no_damage(plugin: str, tmp_path: Path) -> None:
    """A file added by hand, and a summary.md re-rendered (install renders it from result.json with the current
    report code, so its bytes may differ from the entry's), leave the result as computed: it assembles."""
    out = tmp_path / "s"
    _sweep(plugin, out)
    _, folder = _point(out, 0)
    (folder / "notes.txt").write_text("mine")
    (folder / "summary.md").write_text("re-rendered by another report version\n")
    cache = Cache(out / ".cache")
    difference = entry_difference(folder, cache, folder.name)
    assert difference is not None and not difference.damaged and difference.added == ("notes.txt",)
    assert difference.changed == () and difference.missing == ()
    result, _ = assemble_sweep(out)
    assert [c.verdict for c in result.claims] == ["confirmed"]


def test_a_point_its_cache_no_longer_holds_is_taken_as_it_is(plugin: str, tmp_path: Path) -> None:
    """Nothing to compare with (the entry pruned, the folder moved without its cache): the experiment's own
    assemble judges what the folder holds, as before."""
    import shutil

    out = tmp_path / "s"
    _sweep(plugin, out)
    _make_falling(out)
    record, folder = _point(out, 1)
    shutil.rmtree(out / ".cache" / record["key"])
    assert entry_difference(folder, Cache(out / ".cache"), record["key"]) is None
    result, _ = assemble_sweep(out)
    assert [c.verdict for c in result.claims] == ["refuted"]


def test_a_moved_sweep_is_checked_against_the_cache_that_moved_with_it(plugin: str, tmp_path: Path) -> None:
    """Without --cache the points come from OUT/.cache, which moves with the folder (the recorded path does not)."""
    out = tmp_path / "s"
    _sweep(plugin, out)
    moved = tmp_path / "moved"
    out.rename(moved)
    _make_falling(moved)
    with pytest.raises(DataError, match=rf"is damaged: .* restores the point from its cache {moved / '.cache'}$"):
        assemble_sweep(moved)


def test_a_changed_grid_moves_the_earlier_assembled_result_aside(plugin: str, tmp_path: Path) -> None:
    out = tmp_path / "s"
    _sweep(plugin, out)
    assemble_sweep(out)
    assembled = out / "assembled" / NAME
    assert Result.load(assembled / "result.json").config["xs"] == [1.0, 2.0]
    again = _sweep(plugin, out)  # the same grid: its assembled result is this grid's and stays
    assert (assembled / "result.json").is_file() and not (out / "assembled" / EARLIER_ASSEMBLIES).exists()
    assert not any("assembled" in w for w in again.warnings)

    extended = _sweep(plugin, out, "xs=[1],[2],[3]")  # extended: 1 new point, 2 from the cache
    aside = out / "assembled" / EARLIER_ASSEMBLIES / NAME
    assert not assembled.exists()  # nothing at OUT/assembled/<experiment> describes another grid
    assert Result.load(aside / "result.json").config["xs"] == [1.0, 2.0]  # kept, readable, out of the way
    warning = next(w for w in extended.warnings if "assembled" in w)
    assert f"{assembled} was assembled from 2 point(s) of another grid" in warning
    assert f"moved it to {aside}" in warning and f"`flowvar assemble {out}` assembles this grid" in warning
    assert warning in (out / "sweep.log").read_text()
    assert warning in json.loads((out / "sweep.json").read_text())["meta"]["warnings"]

    result, _ = assemble_sweep(out)
    assert list(result.config["xs"]) == [1.0, 2.0, 3.0]
    _sweep(plugin, out, "xs=[1],[2]")  # back to the first grid: a second earlier result gets a name of its own
    assert (out / "assembled" / EARLIER_ASSEMBLIES / f"{NAME}-2" / "result.json").is_file()
    assert Result.load(aside / "result.json").config["xs"] == [1.0, 2.0]


def test_an_assembled_result_inside_a_reproduce_collection_is_left_in_place_with_a_warning(
        plugin: str, tmp_path: Path) -> None:
    out = tmp_path / "s"
    _sweep(plugin, out)
    assemble_sweep(out)
    (out / "assembled" / "results.json").write_text("{}")  # OUT/assembled is someone's reproduce folder
    extended = _sweep(plugin, out, "xs=[1],[2],[3]")
    assert (out / "assembled" / NAME / "result.json").is_file()
    assert any("is part of the `flowvar reproduce` collection" in w and "left in place" in w
               for w in extended.warnings)


def test_a_users_own_result_in_assembled_is_left_alone(plugin: str, tmp_path: Path) -> None:
    """Only an assembled sweep result (one recording the keys it was assembled from) is moved."""
    out = tmp_path / "s"
    _sweep(plugin, out)
    own = out / "assembled" / NAME
    own.mkdir(parents=True)
    (own / "result.json").write_text(json.dumps({"metrics": {"ys": {}}}))
    summary = _sweep(plugin, out, "xs=[1],[2],[3]")
    assert (own / "result.json").is_file() and not any("assembled" in w for w in summary.warnings)


def test_an_earlier_grids_point_with_a_re_rendered_summary_is_pruned_and_an_edited_one_kept(plugin: str,
                                                                                            tmp_path: Path) -> None:
    """prune_points and assemble share one comparison (:func:`entry_difference`): a summary.md that install
    rendered afresh is still the entry's result (the earlier grid's command installs it again), an edited
    result.json is not."""
    out = tmp_path / "s"
    _sweep(plugin, out, "xs=[1],[2],[3]")
    _, rendered = _point(out, 0)
    _, edited = _point(out, 1)
    (rendered / "summary.md").write_text("rendered by another report version\n")
    _make_falling(out)  # point 1's result.json
    _sweep(plugin, out, "xs=[3],[4]")
    assert not rendered.exists() and edited.is_dir()
    assert "kept 1 point folder(s) of an earlier grid in points/ (" + edited.name in (out / "sweep.log").read_text()
