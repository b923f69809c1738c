"""The output folder of a sweep (review E, 1, 2 and 6): a folder holding another sweep is refused before anything is
written (a fig5 sweep replaced a fig4 sweep's map silently); the point folders of an earlier grid leave points/,
their results staying in the cache; a dry run says when --metric/--verdict are not checked yet."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from flowvar.cache import Cache
from flowvar.errors import ConfigError
from flowvar.experiments.base import load_plugin
from flowvar.sweep import Options, dry_run, sweep
from sweep_checks import PLUGIN, toy

OTHER = '''
from dataclasses import dataclass

from flowvar.experiments.base import RunContext, register


@dataclass
class OtherConfig:
    seed: int = 0
    x: float = 1.0


@register("review_e_other", title="another tiny experiment", config=OtherConfig)
def run(config: OtherConfig, ctx: RunContext) -> None:
    ctx.metric("y", config.x)
    ctx.claim("pos", "y > 0", {}, confirmed=True, rule="always", kind="finding")
'''


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second plugin experiment (its module in a folder of its own), beside toy_sweep."""
    path = tmp_path_factory.mktemp("plugin") / "review_e_other.py"
    path.write_text(textwrap.dedent(OTHER))
    load_plugin(PLUGIN)
    load_plugin(str(path))
    return str(path)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.parts and p.name != "sweep.log"}


def test_a_folder_holding_another_sweep_is_refused_before_anything_is_written(tmp_path: Path, other: str) -> None:
    """The review's fig5 sweep into a fig4 sweep's folder replaced its table, figures and points silently. Another
    experiment, or other axes of the same one, is refused in one line naming what the folder holds and the fix;
    the folder is left byte for byte (dry run and sweep)."""
    out = tmp_path / "s"
    sweep(toy(out, ["x=1,2"]))
    before = snapshot(out)
    command = json.loads((out / "sweep.json").read_text())["meta"]["command"]
    cases = [Options("review_e_other", grid=["x=1,2"], out=out, plugins=[other], quiet=True),  # another experiment
             toy(out, ["scale=1,2"]),                                                           # other axes
             toy(out, ["x=1,2", "scale=2,3"])]                     # more axes, but not holding its points (scale 1)
    for options in cases:
        for run in (dry_run, sweep):
            with pytest.raises(ConfigError) as info:
                run(options)
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"{out} holds a sweep of toy_sweep over x (`{command}`), not of "
                                      f"{options.experiment} over "), message
            assert message.endswith(f"choose another --out, or remove {out} first")
    assert snapshot(out) == before


def test_the_same_sweep_changed_extended_or_forced_still_runs_in_its_folder(tmp_path: Path) -> None:
    """Same experiment and axis keys (any values, any --set, axes in another order, --force) is a rerun; a grid that
    holds every point of the folder's (--seeds 0,1 added to a sweep at the default seed 0) extends it."""
    out = tmp_path / "s"
    first = sweep(toy(out, ["x=1,2", "scale=1,2"]))
    assert first.count("computed") == 4
    assert sweep(toy(out, ["x=1,2", "scale=1,2"])).count("cached") == 4          # the same command
    assert sweep(toy(out, ["scale=1,2", "x=1,3"], overrides={"label": "b"})).count("computed") == 4  # changed
    assert sweep(toy(out, ["scale=1,2", "x=1,3"], overrides={"label": "b"}, force=True)).count("computed") == 4
    summary = sweep(toy(out, ["scale=1,2", "x=1,3"], overrides={"label": "b"}, seeds=[0, 1]))  # extended by seeds
    assert (summary.count("cached"), summary.count("computed")) == (4, 4)
    with pytest.raises(ConfigError, match="holds a sweep of toy_sweep over scale, x, seed"):  # a sub-grid of it
        sweep(toy(out, ["scale=1,2", "x=1,3"], overrides={"label": "b"}))


