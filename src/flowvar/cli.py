"""The ``flowvar`` command line: ``reproduce``, ``run``, ``sweep``, ``assemble``, ``advise-sigma``, ``audit``,
``list``, ``show``, ``config``, ``cache list``/``cache prune``, and ``--version``.

Errors the user can fix print one line ``flowvar: error: ...`` and exit with status 2.

Why this module is long: it is the one place that declares the command line — each command is a thin function
whose length is its typer options and their help texts, and the work lives in the modules it calls.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TextIO

INTERRUPTED = "flowvar: interrupted"
"""What an interrupt (Ctrl-C, SIGTERM) no command explains prints: before a command runs, or in one that holds
nothing to keep."""


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    """SIGINT while the libraries below import (torch takes seconds): one line and exit 130, as a command's
    interrupt does, instead of a traceback from inside torch. Nothing has run yet, so nothing needs cleaning up."""
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


# installed before the heavy imports, only where Python's own handler is in place (not over a host program's)
_STARTING = threading.current_thread() is threading.main_thread() and \
    signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _STARTING:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import typer  # noqa: E402  (after the interrupt handler above: see _interrupted_while_starting)

from flowvar import __version__  # noqa: E402
from flowvar.cache_key import KEYED_LIBRARIES  # noqa: E402
from flowvar.errors import ConfigError, DataError, FlowvarError, printable  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="flowvar: gradient-variance diagnostics and memorisation tests for flow matching.\n\n"
                       "Exit status: 0 success; 1 a failed experiment or sweep point; 2 a usage or input error "
                       "(one line `flowvar: error: ...` on stderr); 130 interrupted. `flowvar` (or `flowvar cache`) "
                       "alone prints this help on stdout and exits 2.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowvar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """flowvar: does my flow model generalise, or memorise its training pairs?"""


def _out_folder(command: str) -> Callable[[str], Path]:
    """The parser of ``flowvar {command}``'s ``--out``: its text as a folder, refusing an empty one (``Path("")`` is
    the current folder, where the command would write beside the user's own files:
    :func:`flowvar.runner.check_output_folder`). The text is checked before it becomes a Path, which cannot tell
    ``""`` from ``"."``."""
    def parse(value: str) -> Path:
        if value == "":
            from flowvar.runner import check_output_folder

            check_output_folder(value, command)
        return Path(value)

    return parse


PluginOption = Annotated[list[str] | None, typer.Option(
    "--plugin", help="A Python file or module that registers your own experiments (flowvar.experiments.register); "
                     "repeat for several.")]


@app.command("list")
def list_cmd(plugin: PluginOption = None) -> None:
    """List the experiments (flowvar's own and those of --plugin)."""
    from flowvar.experiments import experiments

    _load_plugins(plugin)

    specs = experiments()
    width = max(len(n) for n in specs)
    for name, spec in sorted(specs.items()):
        typer.echo(f"{name:<{width}}  {spec.title}")


ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of config values (the format of flowvar/experiments/NAME.yaml, or keyed by "
                     "experiment name); applied after the defaults and --quick, before --seed and --set.")]
#: reproduce runs several experiments, so its file says which experiment each value is for (the flat form is refused)
ReproduceConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="YAML file keyed by experiment name, e.g. 'fig4: {repeats: 50, quick: {repeats: 5}}' (the flat "
                     "NAME.yaml form of `flowvar config` is refused: put it under its experiment's name); applied "
                     "after the defaults and --quick, before --seed and --set.")]


@app.command("run")
def run_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see `flowvar list`).")],
    quick: Annotated[bool, typer.Option("--quick/--full", help="--quick: scaled-down settings (minutes on 2 CPU "
                                                              "cores); --full: paper scale.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Base random seed.")] = None,
    out: Annotated[Path, typer.Option("--out", parser=_out_folder("run"), metavar="PATH",
                                      help="Output folder; results go to OUT/EXPERIMENT/.")] = Path("runs"),
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: key=value.")] = None,
    config_file: ConfigOption = None,
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Result cache folder (e.g. runs/.cache, shared with `flowvar reproduce`): reuse a result "
                        "computed with the same config and code instead of recomputing, and store new ones.")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--quiet",
                                                  help="Progress bars (default: when stderr is a terminal, else one "
                                                       "timestamped line per finished training; --quiet: neither)."
                                                  )] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads (default: $FLOWVAR_THREADS or 1).",
                                                min=1)] = None,
    plugin: PluginOption = None,
) -> None:
    """Run one experiment and write result.json, summary.md and figures."""
    _set_threads(threads)
    _load_plugins(plugin)
    from flowvar.runner import check_output_folder, refuse_if_locked

    refuse_if_locked(out)  # a `flowvar reproduce` writing this folder's report: not beside it
    check_output_folder(out, "run", [experiment])  # a user's own OUT/EXPERIMENT/result.json is not replaced

    plain_lines = progress is None and not sys.stderr.isatty()
    if progress is None:
        progress = sys.stderr.isatty()
    if config_file is not None:
        _check_config_section(experiment, config_file)
        if (note := _config_mode_mismatch(experiment, config_file, quick)) is not None:
            typer.echo(f"flowvar: warning: {note}", err=True)
    with _plain_log_lines() if plain_lines else contextlib.nullcontext():
        result, hit = _run_one(experiment, out, cache, quick, seed, overrides, config_file, progress)
    from flowvar.distributed import is_main_process

    if not is_main_process():  # under torchrun every rank holds the result; rank 0 says it, once
        return
    how = f"cache hit (computed earlier in {result.runtime_s:.1f} s)" if hit else f"in {result.runtime_s:.1f} s"
    typer.echo(f"{experiment}: {len(result.claims)} claims {how} -> {out / experiment}")
    for c in result.claims:
        typer.echo(f"  [{c.verdict:^12}] {c.id} ({c.kind})")


