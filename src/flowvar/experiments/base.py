"""What an experiment module imports: the :class:`RunContext` it reports through, :func:`register`, and
:func:`run_experiment`, which builds the config, runs the experiment in a staged folder and writes its result.

The registry lives in :mod:`flowvar.experiments.registry` and the typed configs in
:mod:`flowvar.experiments.config`; this module re-exports their public names so that experiments and the front
end have one import."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowvar.errors import ConfigError, DataError, FlowvarError
from flowvar.experiments.config import *  # noqa: F403  (re-exported: see the module doc)
from flowvar.experiments.config import __all__ as _config_names
from flowvar.experiments.config import build_config
from flowvar.experiments.registry import *  # noqa: F403
from flowvar.experiments.registry import ExperimentSpec, get_experiment
from flowvar.experiments.registry import __all__ as _registry_names
from flowvar.files import atomic_write_bytes, atomic_write_text, staged_folder
from flowvar.results import Claim, ClaimKind, Precondition, Result, Verdict, from_jsonable, judge, verdict_changes
from flowvar.seeding import StreamKey, Streams

CHECKPOINTS_PER_TRAINING = 10
"""Checkpoints a full-scale training writes (:meth:`RunContext.checkpoint_every`)."""


@dataclass
class RunContext:
    """What an experiment reports into, and where its randomness comes from. Figures are written as PNG into
    ``out_dir`` (a staging folder).

    **Randomness** (:mod:`flowvar.seeding`): every random stream of the run is derived from ``seed`` by name —
    ``ctx.generator("eval")``, ``ctx.derive_seed("batches", d)`` for a library call taking a seed,
    ``with ctx.global_rng("init"): model = ...`` for model initialisation, and ``ctx.replicate(k)`` for the streams
    of training seed (replicate) k, labelled ``seed={seed + k}`` in results. An experiment never seeds torch itself.

    ``seed`` is the config's ``seed`` (the run's one seed: its YAML value, ``--seed``), copied here read-only as
    the root of the streams; set it through the config, never on the context.

    **Resuming** (:meth:`checkpoint_dir`): ``work_dir`` is a folder that outlives an interrupted run — the cache's
    ``.work/<key>`` (:func:`flowvar.cache.run_cached`), keyed like the result, so only a run of the same experiment,
    config, code and data resumes from it (and :func:`flowvar.train.train` refuses a checkpoint of other data), and
    removed once the result is stored. Every training of an experiment passes
    ``checkpoint_dir=ctx.checkpoint_dir(<its name>)``: an interrupted experiment then keeps its finished trainings
    and resumes the one it was in (bit-identical on CPU). Without a cache ``work_dir`` is None and nothing resumes.
    """

    name: str
    out_dir: Path
    quick: bool
    seed: int
    progress: bool = False
    claims: list[Claim] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    device: str = "cpu"
    work_dir: Path | None = None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "seed" and "seed" in self.__dict__:
            raise AttributeError("ctx.seed is read-only: it is the config's seed (set it with --seed or the config)")
        super().__setattr__(key, value)

    @property
    def streams(self) -> Streams:
        """The run's named random streams (seeded by ``seed``)."""
        return Streams(self.seed)

    def generator(self, *stream: StreamKey) -> torch.Generator:
        """A fresh CPU generator of the named stream, e.g. ``ctx.generator("eval", d)``: seeded with
        ``derive_seed(seed, *stream)``. ``ctx.generator()`` (no name) is seeded with ``seed`` itself."""
        return self.streams.generator(*stream)

    def derive_seed(self, *stream: StreamKey) -> int:
        """The seed of the named stream, for a library call that takes a seed (``train_cfm(seed=)``, OT solvers)."""
        return self.streams.derive_seed(*stream)

    def global_rng(self, *stream: StreamKey) -> contextlib.AbstractContextManager[None]:
        """torch's global CPU generator seeded from the named stream inside the ``with`` block and restored after:
        for model initialisation (``with ctx.global_rng("init"): model = MLPField(...)``)."""
        return self.streams.global_rng(*stream)

    def replicate(self, k: int) -> Streams:
        """The streams of replicate (training seed) ``k``: seed ``seed + k``, streams named under "replicate"."""
        return self.streams.replicate(k)

    def checkpoint_dir(self, *parts: StreamKey) -> Path | None:
        """The checkpoint folder of one training of this run, ``work_dir/<part>/<part>/…`` (e.g.
        ``ctx.checkpoint_dir("d=3", "seed=1", "sigma=0.0")``), or None when the run has no ``work_dir``. The parts
        must name the training uniquely within the run: a folder holding another training's checkpoint would be
        refused by :func:`flowvar.train.train` (its config differs), never silently resumed."""
        if self.work_dir is None:
            return None
        names = [str(p) for p in parts]
        if not names or any(not n or n in (".", "..") or "/" in n or "\\" in n for n in names):
            raise ValueError(f"checkpoint_dir parts must be non-empty names without '/': {names!r}")
        return self.work_dir.joinpath(*names)

    def checkpoint_every(self, steps: int) -> int:
        """How often a training of ``steps`` steps writes a checkpoint into :meth:`checkpoint_dir`: ten times per
        training at full scale (a killed run loses at most a tenth of one training), only at the end in quick mode
        (a quick training is shorter than a checkpoint is worth)."""
        return 0 if self.quick else max(1, steps // CHECKPOINTS_PER_TRAINING)

    def metric(self, key: str, value: Any) -> None:
        self.metrics[key] = value

    def claim(self, claim_id: str, statement: str, evidence: dict[str, Any], *, kind: ClaimKind, rule: str,
              verdict: Verdict | None = None, confirmed: bool | None = None, refuted: bool | None = None,
              precondition: Precondition | None = None, min_effect: str = "", replicates: str = "") -> Claim:
        """Record a claim; see :func:`flowvar.results.judge`. Prefer ``verdict=`` from a pure, unit-tested rule
        function of ``evidence`` over inline ``confirmed=``/``refuted=`` booleans."""
        c = judge(claim_id, statement, evidence, rule=rule, kind=kind, verdict=verdict, confirmed=confirmed,
                  refuted=refuted, precondition=precondition, min_effect=min_effect, replicates=replicates)
        self.claims.append(c)
        return c

    def choice(self, key: str, text: str) -> None:
        """Record a choice the paper leaves open and what we chose."""
        self.choices[key] = text

    def note(self, text: str) -> None:
        self.notes.append(text)

    def figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib figure as ``name.png`` (rendered in memory, then written atomically: a full disk is one
        :class:`~flowvar.errors.DataError` naming the file) and close it."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        atomic_write_bytes(path, buffer.getvalue(), what="figure",
                           remedy=write_remedy(path, self.work_dir))
        self.figures.append(path.name)
        return path


