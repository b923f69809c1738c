"""What a sweep records and tells: the command that reruns it, its verdict maps, its figures and its warnings
(the second reader review of ``flowvar sweep``)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from flowvar.cli import main
from flowvar.sweep.assemble import _rerun, command_words

PLUGIN = str(Path(__file__).parent / "plugins" / "toy_sweep.py")


def load(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def test_the_recorded_command_reruns_the_same_points_from_the_same_cache(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("cfg.yaml").write_text("scale: 3.0\n")
    args = ["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=0,2", "--set", "offsets=[1, 2]",
            "--config", "cfg.yaml", "--cache", "my cache", "--threads", "1", "--out", "s q", "--quiet"]
    assert main(args) == 0
    meta = load(tmp_path / "s q")["meta"]
    words = shlex.split(meta["command"])
    assert words[:3] == ["flowvar", "sweep", "toy_sweep"]

    def value(flag: str) -> str:
        return words[words.index(flag) + 1]

    assert (value("--config"), value("--cache"), value("--threads"), value("--out")) == ("cfg.yaml", "my cache",
                                                                                          "1", "s q")
    assert value("--set") == "offsets=[1, 2]"
    assert "--quiet" not in words and "--force" not in words
    # the recorded command, run again, finds every point in the cache it names (same configs, same keys)
    capsys.readouterr()
    assert main(words[1:]) == 0
    assert "0 computed, 2 from the cache" in capsys.readouterr().out
    points = load(tmp_path / "s q")["points"]
    assert [p["metrics"]["stats.y"] > 12.0 for p in points] == [False, True]  # scale 3 from cfg.yaml: 3·4 + 3


def test_the_thread_count_is_recorded_even_when_not_typed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLOWVAR_THREADS", "1")
    out = tmp_path / "s"
    assert main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=0,1", "--out", str(out), "--quiet"]) == 0
    words = shlex.split(load(out)["meta"]["command"])
    assert words[words.index("--threads") + 1] == "1"  # a point's cache key holds it


def test_the_rerun_advice_keeps_quoted_words_and_names_the_moved_folder(tmp_path: Path) -> None:
    moved = tmp_path / "moved here"
    meta = {"command": shlex.join(["flowvar", "sweep", "fig4", "--set", "angles=[60, 120]", "--out", "s q",
                                   "--cache", "c d"])}
    advice = _rerun(moved, meta)
    assert advice.startswith("`") and advice.endswith("`")
    words = shlex.split(advice.strip("`"))
    assert words[words.index("--out") + 1] == str(moved)
    assert words[words.index("--set") + 1] == "angles=[60, 120]"
    assert words[words.index("--cache") + 1] == "c d"
    assert command_words({"command": "flowvar sweep x --out 'unclosed"}) == ["flowvar", "sweep", "x", "--out",
                                                                             "'unclosed"]


def _drawn_figures(monkeypatch, tmp_path: Path, the_plan, outcomes) -> tuple[dict, list[str]]:
    """draw_figures with plot_metric replaced by a recorder of the matplotlib figures it would save (by file name),
    and the warnings it returns."""
    from flowvar.sweep import figures

    drawn: dict = {}

    def record(path: Path, title: str, axes, table, *, verdict: bool = False, gaps=None, splits=None,
               shortfalls=None, replicates=None) -> Path:
        drawn[path.name] = figures.metric_figure(title, axes, table, gaps, verdict=verdict, splits=splits,
                                                 shortfalls=shortfalls, replicates=replicates)
        return path

    monkeypatch.setattr(figures, "plot_metric", record)
    _, warnings = figures.draw_figures(tmp_path / "figs", the_plan, outcomes)
    return drawn, warnings


def toy_plan(tmp_path: Path, grid: list[str], **kw):
    from flowvar.sweep import Options, plan

    return plan(Options("toy_sweep", grid=grid, out=tmp_path / "p", plugins=[PLUGIN], quiet=True, **kw))


def test_a_verdict_pattern_whose_claims_are_all_untestable_is_drawn_not_called_absent(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """table2's σ preset maps ``table2.N={ns[0]}.sigma{sigmas[1]}_generalises``, untestable at every quick point:
    the map was dropped with "names no claim of any point". It is drawn, every cell a gap reading "untestable";
    the warning is kept for a pattern that names no claim anywhere."""
    from flowvar.sweep import PointOutcome

    the_plan = toy_plan(tmp_path, ["x=3,4"], verdicts=["untestable_*", "nothing_*"])
    outcomes = [PointOutcome(p, status="computed", verdicts={"untestable_big": "untestable"})
                for p in the_plan.points]
    drawn, warnings = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)
    assert "verdict-untestable.png" in drawn
    marks = {line.get_label(): list(line.get_xdata()) for line in drawn["verdict-untestable.png"].axes[0].lines
             if line.get_label().startswith("no verdict")}
    assert marks == {"no verdict: untestable": [3.0, 4.0]}
    assert warnings == ["verdict pattern 'nothing_*' names no claim of any point"]


def test_placeholders_find_metrics_named_with_g_format(tmp_path: Path) -> None:
    """fig4/fig5 name metrics with ``:g`` (``points.constant/σ=2/90deg.a_mean``) but ``{sigmas[1]}`` filled with
    ``str`` reads ``σ=2.0``: the σ = 2 cell was "not reported". The ``:g`` form is tried when the ``str`` form names
    no metric; where both exist the ``str`` form (table2's claim ids: ``sigma1.0``) is the one."""
    from flowvar.sweep import PointOutcome, resolve_metric, resolve_verdict
    from flowvar.sweep.tables import metric_gap

    the_plan = toy_plan(tmp_path, ["offsets=[0, 2.0],[0, 0.05]"])
    two, small = (PointOutcome(p, status="computed") for p in the_plan.points)
    two.metrics = {"m/σ=2/a": 7.0, "m/σ=0.05/a": -1.0}
    small.metrics = {"m/σ=0.05/a": 3.0}
    pattern = "m/σ={offsets[1]}/a"
    assert resolve_metric(pattern, two) == ("m/σ=2/a", 7.0)
    assert resolve_metric(pattern, small) == ("m/σ=0.05/a", 3.0)
    assert metric_gap(pattern, two) is None
    two.metrics = {"m/σ=2.0/a": 1.0, "m/σ=2/a": 2.0}
    assert resolve_metric(pattern, two) == ("m/σ=2.0/a", 1.0)
    two.verdicts = {"c.sigma2_holds": "refuted"}
    assert resolve_verdict("c.sigma{offsets[1]}_*", two) == ("c.sigma2_holds", -1.0)
    assert resolve_metric("m/{no_such_key}/a", two) == (None, None)


def test_a_cell_whose_seeds_disagree_is_split_never_inconclusive(tmp_path: Path, monkeypatch) -> None:
    """One seed confirmed and one refuted averaged to 0 and was drawn in "inconclusive"'s colour, with an sd bar
    of 1.4. Such a cell is drawn as split (counts "1 c / 1 r"): a hatched cell outside the colour scale, a row of
    its own above "confirmed" in a line plot; verdict line plots have no error bars."""
    import numpy as np

    from flowvar.sweep import PointOutcome
    from flowvar.sweep.figures import SPLIT_Y
    from flowvar.sweep.tables import verdict_splits

    the_plan = toy_plan(tmp_path, ["x=1,2,3"], seeds=[0, 1, 2])
    outcomes = [PointOutcome(p, status="computed") for p in the_plan.points]
    for o in outcomes:
        x, seed = o.point.values["x"], o.point.values["seed"]
        o.verdicts = {"c": "confirmed" if x == 1 or (x == 2 and seed == 0) else
                      "inconclusive" if x == 2 and seed == 2 else "refuted"}
    splits = verdict_splits(the_plan.axes, outcomes, lambda o: o.verdicts.get("c"))
    assert splits == {("2.0",): "1 c / 1 i / 1 r"}
    ax = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)[0]["verdict-c.png"].axes[0]
    container = ax.containers[0]
    assert not container.has_yerr
    heights = np.asarray(container.lines[0].get_ydata(), dtype=float)
    assert heights[0] == 1.0 and np.isnan(heights[1]) and heights[2] == -1.0
    split_marks = [line for line in ax.lines if line.get_label().startswith("seeds disagree")]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in split_marks] == [([2.0], [SPLIT_Y])]
    assert [t.get_text() for t in ax.texts] == ["1 c / 1 i / 1 r"]
    assert "seeds disagree" in [t.get_text() for t in ax.get_yticklabels()]
    # a heatmap: the split cell is masked from the colour scale and says so
    two = toy_plan(tmp_path, ["x=1,2", "scale=1,2"], seeds=[0, 1])
    cells = [PointOutcome(p, status="computed") for p in two.points]
    for o in cells:
        split = o.point.values["x"] == 2 and o.point.values["scale"] == 2
        o.verdicts = {"c": ("confirmed" if o.point.values["seed"] == 0 else "refuted") if split else "confirmed"}
    fig = _drawn_figures(monkeypatch, tmp_path, two, cells)[0]["verdict-c.png"]
    image = fig.axes[0].get_images()[0]
    assert np.ma.is_masked(image.get_array()[1, 1]) and not np.ma.is_masked(image.get_array()[0, 0])
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts}
    assert texts == {(0, 0): "confirmed", (0, 1): "confirmed", (1, 0): "confirmed",
                     (1, 1): "seeds disagree\n1 c / 1 r"}
    assert [t.get_text() for legend in fig.legends for t in legend.get_texts()] == [
        "seeds disagree (c confirmed, i inconclusive, r refuted)"]  # no gap: no grey-cell entry