def _refuse_torchrun(command: str) -> None:
    """`flowvar reproduce` and `flowvar sweep` start their own processes per experiment or point: under torchrun every
    rank would start a whole run and the ranks would lock each other out of the output folder, with a message naming
    the sibling rank as "another process". Say what does run under torchrun instead."""
    from flowvar.distributed import env_world_size

    if (size := env_world_size()) > 1:
        raise ConfigError(f"`flowvar {command}` does not run under torchrun (WORLD_SIZE={size}): it runs each "
                          f"{'experiment' if command == 'reproduce' else 'point'} in a process of its own. Launch one "
                          f"experiment data-parallel with `torchrun ... -m flowvar run EXPERIMENT --set ... --cache "
                          f"DIR`; a later `flowvar {command}` with the same --cache and config values finds its "
                          f"result")


def _run_one(experiment: str, out: Path, cache: Path | None, quick: bool, seed: int | None,
             overrides: list[str] | None, config_file: Path | None, progress: bool) -> tuple[Any, bool]:
    """`flowvar run`'s work: the experiment's result (from the cache when ``cache`` holds it) and whether it was a
    cache hit; Ctrl-C ends it with exit status 130 and a line saying what was kept."""
    from flowvar.experiments.base import parse_overrides, run_experiment

    hit = False
    if cache is not None:
        from flowvar.cache import Cache, run_cached

        def warn(key: str, reason: str) -> None:
            typer.echo(f"flowvar: warning: the cached result of {experiment} ({key}) is corrupted ({reason}); "
                       f"recomputing it", err=True)

        try:
            run = run_cached(experiment, out, Cache(cache), quick=quick, seed=seed,
                             overrides=parse_overrides(overrides or []), config_file=config_file, progress=progress,
                             on_corrupt=warn)
        except KeyboardInterrupt:
            typer.echo("flowvar: interrupted; its trainings checkpoint into the cache: rerun the same command to "
                       "continue", err=True)
            raise typer.Exit(130) from None
        result, hit = run.result, run.hit
    else:
        try:
            result = run_experiment(experiment, out, quick=quick, seed=seed,
                                    overrides=parse_overrides(overrides or []), progress=progress,
                                    config_file=config_file)
        except KeyboardInterrupt:
            typer.echo("flowvar: interrupted; without --cache nothing of this run is kept (run with --cache DIR to "
                       "make an interrupted run resumable)", err=True)
            raise typer.Exit(130) from None
    return result, hit


@contextlib.contextmanager
def _plain_log_lines() -> Iterator[None]:
    """For the block, print the ``flowvar`` loggers' INFO lines (a finished training, a resume) to stderr as
    ``[HH:MM:SS] message``: `flowvar run` without a terminal (nohup, a CI log) shows it is alive where a progress bar
    would. Under torchrun only rank 0 prints."""
    import logging

    from flowvar.distributed import is_main_process
    from flowvar.logs import attached_handler

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(lambda _record: is_main_process())
    with attached_handler(handler):
        yield


@app.command("reproduce")
def reproduce_cmd(
    quick: Annotated[bool, typer.Option("--quick/--full", help="--quick: every experiment's scaled-down settings "
                                                              "(minutes each on 2 CPU cores; docs/reproduce.md "
                                                              "lists the measured times); --full: paper scale.")
                     ] = False,
    out: Annotated[Path, typer.Option("--out", parser=_out_folder("reproduce"), metavar="PATH",
                                      help="Output folder: OUT/report.html, OUT/report.md, "
                                                    "OUT/results.json, OUT/EXPERIMENT/.")] = Path("runs"),
    only: Annotated[list[str] | None, typer.Option("--only", help="Comma-separated experiments to run "
                                                                  "(default: all).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Experiments run in parallel processes.", min=1)] = 1,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads per experiment (default: "
                                                                  "$FLOWVAR_THREADS, else 1).", min=1)] = None,
    backend: Annotated[str, typer.Option("--backend", help="local (processes) or ray (pip install "
                                                           "'flowvar\\[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster to use (host:port, ray://host:port or auto); default: start a local "
                              "Ray instance with --jobs CPUs. The cache folder must be shared by every node.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even what the cache holds.")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--quiet", help=(
        "A progress bar with the running experiments and an ETA (default: when stderr is a terminal, else one plain "
        "line per experiment); --quiet: one plain line per experiment even on a terminal."))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Base random seed of every experiment.")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config value of one experiment: EXPERIMENT.key=value.")] = None,
    config_file: ReproduceConfigOption = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Result cache folder (default OUT/.cache).")] = None,
) -> None:
    """Reproduce the paper: run every experiment (cached, resumable) and write a report."""
    _refuse_torchrun("reproduce")
    from flowvar.report import format_duration
    from flowvar.reproduce import Options, interrupted_message, parse_only, parse_scoped_overrides, reproduce
    from flowvar.results import claim_counts, headline

    options = Options(out=out, quick=quick, only=parse_only(only), jobs=jobs, force=force,
                      quiet=None if progress is None else not progress,
                      overrides=parse_scoped_overrides(overrides), config_file=config_file, seed=seed,
                      cache_dir=cache, threads=threads, backend=backend, ray_address=ray_address)
    try:
        summary = reproduce(options)
    except KeyboardInterrupt:
        typer.echo(f"flowvar: {interrupted_message(options)}", err=True)
        raise typer.Exit(130) from None
    statuses = [o.status for o in summary.outcomes]
    counts = claim_counts([c for o in summary.outcomes for c in (o.result.claims if o.result else [])])
    typer.echo(f"reproduce: {len(statuses)} experiments ({statuses.count('computed')} computed, "
               f"{statuses.count('cached')} from the cache, {statuses.count('failed')} failed) in "
               f"{format_duration(summary.wall_s)}: " + headline(counts))
    for o in summary.failed:
        typer.echo(f"  FAILED {o.name}: {o.error} (see {summary.out / 'reproduce.log'})")
    if summary.kept:
        typer.echo(f"  the report also holds the results already in {summary.out} of {', '.join(summary.kept)}: kept "
                   f"from earlier runs, not rerun (--only left them out)")
    typer.echo(f"report: {summary.report_html} (also {summary.report_md.name}, {summary.results_json.name})")
    if summary.failed:
        raise typer.Exit(1)