def write_remedy(path: Path, work_dir: Path | None = None) -> str:
    """The advice of a failed write of a run's output file ``path`` (disk full, read-only folder), naming the folder
    that must change. A run of the result cache resumes from the cache's work folder ``work_dir``
    (``CACHE/.work/<key>``, :meth:`flowvar.cache.Cache.work_dir`); when ``path`` lies inside that cache (a miss of
    ``flowvar reproduce`` or ``flowvar sweep`` computes in a staging folder of the cache), the cache is what is full:
    "free space in the cache CACHE or choose another --cache". Otherwise the output folder is."""
    if work_dir is not None:
        cache_root = Path(work_dir).resolve().parent.parent
        if cache_root in Path(path).resolve().parents:
            return f"free space in the cache {cache_root} or choose another --cache"
    return "free space or choose another output folder"


OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
"""The Okabe–Ito palette: distinguishable under the common colour-vision deficiencies; every figure's colour cycle."""


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Matplotlib settings for every experiment's figures: the colour-blind-safe :data:`OKABE_ITO` cycle, a
    readable font size and tight saving (restored afterwards)."""
    import matplotlib
    from cycler import cycler

    with matplotlib.rc_context({"axes.prop_cycle": cycler(color=list(OKABE_ITO)), "font.size": 10,
                                "savefig.bbox": "tight", "axes.grid": False}):
        yield


# ------------------------------------------------------------------------------------- torch thread counts


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: int | None, source: str = "--threads") -> int | None:
    """``threads`` unchanged if it is None or a thread count torch can start here: 1 to 4 × the cores (at least
    64); else a one-line :class:`ConfigError` naming ``source`` (``--threads``, ``$FLOWVAR_THREADS`` or the config
    key ``threads``): torch's thread pool fails to start hundreds of thousands (a segmentation fault or a
    MemoryError) and a thousand threads on a few cores run for hours instead of seconds."""
    if threads is None:
        return None
    limit = max(64, 4 * cpu_cores())
    if not 1 <= threads <= limit:
        raise ConfigError(f"{source} must be between 1 and {limit} on this machine ({cpu_cores()} cores), got "
                          f"{threads}")
    return threads


THREADS_ENV = "FLOWVAR_THREADS"
"""Environment variable setting the torch threads of a run that names none (:func:`default_threads`)."""


def default_threads() -> int:
    """torch threads per experiment: ``$FLOWVAR_THREADS`` if set (bounded by :func:`check_threads`), else 1.

    flowvar's tensors are small: on a 2-core machine, intra-op threading of small matmuls and convolutions costs
    more than it gains, and under any other load it is 5–25× slower (measured). Use ``--jobs`` to fill cores.
    """
    raw = os.environ.get(THREADS_ENV, "1")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return check_threads(value, f"${THREADS_ENV}") or value


def choose_threads(threads: int) -> None:
    """Run torch on ``threads`` threads and record the choice in ``$FLOWVAR_THREADS``: an experiment that picks its
    own count when none is chosen (:func:`flowvar.experiments._imaging.resolve_threads`: 1 for small images) reads
    the choice from there, in this process and in every process it starts. ``threads`` is already checked
    (:func:`check_threads`)."""
    import torch

    torch.set_num_threads(threads)
    os.environ[THREADS_ENV] = str(threads)


def check_config_threads(config: Any) -> None:
    """A one-line :class:`ConfigError` when an experiment's config asks for more torch threads than
    :func:`check_threads` allows: its ``threads`` key when > 0, else (``threads: 0``, automatic) the
    ``$FLOWVAR_THREADS`` it falls back to. A config without a ``threads`` field passes."""
    threads = getattr(config, "threads", None)
    if not isinstance(threads, int) or isinstance(threads, bool):
        return
    if threads > 0:
        check_threads(threads, "threads")
    elif threads == 0 and os.environ.get(THREADS_ENV):
        default_threads()


def run_experiment(name: str, out_dir: Path | str, *, quick: bool = False, seed: int | None = None,
                   overrides: dict[str, Any] | None = None, progress: bool = False,
                   config_file: Path | str | None = None, config: Any | None = None,
                   work_dir: Path | str | None = None) -> Result:
    """Run one experiment and write ``out_dir/name/{result.json, summary.md, *.png}``.

    The config is built by :func:`build_config` from ``quick``, ``config_file``, ``seed`` and ``overrides``,
    unless a ready ``config`` (an instance of the experiment's dataclass) is given. Output is staged in a hidden
    sibling folder and moved into place only when complete, so an interrupted run never leaves a half-written
    result. Under ``torchrun`` only rank 0 writes; an experiment records its device in ``ctx.device``.
    ``work_dir``: where the experiment's trainings keep checkpoints to resume from (:attr:`RunContext.work_dir`;
    the caller keys it to this exact run and removes it afterwards: :func:`flowvar.cache.run_cached` does).
    """
    import matplotlib

    matplotlib.use("Agg")
    spec = get_experiment(name)
    name = spec.name  # a former name (ALIASES) runs under the current one
    if config is None:
        config = build_config(spec, quick=quick, seed=seed, overrides=overrides, config_file=config_file)
    elif not isinstance(config, spec.config_cls):
        raise TypeError(f"experiment {name}: config must be a {spec.config_cls.__name__}, got {type(config).__name__}")
    check_config_threads(config)  # before torch starts them: 300000 threads crash the process without a message
    return _staged_result(spec, config, Path(out_dir), quick, lambda ctx: spec.run(config, ctx), progress=progress,
                          work_dir=Path(work_dir) if work_dir is not None else None)


def assemble_experiment(name: str, out_dir: Path | str, config: Any, parts: Sequence[Mapping[str, Any]], *,
                        quick: bool, runtime_s: float, provenance: Mapping[str, Any],
                        kept_figures: Mapping[str, Path] | None = None,
                        kept_metrics: Mapping[str, Any] | None = None) -> Result:
    """Write ``out_dir/name/{result.json, summary.md, *.png}`` for ``config`` from ``parts``, the ``metrics`` of
    results that each computed part of its grid (a sweep's points), through the experiment's ``assemble``
    (:func:`assembles`); nothing is trained. ``runtime_s``: the parts' compute time (the result's runtime);
    ``provenance`` (where the parts come from, which code computed them) is kept as the metric ``assembled_from``.
    Every part's stored non-finite floats (the strings "nan", "inf", "-inf") are floats again before the experiment
    sees them (:func:`flowvar.results.from_jsonable`): its rules judge them as the run judged its NaN.
    ``kept_figures`` (file name → the stored file, read only where this assemble does not draw that figure again:
    it needs the trained models, an image grid) and ``kept_metrics`` (metrics describing the run that computed the
    parts, its ``device``, ``compute``): what a re-judged result keeps from that run. The stored files are read
    before the staged folder replaces theirs, so an in-place re-judging keeps them.
    An experiment without ``assemble`` is a ConfigError (it must run whole)."""
    spec = get_experiment(name)
    assemble = assembler(spec)
    as_computed = [from_jsonable(part) for part in parts]

    def body(ctx: RunContext) -> None:
        assemble(config, as_computed, ctx)
        for figure, stored in (kept_figures or {}).items():
            if figure not in ctx.figures:  # not redrawn: the computing run's own file, listed as before
                atomic_write_bytes(ctx.out_dir / figure, stored.read_bytes(), what="figure",
                                   remedy=write_remedy(ctx.out_dir / figure, ctx.work_dir))
                ctx.figures.append(figure)
        for key, value in (kept_metrics or {}).items():
            ctx.metrics.setdefault(key, value)
        ctx.metric("assembled_from", dict(provenance))
        rejudged = provenance.get("rejudged")
        if isinstance(rejudged, Mapping):
            changed = verdict_changes(rejudged.get("verdicts_before") or {}, {c.id: c.verdict for c in ctx.claims})
            command = provenance.get("command")
            computed = f"`{command}`" if command else "its own run"
            ctx.note(f"Re-judged by flowvar {provenance.get('assembled_by', '?')} from the points stored in "
                     f"{rejudged.get('result')} (computed by {computed}, flowvar {provenance.get('computed_by', '?')}; "
                     f"judged before by {rejudged.get('judged_by')}); nothing was trained again. Verdicts it "
                     f"changed: {'; '.join(changed) or 'none'}.")
        else:
            ctx.note(f"Assembled from the {len(parts)} parts of a split run (`{provenance.get('command', '?')}`), "
                     f"computed by flowvar {provenance.get('computed_by', '?')} and judged by "
                     f"{provenance.get('assembled_by', '?')}; the runtime is the parts' total compute time.")

    return _staged_result(spec, config, Path(out_dir), quick, body, runtime_s=runtime_s)


def not_a_part(i: int, parts: Sequence[Any], name: str, lacks: str) -> DataError:
    """The error for part ``i`` (0-based) of ``parts`` that is not a ``name`` result an ``assemble`` can read: "part
    2 of 4 is not a prop2 result (its metrics lack ``lacks``); restore or recompute it" (raise it)."""
    return DataError(f"part {i + 1} of {len(parts)} is not a {name} result (its metrics lack {lacks}); restore or "
                     f"recompute it")


