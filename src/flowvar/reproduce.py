"""``flowvar reproduce``: every experiment of the paper, cached and resumable, into one folder with a report.

:func:`reproduce` resolves the experiments (all registered ones, or ``only``), builds and validates every config
before anything runs (a bad ``--set`` or ``--config`` stops it with a :class:`ConfigError`), then for each one
looks up the result cache (:mod:`flowvar.cache`, by default ``OUT/.cache``): a hit is installed into
``OUT/<experiment>/`` without recomputation; a miss runs the experiment on a backend of :mod:`flowvar.runner`
(in this process with ``jobs=1``, in ``jobs`` spawned worker processes, or as Ray tasks with ``backend="ray"``),
which stores the result in the cache, and this process installs it. Each run uses ``threads`` torch threads (default:
:func:`default_threads`). Afterwards ``OUT/results.json`` (every result.json plus how it was
obtained), ``OUT/report.md`` and the self-contained ``OUT/report.html`` are written (:mod:`flowvar.report`). They
report what the folder holds: with ``only``, the results of the other experiments already installed in OUT are kept
in them (status ``kept``, :func:`_kept_entries`), not dropped.

Interruption. An experiment's output only appears when complete, and is cached at once, so a rerun of the same
command continues where the interrupted one stopped: finished experiments are cache hits, the one in flight
reruns. A lock file (``OUT/.reproduce.lock``) keeps two reproduce runs out of one folder, and ``flowvar run`` out
of it while a reproduce runs (:func:`flowvar.runner.refuse_if_locked`).

Progress goes to stderr: a tqdm bar with the running experiments and an ETA on a terminal (or always, ``quiet``
False), else (or with ``quiet`` True) one plain line per experiment. ``OUT/reproduce.log`` receives timestamped log
lines of every run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flowvar.cache import Cache, cache_key, code_version, config_dict, install, writable_cache
from flowvar.errors import ConfigError, FlowvarError
from flowvar.experiments.registry import canonical_name
from flowvar.files import check_replaceable, remove_stale_writes
from flowvar.logs import held_log_records, log_to
from flowvar.results import Result, git_commit, versions
from flowvar.runner import (
    DEFAULT_EXPECTED_S,
    Backend,
    Outcome,
    Progress,
    Task,
    check_config_threads,
    check_output_folder,
    check_threads,
    check_writable,
    cpu_cores,
    default_threads,
    dispatch,
    exclusive,
    install_computed,
    interrupted_text,
    make_backend,
    refuse_other_output,
    sigterm_as_interrupt,
    ticker,
    verdict_line,
)

log = logging.getLogger("flowvar.reproduce")
REPORT_FILES = ("results.json", "report.md", "report.html")
"""The files :func:`flowvar.report.write_reports` writes into OUT (atomically: a killed write leaves a temporary
``.NAME.*.tmp`` beside them, removed by the next run)."""


def parse_only(items: Sequence[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` → ``["a", "b", "c"]`` (order kept, duplicates dropped); None → None (every experiment).

    ``--only ""`` (an unset shell variable) names no experiment: a :class:`ConfigError`, not a run of all of them.
    """
    if items and not any(raw.strip() for item in items for raw in item.split(",")):
        raise ConfigError("--only names no experiment (an empty value); drop --only to run every experiment, or "
                          "list some, e.g. --only fig4,prop1")
    names: list[str] = []
    for item in items or []:
        for raw in item.split(","):
            name = canonical_name(raw.strip())
            if name and name not in names:
                names.append(name)
    return names or None


def parse_scoped_overrides(pairs: Sequence[str] | None) -> dict[str, dict[str, str]]:
    """``["fig4.repeats=5", ...]`` → ``{"fig4": {"repeats": "5"}}``; the experiment must exist."""
    from flowvar.experiments.base import discover

    out: dict[str, dict[str, str]] = {}
    known = discover()
    for item in pairs or []:
        target, sep, value = item.partition("=")
        name, dot, key = target.strip().partition(".")
        name = canonical_name(name)
        if not sep or not dot or not name or not key.strip():
            raise ConfigError(f"reproduce --set expects EXPERIMENT.key=value, got {item!r} (for example --set "
                              f"fig4.repeats=5)")
        if name not in known:
            raise ConfigError(f"unknown experiment {name!r} in --set {item}; experiments: {', '.join(known)}")
        out.setdefault(name, {})[key.strip()] = value.strip()
    return out


