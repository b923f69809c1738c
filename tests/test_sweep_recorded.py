"""What a sweep records and tells: the command that reruns it, its verdict maps, its figures and its warnings
(the second reader review of ``flowvar sweep``)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

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

    def record(path: Path, title: str, axes, table, *, verdict: bool = False, gaps=None) -> Path:
        drawn[path.name] = figures.metric_figure(title, axes, table, gaps, verdict=verdict)
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