@app.command("sweep")
def sweep_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see `flowvar list`).")],
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="A swept config key: key=v1,v2,... (YAML values; lists as \\[a,b]: --grid \"sigmas=[0,0.05],"
                       "[0,0.1]\"). Repeat for more keys: the sweep is their cartesian product.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds to repeat every point with: 0,1,2 or 0-4.")
                     ] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="A named sweep from the experiment's YAML file "
                                                                "(e.g. table2: sigma, n).")] = None,
    quick: Annotated[bool, typer.Option("--quick/--full", help="--quick: every point with the experiment's quick "
                                                              "settings; --full: paper scale.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Points computed in parallel.", min=1)] = 1,
    backend: Annotated[str, typer.Option("--backend", help="local (processes) or ray (pip install "
                                                           "'flowvar\\[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster to use (host:port, ray://host:port or auto); default: start a local "
                              "Ray instance with --jobs CPUs. The cache folder must be shared by every node.")] = None,
    out: Annotated[Path | None, typer.Option("--out", parser=_out_folder("sweep"), metavar="PATH",
                                             help="Output folder (default sweeps/EXPERIMENT): sweep.csv, "
                                                           "sweep.json, figures/, points/.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Result cache folder (default OUT/.cache; e.g. "
                                                               "runs/.cache to share with `flowvar reproduce`).")
                     ] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Fix a config value for every point: "
                                                                      "key=value.")] = None,
    config_file: ConfigOption = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="A metric to plot against the swept keys: its flattened name in result.json (a.b.c), with "
                         "* wildcards and {config_key} placeholders. Verdict maps are always drawn.")] = None,
    verdict: Annotated[list[str] | None, typer.Option(
        "--verdict", help="A claim to map across the grid when its id names swept values: a pattern with "
                          "{config_key} placeholders and * wildcards (claims judged by several points are mapped "
                          "anyway).")] = None,
    plugin: PluginOption = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads per point (default: "
                                                                  "$FLOWVAR_THREADS or 1).", min=1)] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even what the cache holds.")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--quiet", help=(
        "A progress bar with the running points and an ETA (default: when stderr is a terminal, else one plain "
        "line per point); --quiet: one plain line per point even on a terminal."))] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the points, which are cached, and the time the "
                                                            "others need; run nothing.")] = False,
) -> None:
    """Sweep an experiment over a grid of config values: cached points, sweep.csv/json, heatmaps, verdict maps."""
    _refuse_torchrun("sweep")
    from flowvar.experiments.base import parse_overrides
    from flowvar.report import format_duration
    from flowvar.sweep import Options, interrupted_message, parse_seeds, sweep

    options = Options(experiment=experiment, grid=list(grid or []), seeds=parse_seeds(seeds), preset=preset,
                      out=out, cache_dir=cache, quick=quick, jobs=jobs, backend=backend, ray_address=ray_address,
                      overrides=parse_overrides(overrides or []), config_file=config_file, threads=threads,
                      metrics=list(metric or []), verdicts=list(verdict or []), plugins=list(plugin or []),
                      force=force, quiet=None if progress is None else not progress)
    if dry_run:
        from flowvar.sweep import dry_run as describe

        typer.echo(describe(options))
        return
    try:
        summary = sweep(options)
    except KeyboardInterrupt:
        typer.echo(f"flowvar: {interrupted_message(options)}", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"sweep {experiment}: {len(summary.outcomes)} points ({summary.count('computed')} computed, "
               f"{summary.count('cached')} from the cache, {summary.count('failed')} failed) in "
               f"{format_duration(summary.wall_s)} -> {summary.out / 'sweep.csv'}")
    for w in summary.warnings:
        typer.echo(f"flowvar: warning: {w}", err=True)
    for o in summary.failed:
        typer.echo(f"  FAILED {o.point.label}: {o.error} (see {summary.out / 'sweep.log'})")
    if summary.failed:
        raise typer.Exit(1)
    from flowvar.sweep.assemble import assemble_problem

    if assemble_problem(summary.out) is None:  # the checks flowvar assemble makes, so the hint is never refused
        typer.echo(f"  the claims that compare points: flowvar assemble {summary.out} (judges them as one run)")


@app.command("assemble")
def assemble_cmd(
    sweep_dir: Annotated[Path, typer.Argument(help="The --out folder of a finished `flowvar sweep` whose points split "
                                                   "the experiment's grid (e.g. --preset by_cell), or a stored result "
                                                   "folder (e.g. runs/memorisation_phase) to judge again from its "
                                                   "points.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write EXPERIMENT/ (default SWEEP_DIR/assembled; for a result folder, its parent: in "
                      "place). A `flowvar reproduce` folder gets the result in its results.json and its report "
                      "rewritten.")] = None,
    plugin: Annotated[list[str] | None, typer.Option(
        "--plugin", help="The plugin the sweep's experiment comes from, if it is not flowvar's own.")] = None,
) -> None:
    """One experiment's full result from the points of a finished sweep that split its grid: the claims that
    compare cells (memorisation_phase's regions and tube-ratio finding) judged on all of them; nothing is trained.
    Given a stored result folder instead, its claims are judged again by this flowvar from the points it stored."""
    from flowvar.experiments.base import load_plugin
    from flowvar.results import claim_counts, headline, verdict_changes
    from flowvar.sweep.assemble import assemble_sweep, rejudge_result

    for item in plugin or []:
        load_plugin(item)
    rejudge = (sweep_dir / "result.json").is_file() and not (sweep_dir / "sweep.json").is_file()
    try:
        result, folder = rejudge_result(sweep_dir, out) if rejudge else assemble_sweep(sweep_dir, out)
    except KeyboardInterrupt:
        # the result folder is installed whole or not at all, but a reproduce folder's results.json and report
        # follow it: an interruption between them leaves them behind until the next assembly
        typer.echo("flowvar: interrupted; the sweep's points are untouched: rerun the same command to assemble "
                   "(it replaces whatever this one wrote)", err=True)
        raise typer.Exit(130) from None
    source = result.metrics["assembled_from"]
    if rejudge:
        changed = verdict_changes(source["rejudged"]["verdicts_before"], {c.id: c.verdict for c in result.claims})
        typer.echo(f"{result.experiment}: re-judged from the points stored in {sweep_dir} -> {folder}")
        typer.echo(f"  verdicts changed: {'; '.join(changed) or 'none'}")
    else:
        typer.echo(f"{result.experiment}: assembled from {source['points']} points of {sweep_dir} -> {folder}")
    typer.echo(f"  {headline(claim_counts(result.claims))}")