@dataclass
class Options:
    """What ``flowvar reproduce`` was asked to do (see the CLI help for each flag)."""

    out: Path = Path("runs")
    quick: bool = False
    only: list[str] | None = None
    jobs: int = 1
    force: bool = False
    quiet: bool | None = None  # None: a progress bar on a terminal only; False: always; True: never
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    config_file: Path | None = None
    seed: int | None = None
    cache_dir: Path | None = None
    threads: int | None = None
    backend: str = "local"
    ray_address: str | None = None


@dataclass
class Summary:
    """The outcome of :func:`reproduce`: one :class:`Outcome` per experiment, the report paths and the wall time."""

    out: Path
    outcomes: list[Outcome]
    wall_s: float
    report_html: Path
    report_md: Path
    results_json: Path
    kept: list[str] = field(default_factory=list)
    """Experiments this invocation did not select (``--only``) whose results, already in ``out``, the report keeps."""

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _check_config_file(path: Path) -> None:
    """A reproduce ``--config`` must be keyed by experiment name: ``{fig4: {repeats: 5}, prop1: {...}}``."""
    from flowvar.experiments.base import discover, is_multi_experiment, read_yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    mapping = read_yaml(path)
    if mapping is None or is_multi_experiment(mapping):
        return
    others = [str(k) for k in mapping if k not in discover()] if isinstance(mapping, dict) else []
    raise ConfigError(f"reproduce --config expects a YAML mapping keyed by experiment name (e.g. 'fig4: {{repeats: "
                      f"5}}'); {path} is not" + (f" (not experiments: {', '.join(others[:3])})" if others else ""))