def join_parts_per_dimension(parts: Sequence[Mapping[str, Any]], name: str, fields: Sequence[str], lacks: str,
                             expected: Sequence[str]) -> list[dict[str, Any]]:
    """The per-dimension metrics of parts that split an experiment's ``dims`` (table1, prop2), joined: for each of
    ``fields`` (metrics keyed ``"d=<d>"``), one dict over every part. Each part must hold every field with the same
    keys; the joined keys must be ``expected`` (the config's dims), each held by one part.

    Raises DataError for a part that is not a ``name`` result (a field missing, or fields of different dims:
    "its metrics lack ``lacks``"), ConfigError for a dimension held twice, missing or outside ``expected``."""
    joined: list[dict[str, Any]] = [{} for _ in fields]
    for i, part in enumerate(parts):
        got = [part.get(f) if isinstance(part, Mapping) else None for f in fields]
        if not all(isinstance(g, Mapping) for g in got) or any(set(g) != set(got[0]) for g in got[1:]):
            raise not_a_part(i, parts, name, lacks)
        for key in got[0]:
            if key in joined[0]:
                raise ConfigError(f"two parts hold {key}: a split run holds every dimension once")
            for into, values in zip(joined, got, strict=True):
                into[key] = values[key]
    missing, extra = [k for k in expected if k not in joined[0]], sorted(set(joined[0]) - set(expected))
    if missing or extra:
        raise ConfigError("the parts do not make up the run: "
                          + "; ".join([f"missing {', '.join(missing)}"] * bool(missing)
                                      + [f"outside its dims {', '.join(extra)}"] * bool(extra)))
    return joined