def test_an_unreadable_sweep_index_is_no_sweep_to_protect(tmp_path: Path) -> None:
    """Its own error asks for the rerun that rewrites it: the rerun is not refused."""
    out = tmp_path / "s"
    sweep(toy(out, ["x=1,2"]))
    (out / "sweep.json").write_text("{not json")
    assert sweep(toy(out, ["scale=3,4"])).count("computed") == 2
    assert [a["key"] for a in json.loads((out / "sweep.json").read_text())["axes"]] == ["scale"]


def test_a_changed_grid_leaves_only_its_own_points_in_points(tmp_path: Path) -> None:
    """The review: after n_samples=1000,2000 → 1000,3000 points/ held 12 folders for an 8-point sweep. The earlier
    grid's folders are removed (one log line says so and where their results stay), and rerunning the earlier grid
    installs them again from the cache without computing."""
    out = tmp_path / "s"
    sweep(toy(out, ["x=1,2"], seeds=[0, 1]))
    old = {p.name for p in (out / "points").iterdir()}
    summary = sweep(toy(out, ["x=1,3"], seeds=[0, 1]))
    now = {p.name for p in (out / "points").iterdir()}
    assert now == {o.point.key for o in summary.outcomes} and len(now) == 4
    gone = sorted(old - now)
    assert len(gone) == 2
    lines = [x for x in (out / "sweep.log").read_text().splitlines() if "of an earlier grid" in x]
    assert len(lines) == 1
    assert (f"removed 2 point folder(s) of an earlier grid from points/ ({', '.join(gone)}); their results stay in "
            f"the cache {Cache(out / '.cache').root}") in lines[0]
    back = sweep(toy(out, ["x=1,2"], seeds=[0, 1]))
    assert back.count("cached") == 4 and back.count("computed") == 0


def test_a_point_folder_that_is_not_a_copy_of_its_cache_entry_is_kept(tmp_path: Path) -> None:
    """A folder with a file added by hand (or one the cache does not hold) is never deleted: a warning names it."""
    out = tmp_path / "s"
    first = sweep(toy(out, ["x=1,2"]))
    mine = out / "points" / first.outcomes[1].point.key
    (mine / "my_notes.txt").write_text("keep me")
    foreign = out / "points" / "toy_sweep-0000000000000000"  # a key this cache never held
    foreign.mkdir()
    (foreign / "result.json").write_text("{}")
    sweep(toy(out, ["x=1,3"]))
    assert (mine / "my_notes.txt").read_text() == "keep me" and (foreign / "result.json").is_file()
    lines = [x for x in (out / "sweep.log").read_text().splitlines() if "of an earlier grid" in x]
    assert len(lines) == 1 and "kept 2 point folder(s) of an earlier grid in points/" in lines[0]
    assert mine.name in lines[0] and foreign.name in lines[0] and "move them away by hand" in lines[0]


def test_an_interrupted_sweep_removes_no_point_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flowvar.sweep.run as run_module

    out = tmp_path / "s"
    sweep(toy(out, ["x=1,2"]))
    before = {p.name for p in (out / "points").iterdir()}

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "dispatch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(toy(out, ["x=1,3"]))
    assert before <= {p.name for p in (out / "points").iterdir()}


def test_a_dry_run_says_when_metric_is_not_checked_yet(tmp_path: Path) -> None:
    """With nothing of the grid cached the names are checked on the first computed point: the dry run says so
    rather than accept any name silently; once a point is cached it checks (and refuses) as before."""
    out = tmp_path / "s"
    text = dry_run(toy(out, ["x=1,2"], metrics=["nosuch.metric"], verdicts=["nosuch"]))
    assert text.splitlines()[-2] == ("--metric and --verdict not checked yet: no point of the grid is cached; the "
                                     "sweep checks the names against the first point it computes and stops there if "
                                     "one names nothing the experiment reports")
    assert text.splitlines()[-1].startswith("2 points: 0 cached, 2 to compute")
    assert "not checked yet" not in dry_run(toy(out, ["x=1,2"]))
    sweep(toy(out, ["x=1,2"]))
    assert "not checked yet" not in dry_run(toy(out, ["x=1,2"], metrics=["stats.y"]))
    with pytest.raises(ConfigError, match=r"nosuch\.metric"):
        dry_run(toy(out, ["x=1,2"], metrics=["nosuch.metric"]))
