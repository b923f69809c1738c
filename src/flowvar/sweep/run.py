"""Running a sweep: options, the validated plan, the cache lookups and the backend, the output folder."""

from __future__ import annotations

import functools
import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flowvar.cache import Cache, Unreadable, code_version, install, writable_cache
from flowvar.errors import ConfigError, FlowvarError
from flowvar.files import check_writable_folder, remove_stale_writes
from flowvar.results import Result, versions
from flowvar.runner import (
    Backend,
    check_config_threads,
    check_threads,
    dispatch,
    install_computed,
    interrupted_text,
    make_backend,
    sigterm_as_interrupt,
)
from flowvar.sweep.estimates import point_estimates, runtime_model
from flowvar.sweep.figures import draw_figures, remove_figures
from flowvar.sweep.folder import prune_earlier_points, refuse_other_sweep, set_aside_earlier_assembly
from flowvar.sweep.grid import Axis, Point, check_disjoint_replicates, expand, parse_axis, preset_axes, presets
from flowvar.sweep.tables import STATUSES, PointOutcome, check_outputs, check_placeholders, write_tables

log = logging.getLogger("flowvar.sweep")


# --------------------------------------------------------------------------------------------------- options


@dataclass
class Options:
    """What ``flowvar sweep`` was asked to do (see the CLI help for each flag)."""

    experiment: str
    grid: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    preset: str | None = None
    out: Path | None = None
    cache_dir: Path | None = None
    quick: bool = False
    jobs: int = 1
    backend: str = "local"
    ray_address: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    threads: int | None = None
    metrics: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    force: bool = False
    quiet: bool | None = None  # None: a progress bar on a terminal only; False: always; True: never

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path("sweeps") / self.experiment

    @property
    def cache_root(self) -> Path:
        """``--cache``, else ``OUT/.cache`` (like ``flowvar reproduce``)."""
        return Path(self.cache_dir) if self.cache_dir is not None else self.out_dir / ".cache"


@dataclass
class Plan:
    """A validated sweep: the experiment, its axes, its points, the metrics and claim patterns to plot."""

    spec: Any
    axes: list[Axis]
    points: list[Point]
    metrics: list[str]
    threads: int
    verdicts: list[str] = field(default_factory=list)