def assembler(spec: ExperimentSpec) -> Callable[[Any, Any, RunContext], None]:
    """The experiment's ``assemble`` (:func:`assembles`); a ConfigError for one that must run whole."""
    if spec.assemble is None:
        from flowvar.errors import ConfigError

        raise ConfigError(f"experiment {spec.name} cannot be assembled from parts (its claims are judged within "
                          f"each run); run it whole with `flowvar run {spec.name}`")
    return spec.assemble


ELAPSED_FILE = ".elapsed_s"
"""In a run's work folder: the compute seconds its interrupted attempts spent (a plain number), so that the result's
``runtime_s`` — and the ETAs the cache derives from it — count the whole computation, not the last attempt."""

ELAPSED_EVERY_S = 5.0
"""How often a running attempt records its time in :data:`ELAPSED_FILE`: a killed attempt (SIGKILL, a worker
ended with SIGTERM: no Python handler runs) loses at most this much of its time from the runtime."""


@contextlib.contextmanager
def carried_runtime(work_dir: Path | None) -> Iterator[Callable[[], float]]:
    """Yield a clock of the run's compute seconds: the earlier attempts' (``work_dir/.elapsed_s``) plus this one's.

    While the block runs, a daemon thread rewrites the file every :data:`ELAPSED_EVERY_S`, and the block writes it
    once more when it ends by an exception (an interrupt), so the next attempt resumes the count. Without a
    ``work_dir`` (nothing resumes) the clock is this attempt's alone. The work folder is removed with the stored
    result (:func:`flowvar.cache.run_cached`), its count with it.
    """
    from flowvar.distributed import is_main_process

    start = time.perf_counter()
    earlier = 0.0
    path = work_dir / ELAPSED_FILE if work_dir is not None else None
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            recorded = float(path.read_text())
            earlier = recorded if math.isfinite(recorded) and recorded > 0 else 0.0

    def clock() -> float:
        return earlier + time.perf_counter() - start

    def record() -> None:
        # under torchrun rank 0 keeps the count: another rank writing it could recreate a work folder rank 0 has just
        # removed with the stored result
        if path is not None and is_main_process():
            with contextlib.suppress(OSError, FlowvarError):  # a lost count is a smaller runtime, never a failure
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, repr(clock()))

    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(ELAPSED_EVERY_S):
            record()

    if path is not None:
        threading.Thread(target=heartbeat, name="flowvar-elapsed", daemon=True).start()
    try:
        yield clock
    except BaseException:
        done.set()
        record()
        raise
    finally:
        done.set()