def test_heatmap_panels_share_one_colour_scale_and_every_panel_is_drawn(tmp_path: Path, monkeypatch) -> None:
    """Three swept keys: each panel had its own colour scale (the same colour, different values), its own colour
    bar over the next panel's labels, and a figure of 13 panels silently drew 12. Now: one norm and one colour bar
    (labelled) for all panels, all 13 panels, the grey-cell legend below every tick label (rotated ones too)."""
    from flowvar.sweep import PointOutcome

    labels = ",".join(f"l{i}" for i in range(13))
    the_plan = toy_plan(tmp_path, ["x=1,2", "offsets=[0,0.05,0.5],[0,0.5,2.0]", f"label={labels}"],
                        seeds=[0, 1], metrics=["v"])
    outcomes = [PointOutcome(p, status="computed") for p in the_plan.points]
    for o in outcomes:
        scale = 10.0 if o.point.values["label"] == "l3" else 1.0
        o.metrics = {"v": scale * o.point.values["x"]}
        if o.point.values["x"] == 2 and o.point.values["label"] == "l0":
            o.status, o.metrics = "failed", {}
    drawn, warnings = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)
    fig = drawn["v.png"]
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 13 and warnings == []
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(1.0, 20.0)}
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "mean over seeds (± in a cell: sd over seeds)"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend_top = fig.legends[0].get_window_extent(renderer).y1
    assert all(legend_top <= ax.get_tightbbox(renderer).y0 + 1e-6 for ax in fig.axes if ax.get_images())
    # beyond MAX_PANELS the figure says, in the warnings the terminal and sweep.json get, what it left out
    monkeypatch.setattr("flowvar.sweep.figures.MAX_PANELS", 12)
    drawn, warnings = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)
    assert len([ax for ax in drawn["v.png"].axes if ax.get_images()]) == 12
    assert warnings == ["figure 'v' draws the first 12 of its 13 panels (one per combination of the third and "
                        "later swept keys); sweep.csv holds every point: sweep fewer keys at once to see them all"]