cache_app = typer.Typer(no_args_is_help=True, help=(
    "See and prune the result cache: what it holds and the space no run of this code will use again.\n\n"
    "Entries are current (their code version is this installation's for their experiment) or outdated (no run of "
    "this code looks them up again). Work folders (CACHE/.work/KEY, the checkpoints of interrupted runs) are "
    "resumable by this code, outdated, stored (their result exists: nothing to resume) or of unknown origin (made by "
    "an older flowvar). `prune` removes outdated entries, outdated and stored work folders and the staging folders "
    "of killed runs; --all-work every work folder. A key being computed (locked) is never touched."))
app.add_typer(cache_app, name="cache")

CacheDirOption = Annotated[Path, typer.Option(
    "--cache", help="The cache folder (default runs/.cache: flowvar reproduce's with its default --out; a sweep's is "
                    "OUT/.cache).")]
CachePluginOption = Annotated[list[str] | None, typer.Option(
    "--plugin", help="A Python file or module registering experiments (as for `flowvar sweep`): their entries are "
                     "then judged, not 'unknown experiment' (kept).")]


def _load_plugins(plugins: list[str] | None) -> None:
    from flowvar.experiments.registry import load_plugin

    for plugin in plugins or []:
        load_plugin(plugin)


@cache_app.command("list", help=(
    "List entries and work folders: code version current or not, size, age, locked; totals.\n\n"
    "One line per entry (key, experiment, quick/full, current/outdated code, size, age, locked) and per work folder "
    "(key, size, age, locked, resumable by this code or not), then the totals and what `prune` would free. Reads "
    "only."))
def cache_list_cmd(cache: CacheDirOption = Path("runs/.cache"), plugin: CachePluginOption = None) -> None:
    """``flowvar cache list``: print :func:`flowvar.cache_admin.format_survey` of the cache (help text above)."""
    from flowvar.cache import Cache
    from flowvar.cache_admin import format_survey, survey

    _load_plugins(plugin)
    typer.echo(format_survey(survey(Cache(cache))))


@cache_app.command("prune", help=(
    "Remove outdated entries and work folders no run of this code resumes; print each and the space freed.\n\n"
    "Removes entries whose code version is not the current one for their experiment, work folders that are outdated "
    "or whose result is stored, and the staging folders of killed runs. Never a key being computed (its lock is "
    "held) or an entry being written. Unknown-origin work folders (made by an older flowvar) and those this code "
    "resumes go only with --all-work. Exit status 1 if a folder could not be removed."))
def cache_prune_cmd(
    cache: CacheDirOption = Path("runs/.cache"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed and freed; remove nothing.")
                       ] = False,
    all_work: Annotated[bool, typer.Option(
        "--all-work", help="Also remove the work folders this code would resume and those of unknown origin: "
                           "those interrupted runs start over.")] = False,
    other_installations: Annotated[bool, typer.Option(
        "--other-installations", help="Also remove the entries and work folders recorded with another version of "
                                      f"torch or of a keyed library ({', '.join(KEYED_LIBRARIES.values())}), or "
                                      "another device (kept by default: on a shared cache they are the other "
                                      "installation's valid results; after an upgrade, the old version's).")
                                   ] = False,
    plugin: CachePluginOption = None,
) -> None:
    """``flowvar cache prune``: :func:`flowvar.cache_admin.prune` and its report (help text above)."""
    from flowvar.cache import Cache
    from flowvar.cache_admin import format_prune, prune

    _load_plugins(plugin)
    report = prune(Cache(cache), dry_run=dry_run, all_work=all_work, other_installations=other_installations)
    typer.echo(format_prune(report))
    if report.failed:
        raise typer.Exit(1)