def plan(options: Options) -> Plan:
    """Validate everything and configure every point; nothing is written. Raises :class:`ConfigError`."""
    from flowvar.experiments.base import get_experiment, load_plugin

    if options.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {options.jobs}")
    check_threads(options.threads)
    make_backend(options.backend, options.jobs, 1, options.ray_address)  # checks --backend and --ray-address
    if options.config_file is not None and not Path(options.config_file).is_file():
        raise ConfigError(f"config file {options.config_file} does not exist")
    for plugin in options.plugins:
        load_plugin(plugin)
    spec = get_experiment(options.experiment)
    threads = sweep_threads(options)
    metrics = list(options.metrics)
    verdicts = list(options.verdicts)
    # the command line's axes and values first; a preset's fill in the keys the command line leaves alone
    given: dict[str, Axis] = {}
    for item in options.grid:
        axis = parse_axis(spec, item)
        if axis.key in given:
            raise ConfigError(f"--grid names {axis.key} twice; list all its values in one --grid {axis.key}=...")
        given[axis.key] = axis
    seeds, seeds_from = options.seeds, "--seeds"
    if seeds is not None and "seed" in given:
        raise ConfigError("give the seeds either with --seeds or with --grid seed=..., not both")
    for key, raw in options.overrides.items():
        if key not in spec.field_names():
            raise ConfigError(f"--set {key}={raw}: unknown config key {key!r} for {spec.name}; valid keys: "
                              f"{', '.join(spec.field_names())}")
        if key in given or (key == "seed" and seeds is not None):
            swept = "--seeds" if key == "seed" and seeds is not None else "--grid"
            raise ConfigError(f"{key} is both swept ({swept}) and fixed (--set); drop one")
    axes: dict[str, Axis] = {}
    overrides: dict[str, Any] = {}
    unswept: list[str] = []  # the preset's axes that a --set fixes: named when nothing is left to sweep
    if options.preset is not None:
        known = presets(spec, options.quick)
        if options.preset not in known:
            listing = "; ".join(f"{p.name}: {p.description}" for p in known.values()) or "none"
            raise ConfigError(f"{spec.name} has no sweep preset {options.preset!r} (presets: {listing})")
        preset = known[options.preset]
        where = f"{spec.name} sweep preset {preset.name}"
        own = [a.key for a in preset_axes(spec, preset) if a.key in preset.set]
        if own or (preset.seeds and ("seed" in preset.grid or "seed" in preset.set)):
            raise ConfigError(f"{where}: {(own or ['seed'])[0]} is both swept and fixed in its YAML; drop one")
        # a key the command line sweeps or fixes is the command line's: the preset's axis or value is dropped
        # (an axis the command line sweeps too is replaced below, in its place in the grid's order)
        fixed = set(options.overrides) | ({"seed"} if seeds is not None else set())
        mine = set(given) | fixed
        axes.update({a.key: a for a in preset_axes(spec, preset) if a.key not in fixed})
        unswept = [a.key for a in preset_axes(spec, preset) if a.key in fixed]
        overrides.update({k: v for k, v in preset.set.items() if k not in mine})
        metrics = metrics or preset.metrics
        verdicts = verdicts or preset.verdicts
        if seeds is None and preset.seeds and not {"seed"} & mine:
            seeds, seeds_from = preset.seeds, f"{where}'s seeds"
    axes.update(given)  # a key the preset sweeps too: the command line's values, in the preset's place
    # a {placeholder} naming no config key fills at no point: refused now, not found at the end as a missing figure
    check_placeholders(metrics, verdicts, spec.name, spec.field_names())
    if seeds is not None:
        if "seed" not in spec.field_names():
            raise ConfigError(f"--seeds: experiment {spec.name} takes no seed")
        axes["seed"] = Axis("seed", tuple(seeds))
    elif "seed" in axes:
        seeds_from = "--grid seed=" if "seed" in given else f"{spec.name} sweep preset {options.preset}'s seeds"
    if not axes and unswept:
        one = len(unswept) == 1
        raise ConfigError(f"empty grid: {' and '.join(_fixed_by(k, options) for k in unswept)} "
                          f"{'fixes' if one else 'fix'} {'the only key' if one else 'every key'} sweep preset "
                          f"{options.preset} sweeps ({', '.join(unswept)}); drop "
                          f"{'it' if one else 'them'} or add --grid {unswept[0]}=v1,v2")
    if not axes:
        raise ConfigError("empty grid: give at least one --grid key=v1,v2 (or --seeds, or --preset)")
    overrides.update(options.overrides)
    points = expand(spec, list(axes.values()), quick=options.quick, overrides=overrides,
                    config_file=options.config_file, threads=threads)
    check_disjoint_replicates(spec.name, points, seeds_from)
    for point in points:  # a thread count torch cannot start is one line now, not a failed point per worker
        check_config_threads(point.config)
    return Plan(spec, list(axes.values()), points, metrics, threads, verdicts)


def sweep_threads(options: Options) -> int:
    """The torch threads per point: ``--threads``, else ``$FLOWVAR_THREADS``, else 1. Part of every point's cache
    key, so the rerun command an interrupt prints names it even when it was not typed."""
    from flowvar.runner import default_threads

    return options.threads or default_threads()


def _fixed_by(key: str, options: Options) -> str:
    """The option that fixes ``key`` on the command line (``--set key=value`` or ``--seeds``), as typed."""
    if key in options.overrides:
        return f"--set {key}={options.overrides[key]}"
    return f"--seeds {','.join(map(str, options.seeds or []))}"


def names_source(entry: Path) -> str:
    """Where a refused ``--metric``/``--verdict`` finds every valid name: a point's result in the cache."""
    return f"every valid name is in {entry / 'result.json'} (its claim ids, and its metrics' keys joined by dots)"


def cached_entries(the_plan: Plan, cache: Cache) -> dict[str, Path | None]:
    """Each point's valid cache entry (None: missing or corrupted), read-only: nothing is deleted or written (a
    corrupted entry is reported and recomputed by the sweep)."""
    return {point.key: cache.check(point.key)[0] for point in the_plan.points}


