"""``flowvar assemble``: one experiment's full result from a finished sweep that split its grid.

A long study (memorisation_phase: 40 cells of up to ~40 min each) is run as a sweep whose points each compute part
of the grid (``flowvar sweep memorisation_phase --preset by_cell``), on several machines, over several sessions. The
claims that compare cells (which region σ acts in, whether the tube ratio separates them) need every cell in one
result. :func:`assemble_sweep` builds it from the points' results, with nothing trained again:

1. the sweep must be finished (every point computed or cached) and every axis must split a list-valued config
   field (``dims=[2],[3]``): the full config is the sweep's with each axis's lists joined (``dims=[2, 3]``);
2. every point's config must equal the full config outside the axes;
3. the experiment's own ``assemble`` (:func:`flowvar.experiments.base.assembles`) checks that the points make up
   the grid exactly, and judges them as its ``run`` judges its own points.

A damaged sweep (a hand-edited sweep.json, points not its axes' grid, a lost, edited or foreign point result: a
point folder is checked file by file against the digests of the cache entry it was installed from, where the cache
holds it) is refused as one line whose fix is the sweep's own command with ``--out`` this folder (it restores points
from its cache; a moved folder's recorded --out would continue the sweep where it was run), never ``--force``.

The same judging serves a stored result (:func:`rejudge_result`, ``flowvar assemble EXPERIMENT_DIR``): an experiment
that assembles from parts can take its own result as the one part, so its claims are judged again by this code
from the points it stored, with nothing trained. That is how a changed rule reaches a study that took hours to
compute; the result records the verdicts it replaced (``assembled_from.rejudged``).

The result records where its parts come from (``assembled_from``: the sweep, its command, the code version that
computed the points and the one that judged them). With ``--out`` naming a ``flowvar reproduce`` folder, the result
joins that collection (status "assembled") and its report is rewritten; that folder is read, and refused when
it is invalid or of the other mode (a quick result in a paper-scale report), before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from flowvar.cache import Cache, code_version
from flowvar.errors import ConfigError, DataError
from flowvar.files import atomic_write_text
from flowvar.results import Result
from flowvar.sweep.grid import canonical
from flowvar.sweep.tables import load_sweep

log = logging.getLogger("flowvar.sweep")

FINISHED = ("computed", "cached")
"""The point statuses of a finished sweep (``sweep.json``)."""

REPORT_META = ("command", "mode", "code_version", "created", "wall_s")
"""The fields of a reproduce collection's ``meta`` its report shows (results.json)."""


def assemble_sweep(sweep_dir: Path | str, out: Path | str | None = None) -> tuple[Result, Path]:
    """Assemble the experiment of the finished sweep in ``sweep_dir`` into ``out/<experiment>/`` (default
    ``sweep_dir/assembled``); returns the result and its folder. See the module doc for the checks
    (:func:`_assemblable`); each failure is a one-line :class:`ConfigError` or :class:`DataError` naming the problem
    and the fix."""
    from flowvar.experiments.base import assemble_experiment

    sweep_dir = Path(sweep_dir)
    spec, config, parts, meta, points = _assemblable(sweep_dir)
    quick = parts[0].quick
    computed_by = str(meta.get("code_version", "unknown"))
    provenance = {"sweep": str(sweep_dir.resolve()), "command": meta.get("command"), "points": len(points),
                  "keys": [p.get("key") for p in points], "computed_by": computed_by,
                  "assembled_by": code_version(spec.name), "compute_s": sum(r.runtime_s for r in parts)}
    out_root = Path(out) if out is not None else sweep_dir / "assembled"
    if (out_root / spec.name).exists() and not (out_root / spec.name).is_dir():
        raise ConfigError(f"{out_root / spec.name} is a file, not a result folder; move it away or give another "
                          f"--out")
    # a reproduce folder is read (and its mode checked) before anything is written: a refusal leaves it untouched
    collection = _collection(out_root, quick)
    result = assemble_experiment(spec.name, out_root, config, [r.metrics for r in parts], quick=quick,
                                 runtime_s=float(provenance["compute_s"]), provenance=provenance)
    if collection is not None:
        _join_collection(out_root, collection, result, provenance)
    return result, out_root / spec.name