def test_figure_labels_say_what_a_cell_holds(tmp_path: Path, monkeypatch) -> None:
    """Without a seed axis a line plot said "mean ± sd over seeds" (there is one point per cell, no sd); a verdict
    heatmap drew its grey-cell legend with no grey cell."""
    from flowvar.sweep import PointOutcome

    the_plan = toy_plan(tmp_path, ["x=1,2"], metrics=["v"])
    outcomes = [PointOutcome(p, status="computed", metrics={"v": 1.0}) for p in the_plan.points]
    ax = _drawn_figures(monkeypatch, tmp_path, the_plan, outcomes)[0]["v.png"].axes[0]
    assert ax.get_ylabel() == "value (one point per cell)" and not ax.containers[0].has_yerr
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["value (one point per cell)"]
    two = toy_plan(tmp_path, ["x=1,2", "scale=1,2"], metrics=["v"])
    cells = [PointOutcome(p, status="computed", verdicts={"c": "confirmed"}, metrics={"v": 2.0})
             for p in two.points]
    drawn = _drawn_figures(monkeypatch, tmp_path, two, cells)[0]
    assert drawn["verdict-c.png"].legends == []
    bar = next(ax for ax in drawn["v.png"].axes if ax.get_label() == "<colorbar>")
    assert bar.get_ylabel() == "value"