@app.command("advise-sigma")
def advise_sigma_cmd(
    data: Annotated[str, typer.Option("--data", help="Your data: a folder of images, an .npy / .npz array ((N, d) "
                                                     "vectors or (N, [C,] H, W) images), or digits / lfw / gmm. "
                                                     "Images are resized to the config's resolution, 8x8 by default "
                                                     "(--set resolution=32 for more detail, slower).")],
    sigmas: Annotated[str | None, typer.Option("--sigmas", help="σ values to compare, with 0: e.g. "
                                                                "0,0.01,0.05,0.1,0.2 (default: the experiment's).")
                      ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Scaled-down training (minutes on a CPU).")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Keep the run: OUT/sigma_tradeoff/{result.json, "
                                                           "figures} (default: a temporary folder).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Base random seed.")] = 0,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Force the kind of data (celeba for a CelebA "
                                                                  "folder); inferred from --data otherwise.")
                       ] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Any sigma_tradeoff config value: key=value (n_train, steps, gen_margin, mem_margin, model, "
                      "resolution...; `flowvar config sigma_tradeoff` lists them).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads (default: $FLOWVAR_THREADS or 1).",
                                                min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the advice as JSON.")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--quiet",
                                                  help="Progress bars (default: when stderr is a terminal).")] = None,
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Result cache folder (e.g. runs/.cache, shared with `flowvar run`): the trainings checkpoint "
                        "into it, so an interrupted run resumes when the same command is run again, and a finished "
                        "one is reused (keyed by the data's contents).")] = None,
) -> None:
    """How much interpolant noise σ for my data? Trains CFM(σ) over a σ grid and applies a stated rule.

    The advice is for training on N fixed (source, target) pairs (--set n_train: 64 with --quick, 256 otherwise),
    ReFlow / distillation style (Prop 2's setting), not for ordinary CFM with fresh sources every batch.
    Each σ is judged against σ = 0 over the seeds: recommended, undecided (add seeds or pairs), none, or untestable
    (σ = 0 did not memorise its pairs: train longer or use fewer pairs).

    Exit status 0 for these; 1 when every σ diverged (the summary names the trainings and the fix).
    """
    import json

    from flowvar.advise import advise_sigma
    from flowvar.experiments.base import parse_overrides
    from flowvar.results import to_jsonable

    _set_threads(threads)
    grid = None
    if sigmas is not None:
        try:
            grid = [float(v) for v in sigmas.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--sigmas expects numbers like 0,0.05,0.1, got {sigmas!r}") from None
    knobs = parse_overrides(overrides or [])
    for key in ("data", "dataset", "data_dir", "seed", "sigmas", "quick", "out", "progress", "cache"):
        if key in knobs:  # these are the command's own options: --set would pass them twice
            flag = {"data": "--data", "data_dir": "--data"}.get(key, f"--{key}")
            raise ConfigError(f"pass {key} with {flag}, not --set")
    try:
        advice = advise_sigma(data, sigmas=grid, quick=quick, out=out, seed=seed, dataset=dataset,
                              progress=sys.stderr.isatty() if progress is None else progress, cache=cache, **knobs)
    except KeyboardInterrupt:
        typer.echo("flowvar: interrupted; its trainings checkpoint into the cache: rerun the same command to continue"
                   if cache is not None else
                   "flowvar: interrupted; nothing of this run is kept (run with --cache DIR to make an interrupted "
                   "run resumable)", err=True)
        raise typer.Exit(130) from None
    # strict JSON, as result.json: NaN scores (one seed's sd, a diverged σ) are the string "nan", not a bare NaN
    typer.echo(json.dumps(to_jsonable(advice.to_dict()), indent=1, allow_nan=False) if as_json
               else advice.summary())
    if advice.all_diverged:
        raise typer.Exit(1)


@app.command("config")
def config_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see `flowvar list`).")],
    quick: Annotated[bool, typer.Option("--quick/--full", help="--quick: with the quick overrides; --full: the "
                                                              "paper-scale values.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Base random seed.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: key=value.")] = None,
    config_file: ConfigOption = None,
    template: Annotated[bool, typer.Option("--template", help="Print the YAML defaults file generated from the "
                                                              "config dataclass and register(quick=...) instead.")
                        ] = False,
    plugin: PluginOption = None,
) -> None:
    """Print an experiment's effective config as YAML (a valid --config file)."""
    from flowvar.experiments.base import build_config, config_yaml, defaults_yaml, get_experiment, parse_overrides

    _load_plugins(plugin)
    spec = get_experiment(experiment)
    if template:
        if overrides or config_file is not None or seed is not None or quick:
            raise ConfigError("--template prints the package defaults; it takes no --set, --config, --seed or "
                              "--quick (drop --template for the effective config)")
        typer.echo(defaults_yaml(spec), nl=False)
        return
    if config_file is not None:
        _check_config_section(experiment, config_file)
    config = build_config(spec, quick=quick, seed=seed, overrides=parse_overrides(overrides or []),
                          config_file=config_file)
    source = spec.defaults_file if spec.defaults_file is not None and spec.defaults_file.is_file() else None
    typer.echo(f"# {experiment} ({'quick' if quick else 'full'}); defaults from "
               f"{source or 'the config dataclass (no YAML file)'}")
    typer.echo(config_yaml(config), nl=False)


def _set_threads(threads: int | None) -> None:
    """torch threads for this process: ``--threads`` (checked: :func:`flowvar.runner.check_threads`), else
    :func:`flowvar.reproduce.default_threads`."""
    import torch

    from flowvar.reproduce import default_threads
    from flowvar.runner import check_threads

    chosen = check_threads(threads)
    if chosen:
        from flowvar.experiments.base import choose_threads

        choose_threads(chosen)
    else:  # none chosen: an experiment that picks its own count (small images: 1) still may
        torch.set_num_threads(default_threads())


