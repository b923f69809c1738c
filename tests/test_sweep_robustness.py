"""The sweep where it meets trouble: replicate seeds that overlap between points, grid values whose labels
collide, figures that cannot be written, presets overridden from the command line, a read-only cache, corrupted
entries, ambiguous or repeated --metric/--verdict patterns. (A worker killed mid-run: tests/test_runner.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from flowvar.cache import Cache
from flowvar.errors import ConfigError
from flowvar.experiments.base import get_experiment, load_plugin
from flowvar.sweep import Axis, Options, PointOutcome, cell_table, expand, plan, sweep, sweep_table

TOY = str(Path(__file__).parent / "plugins" / "toy_sweep.py")
REPLICATES = str(Path(__file__).parent / "plugins" / "toy_replicates.py")


def toy_options(out: Path, grid: list[str], **kw) -> Options:
    return Options("toy_sweep", grid=grid, out=out, plugins=[TOY], quiet=True, **kw)


def replicate_options(out: Path, grid: list[str], **kw) -> Options:
    return Options("toy_replicates", grid=grid, out=out, plugins=[REPLICATES], quiet=True, **kw)


def load(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


# ----------------------------------------------------------------------------------- replicates of a seed axis


def test_seeds_closer_than_n_seeds_are_refused_with_the_fix(tmp_path: Path) -> None:
    """Point seed=s trains seeds s … s + n_seeds − 1 (ctx.replicate): points 0 and 1 of an n_seeds = 2 experiment
    would share the training of seed 1, and the cell's mean ± sd over seeds would count it twice."""
    with pytest.raises(ConfigError, match=r"seed=0 and seed=1 .*share the training of seed 1.*--seeds 0,2,4 .*"
                                          r"or --set n_seeds=1"):
        plan(replicate_options(tmp_path / "a", ["x=1"], seeds=[0, 1, 2]))
    with pytest.raises(ConfigError, match=r"--grid seed=0,2"):
        plan(replicate_options(tmp_path / "a", ["x=1", "seed=0,1"]))
    # the effective n_seeds decides: --quick trains 3 replicates, so seeds 2 apart overlap there
    with pytest.raises(ConfigError, match=r"n_seeds = 3.*--seeds 0,3 "):
        plan(replicate_options(tmp_path / "a", ["x=1"], seeds=[0, 2], quick=True))
    # disjoint replicates pass: seeds n_seeds apart, or one replicate per point
    assert len(plan(replicate_options(tmp_path / "a", ["x=1"], seeds=[0, 2, 4])).points) == 3
    assert len(plan(replicate_options(tmp_path / "a", ["x=1"], seeds=[0, 1], overrides={"n_seeds": "1"})).points) == 2
    assert len(plan(replicate_options(tmp_path / "a", ["x=1"], seeds=[0, 3], quick=True)).points) == 2
    # a grid over n_seeds: each cell is checked with its own count
    with pytest.raises(ConfigError, match=r"n_seeds = 2"):
        plan(replicate_options(tmp_path / "a", ["n_seeds=1,2"], seeds=[0, 1]))
    assert not (tmp_path / "a").exists()


def test_points_seeds_apart_share_no_training(tmp_path: Path) -> None:
    summary = sweep(replicate_options(tmp_path / "sw", ["x=1"], seeds=[0, 2]))
    trained = [set(o.metrics) - {"mean"} for o in summary.outcomes]
    assert trained == [{"ys.seed0", "ys.seed1"}, {"ys.seed2", "ys.seed3"}]


# ----------------------------------------------------------------------------------- labels that collide


def test_values_with_the_same_short_label_stay_separate_cells(toy) -> None:
    from flowvar.sweep.grid import axis_labels

    axes = [Axis("x", (1.0, 1.0000001)), Axis("seed", (0,))]
    points = expand(toy, axes, quick=False)
    outcomes = [PointOutcome(p, status="computed", metrics={"v": v}) for p, v in zip(points, (1.0, 3.0))]
    table = cell_table(axes, outcomes, lambda o: o.metrics.get("v"))
    assert sorted(table.values()) == [(1.0, 0.0, 1), (3.0, 0.0, 1)]
    assert axis_labels(axes[0]) == ["1", "1.0000001"]
    assert [p.label for p in points] == ["x=1 seed=0", "x=1.0000001 seed=0"]
    assert axis_labels(Axis("x", (1234567.0, 1234568.0, 2.5))) == ["1234567", "1234568", "2.5"]
    assert axis_labels(Axis("s", ((0.0, 1.0), (0.0, 1.0000001)))) == ["[0,1]", "[0,1.0000001]"]
    assert axis_labels(Axis("x", (0.5, 2.0))) == ["0.5", "2"]  # no collision: the short labels