def test_dry_run_charges_each_point_its_share_of_the_known_runtime(tmp_path: Path) -> None:
    """Every point was charged the whole experiment's runtime: memorisation_phase's by_cell (40 points, one cell
    of the 40-cell grid each) read ~400 h for a 10 h study. A point is charged its share: the product over list
    fields of its length over the reference config's; the reference is the newest cache entry (its config) or the
    YAML estimate of the default config."""
    from flowvar.experiments.base import expected_runtime, get_experiment
    from flowvar.report import format_duration
    from flowvar.sweep import Options, dry_run, sweep

    estimate = expected_runtime(get_experiment("memorisation_phase"), quick=False)
    text = dry_run(Options("memorisation_phase", preset="by_cell", out=tmp_path / "mp"))
    assert text.splitlines()[-1].startswith(f"40 points: 0 cached, 40 to compute (~{format_duration(estimate)} ")
    # a cached whole run of 3 offsets took 30 s: each single-offset point is a third of it
    cache = tmp_path / "cache"
    sweep(Options("toy_sweep", grid=["offsets=[0, 1, 2]"], out=tmp_path / "whole", cache_dir=cache,
                  plugins=[PLUGIN], quiet=True))
    (manifest,) = cache.glob("toy_sweep-*/cache.json")
    data = json.loads(manifest.read_text())
    data["runtime_s"] = 30.0
    manifest.write_text(json.dumps(data))
    text = dry_run(Options("toy_sweep", grid=["offsets=[0],[1],[2],[3]"], out=tmp_path / "parts", cache_dir=cache,
                           plugins=[PLUGIN]))
    assert "4 points: 0 cached, 4 to compute (~40 s with --jobs 1)" in text


def test_only_an_experiments_grid_fields_scale_a_points_runtime() -> None:
    """A point's share counts the experiment's declared grids (runtime_scales_with) and, by segment_share, a
    training-length list: solver_resolution's --preset split point train_steps=[20000] trains all 20 000 steps (the
    whole run's training), so it keeps the whole charge, but [1000] is one of five evaluations and 1/20 of the
    training — at most 1/5, not the whole run (newR 9: the split read 5 × 9300 s). A solver list only changes what
    is evaluated (charged whole: an upper bound); a mean vector of another length, or another channel_mult, is not a
    grid either; memorisation_phase's cells are."""
    from flowvar.cache import config_dict
    from flowvar.experiments.base import build_config, get_experiment
    from flowvar.sweep.estimates import point_share

    solver = get_experiment("solver_resolution")
    whole = config_dict(build_config(solver))
    assert whole["train_steps"] == [1000, 2000, 5000, 10000, 20000]
    for overrides in ({"train_steps": "[20000]"}, {"train_steps": "[1000, 20000]"}, {"euler_steps": "[11]"}):
        part = build_config(solver, overrides=overrides)
        assert point_share(part, whole, solver.runtime_scales_with) == 1.0
    # max(its share of the evaluations, its share of the training): 1000 → 1/5, 5000 → 1/4, 10000 → 1/2
    for steps, share in (("[1000]", 0.2), ("[2000]", 0.2), ("[5000]", 0.25), ("[10000]", 0.5), ("[2000, 5000]", 0.4)):
        part = build_config(solver, overrides={"train_steps": steps})
        assert point_share(part, whole, solver.runtime_scales_with) == pytest.approx(share), steps
    both = build_config(solver, overrides={"train_steps": "[1000]", "sigmas": "[0.0]"})  # the two multiply
    assert point_share(both, whole, solver.runtime_scales_with) == pytest.approx(0.2 / len(whole["sigmas"]))
    half = build_config(solver, overrides={"sigmas": "[0.0]"})
    assert point_share(half, whole, solver.runtime_scales_with) == pytest.approx(1 / len(whole["sigmas"]))
    lemma = get_experiment("lemma1_mlp")
    wider = build_config(lemma, overrides={"mean": "[1, 2, 3]", "cov_diag": "[1, 1, 1]"})
    assert point_share(wider, config_dict(build_config(lemma)), lemma.runtime_scales_with) == 1.0
    phase = get_experiment("memorisation_phase")
    cell = build_config(phase, overrides={"dims": "[2]", "ns": "[16]", "widths": "[64]"})
    reference = config_dict(build_config(phase))
    expected = 1 / (len(reference["dims"]) * len(reference["ns"]) * len(reference["widths"]))
    assert point_share(cell, reference, phase.runtime_scales_with) == pytest.approx(expected)


def test_segment_share_bounds_a_training_length_part_of_any_reference() -> None:
    from flowvar.sweep.estimates import segment_share

    assert segment_share([1000], [1000, 2000, 5000, 10000, 20000]) == pytest.approx(0.2)
    assert segment_share([20000], [1000]) == pytest.approx(20.0)  # a cached short point as the reference
    assert segment_share([4000], [1000, 4000, 10000]) == pytest.approx(0.4)  # the quick split's middle point