def _config_mode_mismatch(experiment: str, config_file: Path, quick: bool) -> str | None:
    """What to tell a user whose --config file was printed by `flowvar config EXPERIMENT` in the other mode (its first
    line, ``# EXPERIMENT (quick); ...``): the file's values are used either way, but the result is labelled by the
    command's mode, so quick-sized values run without --quick were reported as "full mode" (a new user's run)."""
    try:
        with open(config_file, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None  # read_yaml, which runs anyway, names what is wrong with the file
    printed = {f"# {experiment} (quick)": True, f"# {experiment} (full)": False}
    mode = next((m for head, m in printed.items() if first.startswith(head)), None)
    if mode is None or mode == quick:
        return None
    file_mode, run_mode = ("quick" if mode else "full"), ("quick" if quick else "full")
    return (f"{config_file} was printed by `flowvar config {experiment}{' --quick' if mode else ''}` ({file_mode} "
            f"settings), but this run is {run_mode} mode: its values are used, and the result is labelled {run_mode} "
            f"mode; {'add' if mode else 'drop'} --quick to label it as the file's settings are")


def _check_config_section(experiment: str, config_file: Path) -> None:
    """A --config file keyed by experiment must have a section for the one experiment run or printed (reproduce
    takes files that configure some of its experiments; one experiment's command would silently use defaults)."""
    from flowvar.experiments.base import get_experiment, is_multi_experiment, read_yaml

    get_experiment(experiment)
    mapping = read_yaml(config_file)
    if is_multi_experiment(mapping) and experiment not in mapping:
        raise ConfigError(f"config file {config_file} has no section for {experiment} (it configures "
                          f"{', '.join(mapping)})")


@app.command("show")
def show_cmd(
    folder: Annotated[Path, typer.Argument(help="An --out folder of `flowvar run`, `reproduce`, `sweep` or "
                                                "`audit`, or one experiment's folder inside a run.")
                      ] = Path("runs"),
    update_readme: Annotated[Path | None, typer.Option(
        "--update-readme", help="With a reproduce folder: rewrite this README's block for it (the quick reference "
                                "run's, or the paper-scale run's for a --full folder).")
                             ] = None,
    write_report: Annotated[bool, typer.Option(
        "--write-report", help="With a reproduce folder: re-render its report.html, report.md and each "
                               "experiment's summary.md from the saved results (nothing is recomputed).")] = False,
) -> None:
    """Print the findings, the paper-beside-ours tables and the verdict table of finished runs (of a reproduce
    folder, or of one experiment's folder), the points of a sweep folder, or the verdict of an audit."""
    import textwrap

    from flowvar.report import (
        KIND_TEXT,
        collection_results,
        load_collection,
        load_results,
        verdict_counts,
        verdict_table,
    )
    from flowvar.report.document import entries, result_entries
    from flowvar.report.markdown import findings_text, provenance_lines
    from flowvar.results import headline
    from flowvar.sweep import load_sweep, sweep_table

    if folder.is_file() and folder.name in ("result.json", "results.json", "sweep.json"):
        folder = folder.parent  # the file that makes the folder what it is: show the folder
    if update_readme is not None or write_report:
        collection = load_collection(folder)
        if collection is None:
            flag = "--update-readme" if update_readme is not None else "--write-report"
            raise DataError(f"{folder} is not a `flowvar reproduce` folder (no results.json); {flag} needs one")
        _warn_mode_note(collection)
        _warn_copies(folder, collection)
        if write_report:
            from flowvar.report import rewrite_reports

            paths = rewrite_reports(folder, collection)
            # what rewrite_reports renders from (reconcile_copies): each experiment's own NAME/result.json, where it
            # is readable, else results.json's copy of it; results.json gives the run's record (meta, status)
            typer.echo(f"{paths['html']}, {paths['md'].name}, NAME/summary.md: re-rendered from each experiment's "
                       f"own {Path(folder) / 'NAME' / 'result.json'} (results.json's copy where that file is missing "
                       f"or unreadable; results.json gives the run's record)")
        if update_readme is not None:
            from flowvar.report import readme_section
            from flowvar.report import update_readme as rewrite

            label = os.path.relpath(Path(folder).resolve(), Path(update_readme).resolve().parent)
            changed = rewrite(update_readme, readme_section(collection, Path(label).as_posix()))
            block = "paper-scale-run" if collection["meta"].get("mode") == "full" else "reference-run"
            typer.echo(f"{update_readme}: {block} block {'updated' if changed else 'already up to date'}")
        return

    if (Path(folder) / "result.json").is_file():  # one experiment's folder (inside a run) or an audit's --out
        _show_one(Path(folder))
        return

    swept = load_sweep(folder)
    if swept is not None:
        meta = swept.get("meta", {})
        where = _sweep_state(Path(folder), meta, len(swept["points"]))
        typer.echo(f"{meta.get('command', 'flowvar sweep')} ({meta.get('created', '')}); {where}\n")
        typer.echo(sweep_table(swept))
        counts = meta.get("counts", {})
        typer.echo("\n" + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        return

    collection = load_collection(folder)
    if collection is not None:
        _warn_mode_note(collection)
        _warn_copies(folder, collection)
        meta = collection.get("meta", {})
        results = collection_results(collection)
        typer.echo(f"{meta.get('command', 'flowvar reproduce')} ({meta.get('mode', '?')} mode, "
                   f"{meta.get('created', '')}); report: {Path(folder) / 'report.html'}\n")
        provenance = provenance_lines(collection)  # the results that command did not compute, as report.md says
        if provenance:
            typer.echo("\n".join(provenance) + "\n")
        typer.echo(findings_text(entries(collection), mode=str(meta.get("mode", "")) or None))
    else:
        _refuse_a_cache(folder)
        results = load_results(folder)
        typer.echo(findings_text(result_entries(results)))
    typer.echo("Verdicts\n========\n")
    typer.echo(verdict_table(results))
    counts = verdict_counts(results)
    typer.echo(f"\n{len(results)} experiments: " + headline(counts))
    typer.echo(textwrap.fill(KIND_TEXT, 110))  # the headline's words, as under the report's
    if collection is not None:
        for e in collection["experiments"]:
            if e.get("status") in ("failed", "not run"):
                typer.echo(f"  {e['name']}: {e['status']}" + (f": {e['error']}" if e.get("error") else ""))


def _sweep_state(folder: Path, meta: dict, n_points: int) -> str:
    """What ``flowvar show`` says of a sweep folder's figures, from its ``sweep.json`` meta: a sweep that did not
    finish draws none and says so, so that no earlier grid's figures read as its own. ``state`` is "running" in
    every table written while points run (a sweep killed with -9 leaves it so), "interrupted" after Ctrl-C,
    "crashed" after a backend error, "finished"; a sweep.json from before ``state`` was recorded has only
    ``interrupted``."""
    rerun = "rerun the command to finish the sweep and draw them"
    counts = meta.get("counts")
    not_run = counts.get("not run") if isinstance(counts, dict) else 0
    not_run = not_run if isinstance(not_run, int) else 0
    state = meta.get("state")
    if meta.get("interrupted") or state == "interrupted":
        return f"interrupted: no figures ({rerun})"
    if state == "running":
        return f"unfinished (still running, or killed): no figures ({rerun})"
    figures = meta.get("figures")
    drawn = f"figures in {folder / 'figures'}" if figures or figures is None else "no figures drawn (see sweep.log)"
    if not_run:  # a crash: the figures drawn mark those points "not run"
        return (f"unfinished ({state or 'stopped'}): {not_run} of {n_points} points not run (rerun the command to "
                f"finish the sweep); {drawn}")
    return drawn


def _warn_mode_note(collection: dict) -> None:
    """A collection whose recorded mode disagrees with its results' (:func:`flowvar.report.load_collection`): one
    warning line, since the report's Quick/Full banner follows the results, not the record."""
    note = collection["meta"].get("mode_note")
    if note:
        typer.echo(f"flowvar: warning: {note}", err=True)


def _refuse_a_cache(folder: Path) -> None:
    """A result cache (:mod:`flowvar.cache`: ``<key>/`` folders holding its manifest) is no run: its entries hold
    result.json files too, and shown as one they read as the same experiments run several times."""
    from flowvar.cache import MANIFEST

    entries = sum(1 for p in Path(folder).glob(f"*/{MANIFEST}") if p.is_file() and not p.parent.name.startswith("."))
    if entries:
        raise DataError(f"{folder} is a result cache ({entries} entr{'y' if entries == 1 else 'ies'}), not a run "
                        f"folder; list its entries with `flowvar cache list --cache {folder}`")


def _warn_copies(folder: Path, collection: dict) -> None:
    """Tell the collection from each experiment's own result.json (:func:`flowvar.report.reconcile_copies`), with
    one warning line per experiment whose copy in results.json disagrees with it."""
    from flowvar.report import reconcile_copies

    for note in reconcile_copies(folder, collection):
        typer.echo(f"flowvar: warning: {note}", err=True)


def _show_one(folder: Path) -> None:
    """``flowvar show`` of a folder holding one ``result.json``: an audit's summary (its verdict and each test's
    decisive numbers), or one experiment's findings and verdict table."""
    import textwrap

    from flowvar.report import KIND_TEXT, verdict_counts, verdict_table
    from flowvar.report.document import result_entries
    from flowvar.report.markdown import findings_text
    from flowvar.results import Result, headline

    path = folder / "result.json"
    try:
        result = Result.load(path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise DataError(f"{path} is not a valid flowvar result ({type(e).__name__}: {e}); rerun what wrote it"
                        ) from None
    if result.experiment == "audit":
        from flowvar.audit.saved import saved_summary

        typer.echo(saved_summary(result))
        typer.echo(f"report: {folder / 'audit.html'}")
        return
    typer.echo(findings_text(result_entries([result])))
    typer.echo("Verdicts\n========\n")
    typer.echo(verdict_table([result]))
    typer.echo(f"\n{result.experiment}: " + headline(verdict_counts([result])))
    typer.echo(textwrap.fill(KIND_TEXT, 110))


@app.command("audit")
def audit_cmd(
    data: Annotated[str, typer.Option("--data", help="The training data: a folder of images (or of one subfolder "
                                                     "per class), an .npy array ((N, d) vectors or (N, [C,] H, W) "
                                                     "images), an .npz holding one (and its 'labels' or "
                                                     "'conditions'), or digits / lfw.")],
    model: Annotated[str | None, typer.Option("--model", help="Factory building the network: package.module:callable "
                                                              "(its state_dict comes from --checkpoint).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Weights for --model (a state_dict, or a checkpoint holding one), or alone a whole model: "
                             "TorchScript, torch.export (.pt2) or a pickled module.")] = None,
    pairs: Annotated[str | None, typer.Option("--pairs", help="The training sources (.npy), row i paired with data "
                                                              "item i (a folder's items sorted by relative path: "
                                                              "subfolder first, then file name): enables pair "
                                                              "recovery and the gradient test. Only for a model "
                                                              "trained on these fixed (source, target) pairs "
                                                              "(ReFlow, distillation, OT-paired data): pairs it never "
                                                              "trained on read generalising, so leave it out for "
                                                              "ordinary CFM (fresh noise every batch).")] = None,
    heldout: Annotated[str | None, typer.Option(
        "--heldout", help="Data of the same kind never trained on: enables the generalisation gap and gives the copy "
                          "test its held-out baseline (without it: each training item against the others).")] = None,
    sigma: Annotated[float, typer.Option("--sigma", help="The interpolant noise σ the model was trained with.")] = 0.0,
    convention: Annotated[str | None, typer.Option(
        "--convention", help="How to call the network: xt | tx | cat | diffusers | flow_matching (default: detect).")
                          ] = None,
    time: Annotated[str | None, typer.Option("--time", help="data_at_1 (noise at t=0) or data_at_0 (diffusers); "
                                                            "refines --convention (needs it); default: the "
                                                            "convention's usual one.")] = None,
    time_scale: Annotated[float | None, typer.Option("--time-scale", help="The network sees scale·t (1000 for "
                                                                          "diffusers' timesteps); with --convention "
                                                                          "its scale, alone one more candidate scale "
                                                                          "for the detection (besides 1 and 1000).")
                          ] = None,
    label_arg: Annotated[str | None, typer.Option(
        "--label-arg", "--cond-arg",
        help="A conditional model: how it takes each item's class label or condition — a keyword (y for torchcfm's "
             "UNet, class_labels for diffusers, encoder_hidden_states for diffusers' UNet2DConditionModel), NAME.KEY "
             "for a dict keyword (extra.label for Meta flow_matching's model(x, t, extra={'label': y})), or "
             "positional (model(x, t, y)). The labels come from --data (digits; a folder of one subfolder per class; "
             "an .npz with a 'labels' array) or --labels; continuous conditions from --conditions or an .npz "
             "'conditions' array.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="The class labels of --data (.npy of N integers, "
                                                                "in --data's row order: a folder's files by relative "
                                                                "path), when the data do not carry them.")] = None,
    heldout_labels: Annotated[str | None, typer.Option(
        "--heldout-labels", help="The class labels of --heldout (.npy), when it does not carry them (only the "
                                 "gradient test's held-out pairs use them).")] = None,
    conditions: Annotated[str | None, typer.Option(
        "--conditions", help="Continuous conditions of --data (.npy/.npz of N float rows of any shape, in --data's "
                             "row order — a folder's files by relative path, subfolder first: text "
                             "embeddings (N, 77, 768), pooled (N, 512), attribute vectors, low-resolution images), "
                             "passed as --label-arg says; class ids go to --labels.")] = None,
    heldout_conditions: Annotated[str | None, typer.Option(
        "--heldout-conditions", help="The continuous conditions of --heldout: the copy and gap tests then generate "
                                     "under them, the gradient test adds held-out pairs.")] = None,
    state_key: Annotated[str | None, typer.Option(
        "--state-key", help="Checkpoint entry holding the state_dict (default: the first of ema_model, ema, "
                            "state_dict, model_state_dict, model, net_model, net); ENTRY/ATTRIBUTE picks an "
                            "attribute inside an entry, e.g. state_dict/model for a Lightning checkpoint's "
                            "non-EMA weights.")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Fresh samples to generate.")] = 500,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Fine ODE grid (steps of --method).")] = 100,
    coarse_steps: Annotated[int, typer.Option("--coarse-steps", min=1, help="Coarse ODE grid.")] = 10,
    method: Annotated[str, typer.Option("--method", help="ODE solver: euler, midpoint, heun, rk4, dopri5 ...")
                      ] = "euler",
    grad_samples: Annotated[int, typer.Option("--grad-samples", min=2, help="Draws per t-bin of the gradient test.")
                            ] = 64,
    t_bins: Annotated[int, typer.Option("--t-bins", min=1, help="t-bins of the gradient test.")] = 5,
    resolution: Annotated[int | None, typer.Option("--resolution", min=1, help="Image folders: resize to this side "
                                                                               "(default: the first image's).")
                          ] = None,
    channels: Annotated[int | None, typer.Option("--channels", help="Image folders: 1 (grey) or 3 (RGB).")] = None,
    value_range: Annotated[str | None, typer.Option(
        "--value-range", help="LO,HI: the value scale of .npy/.npz data (images, or vectors), mapped to [-1, 1] "
                              "(e.g. 0,65535 for 16-bit images, which are refused without it; uint8 data map "
                              "0..255 without it).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw of the audit.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
                      ] = "auto",
    out: Annotated[Path, typer.Option("--out", help="Output folder: result.json, summary.md, audit.html, figures.")
                   ] = Path("audit"),
    as_json: Annotated[bool, typer.Option("--json", help="Print result.json to stdout instead of the summary.")
                       ] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads (default: $FLOWVAR_THREADS or 1).",
                                                min=1)] = None,
) -> None:
    """Does my trained flow model memorise its training data? Four tests and a verdict (docs/audit.md)."""
    import json

    from flowvar.audit import audit, load_model
    from flowvar.audit.core import check_audit_folder
    from flowvar.audit.spelling import command_line_spelling

    check_audit_folder(out)  # before any work: never a folder of the user's files, never a file
    scale = _value_range(value_range)
    _set_threads(threads)
    with command_line_spelling():  # the messages name --label-arg, not audit()'s label_arg=
        loaded = load_model(model, checkpoint, state_key)
        report = audit(loaded.module, data, pairs=pairs, heldout=heldout, sigma=sigma, convention=convention,
                       time=time, time_scale=time_scale, samples=samples, steps=steps, coarse_steps=coarse_steps,
                       method=method, grad_samples=grad_samples, t_bins=t_bins, seed=seed, device=device,
                       resolution=resolution, channels=channels, value_range=scale, model_source=loaded.source,
                       label_arg=label_arg, labels=labels, heldout_labels=heldout_labels, conditions=conditions,
                       heldout_conditions=heldout_conditions)
    report.write(out)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
    else:
        typer.echo(report.summary())
        typer.echo(f"report: {out / 'audit.html'}")


def _value_range(text: str | None) -> tuple[float, float] | None:
    """``--value-range LO,HI`` as (lo, hi); a ConfigError naming the expected form otherwise."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--value-range expects LO,HI (two numbers, e.g. 0,65535), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConfigError(f"--value-range expects finite LO < HI, got {text!r}")
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    """Entry point: run ``flowvar ARGV`` and return its exit status, never raising ``SystemExit``.

    0 success; 1 a failed experiment or sweep point; 2 a usage error (Typer) or a :class:`FlowvarError`, printed as
    one line ``flowvar: error: ...``, or no command (``flowvar``, ``flowvar cache``: the help, and no error line);
    130 interrupted.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["run"], ["reproduce"], ["sweep"], ["config"]) and "--quick" in args and "--full" in args:
        # one flag pair: the last would win
        _error_line("pass --quick or --full, not both")
        return 2
    try:
        from flowvar.runner import sigterm_as_interrupt

        with sigterm_as_interrupt(), _flowvar_warnings_on_one_line():  # SIGTERM takes Ctrl-C's clean path
            code = app(args=argv, prog_name="flowvar", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        # Ctrl-C before a command's own handler (while it imports) or in a command without one: click turns one
        # inside a command into Abort, after printing an empty line
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except FlowvarError as e:
        _error_line(str(e))
        return 2
    except Exception as e:
        # click's exceptions (a bad option or option value: UsageError, BadParameter, NoSuchOption), whether typer
        # vendors click or uses it: one line, not a usage box. Anything else is a bug and keeps its traceback.
        if not (callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int)):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            # `flowvar` or `flowvar cache` alone: the help is the answer, not an error. Typer's rich formatter has
            # already printed it and left the message empty (an empty "error:" line followed); plain click puts
            # the help in the message. Exit status 2 still, as click gives it: no command was run, so a script
            # that calls `flowvar $CMD` with an empty CMD fails rather than passes
            if e.format_message().strip():
                print(e.format_message())
            return 2
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _error_line(e.format_message() + hint)
        return 2 if e.exit_code == 2 else e.exit_code
    except SystemExit as e:  # Typer ends some commands with SystemExit(code)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code if isinstance(code, int) else 0


@contextlib.contextmanager
def _flowvar_warnings_on_one_line() -> Iterator[None]:
    """flowvar's own warnings (a loader upsampling small images, unscaled-looking pixels) as ``flowvar: warning:
    MESSAGE`` lines, as its errors are, instead of Python's two-line ``path:line: UserWarning`` format with a source
    line from inside flowvar; other libraries' warnings keep Python's format (their location helps their users)."""
    package = str(Path(__file__).resolve().parent)
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
             line: str | None = None) -> None:
        if str(Path(filename).resolve()).startswith(package):
            print(f"flowvar: warning: {printable(str(message))}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _error_line(message: str) -> None:
    """Print ``flowvar: error: MESSAGE`` on one line: control characters a user typed (a stray carriage return or
    newline in a --set value) are shown escaped instead of breaking the line."""
    print(f"flowvar: error: {printable(message)}", file=sys.stderr)


def _interrupt_is_one_line(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` printing :data:`INTERRUPTED` and exiting 130 on a KeyboardInterrupt it does not handle itself
    (one during its own imports, before its ``try``): typer would turn it into a silent exit 130."""

    @functools.wraps(command)  # typer reads the options from the signature and annotations this copies
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


for _typer_app in (app, cache_app):
    for _command in _typer_app.registered_commands:
        if _command.callback is not None:
            _command.callback = _interrupt_is_one_line(_command.callback)

# the imports are done: from here on an interrupt raises KeyboardInterrupt, which main() and the commands handle
if _STARTING and signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if __name__ == "__main__":
    sys.exit(main())


__all__ = ["app", "main"]
