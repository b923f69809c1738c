"""Review K of sweep: an interrupted ``--force`` sweep names the command that continues it (without ``--force``);
the assemble hint follows the assembler's own checks (:func:`assemble_problem`); an empty grid says which ``--set``
emptied the preset; a refused ``--cache`` leaves no ``--out`` behind; a ``--config`` typo is the file's, not a grid
point's; a literal ``--metric`` naming another point's value gets its placeholder form; the "k of n seeds" label at
the last x stays inside the plot."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

import flowvar.sweep.run as run_module
from flowvar.errors import ConfigError
from flowvar.experiments.registry import load_plugin
from flowvar.sweep import Axis, Options, dry_run, interrupted_message, metric_figure, sweep
from flowvar.sweep.assemble import assemble_problem, assemble_sweep
from flowvar.sweep.grid import canonical

PLUGIN = str(Path(__file__).parent / "plugins" / "toy_sweep.py")
TINY = {"n_seeds": "2", "sigmas": "0,0.05,0.5", "widths": "16", "n_eval": "32", "variance_samples": "16",
        "floor_samples": "64", "exact_sources": "8", "ns": "[8]"}


@pytest.fixture(autouse=True)
def _toy() -> None:
    load_plugin(PLUGIN)


def test_an_interrupted_forced_sweep_names_the_rerun_without_force(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    options = Options("toy_sweep", grid=["x=1,2"], out=out, plugins=[PLUGIN], quiet=True, force=True)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "dispatch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(options)
    log = (out / "sweep.log").read_text()
    line = next(x for x in log.splitlines() if "interrupted; finished points are cached: rerun " in x)
    again = shlex.split(line.split("rerun ", 1)[1].split(" to continue", 1)[0])
    assert again[:3] == ["flowvar", "sweep", "toy_sweep"] and "--force" not in again
    assert again[again.index("--out") + 1] == str(out) and "(without --force" in line
    assert "rerun the same command" not in log
    assert "(without --force" not in interrupted_message(Options("toy_sweep", grid=["x=1,2"], out=out))


def test_the_assemble_hint_asks_the_assemblers_own_checks(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    scalar = tmp_path / "scalar"  # an axis over a single-valued field (the reviewer's fig5 repeats=3,10)
    assert not sweep(Options("memorisation_phase", grid=["steps=6,8"], quick=True, overrides={**TINY, "dims": "[2]"},
                             out=scalar, cache_dir=cache, quiet=True)).failed
    problem = assemble_problem(scalar)
    assert problem is not None and problem.startswith("the sweep's axis steps takes single values ([6, 8])")
    with pytest.raises(ConfigError) as info:
        assemble_sweep(scalar)
    assert str(info.value) == problem  # one test, one message
    split = tmp_path / "split"
    assert not sweep(Options("memorisation_phase", grid=["dims=[2],[3]"], quick=True,
                             overrides={**TINY, "steps": "8"}, out=split, cache_dir=cache, quiet=True)).failed
    assert assemble_problem(split) is None
    assert not (split / "assembled").exists()  # the check writes nothing
    toy = tmp_path / "toy"
    sweep(Options("toy_sweep", grid=["x=1,2"], out=toy, plugins=[PLUGIN], quiet=True))
    assert "cannot be assembled from parts" in (assemble_problem(toy) or "")


def test_an_empty_grid_names_the_set_that_emptied_the_preset(tmp_path: Path) -> None:
    options = Options("table2", preset="sigma", quick=True, overrides={"sigmas": "[0,0.1]"}, out=tmp_path / "t")
    with pytest.raises(ConfigError) as info:
        dry_run(options)
    assert str(info.value) == ("empty grid: --set sigmas=[0,0.1] fixes the only key sweep preset sigma sweeps "
                               "(sigmas); drop it or add --grid sigmas=v1,v2")
    with pytest.raises(ConfigError, match=r"^empty grid: give at least one --grid"):
        dry_run(Options("table2", quick=True, out=tmp_path / "t"))


def test_a_refused_cache_leaves_no_out_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="cache"):
        sweep(Options("toy_sweep", grid=["x=1,2"], out=out, cache_dir=blocker / "cache", plugins=[PLUGIN],
                      quiet=True))
    assert not out.exists()


def test_a_config_file_typo_is_the_files_not_a_grid_points(tmp_path: Path) -> None:
    flat, keyed = tmp_path / "typo.yaml", tmp_path / "typo2.yaml"
    flat.write_text("repeat: 3\n")
    keyed.write_text("fig5: {repeat: 3}\n")
    for path, where in ((flat, f"{flat}: "), (keyed, f"{keyed} (fig5 section): ")):
        with pytest.raises(ConfigError) as info:
            dry_run(Options("fig5", grid=["repeats=2,3"], quick=True, config_file=path, out=tmp_path / "f"))
        assert str(info.value).startswith(f"{where}unknown config key 'repeat' for fig5")
    with pytest.raises(ConfigError) as info:
        dry_run(Options("fig5", grid=["repeats=2,3"], quick=True, overrides={"n_samples": "abc"}, out=tmp_path / "f"))
    assert str(info.value).startswith("--set n_samples=abc: n_samples expects an integer")


def test_a_literal_metric_of_another_point_gets_its_placeholder_form(tmp_path: Path) -> None:
    out = tmp_path / "g"
    with pytest.raises(ConfigError) as info:
        sweep(Options("toy_sweep", grid=["x=0,2"], out=out, plugins=[PLUGIN], metrics=["by_x.x=2.0"], quiet=True))
    assert "write it with its placeholder, --metric 'by_x.x={x}'" in str(info.value)
    with pytest.raises(ConfigError) as info:  # the same from the cache, before anything is computed
        dry_run(Options("toy_sweep", grid=["x=0,2"], out=out, plugins=[PLUGIN], metrics=["by_x.x=2.0"]))
    assert "--metric 'by_x.x={x}'" in str(info.value)
    with pytest.raises(ConfigError) as info:  # a plain typo gets no such suggestion
        dry_run(Options("toy_sweep", grid=["x=0,2"], out=out, plugins=[PLUGIN], metrics=["stats.yy"]))
    assert "placeholder" not in str(info.value)


def test_the_seeds_label_at_the_last_x_stays_inside_the_plot() -> None:
    axes = [Axis("x", (1.0, 2.0, 3.0)), Axis("seed", (0, 1, 2, 3, 4, 5))]
    table = {(canonical(1.0),): (1.0, 0.0, 6), (canonical(2.0),): (1.0, 0.0, 6), (canonical(3.0),): (1.0, 0.0, 5)}
    fig = metric_figure("verdict of a claim", axes, table, verdict=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    label = next(t for t in ax.texts if t.get_text() == "5 of 6 seeds")
    assert label.get_window_extent(renderer).x1 <= ax.get_window_extent(renderer).x1


def test_the_cli_prints_the_assemble_hint_only_when_assemble_would_accept_it(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    from flowvar.cli import main

    cache, tiny = str(tmp_path / "cache"), [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert main(["sweep", "memorisation_phase", "--quick", "--grid", "steps=6,8", "--set", "dims=[2]", *tiny,
                 "--out", str(tmp_path / "scalar"), "--cache", cache, "--quiet"]) == 0
    assert "flowvar assemble" not in capsys.readouterr().out
    assert main(["sweep", "memorisation_phase", "--quick", "--grid", "dims=[2],[3]", "--set", "steps=8", *tiny,
                 "--out", str(tmp_path / "split"), "--cache", cache, "--quiet"]) == 0
    assert f"flowvar assemble {tmp_path / 'split'} (judges them as one run)" in capsys.readouterr().out


def test_the_cli_names_the_rerun_command_of_an_interrupted_forced_sweep(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from flowvar.cli import main

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "dispatch", interrupted)
    out = tmp_path / "s"
    assert main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2", "--out", str(out), "--force",
                 "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rerun flowvar sweep toy_sweep" in err and "(without --force" in err
    assert "--force" not in shlex.split(err.split("rerun ", 1)[1].split(" to continue", 1)[0])


def test_the_cli_interrupt_names_the_thread_count_the_sweep_ran_with(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Review sweepR, 4: the terminal's rerun command left out --threads, which sweep.log and meta.command carry;
    run from another shell (without $FLOWVAR_THREADS) it would key every point afresh and recompute them all."""
    from flowvar.cli import main

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "dispatch", interrupted)
    monkeypatch.setenv("FLOWVAR_THREADS", "2")
    out = tmp_path / "s"
    assert main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2", "--out", str(out), "--quiet"]) == 130
    printed = capsys.readouterr().err.split("rerun ", 1)[1].split(" to continue", 1)[0]
    logged = next(x for x in (out / "sweep.log").read_text().splitlines() if "rerun " in x)
    assert printed == logged.split("rerun ", 1)[1].split(" to continue", 1)[0]
    words = shlex.split(printed)
    assert words[words.index("--threads") + 1] == "2"


def test_a_misspelt_metric_names_the_result_json_that_holds_every_valid_name(tmp_path: Path) -> None:
    """Review sweepR, 7 (its report quoted a cache folder): the refusal names the file itself, which exists, both
    when the first computed point is checked and when a cached point is (docs/sweeps.md: "the cached result.json")."""
    import re

    out = tmp_path / "s"
    for _ in range(2):  # the first run computes the point it checks against; the second finds it in the cache
        with pytest.raises(ConfigError) as info:
            sweep(Options("toy_sweep", grid=["x=1,2"], out=out, plugins=[PLUGIN], quiet=True, metrics=["stats.yy"]))
        named = re.search(r"every valid name is in (\S+) \(", str(info.value))
        assert named is not None and named.group(1).endswith("/result.json") and Path(named.group(1)).is_file()