def test_the_split_presets_dry_run_eta_charges_each_training_length_its_share(tmp_path: Path) -> None:
    """newR 9: `flowvar sweep solver_resolution --preset split --dry-run` read "~12 h 55 min with --jobs 1", 5 × the
    YAML's 9300 s for the whole study. Each point is now charged at most its share (0.2 + 0.2 + 0.25 + 0.5 + 1 of the
    run), and the longest point no more than the whole run."""
    from flowvar.experiments.base import expected_runtime, get_experiment
    from flowvar.report import format_duration
    from flowvar.sweep import Options, dry_run

    estimate = expected_runtime(get_experiment("solver_resolution"), quick=False)
    assert estimate == 9300
    text = dry_run(Options("solver_resolution", preset="split", out=tmp_path / "sr", cache_dir=tmp_path / "cache"))
    total = (0.2 + 0.2 + 0.25 + 0.5 + 1.0) * estimate
    assert text.splitlines()[-1].startswith(f"5 points: 0 cached, 5 to compute (~{format_duration(total)} with "
                                            f"--jobs 1)")
    assert format_duration(total) != format_duration(5 * estimate)


def test_a_grid_field_that_is_not_a_config_field_is_refused_at_registration() -> None:
    from dataclasses import dataclass

    from flowvar.experiments.registry import register

    @dataclass
    class Config:
        seed: int = 0

    with pytest.raises(TypeError, match="runtime_scales_with names unknown fields"):
        register("toy_bad_grid", title="x", config=Config, runtime_scales_with=("dims",))


def test_an_interrupted_sweep_leaves_no_earlier_figures_and_show_says_so(tmp_path: Path, monkeypatch,
                                                                        capsys) -> None:
    """An interrupted rerun kept the previous run's figures (another grid) while `flowvar show` pointed to them."""
    import flowvar.sweep.run as run_module
    from flowvar.sweep import Options, sweep

    out = tmp_path / "s"
    first = sweep(Options("toy_sweep", grid=["x=1,2"], out=out, plugins=[PLUGIN], quiet=True))
    assert first.figures and list((out / "figures").glob("*.png"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "dispatch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(Options("toy_sweep", grid=["x=1,2,3"], out=out, plugins=[PLUGIN], quiet=True))
    assert list((out / "figures").glob("*.png")) == []
    meta = load(out)["meta"]
    assert meta["interrupted"] is True and meta["figures"] == []
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    assert "interrupted: no figures (rerun the command" in capsys.readouterr().out


@pytest.mark.parametrize("item, message", [
    # on --grid, 0,0.1 is two points: the fix offered is the bracketed list only
    ("sigmas=[0,0.1", 'write it as [0, 0.1] (on --grid, quoted: --grid "sigmas=[0,0.1]"; 0,0.1 would be two points)'),
    ("n_samples=100,,200", "an empty value between commas (value 2 of 3); drop the extra comma: n_samples=100,200"),
    ("n_samples=", "empty value list for n_samples"),
    ("sigmas", "got 'sigmas' (for example --grid sigmas=v1,v2; fig4's keys: seed, mean,"),
    ("sigma", "got 'sigma' (for example --grid mean=v1,v2; fig4's keys: seed, mean,"),
])
def test_grid_errors_offer_a_fix_that_works_on_grid(item: str, message: str) -> None:
    from flowvar.errors import ConfigError
    from flowvar.experiments.base import get_experiment
    from flowvar.sweep import parse_axis

    with pytest.raises(ConfigError) as error:
        parse_axis(get_experiment("fig4"), item)
    assert message in str(error.value)


@pytest.mark.parametrize("command, shown", [
    ("sweep", ["lists as [a,b]: --grid", "pip install 'flowvar[ray]'"]),
    ("reproduce", ["pip install 'flowvar[ray]'"]),
])
def test_the_rendered_help_keeps_its_brackets(command: str, shown: list[str], monkeypatch, capsys) -> None:
    """Rich read ``[a,b]`` and ``[ray]`` as markup and dropped them: "lists as : --grid", "pip install 'flowvar'"."""
    monkeypatch.setenv("COLUMNS", "300")
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(s in text for s in shown), text
    assert "\\[" not in text


def test_show_prints_an_infinite_metric_as_inf_not_as_missing() -> None:
    """sweep.json stores a non-finite value as the text "inf" (JSON has no number for it); the table of `flowvar
    show` printed it "–", as it prints a point with no value."""
    from flowvar.sweep import sweep_table

    data = {"meta": {"metrics": ["m"]}, "axes": [{"key": "x", "values": [1, 2, 3, 4]}],
            "points": [{"point": i, "values": {"x": i + 1}, "status": "computed", "plotted": {"m": v}}
                       for i, v in enumerate(["inf", "-inf", 2.5, None])]}
    rows = [line.split() for line in sweep_table(data).splitlines()[1:]]
    assert [row[-1] for row in rows] == ["inf", "-inf", "2.5", "–"]