def assemble_problem(sweep_dir: Path | str) -> str | None:
    """Why the sweep in ``sweep_dir`` cannot be assembled (the one-line message ``flowvar assemble`` would exit
    with), or None when it can: the checks of :func:`assemble_sweep` (:func:`_assemblable`), nothing written. What
    ``flowvar sweep`` asks before it suggests ``flowvar assemble`` (an experiment without ``assemble``, an
    unfinished sweep, axes of single-valued fields, …)."""
    try:
        _assemblable(Path(sweep_dir))
    except (ConfigError, DataError) as error:
        return str(error)
    return None


def _assemblable(sweep_dir: Path) -> tuple[Any, Any, list[Result], dict[str, Any], list[dict[str, Any]]]:
    """The checks that make a sweep assemblable, in order (module doc, 1–2; the experiment's ``assemble`` makes
    3.): (spec, the full config, the points' results, the sweep's meta, its point records); a one-line ConfigError
    or DataError at the first that fails."""
    from flowvar.experiments.base import assembler, build_config

    meta, axes, points = _read_sweep(sweep_dir)
    spec = _experiment(sweep_dir, meta)
    assembler(spec)  # before any point is read: an experiment without one must run whole
    unfinished = [p for p in points if p.get("status") not in FINISHED]
    if unfinished:
        statuses = ", ".join(sorted({str(p.get("status")) for p in unfinished}))
        raise ConfigError(f"{len(unfinished)} of {len(points)} points of the sweep in {sweep_dir} are not finished "
                          f"({statuses}); rerun {_rerun(sweep_dir, meta)} (it continues where it stopped), then "
                          f"assemble")
    parts = [_load_point(sweep_dir, meta, p) for p in points]
    for point, part in zip(points, parts, strict=True):
        if part.experiment != spec.name:
            raise DataError(f"point {point.get('point')} ({point.get('values')}) holds a result of {part.experiment}, "
                            f"not {spec.name}; delete {sweep_dir / str(point.get('output'))} and rerun "
                            f"{_rerun(sweep_dir, meta)}: it restores the point from its cache (or computes it again)")
    _check_installed(sweep_dir, meta, points)  # an edited point would be judged as if it were its entry's result
    modes = {r.quick for r in parts}
    if len(modes) != 1:
        raise ConfigError("the sweep mixes --quick and full points; assemble a sweep run in one mode")
    quick = modes.pop()
    full = _joined_config(axes, parts)
    _check_grid(sweep_dir, meta, axes, points)
    config = build_config(spec, quick=quick, overrides=full)
    changed = _unkept(config, full)
    if changed:
        raise ConfigError(f"the assembled config does not keep the points' values of {', '.join(changed)}; this "
                          f"flowvar cannot assemble them (were they computed by another version?)")
    return spec, config, parts, meta, points


#: Metrics that describe the run which computed a result (where and with what), kept when it is re-judged.
RUN_METRICS = ("device", "compute")


