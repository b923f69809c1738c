"""The sweep runner: grid parsing, caching, extension, resume, backends, failures, aggregation, bad input."""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowvar.cli import main
from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, discover, get_experiment, load_plugin
from flowvar.runner import check_ray_address
from flowvar.sweep import (
    Axis,
    Options,
    PointOutcome,
    cell_table,
    expand,
    flatten,
    numeric_positions,
    parse_axis,
    parse_seeds,
    plan,
    presets,
    resolve_metric,
    resolve_verdict,
    split_values,
    sweep,
)

PLUGIN = str(Path(__file__).parent / "plugins" / "toy_sweep.py")
FLOWVAR = str(Path(sys.executable).parent / "flowvar")


@pytest.fixture(scope="module")
def toy():
    load_plugin(PLUGIN)
    return get_experiment("toy_sweep")



def options(out: Path, grid: list[str], **kw) -> Options:
    return Options("toy_sweep", grid=grid, out=out, plugins=[PLUGIN], quiet=True, **kw)


def load(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def expected_y(x: float, seed: int, scale: float = 1.0, offsets: tuple[float, ...] = (0.0,)) -> float:
    """The toy's formula, recomputed independently of the runner."""
    import torch

    noise = float(torch.randn((), generator=torch.Generator().manual_seed(seed)))
    return scale * x**2 + sum(offsets) + 0.1 * noise


# ----------------------------------------------------------------------------------------------- parsing


def test_split_values_respects_brackets_and_quotes() -> None:
    assert split_values("0,0.05, 1e-3") == ["0", "0.05", "1e-3"]
    assert split_values("[0,0.05],[0, 0.1]") == ["[0,0.05]", "[0, 0.1]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    assert split_values("{a: 1, b: 2},3") == ["{a: 1, b: 2}", "3"]


def test_parse_axis_coerces_to_field_types(toy) -> None:
    assert parse_axis(toy, "x=0,1,2.5") == Axis("x", (0.0, 1.0, 2.5))
    assert all(isinstance(v, float) for v in parse_axis(toy, "x=0,1").values)
    assert parse_axis(toy, "offsets=[0,0.05],[1],2") == Axis("offsets", ((0.0, 0.05), (1.0,), (2.0,)))
    assert parse_axis(toy, "label=a,'b c'").values == ("a", "b c")
    assert parse_axis(toy, "fail_at=null,1").values == (None, 1.0)


@pytest.mark.parametrize("item, message", [
    ("y=1,2", "unknown config key 'y'"),
    ("x=a,b", "x expects a number"),
    ("x=", "empty value list"),
    ("x=1,,2", "an empty value between commas \\(value 2 of 3\\); drop the extra comma: x=1,2"),
    ("x", "expects key=v1,v2"),
    ("x=1,1.0", "lists 1.0 twice"),
    ("seed=1.5", "seed expects an integer"),
])
def test_parse_axis_rejects_bad_input(toy, item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_axis(toy, item)


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-6") == [3, 4, 5, 6]
    assert parse_seeds("0,4-5") == [0, 4, 5]
    assert parse_seeds(None) is None
    for bad in ("a", "1,1", "", "1.5"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_expand_is_the_cartesian_product_with_distinct_keys(toy) -> None:
    axes = [Axis("x", (0.0, 1.0, 2.0)), Axis("seed", (0, 1))]
    points = expand(toy, axes, quick=False, overrides={"scale": "3"})
    assert [(p.values["x"], p.values["seed"]) for p in points] == [(x, s) for x in (0.0, 1.0, 2.0) for s in (0, 1)]
    assert len({p.key for p in points}) == 6
    assert all(p.config.scale == 3.0 for p in points)
    # the key is the cache key of the full config: the same values built another way give the same key
    same = build_config(toy, overrides={"x": 1.0, "seed": 1, "scale": 3.0})
    assert points[3].config == same
    # quick mode applies the experiment's quick values (scale 2) and changes every key
    quick = expand(toy, axes, quick=True)
    assert quick[0].config.scale == 2.0 and not {p.key for p in quick} & {p.key for p in points}


def test_plan_rejects_bad_input(toy, tmp_path: Path) -> None:
    cases = [
        (dict(grid=[]), "empty grid"),
        (dict(grid=["x=1"], overrides={"nope": "1"}), "--set nope=1: unknown config key"),
        (dict(grid=["x=1"], overrides={"x": "1"}), "both swept"),
        (dict(grid=["x=1", "x=2"]), "names x twice"),
        (dict(grid=["x=1"], jobs=0), "--jobs must be a positive integer"),
        (dict(grid=["x=1"], backend="slurm"), "--backend must be one of"),
        (dict(grid=["x=1"], ray_address="h:1"), "needs --backend ray"),
        (dict(grid=["seed=1"], seeds=[0, 1]), "either with --seeds"),
        (dict(grid=["x=1"], preset="nope"), "no sweep preset 'nope'"),
    ]
    for kw, message in cases:
        with pytest.raises(ConfigError, match=message):
            plan(options(tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()


def test_every_experiment_preset_plans_valid_points() -> None:
    """Presets in the YAML files stay in step with the config dataclasses (quick and full)."""
    found = 0
    for name in discover():
        spec = get_experiment(name)
        for quick in (True, False):
            for preset in presets(spec, quick):
                the_plan = plan(Options(name, preset=preset, quick=quick))
                assert len(the_plan.points) >= 2, (name, preset)
                assert the_plan.metrics, f"{name} preset {preset} names no metric to plot"
                found += 1
    assert found >= 8  # table2 and table3: sigma and n, quick and full


def test_table2_sigma_preset_metrics_resolve_against_the_experiment_names() -> None:
    """The placeholders of a preset's metrics produce the names table2 writes (N=<n>.sigma=<σ>)."""
    the_plan = plan(Options("table2", preset="sigma", quick=True))
    point = the_plan.points[1]
    outcome = PointOutcome(point, status="computed")
    sigma = point.config.sigmas[1]
    n = point.config.ns[0]
    outcome.metrics = {f"table2.N={n}.sigma={sigma}.l2_to_shuffled.mean": 1.5,
                       f"table2.N={n}.sigma={sigma}.l2_to_ot.mean": 2.5,
                       f"table2.N={n}.sigma=0.0.l2_to_shuffled.mean": 0.5}
    values = [resolve_metric(m, outcome)[1] for m in the_plan.metrics]
    assert values == [1.5, 2.5, 0.5]
    outcome.verdicts = {f"table2.N={n}.sigma{sigma}_generalises": "refuted", f"table2.N={n}.sigma0_memorises": "x"}
    assert [resolve_verdict(v, outcome) for v in the_plan.verdicts] == [
        (f"table2.N={n}.sigma{sigma}_generalises", -1.0)]


# ----------------------------------------------------------------------------------------------- aggregation


def test_flatten_keeps_scalars_with_dotted_names() -> None:
    metrics = {"a": {"b": 1, "c": {"d": 2.5}}, "e": "x", "f": [1, 2], "g": None, "h": True}
    assert flatten(metrics) == {"a.b": 1, "a.c.d": 2.5, "e": "x", "h": True}


def test_resolve_metric_placeholders_wildcards_and_ambiguity(toy) -> None:
    point = expand(toy, [Axis("x", (2.0,))], quick=False, overrides={"offsets": "[1,2]"})[0]
    o = PointOutcome(point, metrics={"by_x.x=2.0": 7.0, "stats.y": 3.0, "s.a.v": 1.0, "s.b.v": 2.0, "t": "nan"})
    assert resolve_metric("by_x.x={x}", o) == ("by_x.x=2.0", 7.0)
    assert resolve_metric("by_x.x=*", o) == ("by_x.x=2.0", 7.0)
    assert resolve_metric("o={offsets[1]}", o) == (None, None)
    assert resolve_metric("s.*.v", o) == ("s.*.v", None)  # two names match: ambiguous
    assert resolve_metric("nope", o) == (None, None)
    assert resolve_metric("{nokey}", o) == (None, None)
    name, value = resolve_metric("t", o)
    assert name == "t" and math.isnan(value)


def test_cell_table_is_the_mean_and_sd_over_seeds(toy) -> None:
    axes = [Axis("x", (0.0, 1.0)), Axis("seed", (0, 1, 2))]
    points = expand(toy, axes, quick=False)
    rng = np.random.default_rng(0)
    values = rng.normal(size=len(points))
    outcomes = [PointOutcome(p, status="computed", metrics={"v": float(v)}) for p, v in zip(points, values)]
    outcomes[5].status, outcomes[5].error = "failed", "boom"  # left out of its cell
    table = cell_table(axes, outcomes, lambda o: o.metrics.get("v"))
    assert set(table) == {("0.0",), ("1.0",)}  # keyed by each value's exact JSON text, never a rounded label
    m0, s0, k0 = table[("0.0",)]
    assert k0 == 3 and m0 == pytest.approx(values[:3].mean()) and s0 == pytest.approx(values[:3].std(ddof=1))
    m1, s1, k1 = table[("1.0",)]
    assert k1 == 2 and m1 == pytest.approx(values[3:5].mean()) and s1 == pytest.approx(values[3:5].std(ddof=1))


def test_numeric_positions_of_list_axes() -> None:
    assert numeric_positions(Axis("x", (0.0, 0.5))) == ([0.0, 0.5], "x")
    assert numeric_positions(Axis("sigmas", ((0.0, 0.05), (0.0, 0.2)))) == ([0.05, 0.2], "sigmas[1]")
    assert numeric_positions(Axis("ns", ((64,), (256,)))) == ([64.0, 256.0], "ns[0]")
    assert numeric_positions(Axis("s", ((0.0, 0.1), (0.1, 0.2)))) == (None, "s")
    assert numeric_positions(Axis("label", ("a", "b"))) == (None, "label")


# ----------------------------------------------------------------------------------------------- running


def test_sweep_writes_tables_and_figures_and_a_rerun_does_no_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    opts = options(out, ["x=0,1,2", "offsets=[0],[1,2]"], seeds=[0, 1], metrics=["stats.y", "by_x.x={x}"])
    first = sweep(opts)
    assert (first.count("computed"), first.count("cached"), first.count("failed")) == (12, 0, 0)
    data = load(out)
    assert data["meta"]["counts"]["computed"] == 12 and data["axes"][0] == {"key": "x", "values": [0.0, 1.0, 2.0]}
    for p in data["points"]:
        v = p["values"]
        assert p["metrics"]["stats.y"] == pytest.approx(expected_y(v["x"], v["seed"], offsets=tuple(v["offsets"])),
                                                        abs=1e-12)
        assert p["verdicts"] == {"y_positive": "confirmed"}
        assert (out / p["output"] / "result.json").is_file()
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 12 and rows[3]["offsets"] == "[1.0, 2.0]" and rows[3]["seed"] == "1"
    assert float(rows[3]["stats.y"]) == pytest.approx(data["points"][3]["metrics"]["stats.y"])
    assert rows[3]["plot:by_x.x={x}"] == rows[3]["by_x.x=0.0"] == rows[3]["stats.y"]
    assert data["points"][3]["plotted"] == {"stats.y": data["points"][3]["metrics"]["stats.y"],
                                            "by_x.x={x}": data["points"][3]["metrics"]["by_x.x=0.0"]}
    assert set(first.figures) == {"figures/stats.y.png", "figures/by_x.x__x.png", "figures/verdict-y_positive.png"}
    assert all((out / f).stat().st_size > 1000 for f in first.figures)
    assert first.warnings == []  # an unknown --metric is an error: test_unknown_metric_stops_the_sweep_...
    # the same command again: every point from the cache, identical numbers
    second = sweep(opts)
    assert (second.count("computed"), second.count("cached")) == (0, 12)
    assert [p["metrics"] for p in load(out)["points"]] == [p["metrics"] for p in data["points"]]
    # `flowvar show` prints the points
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out.splitlines()
    row = next(line for line in shown if line.startswith("3 "))
    assert row.split()[:5] == ["3", "0", "[1,2]", "1", "cached"]
    assert f"{data['points'][3]['metrics']['stats.y']:.4g}" in row


def test_unknown_metric_stops_the_sweep_with_close_matches(tmp_path: Path, capsys) -> None:
    """A --metric that names nothing is a one-line error listing close names (difflib, on the whole name and on its
    last part) and where every valid name is. With no point cached it is raised as soon as the first point reports
    its metrics, before that point is installed or any table written: the rest is not computed, the finished point
    is cached; with cached points the sweep stops before computing or writing anything."""
    from flowvar.sweep import close_metric_names, unknown_metrics

    names = ["stats.x", "stats.y", "stats.label", "by_x.x=0.0", "table2.N=64.sigma=0.1.l2_to_ot.mean"]
    assert close_metric_names("stats.yy", names)[0] == "stats.y"
    assert close_metric_names("y", names) == ["stats.y"]
    assert close_metric_names("l2_to_OT", names) == ["table2.N=64.sigma=0.1.l2_to_ot.mean"]
    point = PointOutcome(plan(options(tmp_path / "p", ["x=0"])).points[0], status="computed",
                         metrics={n: 1.0 for n in names})
    assert unknown_metrics(["stats.y", "by_x.x={x}", "stats.*", "table2.N={n}.sigma={s}.l2_to_ot.mean",
                            "nope", "by_y.y={y}"], [point]) == ["nope", "by_y.y={y}"]
    assert unknown_metrics(["nope"], [PointOutcome(point.point, status="failed")]) == []  # nothing to check yet
    out = tmp_path / "sw"
    code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=0,1,2", "--metric", "stats.yy", "--metric",
                 "stats.y", "--quiet", "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("flowvar")]  # not progress lines
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("flowvar: error: --metric 'stats.yy' names no metric of toy_sweep (close: stats.y")
    assert "/result.json (its claim ids, and its metrics' keys joined by dots)" in err[0]
    assert "the point computed to learn them is cached" in err[0]
    # nothing of the refused sweep in OUT but its log: no tables, no point folders, no figures
    assert sorted(f.name for f in out.iterdir() if not f.name.startswith(".")) == ["sweep.log"]
    # the cached point names the metrics: the same mistake stops before anything is computed or written
    log_before = (out / "sweep.log").read_bytes()
    with pytest.raises(ConfigError, match=r"'stats\.yy' names no metric.*nothing was computed or written"):
        sweep(options(out, ["x=0,1,2"], metrics=["stats.yy"]))
    assert (out / "sweep.log").read_bytes() == log_before
    assert len(list((out / ".cache").glob("toy_sweep-*"))) == 1
    fixed = sweep(options(out, ["x=0,1,2"], metrics=["stats.y"]))
    assert (fixed.count("cached"), fixed.count("computed")) == (1, 2) and fixed.figures


def test_a_refused_metric_or_verdict_leaves_the_previous_sweep_untouched(tmp_path: Path, capsys) -> None:
    """The hostile review's case: a complete sweep, then the same sweep extended by a point with a misspelt
    --metric (or --verdict). The refusal comes before anything is computed or written: sweep.csv, sweep.json and
    the figures stay byte-identical, the new point is not computed, and --dry-run refuses the same way."""
    from flowvar.sweep import dry_run

    out = tmp_path / "sw"
    sweep(options(out, ["x=0,1"], metrics=["stats.y"]))
    capsys.readouterr()
    before = {f: f.read_bytes() for f in [*out.glob("sweep.*"), *out.glob("figures/*"), *out.glob("points/*/*")]}
    assert {f.name for f in before} >= {"sweep.csv", "sweep.json", "sweep.log", "stats.y.png"}
    for flag, bad, message in (("--metric", "stats.yy", "names no metric of toy_sweep (close: stats.y"),
                               ("--verdict", "y_positiv", "names no claim of toy_sweep (close: y_positive")):
        code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=0,1,2", flag, bad, "--quiet",
                     "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and err.startswith(f"flowvar: error: {flag} {bad!r} {message}"), err
        assert err.endswith("nothing was computed or written")
        assert {f: f.read_bytes() for f in before} == before
        assert {p.name for p in (out / "points").iterdir()} == {f.parent.name for f in before
                                                                 if f.parent.parent.name == "points"}
        with pytest.raises(ConfigError, match=f"{flag} '{bad}' names no"):
            dry_run(options(out, ["x=0,1,2"], **{"metrics" if flag == "--metric" else "verdicts": [bad]}))
    assert len(list((out / ".cache").glob("toy_sweep-*"))) == 2  # x = 2 was never computed


def test_extending_a_grid_runs_only_the_new_points(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sweep(options(tmp_path / "a", ["x=0,1"], seeds=[0], cache_dir=cache))
    grown = sweep(options(tmp_path / "b", ["x=0,1,2"], seeds=[0, 1], cache_dir=cache))
    status = {(o.point.values["x"], o.point.values["seed"]): o.status for o in grown.outcomes}
    assert status == {(0.0, 0): "cached", (1.0, 0): "cached", (2.0, 0): "computed",
                      (0.0, 1): "computed", (1.0, 1): "computed", (2.0, 1): "computed"}


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2,3", "--set", "fail_at=2", "--out",
                 str(out), "--quiet"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "1 failed" in printed and "FAILED x=2: RuntimeError: toy failure at x=2.0" in printed
    points = load(out)["points"]
    assert [p["status"] for p in points] == ["computed", "failed", "computed"]
    assert points[1]["error"] == "RuntimeError: toy failure at x=2.0" and points[1]["metrics"] == {}
    assert "Traceback" in (out / "sweep.log").read_text()
    # the failure is not cached: a rerun retries it (and only it)
    code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2,3", "--set", "fail_at=2", "--out",
                 str(out), "--quiet"])
    assert code == 1 and "(0 computed, 2 from the cache, 1 failed)" in capsys.readouterr().out


def test_a_killed_sweep_resumes_with_only_the_missing_points(tmp_path: Path) -> None:
    out, gate = tmp_path / "sw", tmp_path / "gate"
    command = [FLOWVAR, "sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2,3", "--set", "block_at=2",
               "--set", f"block_file={gate}", "--out", str(out), "--quiet"]
    env = {**os.environ, "FLOWVAR_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the first point is stored and the second one runs (staging folder)
            entries = [p for p in (out / ".cache").glob("toy_sweep-*") if (p / "cache.json").is_file()]
            if entries and list((out / ".cache").glob(".tmp-*-run-*")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not reach its second point")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    gate.write_text("open")
    stale = [out / ".sweep.json.k1ll3d.tmp", out / ".sweep.csv.k1ll3d.tmp"]  # a kill inside a table's atomic write
    for tmp in stale:
        tmp.write_text("x,y\n1,")
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "(2 computed, 1 from the cache, 0 failed)" in resumed.stdout
    assert not list((out / ".cache").glob(".tmp-*"))  # the killed run's work folder was cleaned up
    assert not any(tmp.exists() for tmp in stale)


def test_local_processes_and_ray_give_identical_results(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    grid = ["x=0,1,2", "offsets=[0],[0.5]"]
    serial = sweep(options(tmp_path / "serial", grid, seeds=[0, 1]))
    procs = sweep(options(tmp_path / "procs", grid, seeds=[0, 1], jobs=2))
    ray = sweep(options(tmp_path / "ray", grid, seeds=[0, 1], jobs=2, backend="ray"))
    assert serial.count("computed") == procs.count("computed") == ray.count("computed") == 12

    def table(folder: str) -> list[tuple]:
        return [(p["key"], p["values"], p["metrics"], p["verdicts"]) for p in load(tmp_path / folder)["points"]]

    assert table("serial") == table("procs") == table("ray")


def test_unreachable_ray_address_is_one_line_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "sw"
    code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1", "--backend", "ray", "--ray-address",
                 "127.0.0.1:9", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cannot reach the Ray cluster at 127.0.0.1:9" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="expects host:port"):
        check_ray_address("nohostport")
    # `auto` with no Ray instance running: the connection fails before anything is written
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    from ray._private import services

    if services.find_gcs_addresses():  # another process's Ray instance runs on this machine: `auto` would reach it
        pytest.skip("a Ray instance runs on this machine, so `--ray-address auto` would connect to it")
    code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1", "--backend", "ray", "--ray-address",
                 "auto", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("flowvar: error: cannot start the Ray cluster at auto") and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--grid", "nope=1,2"], "unknown config key 'nope'"),
    (["--grid", "x=one,two"], "x expects a number"),
    ([], "empty grid"),
    (["--grid", "x=1", "--seeds", "a,b"], "--seeds expects integers"),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, capsys, args, message) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("flowvar: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_a_corrupted_point_is_recomputed(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    sweep(options(out, ["x=1,2"]))
    entry = next((out / ".cache").glob("toy_sweep-*"))
    (entry / "summary.md").write_text("edited")
    again = sweep(options(out, ["x=1,2"]))
    assert sorted(o.status for o in again.outcomes) == ["cached", "computed"]


def test_editing_a_plugin_changes_its_cache_keys(toy) -> None:
    """A plugin experiment's code is part of its cache key, like flowvar's own experiments."""
    from flowvar.cache_key import _plugin_source

    # its relative path and bytes, and nothing else: it imports no module of its folder
    assert _plugin_source("toy_sweep") == b"toy_sweep.py\0" + Path(PLUGIN).read_bytes() + b"\0"
    assert _plugin_source("fig6") is None


def _plugin_file(folder: Path, module: str, name: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(
        "from dataclasses import dataclass\n"
        "from flowvar.experiments.base import register\n\n"
        "@dataclass\nclass C:\n    seed: int = 0\n\n"
        f"@register({name!r}, title='clash', config=C)\n"
        "def run(config, ctx):\n    ctx.metric('x', 1.0)\n")
    return path


@pytest.mark.parametrize("name", ["table1", "memorization_phase"])
def test_a_plugin_cannot_take_the_name_of_flowvars_own_experiment(tmp_path: Path, name: str) -> None:
    """Registering would replace flowvar's experiment in this process (or be replaced by it, depending on import
    order), and file the plugin's results and cache entries under a name that means something else."""
    from flowvar.experiments import registry

    before = registry.registered(canonical := registry.canonical_name(name))
    plugin = _plugin_file(tmp_path, f"clash_{name}", name)
    with pytest.raises(ConfigError, match=rf"registers an experiment named '{name}', which is flowvar's own "
                                          rf"{canonical}; give yours another name"):
        load_plugin(plugin)
    assert registry.registered(canonical) is before
    assert get_experiment(canonical).run.__module__ == f"flowvar.experiments.{canonical}"


def test_two_plugins_cannot_register_one_name_but_one_plugin_may_be_imported_twice(tmp_path: Path) -> None:
    from flowvar.experiments import registry

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _plugin_file(tmp_path / "a", "clash_first", "clash_toy")
    second = _plugin_file(tmp_path / "b", "clash_second", "clash_toy")
    try:
        assert load_plugin(first) == ["clash_toy"]
        kept = registry.registered("clash_toy")
        with pytest.raises(ConfigError, match=r"two modules register an experiment named 'clash_toy': .*clash_first"
                                              r"\.py and .*clash_second\.py; rename one"):
            load_plugin(second)
        assert registry.registered("clash_toy") is kept
        # the same file again, as a worker process or importlib.reload does: allowed, the spec is its own
        importlib.reload(sys.modules["clash_first"])
        assert registry.registered("clash_toy").run.__module__ == "clash_first"
    finally:
        registry._REGISTRY.pop("clash_toy", None)


def test_dry_run_lists_cached_and_missing_points_and_writes_nothing(tmp_path: Path) -> None:
    from flowvar.sweep import dry_run

    cache = tmp_path / "cache"
    sweep(options(tmp_path / "a", ["x=0,1"], cache_dir=cache))
    text = dry_run(options(tmp_path / "b", ["x=0,1,2"], cache_dir=cache))
    lines = text.splitlines()
    assert [line.split()[-1] for line in lines[:3]] == ["cached", "cached", "compute"]
    assert lines[-1].startswith("3 points: 2 cached, 1 to compute")
    assert not (tmp_path / "b").exists()


def test_figures_for_one_categorical_axis_and_three_axes(tmp_path: Path) -> None:
    """A categorical axis gives a line plot over labels; three swept keys give one heatmap panel per value of
    the third; a verdict pattern maps a claim whose id names the swept value."""
    one = sweep(options(tmp_path / "one", ["label=a,b,c"], metrics=["stats.y"], verdicts=["y_*"]))
    assert set(one.figures) == {"figures/stats.y.png", "figures/verdict-y.png", "figures/verdict-y_positive.png"}
    three = sweep(options(tmp_path / "three", ["x=0,1", "offsets=[0],[1]", "label=a,b"], metrics=["by_x.x={x}"]))
    assert three.count("computed") == 8 and "figures/by_x.x__x.png" in three.figures
    assert (tmp_path / "three" / "figures" / "by_x.x__x.png").stat().st_size > 1000


def _drawn_figures(monkeypatch, tmp_path: Path, the_plan, outcomes: list[PointOutcome]) -> dict:
    """draw_figures with plot_metric replaced by a recorder of the matplotlib figures it would save, by file name."""
    from flowvar.sweep import figures

    drawn: dict = {}

    def record(path: Path, title: str, axes, table, *, verdict: bool = False, gaps=None, splits=None,
               shortfalls=None, replicates=None) -> None:
        drawn[path.name] = figures.metric_figure(title, axes, table, gaps, verdict=verdict, splits=splits,
                                                 shortfalls=shortfalls, replicates=replicates)

    monkeypatch.setattr(figures, "plot_metric", record)
    figures.draw_figures(tmp_path / "figs", the_plan, outcomes)
    return drawn


def _gap_marks(ax) -> dict[str, tuple[list[float], list[float]]]:
    """The gap markers of a line plot: legend label → (x, y) of the points drawn."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines
            if line.get_label().startswith(("no verdict: ", "no value: "))}


def test_line_plots_show_every_point_with_a_mark_saying_why_it_has_no_verdict_or_value(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    """The hostile review's F8: a verdict map over one swept key dropped the points with no verdict (the quick
    memorisation_phase sweep's σ = 0.5 map was one dot on an x axis 3.8–4.2). Every point is drawn now: judged ones
    on the verdict scale, the others on a "no verdict" row with one marker per reason (untestable, failed, claim
    absent) named in the legend; a metric's missing points lie on the x axis, marked the same way."""
    from flowvar.sweep.figures import NO_VERDICT_Y

    the_plan = plan(options(tmp_path / "p", ["x=2,4,10,20"], metrics=["v"]))
    outcomes = [PointOutcome(p, status="computed") for p in the_plan.points]
    outcomes[0].verdicts, outcomes[0].metrics = {"c": "untestable", "d": "refuted"}, {"v": 0.5}
    outcomes[1].verdicts, outcomes[1].metrics = {"c": "confirmed", "d": "inconclusive"}, {"v": math.nan}
    outcomes[2].status, outcomes[2].error = "failed", "boom"
    outcomes[3].verdicts, outcomes[3].metrics = {"d": "refuted"}, {}  # claim c absent at x = 20, metric v too
    drawn = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)
    assert set(drawn) == {"v.png", "verdict-c.png", "verdict-d.png"}
    ax = drawn["verdict-c.png"].axes[0]
    judged = ax.containers[0].lines[0]  # the errorbar's data line: NaN where a point has no verdict
    assert list(judged.get_xdata()) == [2.0, 4.0, 10.0, 20.0]
    heights = np.asarray(judged.get_ydata(), dtype=float)
    assert heights[1] == 1.0 and np.isnan(heights[[0, 2, 3]]).all()
    assert _gap_marks(ax) == {"no verdict: untestable": ([2.0], [NO_VERDICT_Y]),
                              "no verdict: failed": ([10.0], [NO_VERDICT_Y]),
                              "no verdict: claim absent": ([20.0], [NO_VERDICT_Y])}
    assert len({line.get_marker() for line in ax.lines if line.get_label().startswith("no verdict")}) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "verdict", "no verdict: untestable", "no verdict: failed", "no verdict: claim absent"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["no verdict", "refuted", "inconclusive", "confirmed"]
    assert ax.get_ylim()[0] < NO_VERDICT_Y and ax.get_xlim()[0] < 2.0 and ax.get_xlim()[1] > 20.0
    # a claim every point but the failed one judges: the failed point is still there
    assert _gap_marks(drawn["verdict-d.png"].axes[0]) == {"no verdict: failed": ([10.0], [NO_VERDICT_Y])}
    metric = drawn["v.png"].axes[0]
    assert list(metric.containers[0].lines[0].get_xdata()) == [2.0, 4.0, 10.0, 20.0]
    assert {label: xs for label, (xs, _) in _gap_marks(metric).items()} == {
        "no value: not finite": [4.0], "no value: failed": [10.0], "no value: not reported": [20.0]}


def test_heatmaps_mark_every_cell_with_no_verdict_in_a_colour_that_reads(tmp_path: Path, monkeypatch) -> None:
    """Two swept keys: a cell with no verdict (or no value) is a grey cell reading "—" and why — seeds that differ
    in why are joined — and a legend names the mark. Every annotation's colour reads on its cell: the "—" of a
    failed point was white on a white NaN cell."""
    from flowvar.sweep.figures import GAP_COLOUR, text_colour

    the_plan = plan(options(tmp_path / "p", ["x=1,2", "scale=1,2"], seeds=[0, 1], metrics=["v"]))
    outcomes = [PointOutcome(p, status="computed") for p in the_plan.points]
    for o in outcomes:
        x, scale, seed = (o.point.values[k] for k in ("x", "scale", "seed"))
        o.verdicts = {"c": "confirmed" if scale == 1 else "refuted"}
        o.metrics = {"v": x * scale}
        if x == 2 and scale == 2:  # seed 0 untestable, seed 1 failed
            o.verdicts = {"c": "untestable"}
            if seed == 1:
                o.status, o.verdicts, o.metrics = "failed", {}, {}
        if x == 2 and scale == 1:  # no point finished
            o.status, o.verdicts, o.metrics = "failed", {}, {}
    drawn = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)
    for name, gap_texts in (("verdict-c.png", {(1, 1): "—\nfailed /\nuntestable", (1, 0): "—\nfailed"}),
                            # seed 0 reported v = 2 · 2, seed 1 failed: the cell says it holds one seed of two
                            ("v.png", {(1, 1): "4\n1 of 2 seeds\n(1 failed)", (0, 0): "1\n±0", (1, 0): "—\nfailed"})):
        fig = drawn[name]
        ax = fig.axes[0]
        image = ax.get_images()[0]
        texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
        assert set(texts) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every cell of the grid is annotated
        assert {cell: texts[cell].get_text() for cell in gap_texts} == gap_texts
        data = image.get_array()
        for (r, c), text in texts.items():
            face = image.cmap.get_bad() if np.ma.is_masked(data[r, c]) else image.cmap(image.norm(data[r, c]))
            assert text.get_color() == text_colour(face)
        assert np.ma.is_masked(data[1, 0]) and tuple(image.cmap.get_bad()) == pytest.approx(
            (float(GAP_COLOUR),) * 3 + (1.0,))
        assert any("here (the cell says why" in t.get_text() for legend in fig.legends for t in legend.get_texts())
    # the extremes of both colour maps take white text, light cells (the gap's grey, viridis' yellow) black
    import matplotlib

    assert text_colour(matplotlib.colormaps["RdYlGn"](0.0)) == text_colour(matplotlib.colormaps["RdYlGn"](1.0)) == \
        text_colour(matplotlib.colormaps["viridis"](0.0)) == "white"
    assert text_colour(matplotlib.colors.to_rgba(GAP_COLOUR)) == text_colour(matplotlib.colormaps["viridis"](1.0)) \
        == "black"


def test_runtime_model_fits_costs_that_multiply_along_the_axes() -> None:
    """Three corners of a 2×2 grid whose cost is f(width)·g(d) give the fourth exactly; a value no timed point has
    gets its axis's typical (geometric-mean) level; nothing timed gives no model."""
    from flowvar.sweep.estimates import runtime_model

    assert runtime_model([]) is None and runtime_model([({"d": [2]}, None)]) is None
    f, g = {64: 1.0, 256: 4.0}, {2: 100.0, 50: 900.0}
    known = [({"widths": [w], "dims": [d]}, f[w] * g[d]) for w, d in [(64, 2), (256, 2), (64, 50)]]
    model = runtime_model(known)
    assert model is not None
    assert model({"widths": [256], "dims": [50]}) == pytest.approx(3600.0, rel=1e-4)
    for values, seconds in known:
        assert model(values) == pytest.approx(seconds, rel=1e-4)
    # d = 10 was never timed: the width effect stays, d takes the typical level of d = 2 and 50 (geometric mean)
    assert model({"widths": [256], "dims": [10]}) == pytest.approx(4.0 * (100.0 * 900.0) ** 0.5, rel=1e-3)


def test_dry_run_estimates_each_missing_point_from_the_cached_points_like_it(tmp_path: Path) -> None:
    """The cached points' recorded runtimes (10 s at x = 0, 40 s at x = 1, 20 s at x = 0 with scale 2) predict the
    missing point x = 1, scale 2 as 80 s, not the 23 s mean of what is cached."""
    from flowvar.sweep import dry_run

    cache = tmp_path / "cache"
    runtimes = {(0.0, 1.0): 10.0, (1.0, 1.0): 40.0, (0.0, 2.0): 20.0}
    for (x, scale), _ in runtimes.items():
        sweep(options(tmp_path / f"a{x}{scale}", [f"x={x}", f"scale={scale}"], cache_dir=cache))
    for manifest in cache.glob("toy_sweep-*/cache.json"):  # the manifest is not among the hashed files
        data = json.loads(manifest.read_text())
        data["runtime_s"] = runtimes[(data["inputs"]["config"]["x"], data["inputs"]["config"]["scale"])]
        manifest.write_text(json.dumps(data))
    text = dry_run(options(tmp_path / "b", ["x=0,1", "scale=1,2"], cache_dir=cache))
    assert text.splitlines()[-1].startswith("4 points: 3 cached, 1 to compute (~1 min 20 s with --jobs 1)"), text
    # on a Ray cluster its size, not --jobs, sets how many points run at once: the work is said as it is
    text = dry_run(options(tmp_path / "b", ["x=0,1", "scale=1,2"], cache_dir=cache, backend="ray",
                           ray_address="auto", jobs=4))
    assert "(~1 min 20 s of computing, shared by the Ray cluster's workers)" in text.splitlines()[-1], text
    # the running sweep's ETA, once the three cached points are installed, is the same prediction
    stream = io.StringIO()
    sweep(Options("toy_sweep", grid=["x=0,1", "scale=1,2"], out=tmp_path / "c", cache_dir=cache, plugins=[PLUGIN]),
          stream=stream)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("[")]
    assert "cache hit" in lines[2] and lines[2].endswith("ETA ~1 min 20 s"), lines


@pytest.mark.parametrize("grid", [["x=0"], ["x=0,-1"]])
def test_an_axis_with_no_positive_value_still_draws_its_figures(tmp_path: Path, grid: list[str]) -> None:
    """The log-scale test of a numeric axis looked for its smallest positive value and raised on an axis without
    one (a one-point sweep at x = 0), after every point had been computed."""
    summary = sweep(options(tmp_path / "out", grid))
    assert summary.figures and all((tmp_path / "out" / f).is_file() for f in summary.figures)


def test_a_cell_holding_fewer_seeds_than_the_sweep_ran_says_so(tmp_path: Path, monkeypatch) -> None:
    """A mean over one seed of two reads like any other point unless it says how many seeds it holds: the line
    plot annotates such a point "1 of 2 seeds" (the heatmap's cell text says the same, tested above)."""
    the_plan = plan(options(tmp_path / "p", ["x=1,2,3"], seeds=[0, 1], metrics=["v"]))
    outcomes = [PointOutcome(p, status="computed", metrics={"v": float(p.values["x"])}) for p in the_plan.points]
    for o in outcomes:
        if o.point.values["x"] == 2 and o.point.values["seed"] == 1:
            o.status, o.metrics = "failed", {}
    ax = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)["v.png"].axes[0]
    notes = [(t.get_text(), t.xy) for t in ax.texts]
    assert notes == [("1 of 2 seeds\n(1 failed)", (2.0, 2.0))]  # and why the other is missing


def test_grid_values_are_decimal_and_a_text_key_keeps_its_text() -> None:
    """--grid reads values as --set does: 010 is ten (YAML 1.1 read eight), and a str-typed key keeps what was typed
    (data_dir=0.50 planned the path '0.5'); null still clears an optional path."""
    assert parse_axis(get_experiment("fig4"), "repeats=010,020").values == (10, 20)
    axis = parse_axis(get_experiment("sigma_tradeoff"), "data_dir=0.50,on,null")
    assert axis.values == ("0.50", "on", None)


def test_dry_run_calls_an_unreadable_entry_unreadable_not_corrupted(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's entry this user cannot read is left in place and not stored over (cache.Unreadable): the dry
    run said "corrupted: recompute" of it."""
    from flowvar.cache import Cache, Unreadable
    from flowvar.sweep import dry_run

    cache = tmp_path / "cache"
    sweep(options(tmp_path / "a", ["x=0,1"], cache_dir=cache))
    real_check = Cache.check

    def check(self: Cache, key: str) -> tuple[Path | None, str | None]:
        entry, problem = real_check(self, key)
        return (None, Unreadable("result.json is unreadable (Permission denied)")) if entry is not None else (
            entry, problem)

    monkeypatch.setattr(Cache, "check", check)
    lines = dry_run(options(tmp_path / "b", ["x=0,1"], cache_dir=cache)).splitlines()
    assert all("unreadable here (result.json is unreadable (Permission denied))" in line for line in lines[:2]), lines
    assert not any("corrupted" in line for line in lines), lines