def _select(only: list[str] | None) -> list[str]:
    from flowvar.experiments.base import discover

    known = list(discover())
    if only is None:
        return known
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ConfigError(f"unknown experiment{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                          f"--only; experiments: {', '.join(known)}")
    return list(only)


def _check_overrides_selected(options: Options) -> None:
    """A ``--set`` for an experiment that ``--only`` leaves out would be ignored silently: a :class:`ConfigError`."""
    for name, values in options.overrides.items():
        if options.only is not None and name not in options.only:
            key, value = next(iter(values.items()))
            raise ConfigError(f"--set {name}.{key}={value} sets {name}, which --only {','.join(options.only)} leaves "
                              f"out; add {name} to --only or drop its --set")


def plan(options: Options, cache: Cache, threads: int = 1) -> tuple[list[Task], list[Outcome]]:
    """Import and configure every selected experiment: the tasks (keyed for runs with ``threads`` torch threads),
    plus failures of modules that do not import.

    Raises :class:`ConfigError` for bad overrides or config files, before anything runs.
    """
    from flowvar.experiments.base import build_config, expected_runtime, get_experiment

    _check_overrides_selected(options)
    tasks, broken = [], []
    for name in _select(options.only):
        try:
            spec = get_experiment(name)
        except FlowvarError:
            raise
        except Exception as e:  # an experiment module that does not import: report it, run the others
            log.error("cannot import experiment %s:\n%s", name, traceback.format_exc())
            broken.append(Outcome(name, "failed", error=f"cannot import flowvar.experiments.{name}: "
                                                       f"{type(e).__name__}: {e}".splitlines()[0]))
            continue
        if spec.defaults_file is None or not spec.defaults_file.is_file():
            log.info("%s has no YAML file (%s.yaml): dataclass defaults and register(quick=...) are used", name, name)
        seed = options.seed
        if seed is not None and "seed" not in spec.field_names():
            seed = None
        try:
            config = build_config(spec, quick=options.quick, seed=seed, overrides=options.overrides.get(name),
                                  config_file=options.config_file)
        except ConfigError as error:  # "--set repeats=abc: …" as typed: "--set fig5.repeats=abc: …"
            raise ConfigError(_scoped_error(str(error), name, options.overrides.get(name, {}))) from None
        check_config_threads(config)  # a thread count torch cannot start: one line before anything runs
        expected = cache.last_runtime(name, options.quick) or expected_runtime(spec, options.quick)
        tasks.append(Task(name, cache_key(name, config, options.quick, threads), float(expected or DEFAULT_EXPECTED_S),
                          config_dict(config), seed))
    return tasks, broken


def _scoped_error(message: str, name: str, overrides: Mapping[str, str]) -> str:
    """A config error about one experiment's ``--set key=value`` (:func:`flowvar.experiments.config.coerce` starts
    it with ``--set key=``) as the user typed it for reproduce, ``--set name.key=``; other messages unchanged."""
    for key in overrides:
        if message.startswith(f"--set {key}="):
            return f"--set {name}.{message[len('--set '):]}"
    return message


def _clean_stale_staging(out: Path, names: Sequence[str]) -> None:
    """Remove staging folders ``OUT/.<experiment>.*`` that a killed run left behind (we hold the lock)."""
    for name in names:
        for stale in out.glob(f".{name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
                log.info("removed staging folder %s left by an interrupted run", stale.name)


def command_line(options: Options) -> str:
    """The command that reruns this invocation, each argument shell-quoted (:func:`shlex.join`): a ``--out`` with a
    space or a ``--set`` value with a quote copy-pastes into a shell as it ran."""
    argv = ["flowvar", "reproduce", "--quick" if options.quick else "--full", "--out", str(options.out)]
    if options.only:
        argv += ["--only", ",".join(options.only)]
    if options.jobs != 1:
        argv += ["--jobs", str(options.jobs)]
    if options.threads is not None:
        argv += ["--threads", str(options.threads)]
    if options.backend != "local":
        argv += ["--backend", options.backend]
    if options.ray_address:
        argv += ["--ray-address", options.ray_address]
    if options.config_file is not None:
        argv += ["--config", str(options.config_file)]
    if options.cache_dir is not None:
        argv += ["--cache", str(options.cache_dir)]
    if options.seed is not None:
        argv += ["--seed", str(options.seed)]
    for name, kv in options.overrides.items():
        for k, v in kv.items():
            argv += ["--set", f"{name}.{k}={v}"]
    if options.force:
        argv.append("--force")
    return shlex.join(argv)


def interrupted_message(options: Options) -> str:
    """What an interrupted reproduction says (its log, and ``flowvar reproduce`` on the terminal): the exact command
    that continues it, :func:`command_line` without ``--force`` — with it, the rerun would compute the finished
    experiments again; without it, those this run did not reach come from the cache where an earlier run stored
    them, which the message says."""
    return interrupted_text("experiments", command_line(dataclasses.replace(options, force=False)), options.force)


def reproduce(options: Options, stream: IO[str] | None = None) -> Summary:
    """Run (or fetch from the cache) every selected experiment and write the report; see the module doc."""
    if options.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {options.jobs}")
    check_threads(options.threads)
    if options.config_file is not None:
        _check_config_file(Path(options.config_file))
    stream = stream or sys.stderr
    selected = _select(options.only)  # unknown names fail before anything is written
    # an empty --out, or a user's own results.json / report.md / EXPERIMENT/result.json there: refused, not replaced
    out = check_output_folder(options.out, "reproduce", selected)
    refuse_other_output(out, "reproduce")  # a sweep's folder, before anything is planned or written
    if options.cache_dir is not None and Path(options.cache_dir).exists() and not Path(options.cache_dir).is_dir():
        raise ConfigError(f"--cache {options.cache_dir} is a file; give a folder for the result cache")
    cache = Cache(Path(options.cache_dir) if options.cache_dir is not None else out / ".cache")
    threads = options.threads or default_threads()
    backend = make_backend(options.backend, options.jobs, threads, options.ray_address)
    start_line = ("start: %s (code %s, %d cores, %d job(s) x %d thread(s))", command_line(options), code_version(),
                  cpu_cores(), options.jobs, threads)
    with held_log_records() as planning:
        log.info(*start_line)
        tasks, broken = plan(options, cache, threads)  # every selected config validated before anything is written
    backend.start()  # a missing Ray, an unreachable cluster: fail before anything is written (not even --out)
    try:
        # before anything is computed or written: a cache that cannot take results (when something must be
        # computed: a read-only cache whose entries are all valid serves them, as it does a finished sweep), an
        # output slot flowvar must not replace (a file, a link, someone else's folder). A --cache elsewhere is
        # checked before OUT is created; the default OUT/.cache after OUT, so that an unwritable OUT is blamed as
        # such. Each entry is verified once (its files re-hashed): the valid ones are served from this check, not
        # looked up again (an entry is only ever replaced whole, by a rename, by another valid entry of its key).
        verified = {} if options.force else {task.key: cache.check(task.key)[0] for task in tasks}
        to_compute = options.force or any(entry is None for entry in verified.values())
        if options.cache_dir is not None:
            cache_writable = writable_cache(cache, to_compute)
        for task in tasks:
            check_replaceable(out / task.name)
        check_writable(out)
        if options.cache_dir is None:
            cache_writable = writable_cache(cache, to_compute)
        return _reproduce(options, out, selected, cache, threads, backend, tasks, broken, planning, stream,
                          cache_writable, verified)
    finally:
        backend.close()


def _reproduce(options: Options, out: Path, selected: list[str], cache: Cache, threads: int, backend: Backend,
               tasks: list[Task], broken: list[Outcome], planning: list[logging.LogRecord], stream: IO[str],
               cache_writable: bool = True, verified: Mapping[str, Path | None] | None = None) -> Summary:
    from flowvar.report import write_reports

    started = time.perf_counter()
    with sigterm_as_interrupt(), exclusive(out), log_to(out / "reproduce.log", earlier=planning):
        _clean_stale_staging(out, [t.name for t in tasks])
        for tmp in remove_stale_writes(out, REPORT_FILES):
            log.info("removed %s, left by a run killed while writing it", tmp.name)
        removed = cache.clean_stale() if cache_writable else 0
        if not cache_writable:
            log.info("the cache %s is read-only: every experiment is there, nothing to write into it", cache.root)
        if removed:
            log.info("removed %d leftovers of interrupted runs from the cache (staging folders, work folders of "
                     "stored results, lock files)", removed)
        commit = git_commit()  # the commit the run started from (its code was read then), not the one at its end
        outcomes: dict[str, Outcome] = {o.name: o for o in broken}
        progress = Progress(tasks + [Task(o.name, "", 0.0, {}) for o in broken], options.jobs, options.quiet, stream)
        for o in broken:
            progress.finish(o)
        interrupted = False
        try:
            misses = _serve_hits(tasks, options, cache, out, outcomes, progress, verified or {})
            if misses:
                log.info("to compute: %s", ", ".join(t.name for t in misses))
                _run(misses, options, cache, out, outcomes, progress, backend)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("%s", interrupted_message(options))
            raise
        finally:
            in_flight = set(progress.running)  # started and not finished: continued from their checkpoints
            progress.close()
            keys = {t.name: t.key for t in tasks}
            final = [outcomes.get(n, Outcome(n, "not run", keys.get(n))) for n in selected]
            for o in final:
                if o.status == "pending":
                    o.status = "not run"
            wall = time.perf_counter() - started
            meta = {"command": command_line(options), "mode": "quick" if options.quick else "full",
                    "code_version": code_version(), "git_commit": commit,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "wall_s": wall, "jobs": options.jobs, "threads_per_experiment": threads,
                    "cpu_cores": cpu_cores(), "versions": versions(), "interrupted": interrupted,
                    "cache": str(cache.root)}
            exps = [{**o.to_dict(), "in_flight": o.status == "not run" and o.name in in_flight} for o in final]
            kept = _kept_entries(out, selected, options.quick, stream)
            if kept:
                meta["kept"] = [e["name"] for e in kept]
                exps = _registry_order(exps + kept)
            paths = write_reports(out, meta, exps)
            log.info("finished in %.1f s: %s; report %s", wall,
                     ", ".join(f"{o.name}={o.status}" for o in final), paths["html"])
    return Summary(out, final, wall, paths["html"], paths["md"], paths["json"], [e["name"] for e in kept])


def _kept_entries(out: Path, selected: list[str], quick: bool, stream: IO[str]) -> list[dict[str, Any]]:
    """The report of a folder is the report of what it holds: the collection entries (status ``kept``) of the
    registered experiments this invocation did not select whose results of the same mode are installed in ``out``
    (``out/NAME/result.json``, from an earlier run). An entry keeps the earlier results.json's record of the same
    result — its cache key, and in ``kept_from`` the status, command and date of the run that produced it —, or has
    none when that result was installed otherwise (``flowvar run``). Results of the other mode stay out of the report,
    with a warning on ``stream``: a quick result told at paper scale, or the reverse, would mislead."""
    from flowvar.experiments.base import discover
    from flowvar.report import load_collection

    try:
        earlier = load_collection(out) or {"meta": {}, "experiments": []}
    except FlowvarError as e:  # a damaged results.json: the results themselves are still read from their folders
        log.warning("the earlier results.json of %s is not readable (%s): kept results lose their provenance", out, e)
        earlier = {"meta": {}, "experiments": []}
    meta = earlier["meta"]
    records = {e.get("name"): e for e in earlier["experiments"] if isinstance(e, dict)}
    kept, other_mode = [], []
    for name in discover():
        path = out / name / "result.json"
        if name in selected or not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text())
            result = Result.from_dict(raw)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("%s is not a valid result (%s): left out of the report", path, e)
            continue
        if result.quick != quick:
            other_mode.append(name)
            continue
        record = records.get(name)
        same = record is not None and _same_json(record.get("result"), raw)
        if same and record.get("status") in ("kept", "assembled"):
            kept.append(record)  # already kept (or assembled from a sweep) by an earlier command: its provenance stays
        elif same:
            kept.append({**record, "status": "kept", "in_flight": False,
                         "kept_from": {"status": record.get("status"), "command": meta.get("command"),
                                       "created": meta.get("created")}})
        else:
            kept.append({"name": name, "status": "kept", "key": None, "wall_s": 0.0, "error": None,
                         "corrupted_cache_entry": None, "in_flight": False,
                         "kept_from": {"status": None, "command": None, "created": None}, "result": raw})
    if other_mode:
        mode, other = ("quick", "full") if quick else ("full", "quick")
        message = (f"{out} also holds {other}-mode results of {', '.join(other_mode)}: left out of this {mode} report "
                   f"(rerun them in {mode} mode, or use another --out)")
        log.warning(message)
        stream.write(f"flowvar: warning: {message}\n")
    return kept


def _same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same document (NaN equal to NaN, unlike ``==`` on floats)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _registry_order(experiments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collection entries in the order of the registered experiments (a folder's report, not one command's)."""
    from flowvar.experiments.base import discover

    order = {name: i for i, name in enumerate(discover())}
    return sorted(experiments, key=lambda e: order.get(e["name"], len(order)))


def _corruption_warner(name: str, sink: list[str], progress: Progress) -> Callable[[str, str], None]:
    """The ``on_corrupt`` callback: a warning line on stderr and in the log, the reason kept in ``sink``."""

    def warn(key: str, reason: str) -> None:
        sink.append(reason)
        log.warning("corrupted cache entry %s of %s (%s): not trusted, recomputing", key, name, reason)
        progress.emit(f"flowvar: warning: the cached result of {name} is corrupted ({reason}); recomputing it")

    return warn


def _serve_hits(tasks: list[Task], options: Options, cache: Cache, out: Path, outcomes: dict[str, Outcome],
                progress: Progress, verified: Mapping[str, Path | None]) -> list[Task]:
    """Install every valid cache entry into ``out``; return the tasks left to compute. ``verified``: the entries
    planning found valid (:meth:`Cache.check`), served without being re-hashed; every other key is looked up (a
    corrupted entry is reported and deleted, one stored since is found)."""
    misses = []
    for task in tasks:
        start = time.perf_counter()
        corrupted: list[str] = []
        warn = _corruption_warner(task.name, corrupted, progress)
        entry = None if options.force else verified.get(task.key) or cache.lookup(task.key, on_corrupt=warn)
        if entry is None:
            if options.force:
                log.info("--force: recomputing %s", task.name)
            misses.append(task)
            if corrupted:
                outcomes[task.name] = Outcome(task.name, "pending", task.key, corrupted=corrupted[0])
            continue
        try:
            install(entry, out / task.name)
        except FlowvarError as e:  # disk full, folder gone read-only: this experiment fails, the others go on
            outcome = Outcome(task.name, "failed", task.key, time.perf_counter() - start,
                              error=f"{type(e).__name__}: {e}")
            outcomes[task.name] = outcome
            log.error("failed: %s: %s", task.name, outcome.error)
            progress.finish(outcome)
            continue
        outcome = Outcome(task.name, "cached", task.key, time.perf_counter() - start,
                          result=Result.load(entry / "result.json"))
        outcomes[task.name] = outcome
        log.info("cache hit: %s key=%s (computed earlier in %.1f s); not recomputed", task.name, task.key,
                 outcome.result.runtime_s)
        progress.finish(outcome)
    return misses


def _record(task: Task, reply: dict[str, Any], cache: Cache, out: Path, outcomes: dict[str, Outcome],
            progress: Progress) -> None:
    corrupted = outcomes[task.name].corrupted if task.name in outcomes else None
    # a failed reply stays failed, whatever the cache holds for the key: under --force the entry there is the old
    # result the recompute was to replace, and compute stores nothing it could then fail after (run_cached with no
    # OUT copies nothing; a result the cache refused comes back as reply["unstored"]) — as sweep judges it
    if reply["status"] == "computed":
        try:  # the stored entry, or a result the cache's disk could not store (kept for this install)
            _, unstored = install_computed(reply, cache, out / task.name, task.name)
        except FlowvarError as e:  # disk full, folder gone read-only: this experiment fails, the others go on
            reply = {**reply, "status": "failed", "error": f"{type(e).__name__}: {e}"}
        else:
            if unstored is not None:
                log.warning("%s: %s", task.name, unstored)
                progress.emit(f"flowvar: warning: {task.name}: {unstored}")
    if reply["status"] == "computed":
        result = Result.load(out / task.name / "result.json")
        status = "cached" if reply.get("hit") else "computed"  # "cached": another process computed it meanwhile
        outcome = Outcome(task.name, status, reply["key"], reply["wall_s"], corrupted=corrupted, result=result)
        log.info("%s: %s key=%s in %.1f s (%s)", status, task.name, reply["key"], reply["wall_s"],
                 verdict_line(result))
        if reply["key"] != task.key:
            log.warning("%s: the code changed while reproducing (key %s, planned %s)", task.name, reply["key"],
                        task.key)
    else:
        outcome = Outcome(task.name, "failed", task.key, reply["wall_s"], error=reply["error"], corrupted=corrupted)
        log.error("failed: %s after %.1f s: %s\n%s", task.name, reply["wall_s"], reply["error"],
                  reply.get("traceback", ""))
    outcomes[task.name] = outcome
    progress.finish(outcome)


def _run(misses: list[Task], options: Options, cache: Cache, out: Path, outcomes: dict[str, Outcome],
         progress: Progress, backend: Backend) -> None:
    """Compute the misses on ``backend`` (:mod:`flowvar.runner`), longest expected first when several run at once;
    each finished one is installed from the cache by this process, which holds the lock."""
    queue = sorted(misses, key=lambda t: -t.expected_s) if backend.slots > 1 else misses
    config_file = str(options.config_file) if options.config_file is not None else None

    def args(task: Task) -> tuple:
        return (task.name, options.overrides.get(task.name, {}), options.quick, task.seed, config_file,
                str(cache.root.resolve()), backend.threads, (), options.force)

    def start(task: Task) -> None:
        log.info("computing: %s key=%s (expected ~%.0f s)", task.name, task.key, task.expected_s)
        progress.start(task.name)

    with ticker(progress):
        for task, reply in dispatch(backend, queue, args, start):
            _record(task, reply, cache, out, outcomes, progress)


__all__ = ["Options", "Outcome", "Progress", "Summary", "Task", "cpu_cores", "default_threads", "git_commit",
           "interrupted_message", "parse_only", "parse_scoped_overrides", "plan", "reproduce"]