def test_show_lists_colliding_values_apart(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    sweep(toy_options(out, ["x=1,1.0000001"]))
    rows = sweep_table(load(out)).splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["1", "1.0000001"]


@pytest.fixture(scope="module")
def toy():
    load_plugin(TOY)
    return get_experiment("toy_sweep")


# ----------------------------------------------------------------------------------- figures that cannot be written


def test_a_figure_that_cannot_be_written_is_a_warning(tmp_path: Path) -> None:
    """A figure the disk refuses (here a folder in its place: the write fails like a full disk) is a warning; the
    others are written, and sweep.json's final rewrite and the log's finished line still happen."""
    out = tmp_path / "sw"
    (out / "figures" / "stats.y.png").mkdir(parents=True)
    summary = sweep(toy_options(out, ["x=1,2"], metrics=["stats.y", "stats.x"]))
    assert summary.count("computed") == 2 and "figures/stats.y.png" not in summary.figures
    assert "figures/stats.x.png" in summary.figures and (out / "figures" / "stats.x.png").stat().st_size > 1000
    assert any("stats.y.png" in w and "cannot" in w for w in summary.warnings), summary.warnings
    meta = load(out)["meta"]
    assert meta["figures"] == summary.figures and meta["warnings"] == summary.warnings
    assert "finished in" in (out / "sweep.log").read_text()
    assert not list((out / "figures").glob(".*.tmp"))  # no partial file left behind


# ----------------------------------------------------------------------------------- presets and the command line


def test_the_command_line_overrides_a_presets_axes_and_values(tmp_path: Path) -> None:
    """table2's sigma preset sweeps sigmas and sets ns; the command line may sweep ns or fix sigmas instead."""
    swept = plan(Options("table2", preset="sigma", quick=True, grid=["ns=[64],[128]"]))
    assert [a.key for a in swept.axes] == ["sigmas", "ns"]
    assert sorted({tuple(p.config.ns) for p in swept.points}) == [(64,), (128,)]
    fixed = plan(Options("table2", preset="n", quick=True, overrides={"ns": "[64]"}, grid=["sigmas=[0,0.1],[0,0.2]"]))
    assert [a.key for a in fixed.axes] == ["sigmas"] and {tuple(p.config.ns) for p in fixed.points} == {(64,)}
    # a conflict within the command line itself stays an error
    with pytest.raises(ConfigError, match="both swept"):
        plan(Options("table2", preset="sigma", quick=True, grid=["ns=[64],[128]"], overrides={"ns": "[32]"}))
    with pytest.raises(ConfigError, match="names ns twice"):
        plan(Options("table2", preset="n", quick=True, grid=["ns=[64]", "ns=[128]"]))


# ----------------------------------------------------------------------------------- a read-only cache


def test_a_fully_cached_sweep_reads_a_cache_it_cannot_write(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    sweep(toy_options(tmp_path / "a", ["x=1,2"], cache_dir=cache))

    def read_only(self: Cache) -> None:
        raise ConfigError(f"cannot write to the cache folder {self.root}: Read-only file system")

    monkeypatch.setattr(Cache, "check_writable", read_only)
    again = sweep(toy_options(tmp_path / "b", ["x=1,2"], cache_dir=cache))
    assert again.count("cached") == 2 and (tmp_path / "b" / "sweep.csv").is_file()
    with pytest.raises(ConfigError, match="Read-only file system"):  # a point to compute: refused up front
        sweep(toy_options(tmp_path / "c", ["x=1,2,3"], cache_dir=cache))
    assert not (tmp_path / "c" / "sweep.csv").exists()


# ----------------------------------------------------------------------------------- show, corrupted entries


def test_show_counts_untestable_verdicts() -> None:
    data = {"axes": [{"key": "x", "values": [1.0]}],
            "points": [{"point": 0, "values": {"x": 1.0}, "status": "computed",
                        "verdicts": {"a": "confirmed", "b": "untestable", "c": "untestable", "d": "refuted"}}]}
    header, row = sweep_table(data).splitlines()
    assert "verdicts (c/i/r/u)" in header and "1/0/1/2" in row.split()


def test_a_corrupted_point_is_announced_on_the_terminal(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    sweep(toy_options(out, ["x=1,2"]))
    entry = Cache(out / ".cache").path(plan(toy_options(out, ["x=1,2"])).points[0].key)
    (entry / "summary.md").write_text("edited")
    stream = io.StringIO()
    again = sweep(toy_options(out, ["x=1,2"]), stream=stream)
    assert [o.status for o in again.outcomes] == ["computed", "cached"]
    assert "flowvar: warning: the cached result of toy_sweep x=1 is corrupted (" in stream.getvalue()
    assert "recomputing it" in stream.getvalue()


# ----------------------------------------------------------------------------------- --metric and --verdict


def test_an_ambiguous_metric_is_refused_up_front_with_its_matches(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    with pytest.raises(ConfigError, match=r"--metric 'stats\.\*' matches several metrics of toy_sweep at point "
                                          r"x=1 \(stats\.label, stats\.x, stats\.y\)"):
        sweep(toy_options(out, ["x=1,2"], metrics=["stats.*"]))  # nothing cached: refused at the first point
    assert not (out / "sweep.csv").exists()
    with pytest.raises(ConfigError, match=r"matches several metrics"):  # cached: refused before anything runs
        sweep(toy_options(out, ["x=1,2"], metrics=["stats.*"]))
    assert sweep(toy_options(out, ["x=1,2"], metrics=["stats.y*"])).warnings == []


def test_a_verdict_pattern_naming_a_mapped_claim_draws_it_once(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    summary = sweep(toy_options(out, ["x=1,2"], verdicts=["y_positive"]))
    assert summary.figures == ["figures/verdict-y_positive.png"]
    assert load(out)["meta"]["figures"] == ["figures/verdict-y_positive.png"]