def _staged_result(spec: ExperimentSpec, config: Any, out_dir: Path, quick: bool, body: Callable[[RunContext], None],
                   *, progress: bool = False, work_dir: Path | None = None, runtime_s: float | None = None) -> Result:
    """``body(ctx)`` in a staged ``out_dir/<name>`` folder, then its result.json and summary.md (see
    :func:`run_experiment`); ``runtime_s``: the result's runtime, else ``body``'s own."""
    from flowvar.distributed import is_main_process

    with staged_folder(out_dir / spec.name) as stage:
        ctx = RunContext(name=spec.name, out_dir=stage.path, quick=quick, seed=int(getattr(config, "seed", 0)),
                         progress=progress, paper=dict(spec.paper), work_dir=work_dir)
        # the global generator seeded from its own stream, and restored afterwards: whatever still draws from it
        # (a plugin, a library default) is reproducible, and a run leaves the caller's random state untouched
        with carried_runtime(work_dir) as clock, ctx.global_rng("global"), figure_style():
            body(ctx)
        result = Result(experiment=spec.name, title=spec.title, config=dataclasses.asdict(config), quick=quick,
                        claims=ctx.claims, metrics=ctx.metrics, paper=ctx.paper, choices=ctx.choices,
                        notes=ctx.notes, figures=ctx.figures, runtime_s=clock() if runtime_s is None else runtime_s,
                        device=ctx.device)
        # under torchrun every rank computes the same result; rank 0 writes it
        stage.keep = is_main_process()
        if stage.keep:
            remedy = write_remedy(stage.path, work_dir)
            atomic_write_bytes(stage.path / "result.json", json.dumps(result.to_dict(), indent=1).encode(),
                               remedy=remedy)
            from flowvar.report.markdown import result_markdown  # the report's renderer: one way to tell a result

            atomic_write_bytes(stage.path / "summary.md", result_markdown(result).encode(), remedy=remedy)
    return result


__all__ = [*_registry_names, *_config_names, "CHECKPOINTS_PER_TRAINING", "ELAPSED_EVERY_S", "ELAPSED_FILE",
           "OKABE_ITO", "THREADS_ENV", "FlowvarError", "RunContext", "assemble_experiment", "assembler",
           "carried_runtime", "check_config_threads", "check_threads", "choose_threads", "cpu_cores", "default_threads",
           "figure_style", "join_parts_per_dimension", "not_a_part", "run_experiment", "write_remedy"]