def rejudge_result(result_dir: Path | str, out: Path | str | None = None) -> tuple[Result, Path]:
    """Judge the stored result in ``result_dir`` (an ``EXPERIMENT/`` folder holding ``result.json``) again from its
    own metrics, through the experiment's ``assemble`` with the result as its one part; write it to
    ``out/<experiment>/`` (default: ``result_dir``'s parent, i.e. in place; a ``flowvar reproduce`` folder gets its
    results.json entry and report rewritten). Nothing is trained: the points are the stored ones, the claims,
    regions, notes and figures this code's. ``assembled_from`` keeps the original provenance (the sweep or run that
    computed the points) and adds ``rejudged``: the stored result's path, the code that judged it before and its
    verdicts then, and (``earlier``) the records of the re-judgings before that, oldest first. Figures this code does
    not draw again (they need the trained models) and the :data:`RUN_METRICS` are kept. A ConfigError or
    DataError (one line naming the fix) for a folder without a readable result, an
    experiment that cannot assemble, or a config this flowvar cannot rebuild."""
    from flowvar.experiments.base import assemble_experiment, assembler, build_config, get_experiment

    result_dir = Path(result_dir)
    path = result_dir / "result.json"
    if not path.is_file():
        raise DataError(f"{result_dir} holds no result.json; give a sweep's --out folder or an experiment's result "
                        f"folder (e.g. runs/memorisation_phase)")
    try:
        stored = Result.load(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a readable flowvar result ({type(e).__name__}); recompute it with `flowvar "
                        f"run` or `flowvar reproduce --only`") from None
    spec = get_experiment(stored.experiment)
    assembler(spec)
    try:
        config = build_config(spec, quick=stored.quick, overrides=dict(stored.config))
    except ConfigError as e:
        raise ConfigError(f"{path}'s config cannot be rebuilt by this flowvar ({e}); recompute the result") from None
    changed = _unkept(config, stored.config)
    if changed:
        raise ConfigError(f"this flowvar does not keep {path}'s values of {', '.join(changed)}; recompute the result")
    before = stored.metrics.get("assembled_from")
    original = dict(before) if isinstance(before, dict) else {}
    points = stored.metrics.get("points")
    out_root = Path(out) if out is not None else result_dir.resolve().parent
    # a result never assembled before was computed and judged by its own run: its recorded versions say which
    own_run = _recorded_code(stored.versions)
    provenance = {**{k: v for k, v in original.items() if k != "rejudged"},
                  # a sweep's point count and command; a whole run's result has none (its collection records it)
                  "points": original.get("points", len(points) if isinstance(points, list) else None),
                  "command": original.get("command"),
                  "computed_by": original.get("computed_by", own_run),
                  "assembled_by": code_version(spec.name),
                  "compute_s": float(original.get("compute_s", stored.runtime_s)),
                  "rejudged": {"result": _shown_path(path, out_root),
                               "judged_by": original.get("assembled_by", own_run),
                               "verdicts_before": {c.id: c.verdict for c in stored.claims},
                               # the judgings before, oldest first: a second re-judging keeps the first's record
                               "earlier": _earlier_judgings(original.get("rejudged"))}}
    collection = _collection(out_root, stored.quick)
    # what the assemble cannot make again comes along: figures that need the trained models, where the run computed
    kept_figures = {name: result_dir / name for name in stored.figures if (result_dir / name).is_file()}
    kept_metrics = {key: stored.metrics[key] for key in RUN_METRICS if key in stored.metrics}
    result = assemble_experiment(spec.name, out_root, config, [stored.metrics], quick=stored.quick,
                                 runtime_s=float(provenance["compute_s"]), provenance=provenance,
                                 kept_figures=kept_figures, kept_metrics=kept_metrics)
    if collection is not None:
        _join_collection(out_root, collection, result, provenance)
    return result, out_root / spec.name


def _recorded_code(versions: dict[str, Any] | None) -> str:
    """The flowvar version and git commit a stored result records (``versions``), e.g. ``0.1.0 at commit
    9ef4516a33c1``; "unknown" when it records neither."""
    versions = versions or {}
    commit = versions.get("git_commit")
    if commit:
        return f"{versions.get('flowvar', '?')} at commit {str(commit)[:12]}"
    return str(versions.get("flowvar") or "unknown")


def _shown_path(path: Path, out_root: Path) -> str:
    """``path`` relative to the folder the re-judged result is written into when it lies inside it (a published
    result then names no machine's temporary folder), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(out_root.resolve()))
    except ValueError:
        return str(resolved)


def _unkept(config: Any, values: dict[str, Any]) -> list[str]:
    """The keys of ``values`` whose value the built ``config`` does not keep (a field this flowvar changes or lacks)."""
    built = dataclasses.asdict(config)
    return sorted(k for k in values if canonical(built.get(k)) != canonical(values[k]))


def _earlier_judgings(record: Any) -> list[dict[str, Any]]:
    """A stored result's re-judging records, oldest first: its own ``rejudged`` record (without its ``earlier``)
    after the ones that record kept. Empty for a result never re-judged."""
    if not isinstance(record, dict):
        return []
    earlier = record.get("earlier")
    return [*(earlier if isinstance(earlier, list) else []), {k: v for k, v in record.items() if k != "earlier"}]


def _experiment(sweep_dir: Path, meta: dict[str, Any]) -> Any:
    """The sweep's experiment spec; an unknown one names the ``--plugin`` the sweep was run with."""
    from flowvar.experiments.base import get_experiment
    from flowvar.experiments.registry import discover

    name = meta["experiment"]
    try:
        return get_experiment(name)
    except ConfigError:
        if name in discover():
            raise
        words = command_words(meta)
        given = shlex.join(w for i in _flag_values(words, "--plugin") for w in ("--plugin", words[i])) or \
            "--plugin FILE"
        raise ConfigError(f"the sweep's experiment {name!r} is not registered here; load it as the sweep did: "
                          f"`flowvar assemble {sweep_dir} {given}`") from None


def _check_grid(sweep_dir: Path, meta: dict[str, Any], axes: list[dict[str, Any]],
                points: list[dict[str, Any]]) -> None:
    """The index's points must be its axes' cartesian product, each once (a hand-edited or partly written
    sweep.json is not); a DataError naming the missing or unexpected grid points otherwise."""
    combos = [[(a["key"], v) for v in a["values"]] for a in axes]
    expected = {canonical(dict(c)) for c in itertools.product(*combos)}
    listed = [canonical(p.get("values")) for p in points]
    missing, extra = sorted(expected - set(listed)), sorted(set(listed) - expected)
    repeated = len(set(listed)) != len(listed)
    if missing or extra or repeated:
        what = "; ".join([f"missing {', '.join(missing)}"] * bool(missing)
                         + [f"not on its axes {', '.join(extra)}"] * bool(extra)
                         + ["a grid point listed twice"] * repeated)
        raise DataError(f"{sweep_dir / 'sweep.json'} does not list its axes' grid ({what}); rerun "
                        f"{_rerun(sweep_dir, meta)} to rewrite it")


def _rerun(sweep_dir: Path, meta: dict[str, Any]) -> str:
    """How to complete or repair the sweep: its command, its --out set to this folder (which may have been moved:
    the recorded --out would continue the sweep where it was run)."""
    words = command_words(meta) or ["flowvar", "sweep", "..."]
    at = _flag_values(words, "--out")
    if not at:
        words += ["--out", str(sweep_dir)]
    elif Path(words[at[-1]]).resolve() != sweep_dir.resolve():
        words[at[-1]] = str(sweep_dir)
    return f"`{shlex.join(words)}`"


def command_words(meta: dict[str, Any]) -> list[str]:
    """The words of the sweep's recorded command (``meta.command``, written by :func:`shlex.join`), as the shell
    splits them: ``--out 'my sweep'`` is two words, not three. A command that is no valid shell text (hand-edited,
    an unclosed quote) is split on spaces."""
    text = str(meta.get("command") or "")
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _flag_values(words: list[str], flag: str) -> list[int]:
    """The positions of ``flag``'s values in a recorded command's words (``--out DIR`` → the index of DIR)."""
    return [i + 1 for i, w in enumerate(words[:-1]) if w == flag]


def _read_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``sweep.json``'s meta, axes and points; a DataError when the folder is not a readable sweep."""
    index = sweep_dir / "sweep.json"
    data = load_sweep(sweep_dir)
    if data is None:
        if not sweep_dir.exists():
            raise DataError(f"{sweep_dir} does not exist; give the --out folder of a finished sweep, or an "
                            f"experiment's result folder to judge again")
        if (sweep_dir / "results.json").is_file():  # a reproduce folder: its experiments are one level down
            raise DataError(f"{sweep_dir} is a `flowvar reproduce` folder, not one result; give one of its "
                            f"experiments: flowvar assemble {sweep_dir}/EXPERIMENT")
        raise DataError(f"{sweep_dir} is not a `flowvar sweep` folder (no sweep.json) nor a result folder (no "
                        f"result.json); give the --out folder of a finished sweep, or an experiment's result folder "
                        f"to judge again")
    try:
        meta, axes, points = data["meta"], data["axes"], data["points"]
        if not isinstance(meta["experiment"], str) or not isinstance(points, list):
            raise TypeError("experiment or points")
        # a hand-edited index: every axis a key and its values, every point a record with its values
        if not isinstance(axes, list) or not all(
                isinstance(a, dict) and isinstance(a.get("key"), str) and isinstance(a.get("values"), list)
                for a in axes):
            raise TypeError("axes")
        if not all(isinstance(p, dict) and isinstance(p.get("values"), dict) for p in points):
            raise TypeError("points")
    except (KeyError, TypeError) as e:
        raise DataError(f"{index} is not a valid sweep index ({type(e).__name__}); rerun the sweep command to "
                        f"rewrite it") from None
    if not points:
        raise DataError(f"{index} lists no points; rerun the sweep command")
    return meta, axes, points


def _load_point(sweep_dir: Path, meta: dict[str, Any], point: dict[str, Any]) -> Result:
    """A finished point's result; a lost or damaged one is restored by rerunning the sweep (from its cache, or
    computed again if the cache lost it too), never by --force, which would recompute every point."""
    path = sweep_dir / str(point.get("output")) / "result.json"
    try:
        return Result.load(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"point {point.get('point')} ({point.get('values')}) has no readable result at {path} "
                        f"({type(e).__name__}); rerun {_rerun(sweep_dir, meta)}: it restores the point from its "
                        f"cache (or computes it again)") from None


def _sweep_cache(sweep_dir: Path, meta: dict[str, Any]) -> Cache:
    """The cache the sweep installed its points from: its recorded ``--cache``, else ``SWEEP_DIR/.cache`` (the
    default ``OUT/.cache``, which moves with a moved folder)."""
    words = command_words(meta)
    return Cache(Path(meta["cache"]) if _flag_values(words, "--cache") and meta.get("cache") else
                 sweep_dir / ".cache")


def _check_installed(sweep_dir: Path, meta: dict[str, Any], points: list[dict[str, Any]]) -> None:
    """Every point folder must hold its cache entry's result as installed (:func:`~flowvar.sweep.folder.
    entry_difference`: each file's SHA-256 against the entry's manifest): a ``result.json`` edited or a file lost
    since (review sweepR 2: an edited number silently turned a verdict, while ``assembled_from.keys`` named the
    entry) is a damaged point, refused in one line whose fix is the sweep's rerun, which installs the entry again.
    A point the cache does not hold (pruned, another machine's cache) cannot be compared and is taken as it is;
    the experiment's ``assemble`` still checks what it reads. Files added to a point folder change no number and are
    no damage."""
    from flowvar.sweep.folder import entry_difference

    cache = _sweep_cache(sweep_dir, meta)
    for point in points:
        folder = sweep_dir / str(point.get("output"))
        try:
            difference = entry_difference(folder, cache, str(point.get("key")))
        except ValueError:  # no cache key (a hand-edited index): nothing to compare with; the later checks judge it
            continue
        if difference is not None and difference.damaged:
            what = " and ".join([f"{', '.join(difference.changed)} edited"] * bool(difference.changed)
                                + [f"{', '.join(difference.missing)} lost"] * bool(difference.missing))
            raise DataError(f"point {point.get('point')} ({point.get('values')}) is damaged: {folder} no longer "
                            f"holds its cache entry's result ({what} since the sweep installed it); rerun "
                            f"{_rerun(sweep_dir, meta)}: it restores the point from its cache {cache.root}")


def _joined_config(axes: list[dict[str, Any]], parts: list[Result]) -> dict[str, Any]:
    """The full config: the parts' common config with each axis's list values joined in the axis's order
    (``dims=[2],[3]`` → ``dims=[2, 3]``). ConfigError when an axis splits a scalar field, repeats a value, or a
    part differs from the others outside the axes."""
    keys = [a["key"] for a in axes]
    full = dict(parts[0].config)
    for axis in axes:
        values = axis["values"]
        if axis["key"] == "seed":
            # the claims compare the seeds of one run (the unit of replication): they must be replicates inside
            # every point, not points of their own, which a sweep with --seeds (and --set n_seeds=1) makes them
            if "n_seeds" not in parts[0].config:
                raise ConfigError(f"the sweep's axis seed makes each seed ({values}) a point of its own, and "
                                  f"{parts[0].experiment} runs one seed per run: assemble a sweep without --seeds "
                                  f"(one per seed, each with --set seed=S)")
            n = len(values) * int(parts[0].config.get("n_seeds") or 1)
            first = min(int(v) for v in values)
            raise ConfigError(f"the sweep's axis seed makes each seed ({values}) a point of its own; an assembled run "
                              f"needs the seeds inside every point: rerun the sweep without --seeds and with --set "
                              f"n_seeds={n}{f' --set seed={first}' if first else ''} (seeds {first} … "
                              f"{first + n - 1} at each point), then assemble that")
        if not all(isinstance(v, list) for v in values):
            raise ConfigError(f"the sweep's axis {axis['key']} takes single values ({values}); only a sweep that "
                              f"splits list-valued fields (e.g. --grid \"dims=[2],[3]\") can be assembled")
        joined = [x for v in values for x in v]
        if len({canonical(x) for x in joined}) != len(joined):
            raise ConfigError(f"the sweep's axis {axis['key']} repeats a value ({values}); its points overlap: "
                              f"split the grid so that every value is in exactly one point (--grid "
                              f"\"{axis['key']}=[a],[b]\", not \"{axis['key']}=[a,b],[b]\")")
        full[axis["key"]] = joined
    for part in parts:
        differ = sorted(k for k in set(full) | set(part.config)
                        if k not in keys and canonical(part.config.get(k)) != canonical(full.get(k)))
        if differ:
            named = ", ".join(differ[:6]) + (f", … ({len(differ)} in all)" if len(differ) > 6 else "")
            raise ConfigError(f"the sweep's points differ outside its axes ({named}): they are not one run's grid "
                              f"and cannot be assembled")
    return full


def _collection(out_root: Path, quick: bool) -> dict[str, Any] | None:
    """The results.json of ``out_root`` when it is a ``flowvar reproduce`` folder, else None. A ConfigError when
    its mode is not the sweep's: a quick result in a full (paper-scale) report would be told as paper-scale."""
    from flowvar.report import load_collection

    collection = load_collection(out_root)
    if collection is None:
        return None
    # what rewriting its report reads: checked here, before the result is written, not found missing after
    meta = collection.get("meta")
    if not isinstance(meta, dict) or not set(REPORT_META) <= set(meta) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in collection["experiments"]):
        raise DataError(f"{out_root / 'results.json'} is not a valid flowvar reproduce collection (its meta needs "
                        f"{', '.join(REPORT_META)}; every experiment a record with its name); rerun `flowvar "
                        f"reproduce` there, or give another --out")
    mode, ours = meta.get("mode"), "quick" if quick else "full"
    if mode in ("quick", "full") and mode != ours:
        raise ConfigError(f"{out_root} holds a {mode} reproduction but the parts are {ours}-mode results; "
                          f"assemble {mode}-mode parts into it, or give another --out")
    return collection


def _join_collection(out_root: Path, collection: dict[str, Any], result: Result,
                     provenance: dict[str, Any]) -> None:
    """Put the result into the reproduce folder's ``collection`` (its results.json; replacing the experiment's
    entry, status "assembled") and rewrite its report."""
    from flowvar.report import rewrite_reports

    entry = {"name": result.experiment, "status": "assembled", "key": None,
             "wall_s": float(provenance["compute_s"]), "error": None, "corrupted_cache_entry": None,
             "assembled_from": {k: v for k, v in provenance.items() if k != "keys"}, "result": result.to_dict()}
    experiments = collection["experiments"]
    names = [e.get("name") for e in experiments]
    if result.experiment in names:
        experiments[names.index(result.experiment)] = entry
    else:
        experiments.append(entry)
    atomic_write_text(out_root / "results.json", json.dumps(collection, indent=1))
    rewrite_reports(out_root)
    log.info("added %s to the collection in %s and rewrote its report", result.experiment, out_root)



__all__ = ["FINISHED", "RUN_METRICS", "assemble_problem", "assemble_sweep", "rejudge_result"]