def check_outputs_in_cache(the_plan: Plan, cache: Cache, found: dict[str, Path | None] | None = None) -> bool:
    """Check ``--metric`` and ``--verdict`` (:func:`check_outputs`) against the plan's points the cache already holds
    (``found``, from :func:`cached_entries`; else looked up here), before anything is computed or written; True when
    some point was there to check against (else the sweep checks its first computed point, before it installs or
    tables anything)."""
    if not (the_plan.metrics or the_plan.verdicts):
        return True
    found = found if found is not None else cached_entries(the_plan, cache)
    known, first = [], None
    for point in the_plan.points:
        entry = found[point.key]
        if entry is None:
            continue
        outcome = PointOutcome(point, status="cached")
        outcome.absorb(Result.load(entry / "result.json"))
        known.append(outcome)
        first = first or entry
    if first is not None:
        check_outputs(the_plan.metrics, the_plan.verdicts, known, the_plan.spec.name, names_in=names_source(first),
                      consequence="nothing was computed or written", grid=[p.values for p in the_plan.points])
    return first is not None


# --------------------------------------------------------------------------------------------------- sweep


@dataclass
class Summary:
    """The outcome of :func:`sweep`."""

    out: Path
    outcomes: list[PointOutcome]
    wall_s: float
    figures: list[str]
    warnings: list[str]

    @property
    def failed(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def check_out_slots(options: Options) -> Path:
    """``--out``'s checks that need no writing, for :func:`sweep` and :func:`dry_run` alike (the dry run refuses what
    the sweep refuses): an empty ``--out``, a user's own ``sweep.json`` / ``sweep.csv`` there
    (:func:`flowvar.runner.check_output_folder`), and a file or folder in the way of the sweep's outputs. Returns
    the output folder."""
    from flowvar.runner import check_output_folder

    out = check_output_folder(options.out if options.out is not None else options.out_dir, "sweep")
    for name, folder in (("figures", True), ("sweep.json", False), ("sweep.csv", False)):
        path = out / name
        if path.is_symlink() or (path.exists() and path.is_dir() != folder):
            raise ConfigError(f"{path} is in the way of the sweep's {name} ({'a folder' if folder else 'a file'} "
                              f"goes there): move it or choose another --out")
    return out


def dry_run(options: Options) -> str:
    """What :func:`sweep` would do, without doing it or writing anything: every point, whether the cache holds it,
    and an estimate of the time the missing ones take (:func:`runtime_model` of the cached points; with none, each
    point's share of the cache's last runtime of the experiment, else of its YAML estimate:
    :func:`point_estimates`)."""
    from flowvar.report import format_duration
    from flowvar.runner import probe_writable, refuse_other_output

    the_plan = plan(options)
    out = check_out_slots(options)
    refuse_other_sweep(out, the_plan)
    refuse_other_output(out, "sweep")
    cache = Cache(options.cache_root)
    checked = check_outputs_in_cache(the_plan, cache)
    lines, todo, known = [], [], []
    for point in the_plan.points:
        entry, problem = cache.check(point.key)
        state = ("cached" if entry is not None else
                 f"unreadable here ({problem}): computed, not stored over it" if isinstance(problem, Unreadable) else
                 "corrupted: recompute" if problem else "to compute")
        if entry is None:
            todo.append(point)
        else:
            known.append((point.values, cache.manifest(point.key).get("runtime_s")))
        lines.append(f"{point.index:>4}  {point.label}  [{point.key}]  {state}")
    missing = len(todo)
    # the sweep's writability checks, creating nothing: --out always (its tables are written), the cache when
    # something is to be computed and stored there (a finished sweep reads a read-only cache)
    probe_writable(out)
    if missing and (problem := check_writable_folder(cache.root)):
        raise ConfigError(f"cannot write to the cache folder {cache.root}: {problem}; make it writable or choose "
                          f"another --cache")
    model = runtime_model(known)
    if model is not None:
        total = sum(model(p.values) for p in todo)
    else:  # nothing of this plan timed: each point's share of a known runtime (a scan of every manifest)
        each = point_estimates(the_plan, cache, options.quick) or {}
        total = sum(each.get(p.label, 0.0) for p in todo)
    if not total and missing:
        eta = "no runtime estimate"
    elif options.backend == "ray" and options.ray_address:  # a cluster's size, not --jobs, sets the parallelism
        eta = f"~{format_duration(total)} of computing, shared by the Ray cluster's workers"
    else:
        eta = f"~{format_duration(total / options.jobs)} with --jobs {options.jobs}"
    if not checked:  # nothing of the grid cached: the sweep checks the names on the first point it computes
        flags = " and ".join(f for f, v in (("--metric", the_plan.metrics), ("--verdict", the_plan.verdicts)) if v)
        lines.append(f"{flags} not checked yet: no point of the grid is cached; the sweep checks the names against "
                     f"the first point it computes and stops there if one names nothing the experiment reports")
    lines.append(f"{len(the_plan.points)} points: {len(the_plan.points) - missing} cached, {missing} to compute "
                 f"({eta}); cache {cache.root}")
    return "\n".join(lines)


def command_line(options: Options, threads: int | None = None) -> str:
    """The ``flowvar sweep`` command that reruns this sweep: every option that changes its points (grid, preset,
    seeds, mode, ``--set``, ``--config``, ``--threads``: a point's cache key holds its thread count), where they are
    stored (``--out``, ``--cache``) and what is drawn, shell-quoted (:func:`shlex.join`: a ``--set
    "angles=[60, 120]"`` or an ``--out "my sweep"`` stays one word; read it back with :func:`shlex.split`).
    ``threads`` is the thread count the sweep runs with (``--threads``, else ``$FLOWVAR_THREADS``, else 1): it is
    recorded even when not typed, so a rerun elsewhere finds the same cache keys. ``--force`` and
    ``--progress``/``--quiet`` are left out: they change neither the points nor where they go (and a rerun should not
    recompute everything)."""
    words = ["flowvar", "sweep", options.experiment]
    for item in options.grid:
        words += ["--grid", item]
    if options.preset:
        words += ["--preset", options.preset]
    if options.seeds is not None:
        words += ["--seeds", ",".join(map(str, options.seeds))]
    words += ["--quick"] if options.quick else []
    for key, value in options.overrides.items():
        words += ["--set", f"{key}={value}"]
    if options.config_file is not None:
        words += ["--config", str(options.config_file)]
    threads = threads if threads is not None else options.threads
    if threads is not None:
        words += ["--threads", str(threads)]
    words += ["--jobs", str(options.jobs), "--backend", options.backend]
    if options.ray_address:
        words += ["--ray-address", options.ray_address]
    words += ["--out", str(options.out_dir)]
    if options.cache_dir is not None:
        words += ["--cache", str(options.cache_dir)]
    for pattern in options.metrics:
        words += ["--metric", pattern]
    for pattern in options.verdicts:
        words += ["--verdict", pattern]
    for plugin in options.plugins:
        words += ["--plugin", plugin]
    return shlex.join(words)


def sweep(options: Options, stream: IO[str] | None = None) -> Summary:
    """Run (or fetch from the cache) every grid point, then write the tables and figures; see the module doc."""
    stream = stream or sys.stderr
    the_plan = plan(options)
    check_out_slots(options)  # an empty --out, a user's own sweep.json / sweep.csv: before anything reads them
    refuse_other_sweep(options.out_dir, the_plan)  # before the backend starts or anything is written
    found = cached_entries(the_plan, Cache(options.cache_root))
    names_checked = check_outputs_in_cache(the_plan, Cache(options.cache_root), found)  # a misspelt --metric: nothing
    # a cache that cannot take results matters only when there is something to compute: a finished sweep reads a
    # read-only cache (a shared or archived one) as `flowvar run` does
    to_compute = options.force or any(entry is None for entry in found.values())
    backend = make_backend(options.backend, options.jobs, the_plan.threads, options.ray_address)
    backend.start()  # a missing Ray, an unreachable cluster: fail before anything is written
    try:
        return _sweep(options, the_plan, backend, stream, names_checked, to_compute)
    finally:
        backend.close()


def _sweep(options: Options, the_plan: Plan, backend: Backend, stream: IO[str], names_checked: bool,
           to_compute: bool = True) -> Summary:
    from flowvar.logs import log_to
    from flowvar.runner import (
        DEFAULT_EXPECTED_S,
        Outcome,
        Progress,
        Task,
        check_writable,
        exclusive,
        refuse_other_output,
    )

    out = check_out_slots(options)
    refuse_other_output(out, "sweep")  # a reproduce's folder (even one being written), before any point runs
    cache = Cache(options.cache_root)
    # before any point is computed: a cache that cannot take results
    # a --cache elsewhere is checked before --out is created: a refused cache leaves no empty --out behind (the
    # default OUT/.cache is checked after OUT, so that an unwritable OUT is blamed as such)
    if options.cache_dir is None:
        check_writable(out)
    cache_writable = writable_cache(cache, to_compute)
    if options.cache_dir is not None:
        check_writable(out)
    name = the_plan.spec.name
    started = time.perf_counter()
    outcomes = [PointOutcome(p) for p in the_plan.points]
    by_key = {o.point.key: o for o in outcomes}
    with sigterm_as_interrupt(), exclusive(out, "sweep"), log_to(out / "sweep.log"):
        log.info("start: %s (%d points, code %s, %d thread(s) per point)", command_line(options, the_plan.threads),
                 len(outcomes), code_version(name), the_plan.threads)
        if cache_writable:
            cache.clean_stale()
        else:
            log.info("the cache %s is read-only: every point is there, nothing to write into it", cache.root)
        for tmp in remove_stale_writes(out, ("sweep.json", "sweep.csv")):
            log.info("removed %s, left by a sweep killed while writing it", tmp.name)
        expected = point_estimates(the_plan, cache, options.quick) or {}
        tasks = [Task(o.point.label, o.point.key, float(expected.get(o.point.label) or DEFAULT_EXPECTED_S), {})
                 for o in outcomes]
        progress = Progress(tasks, options.jobs, options.quiet, stream)

        def corrupted(point: Point) -> Callable[[str, str], None]:
            # the lookup's on_corrupt: on the terminal as `flowvar reproduce` says it (docs/reproduce.md), and logged
            def warn(key: str, reason: str) -> None:
                log.warning("corrupted cache entry %s of %s (%s): not trusted, recomputing", key, point.label, reason)
                progress.emit(f"flowvar: warning: the cached result of {name} {point.label} is corrupted ({reason}); "
                              f"recomputing it")

            return warn
        last_write = [0.0]

        def meta(state: str) -> dict[str, Any]:
            # state: "running" in every table written while points are computed (a sweep killed with -9, by the
            # OOM killer or a preempted node, leaves it so: `flowvar show` then says it is unfinished), then
            # "finished", "interrupted" (Ctrl-C, SIGTERM) or "crashed" (the backend raised)
            return {"experiment": name, "command": command_line(options, the_plan.threads),
                    "mode": "quick" if options.quick else "full",
                    "backend": options.backend, "jobs": options.jobs, "threads_per_point": the_plan.threads,
                    "code_version": code_version(name), "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "wall_s": time.perf_counter() - started, "cache": str(cache.root), "metrics": the_plan.metrics,
                    "verdict_patterns": the_plan.verdicts,
                    "versions": versions(), "state": state, "interrupted": state == "interrupted",
                    "counts": {s: sum(o.status == s for o in outcomes) for s in STATUSES}}

        timed: list[tuple[dict[str, Any], float]] = []
        set_aside: list[str] = []  # the warning of an earlier grid's assembled result moved aside
        fitted_on = [0]
        cleared = [False]

        def write_running() -> None:
            """The tables so far, state "running" and no figures. The first one makes ``sweep.json`` this run's, so
            the previous run's figures go with it: a kill -9 from here on would otherwise leave another grid's
            figures shown as this sweep's (sweep.json is written first: a kill between the two leaves "running",
            which `flowvar show` reads as unfinished, never old figures listed as current)."""
            write_tables(out, {**meta("running"), "figures": []}, the_plan.axes, outcomes)
            last_write[0] = time.perf_counter()
            if not cleared[0]:
                for w in remove_figures(out):
                    log.warning("%s", w)
                # an assembled result of another grid goes too: it would be read as this sweep's (logged there)
                if moved := set_aside_earlier_assembly(out, the_plan):
                    set_aside.append(moved)
                cleared[0] = True

        def finish(o: PointOutcome) -> None:
            # re-estimate what is left from every point timed so far (a cached one by the runtime its entry
            # records, as --dry-run reads it); past 100 timed points only when they have grown by a tenth, so a
            # sweep of thousands of cache hits refits a few dozen times, not per hit
            seconds = (o.wall_s if o.status == "computed" else
                       cache.manifest(o.point.key).get("runtime_s") if o.status == "cached" else None)
            if seconds:
                timed.append((o.point.values, seconds))
            model = (runtime_model(timed) if seconds and (len(timed) <= 100 or len(timed) >= 1.1 * fitted_on[0])
                     else None)
            if model is not None:
                fitted_on[0] = len(timed)
                for p in the_plan.points:
                    if p.label not in progress.finished and p.label != o.point.label:
                        progress.expected[p.label] = model(p.values)
            progress.finish(Outcome(o.point.label, o.status, o.point.key, o.wall_s, error=o.error,
                                    result=o.result))
            # keep the tables current without rewriting per point; not before --metric/--verdict are checked, so a
            # sweep refused for a misspelt name leaves the previous sweep.csv (and its figures) as they were
            if checked[0] and (not cleared[0] or time.perf_counter() - last_write[0] > 2.0):
                write_running()

        # --metric/--verdict were checked against the cached points (check_outputs_in_cache); with none cached, against
        # the first computed point, once (a name differs between points only in the config values a {placeholder}
        # stands for, and a placeholder counts as a wildcard)
        checked = [names_checked]
        refused: list[ConfigError] = []  # check_first's refusal: it stops the sweep, it is no point's failure

        def check_first(point: Point, unstored: dict[str, Any] | None, entry: Path) -> None:
            """--metric/--verdict checked on the first computed point, ``entry``; a result the cache could not store
            (``unstored``: install_computed deletes it on a refusal) is named by no file, and said not to be kept."""
            if not checked[0]:
                probe = PointOutcome(point, status="computed")
                probe.absorb(Result.load(entry / "result.json"))
                kept = ("is cached" if unstored is None else
                        f"is not kept: the cache {unstored['root']} could not store it ({unstored['reason']})")
                try:
                    check_outputs(the_plan.metrics, the_plan.verdicts, [probe], name,
                                  names_in=names_source(entry) if unstored is None else "",
                                  grid=[p.values for p in the_plan.points],
                                  consequence=f"the point computed to learn them {kept}; {out}'s sweep.csv, "
                                              f"sweep.json and figures are as they were")
                except ConfigError as error:
                    refused.append(error)
                    raise
                checked[0] = True

        interrupted = stopped = finished = False
        figures: list[str] = []
        warnings: list[str] = []
        try:
            if checked[0]:  # the names are known good: from now on the folder is this run's, even if it is killed
                write_running()
            misses = []
            for o in outcomes:
                t0 = time.perf_counter()
                entry = None if options.force else cache.lookup(o.point.key, on_corrupt=corrupted(o.point))
                if entry is None:
                    misses.append(o.point)
                    continue
                try:
                    _install(out, o, entry, "cached", time.perf_counter() - t0)
                except FlowvarError as e:  # disk full, folder gone read-only: this point fails, the others go on
                    o.status, o.wall_s, o.error = "failed", time.perf_counter() - t0, f"{type(e).__name__}: {e}"
                    log.error("failed: %s: %s", o.point.label, o.error)
                finish(o)
            if misses:
                log.info("to compute: %d of %d points", len(misses), len(outcomes))
                if checked[0]:  # the cache hits recorded before the first point computes (the writes are throttled)
                    write_running()
                config_file = str(options.config_file) if options.config_file is not None else None
                plugins = [str(Path(p).resolve()) if str(p).endswith(".py") else str(p) for p in options.plugins]

                def args(p: Point) -> tuple:
                    return (name, p.overrides, options.quick, None, config_file, str(cache.root.resolve()),
                            the_plan.threads, plugins, options.force)

                for point, reply in dispatch(backend, misses, args, lambda p: progress.start(p.label)):
                    o = by_key[point.key]
                    if reply["status"] == "computed":
                        if reply.get("key") != point.key:
                            reply = {"status": "failed", "wall_s": reply["wall_s"],
                                     "error": "the code changed during the sweep: the point's result has another "
                                              "cache key; rerun the sweep"}
                        else:
                            try:  # the stored entry, or a result the cache's disk could not store
                                # a misspelt --metric stops the sweep at check_first, before anything is installed
                                _, unstored = install_computed(reply, cache, out / "points" / point.key,
                                                               f"{name} {point.label}",
                                                               check=functools.partial(check_first, point,
                                                                                       reply.get("unstored")))
                            except FlowvarError as e:  # disk full, folder gone read-only: this point fails
                                if refused:  # a misspelt --metric: the sweep stops (below), not this point
                                    raise
                                reply = {"status": "failed", "wall_s": reply["wall_s"],
                                         "error": f"{type(e).__name__}: {e}"}
                            else:
                                if unstored is not None:
                                    log.warning("%s: %s", point.label, unstored)
                                    progress.emit(f"flowvar: warning: {point.label}: {unstored}")
                                _absorb(out, o, "cached" if reply.get("hit") else "computed", reply["wall_s"])
                    if reply["status"] != "computed":
                        o.status, o.wall_s, o.error = "failed", reply["wall_s"], reply["error"]
                        log.error("failed: %s: %s\n%s", point.label, reply["error"], reply.get("traceback", ""))
                    else:
                        log.info("%s: %s key=%s in %.1f s", o.status, point.label, point.key, o.wall_s)
                    finish(o)
            finished = True  # every point answered: only then may an earlier grid's point folders go
        except KeyboardInterrupt:
            interrupted = True
            log.warning("%s", interrupted_message(options, the_plan.threads))
            raise
        except ConfigError as error:  # a misspelt --metric/--verdict (check_first): no tables, no figures
            stopped = True
            log.error("stopped: %s", error)
            raise
        finally:
            progress.close()
            if interrupted:  # no figures are drawn: an earlier run's would be shown as this sweep's
                for w in remove_figures(out):
                    log.warning("%s", w)
                if not cleared[0]:  # the table below makes the folder this run's
                    set_aside_earlier_assembly(out, the_plan)
                write_tables(out, {**meta("interrupted"), "figures": []}, the_plan.axes, outcomes)
            elif not stopped:
                write_running()  # every point's outcome, before the figures: a kill while drawing reads unfinished
                figures, warnings = draw_figures(out, the_plan, outcomes)
                for w in warnings:
                    log.warning("%s", w)
                warnings = set_aside + warnings  # on the terminal and in sweep.json too
                write_tables(out, {**meta("finished" if finished else "crashed"), "figures": figures,
                                   "warnings": warnings}, the_plan.axes, outcomes)
                if finished:  # not after a crash (a backend error): the folder is left as the error found it
                    prune_earlier_points(out, the_plan, cache)  # this grid's points only in points/: one log line
            log.info("finished in %.1f s: %s", time.perf_counter() - started,
                     ", ".join(f"{s}={sum(o.status == s for o in outcomes)}" for s in STATUSES))
    return Summary(out, outcomes, time.perf_counter() - started, figures, warnings)


def interrupted_message(options: Options, threads: int | None = None) -> str:
    """What an interrupted sweep says (its log, and ``flowvar sweep`` on the terminal): the exact command that
    continues it, :func:`command_line` (which leaves ``--force`` out) with the thread count the sweep ran with
    (``threads``; by default :func:`sweep_threads`, as :func:`plan` found it: a rerun from another shell with
    another ``$FLOWVAR_THREADS`` would otherwise recompute every finished point). A forced sweep rerun with
    ``--force`` would compute its finished points again; without it, the points it did not reach come from the
    cache where an earlier run stored them, which the message says."""
    if threads is None:
        try:
            threads = sweep_threads(options)
        except ConfigError:  # a $FLOWVAR_THREADS plan() refused: the sweep never ran, its command has none
            threads = options.threads
    return interrupted_text("points", command_line(options, threads), options.force)


def _install(out: Path, outcome: PointOutcome, entry: Path, status: str, wall_s: float) -> None:
    """Install a cache hit's ``entry`` into ``OUT/points/<key>`` and record it in ``outcome``."""
    install(entry, out / "points" / outcome.point.key)
    _absorb(out, outcome, status, wall_s)


def _absorb(out: Path, outcome: PointOutcome, status: str, wall_s: float) -> None:
    """Record the result installed in ``OUT/points/<key>`` in ``outcome``: its ``status`` (cached/computed), time,
    output folder (relative to ``out``) and result."""
    dest = out / "points" / outcome.point.key
    outcome.status, outcome.wall_s = status, wall_s
    outcome.output = dest.relative_to(out).as_posix()
    outcome.absorb(Result.load(dest / "result.json"))


__all__ = ["Options", "Plan", "Summary", "command_line", "dry_run", "interrupted_message", "plan", "sweep"]
