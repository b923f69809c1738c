"""The runner shared by ``flowvar reproduce`` and ``flowvar sweep``: backends, workers that die with their parent.

* :func:`compute` — the one compute step: run one experiment configuration (a cache miss) into the cache. The
  caller, holding the output folder's lock, installs the stored entry; workers never write the output folder.
* :class:`Backend` — where :func:`compute` runs: :class:`SerialBackend` (this process), :class:`ProcessBackend`
  (``jobs`` spawned workers) or :class:`RayBackend` (a Ray cluster or a local instance); :func:`make_backend`
  picks one from the command line, :func:`dispatch` runs a list of items on it with a start callback per slot.

* :func:`worker_pool` — a spawn-context process pool whose workers start with SIGINT ignored (the parent decides what
  an interrupt means), set their torch thread count and watch their parent: on Linux the kernel sends them SIGKILL
  when it dies (``PR_SET_PDEATHSIG``), and on every platform a watchdog thread exits the worker within a second of its
  parent disappearing (a ``kill -9`` of the parent, or of its whole process group). When the ``with`` block ends by an
  exception (an interrupt included) every worker is terminated before the exception goes on, so no worker can write
  into the output folder after the parent has released its lock.
* :class:`ProcessBackend` survives a worker that dies (killed, out of memory): the pool it broke is replaced and
  every unfinished item resubmitted; the item whose worker died is retried once, alone, then reported failed.
* :func:`sigterm_as_interrupt` — SIGTERM (what ``timeout``, CI cancellation and ``kill`` send) raises
  KeyboardInterrupt in the main thread, so it takes the same clean path as Ctrl-C.
* the rest of a run that both commands share: :class:`Task` and :class:`Outcome` (what runs, how it ended), the
  :class:`Progress` bar or lines, the output folder's lock (:func:`exclusive`), the
  torch thread count (:func:`torch_threads`, :func:`default_threads`) and the writability probe
  (:func:`check_writable`).

Why this module is long: it is the one runner of both commands, so that ``flowvar reproduce`` and ``flowvar sweep``
fail, recover, report progress and lock their output folder the same way; splitting the backends from the
progress and locks would put one run's life cycle in two places. The longest part is :class:`ProcessBackend`'s
recovery from a dead worker, which must attribute the break to one item to stay bounded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from flowvar.errors import ConfigError, DataError
from flowvar.experiments.base import (
    THREADS_ENV,
    check_config_threads,
    check_threads,
    choose_threads,
    cpu_cores,
    default_threads,
)
from flowvar.logs import forwarded_from_workers, send_to_parent
from flowvar.report import format_duration
from flowvar.results import Result

if TYPE_CHECKING:  # flowvar.cache is imported where it is used: a worker imports it when it computes
    from flowvar.cache import Cache

T = TypeVar("T")
WATCH_INTERVAL_S = 0.5
log = logging.getLogger("flowvar.runner")


def _die_with_parent(parent: int) -> None:
    """In a worker: exit as soon as the process ``parent`` is gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="flowvar-parent-watch", daemon=True).start()


_STARTS: Any = None
"""In a worker of :class:`ProcessBackend`: where it says which task it starts, and in which process."""


def init_worker(threads: int, parent: int, log_queue: Any = None, starts: Any = None) -> None:
    """Spawned worker set-up: torch threads, SIGINT ignored (the parent ends its workers), parent watch, its
    ``flowvar`` log records sent to the parent (:func:`flowvar.logs.send_to_parent`), and ``starts`` (a
    ``SimpleQueue``) kept for :func:`_compute_reporting`."""
    global _STARTS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    choose_threads(threads)  # the count was chosen: experiments' own defaults must not replace it
    _die_with_parent(parent)
    if log_queue is not None:
        send_to_parent(log_queue)
    _STARTS = starts


def _compute_reporting(token: int, *args: Any) -> dict[str, Any]:
    """:func:`compute` in a worker, after telling the parent that task ``token`` runs in this process (a
    ``SimpleQueue`` writes at once, with no feeder thread, so the word is out before the task can kill its worker)."""
    if _STARTS is not None:
        _STARTS.put((token, os.getpid()))
    return compute(*args)


def terminate_workers(pool: ProcessPoolExecutor, grace_s: float = 3.0) -> None:
    """Cancel what has not started and end every worker now: SIGTERM, then SIGKILL after ``grace_s``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)


class _SpawnIgnoringInterrupts(ProcessPoolExecutor):
    """A process pool whose workers start with SIGINT ignored, before Python imports anything in them.

    A terminal's Ctrl-C reaches the whole process group; a worker still importing (spawn: a fresh interpreter
    unpickling its task's modules, a second or two) would die of it with a traceback of its imports, before
    :func:`init_worker` can ignore it. An ignored signal survives ``exec`` (a handled one is reset), so each submit —
    where this pool spawns its workers — runs with SIGINT ignored in this process for that moment; a Ctrl-C inside
    those few milliseconds is lost (press it again), one outside them interrupts as always. Off the main thread,
    where no handler can be set, submit is plain."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if threading.current_thread() is not threading.main_thread():
            return super().submit(fn, *args, **kwargs)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def worker_pool(jobs: int, threads: int, starts: Any = None) -> Iterator[ProcessPoolExecutor]:
    """``jobs`` spawned workers (see the module doc); on an exception every worker is ended before it propagates.
    ``starts``: a spawn-context ``SimpleQueue`` the workers' :func:`_compute_reporting` writes to."""
    context = multiprocessing.get_context("spawn")
    log_queue = context.Queue()
    with forwarded_from_workers(log_queue):  # stopped after the workers: their last records are in the queue
        pool = _SpawnIgnoringInterrupts(max_workers=jobs, mp_context=context, initializer=init_worker,
                                          initargs=(threads, os.getpid(), log_queue, starts))
        try:
            yield pool
        except BaseException:
            terminate_workers(pool)
            raise
        pool.shutdown(wait=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread (elsewhere: a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------------------ backends


def compute(name: str, overrides: dict[str, Any], quick: bool, seed: int | None, config_file: str | None,
            cache_root: str, threads: int, plugins: Sequence[str] = (), force: bool = False,
            refused: str | None = None) -> dict[str, Any]:
    """Run one experiment configuration (a cache miss) and store it in the cache; nothing else is written.

    The one compute step of ``flowvar reproduce`` and ``flowvar sweep``, run in this process, in a worker of
    :func:`worker_pool` or as a Ray task: :func:`flowvar.cache.run_cached` with no output folder, so the result is
    computed in a staging folder of the cache and stored there by a rename, never copied; the caller, which holds
    the output folder's lock, installs the stored entry. The trainings resume from the checkpoints an interrupted
    run of the same key left in the cache (:meth:`flowvar.cache.Cache.work_dir`) unless ``force`` (``--force``:
    recompute from scratch). Returns a plain (picklable) dict: ``status`` computed/failed, the cache ``key``,
    ``wall_s``, ``hit`` (True when a process sharing the cache stored the key first, while this one waited for it),
    and for a failure the error line and the traceback. A result the cache's disk refused to store (full) is
    ``computed`` with ``unstored`` (the staging folder that holds it whole and why the cache refused it), for the
    caller to install where there is room (:func:`install_computed`): it is not lost. A result whose own files the
    cache's full disk refused (:class:`~flowvar.cache.CacheFullError`) is lost: ``failed`` with ``cache_full`` True,
    after which :func:`dispatch` computes nothing more into that cache. ``refused`` (set by :func:`dispatch` then):
    the reason this configuration is not computed at all, ``failed`` at once with it as the error.
    """
    import traceback

    from flowvar.cache import Cache, CacheFullError, UnstoredResultError, run_cached
    from flowvar.experiments.base import load_plugin

    start = time.perf_counter()
    if refused is not None:
        return {"status": "failed", "error": refused, "wall_s": 0.0}
    try:
        with torch_threads(threads):
            for plugin in plugins:
                load_plugin(plugin)
            try:
                run = run_cached(name, None, Cache(Path(cache_root)), quick=quick, seed=seed, overrides=overrides,
                                 config_file=config_file, force=force)
            except UnstoredResultError as unstored:
                refused = unstored.refused
                return {"status": "computed", "key": unstored.key, "wall_s": time.perf_counter() - start,
                        "hit": False, "unstored": {"folder": str(unstored.folder), "staging": str(unstored.staging),
                                                   "experiment": refused.experiment, "root": str(refused.root),
                                                   "reason": refused.reason, "remedy": refused.remedy}}
        return {"status": "computed", "key": run.key, "wall_s": time.perf_counter() - start, "hit": run.hit}
    except Exception as e:
        error = f"{type(e).__name__}: {e}".strip()
        return {"status": "failed", "error": error.splitlines()[0] if error else type(e).__name__,
                "wall_s": time.perf_counter() - start, "traceback": traceback.format_exc(),
                **({"cache_full": True} if isinstance(e, CacheFullError) else {})}


def install_computed(reply: dict[str, Any], cache: Cache, dest: Path, name: str,
                     check: Callable[[Path], None] | None = None) -> tuple[Path, str | None]:
    """Install the result of a ``computed`` :func:`compute` reply into ``dest``: ``(folder it came from, warning)``.

    The folder is the reply's stored cache entry (looked up, so verified), or, for a result the cache could not
    store (``reply["unstored"]``), the staging folder compute left it in, deleted once installed; the warning is then
    the line that says so (complete in ``dest``, not cached), else None. A result missing from the cache, or one
    that ``dest`` cannot take, is a one-line :class:`~flowvar.errors.DataError`: for a stored one, it says the result
    is kept in the cache and a rerun installs it; for an unstored one, that it is lost (no disk took it).
    ``check(folder)`` runs before anything is installed (the sweep's check of its --metric names): what it raises
    propagates, with nothing installed."""
    from flowvar.cache import StoreError, UnstoredResultError, install_entry, install_unstored
    from flowvar.files import remove_path

    unstored = reply.get("unstored")
    if unstored:
        refused = StoreError(unstored["experiment"], Path(unstored["root"]), unstored["reason"],
                             *([unstored["remedy"]] if unstored.get("remedy") else []))  # the worker's own advice
        folder = Path(unstored["folder"])
        if check is not None:
            try:
                check(folder)
            except BaseException:
                remove_path(Path(unstored["staging"]))
                raise
        installed, message = install_unstored(UnstoredResultError(refused, reply["key"], folder,
                                                                  Path(unstored["staging"])), dest, name)
        if not installed:
            raise DataError(message)
        return folder, message
    entry = cache.lookup(reply["key"])
    if entry is None:
        raise DataError(f"the computed result of {name} is missing from the cache {cache.root}; rerun")
    if check is not None:
        check(entry)
    install_entry(entry, dest, name, cache.root, reply["key"], bool(reply.get("hit")))
    return entry, None


BACKENDS = ("local", "ray")


class Backend:
    """Runs :func:`compute` for cache misses; :meth:`run` yields ``(item, reply)`` as each finishes.

    ``start`` acquires what the backend needs (a Ray connection) before the caller writes anything, so a backend
    that cannot start fails with nothing written; ``close`` releases it. ``slots`` is how many run at once.
    """

    def __init__(self, jobs: int, threads: int = 1) -> None:
        self.jobs, self.threads = jobs, threads

    @property
    def slots(self) -> int:
        return self.jobs

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def run(self, items: Sequence[T], args: Callable[[T], tuple], on_start: Callable[[T], None] = lambda item: None
            ) -> Iterator[tuple[T, dict[str, Any]]]:
        """Compute every item (``compute(*args(item))``), calling ``on_start(item)`` as it takes a slot; yield
        ``(item, reply)`` as each finishes, in any order."""
        raise NotImplementedError


class SerialBackend(Backend):
    """In this process, one after another (no start-up cost: the fastest for short runs)."""

    @property
    def slots(self) -> int:
        return 1

    def run(self, items, args, on_start=lambda item: None):
        for item in items:
            on_start(item)
            yield item, compute(*args(item))


POOL_BREAKS = 2
"""A point whose worker process dies this many times (the last time alone in its pool) is reported failed."""


def _name(item: Any) -> str:
    """How the log names an item of a backend: a sweep point's label, a task's name."""
    return str(getattr(item, "label", None) or getattr(item, "name", None) or item)


def _death(code: int | None) -> str:
    """How a worker process ended, from its exit code: ``killed by SIGKILL: out of memory, or kill -9``."""
    if code is None:
        return "it vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (": out of memory, or kill -9" if -code == signal.SIGKILL else "")
    return f"exit status {code}"


class ProcessBackend(Backend):
    """``jobs`` spawned worker processes (spawn: nothing inherited from the parent, as with Ray); they die with
    this process and are ended before an interrupt leaves the lock (:func:`worker_pool`). Items start in the
    order given, at most ``jobs`` submitted at a time (so a submitted item is a running one).

    A worker that dies (the out-of-memory killer, a ``kill -9``) breaks the whole pool: every item in it fails
    with ``BrokenProcessPool``, the ones that never started too. So a fresh pool is started and every item that
    had not finished is submitted again. The item whose worker died (each worker says which item it runs, and
    its exit code tells the killed one from those the pool then terminates with SIGTERM) runs first and alone,
    with the whole machine's memory, and is reported failed when its worker dies again (:data:`POOL_BREAKS`): a
    point that kills its worker every time costs two pools, never a loop, and the points beside it lose only
    their unfinished run. When the dead worker cannot be told (it too died by SIGTERM), every item in flight is
    counted and runs alone next, so a bystander is never failed for another's death. Each break counts against
    some item in flight, or (a worker that died idle) follows an item that finished in that pool, so the pools
    started are bounded by twice :data:`POOL_BREAKS` × the items."""

    def run(self, items, args, on_start=lambda item: None):
        waiting = list(range(len(items)))  # indices not yet finished, in the order given
        alone: list[int] = []  # the items a broken pool counted against: each runs by itself, first
        breaks = [0] * len(items)
        while waiting or alone:
            yield from self._pool(items, args, on_start, waiting, alone, breaks)

    def _pool(self, items: Sequence[Any], args: Callable[[Any], tuple], on_start: Callable[[Any], None],
              waiting: list[int], alone: list[int], breaks: list[int]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Run ``alone`` then ``waiting`` in one pool until they are done or the pool breaks; on a break, put the
        unfinished items back (updating ``breaks``) and yield the ones that failed for good."""
        starts = multiprocessing.get_context("spawn").SimpleQueue()
        with worker_pool(min(self.jobs, len(waiting) + len(alone)), self.threads, starts) as pool:
            running: dict[Future, int] = {}
            processes: dict[int, Any] = {}  # pid → Process of every worker, for their exit codes
            pids: dict[int, int] = {}  # item → the worker process it started in

            def drain_starts() -> None:
                """Record which worker each started item runs in, as the workers report it (read as the reports come:
                a full pipe would block the workers' next start)."""
                while not starts.empty():
                    token, pid = starts.get()
                    pids[token] = pid

            def submit(queue: list[int]) -> bool:
                """Submit ``queue``'s first item; False (the item left in the queue) when the pool is broken."""
                try:
                    future = pool.submit(_compute_reporting, queue[0], *args(items[queue[0]]))
                except BrokenProcessPool:
                    return False
                i = queue.pop(0)
                running[future] = i
                processes.update(getattr(pool, "_processes", None) or {})
                on_start(items[i])
                return True

            solo = broken = False
            lost: list[int] = []  # the items in flight when the pool broke
            died_first: set[int] = set()  # workers seen dead before the pool noticed (and ended the others)
            while (waiting or alone or running) and not broken:
                if not running:
                    solo = bool(alone)
                    broken = solo and not submit(alone)
                while not (broken or solo) and waiting and len(running) < self.jobs:
                    broken = not submit(waiting)
                done = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)[0] if not broken else set()
                drain_starts()
                for future in done:
                    i = running.pop(future)
                    try:
                        yield items[i], future.result()
                    except BrokenProcessPool:
                        lost.append(i)
                        broken = True
                    except Exception as e:  # a reply that could not come back (unpicklable)
                        yield items[i], {"status": "failed", "wall_s": 0.0,
                                         "error": f"worker process failed: {type(e).__name__}: {e}"}
                if not done and not broken and not died_first:
                    # CPython's pool watches the workers it knew when it last woke: one spawned by the submit that
                    # woke it, dying later, goes unnoticed until another result arrives (an hour, for a training
                    # beside it). Shutting it down wakes it to look again, and it fails the futures as broken.
                    died_first = {pid for pid, process in processes.items() if process.exitcode is not None}
                    if died_first:
                        pool.shutdown(wait=False)
                        broken = True
            if broken:
                # the pool fails every future at once: collect the rest, keeping any result that made it
                for future in wait(running, timeout=60.0)[0]:
                    i = running.pop(future)
                    try:
                        yield items[i], future.result()
                    except Exception:
                        lost.append(i)
                lost += running.values()
                if running:  # a pool that never failed them: end its workers, so that leaving it cannot hang
                    terminate_workers(pool)
                drain_starts()
                yield from self._after_break(items, sorted(lost), pids, processes, died_first, waiting, alone,
                                             breaks)

    def _after_break(self, items: Sequence[Any], lost: list[int], pids: dict[int, int], processes: dict[int, Any],
                     died_first: set[int], waiting: list[int], alone: list[int], breaks: list[int]
                     ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Count a broken pool against the items ``lost`` in it (the one whose worker died, else all of them),
        yield those that fail for good (as failed replies) and queue the others again: the counted ones into
        ``alone``, the rest at the front of ``waiting``."""
        codes = {i: self._exit_code(processes.get(pids[i])) for i in lost if i in pids}
        # the worker seen dead before the pool ended the others; else, as the pool SIGTERMs its other workers once
        # one has died, a different end is the one that broke it
        culprits = ([i for i in lost if pids.get(i) in died_first] if died_first else
                    [i for i, code in codes.items() if code is not None and code != -signal.SIGTERM])
        blamed = culprits or lost
        for i in blamed:
            breaks[i] += 1
        again = [i for i in lost if breaks[i] < POOL_BREAKS]
        alone.extend(i for i in again if i in blamed)
        waiting[:0] = [i for i in again if i not in blamed]
        log.warning("a worker process died %s%s%s",
                    "; ".join(f"while computing {_name(items[i])} ({_death(codes.get(i))})" if i in pids else
                              f"before {_name(items[i])} started" for i in blamed) or "while idle",
                    "; starting a fresh worker pool" if waiting or alone else "",
                    f", {len(again)} unfinished run(s) submitted again" if again else "")
        for i in lost:
            if breaks[i] >= POOL_BREAKS:  # counted before, it ran alone this time: the break was its own
                how = (f"its worker process died twice while computing it ({_death(codes.get(i))}), the second time "
                       f"alone in its pool" if i in pids else
                       "its worker pool broke twice before it started (worker processes that die at start-up: see "
                       "the log)")
                yield items[i], {"status": "failed", "wall_s": 0.0, "error": f"{how}; not retried"}

    @staticmethod
    def _exit_code(process: Any, timeout: float = 10.0) -> int | None:
        """The exit code of a pool's worker process once it has ended (None: unknown, or still running)."""
        if process is None:
            return None
        deadline = time.monotonic() + timeout
        while process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return process.exitcode


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when ``host:port`` (or ``ray://host:port``) does not accept connections."""
    import socket

    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--ray-address expects host:port, ray://host:port or auto, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({e.strerror or type(e).__name__}); start it "
                          f"with `ray start --head` there, or drop --ray-address to use a local Ray instance") from None


class RayBackend(Backend):
    """One Ray task per item on the cluster at ``address``, else on a local instance with ``jobs`` CPUs. The
    cache folder must be visible to every node (a shared file system)."""

    def __init__(self, jobs: int, threads: int = 1, address: str | None = None) -> None:
        super().__init__(jobs, threads)
        self.address = address
        self._started = False

    @staticmethod
    def import_ray() -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'flowvar[ray]' (with -c constraints.txt)") from None
        return ray

    def start(self) -> None:
        """Connect to the cluster at ``address`` (after a socket probe) or start a local instance; a Ray already
        initialised in this process is used as it is."""
        ray = self.import_ray()
        if ray.is_initialized():
            return
        if self.address:
            check_ray_address(self.address)
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.jobs, **kwargs)
        except Exception as e:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise ConfigError(f"cannot start {where}: {type(e).__name__}: {e}".splitlines()[0]) from None
        self._started = True

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def run(self, items, args, on_start=lambda item: None):
        ray = self.import_ray()
        if not ray.is_initialized():
            self.start()
        remote = ray.remote(num_cpus=self.threads, max_retries=0)(compute)
        refs = {remote.remote(*args(item)): item for item in items}
        # Ray queues in submission order: the first `slots` start at once, the next as each one finishes
        queued = list(items)
        for item in queued[: self.slots]:
            on_start(item)
        queued = queued[self.slots:]
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    item = refs.pop(ref)
                    try:
                        reply = ray.get(ref)
                    except Exception as e:  # the task or its worker died
                        reply = {"status": "failed", "error": f"Ray task failed: {type(e).__name__}: {e}"
                                 .splitlines()[0], "wall_s": 0.0}
                    yield item, reply
                    if queued:
                        on_start(queued.pop(0))
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise


def make_backend(kind: str, jobs: int, threads: int, ray_address: str | None = None) -> Backend:
    """The backend ``kind`` (``local`` or ``ray``) with ``jobs`` slots, each run with ``threads`` torch threads."""
    if kind not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {kind!r}")
    if ray_address and kind != "ray":
        raise ConfigError("--ray-address needs --backend ray")
    if kind == "ray":
        return RayBackend(jobs, threads, ray_address)
    return SerialBackend(1, threads) if jobs == 1 else ProcessBackend(jobs, threads)


def dispatch(backend: Backend, items: Sequence[T], args: Callable[[T], tuple], on_start: Callable[[T], None]
             ) -> Iterator[tuple[T, dict[str, Any]]]:
    """Run ``items`` on ``backend``, calling ``on_start`` as each one takes a slot; yield ``(item, reply)``.

    The backend calls ``on_start``: as it submits an item (worker pools submit one per free slot, and again after
    a dead worker broke their pool), as it runs one (serial), or the first ``slots`` at once and the next as each
    finishes (Ray, which queues in submission order).

    Once a reply says the cache's disk is full (``cache_full``: an experiment's own files were refused, its result
    lost; review cacheR 2), every item not yet handed to the backend fails at once, computed into no full disk, with
    a line naming the experiment that found it full and what to do. Items already running finish (or fail) as they
    will, and Ray, which is handed every item at the start, computes them all.
    """
    full: list[str] = []  # the error line of the first cache-full reply

    def guarded(item: T) -> tuple:
        if not full:
            return args(item)
        return (*args(item), f"not computed: the cache's disk is full ({full[0]})")

    for item, reply in backend.run(list(items), guarded, on_start):
        if reply.get("cache_full") and not full:
            full.append(f"{_name(item)}: {reply.get('error')}")
        yield item, reply


# ---------------------------------------------------------------------------------------------------------- runs


DEFAULT_EXPECTED_S = 60.0
"""ETA guess for an experiment with neither a YAML estimate nor an earlier run in the cache."""


@dataclass
class Task:
    """One experiment to reproduce: its cache key and expected runtime."""

    name: str
    key: str
    expected_s: float
    config: dict[str, Any]
    seed: int | None = None


@dataclass
class Outcome:
    """How one experiment ended in this invocation: ``computed``, ``cached``, ``failed`` or ``not run``."""

    name: str
    status: str
    key: str | None = None
    wall_s: float = 0.0
    error: str | None = None
    corrupted: str | None = None
    result: Result | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "key": self.key, "wall_s": self.wall_s,
                "error": self.error, "corrupted_cache_entry": self.corrupted,
                "result": self.result.to_dict() if self.result is not None else None}


def interrupted_text(items: str, rerun: str, forced: bool) -> str:
    """The one line an interrupted ``reproduce`` (``items`` = "experiments") or ``sweep`` ("points") logs and prints:
    the exact command that continues it (``rerun``, without ``--force``: with it the rerun would compute the
    finished ``items`` again) and, for a ``forced`` run, that the ``items`` it did not reach then come from the cache
    where an earlier run stored them."""
    text = f"interrupted; finished {items} are cached: rerun {rerun} to continue"
    if forced:
        text += (f" (without --force, which would compute the finished {items} again; the {items} this run did not "
                 f"reach are then taken from the cache where an earlier run stored them)")
    return text


def verdict_line(result: Result | None) -> str:
    if result is None:
        return ""
    counts: dict[str, int] = {}
    for c in result.claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items()) or "no claims"


class Progress:
    """One overall bar with the running experiments and an ETA, else one line per experiment: ``quiet`` None draws
    the bar on a terminal only, False always (``--progress``: a log viewer that renders carriage returns), True never
    (``--quiet``)."""

    def __init__(self, tasks: list[Task], jobs: int, quiet: bool | None, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.expected = {t.name: t.expected_s for t in tasks}
        self.total = len(tasks)
        self.jobs = jobs
        self.done = 0
        self.running: dict[str, float] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.bar = None
        if quiet is False or (quiet is None and self.stream.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="reproduce", unit="exp", file=self.stream, dynamic_ncols=True,
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar:24}| {elapsed}{postfix}")

    def eta(self) -> float:
        """Seconds left: expected runtimes of what has not started, and the remainder of what runs, over jobs."""
        now = time.monotonic()
        pending = sum(s for n, s in self.expected.items() if n not in self.finished and n not in self.running)
        running = sum(max(self.expected[n] - (now - t0), 0.0) for n, t0 in self.running.items())
        return (pending + running) / max(1, min(self.jobs, self.total - self.done))

    def _status(self) -> str:
        now = time.monotonic()
        parts = [f"{n} {format_duration(now - t0)}/~{format_duration(self.expected[n])}"
                 for n, t0 in self.running.items()]
        return f"ETA ~{format_duration(self.eta())}" + (" · " + ", ".join(parts) if parts else "")

    def emit(self, line: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def start(self, name: str) -> None:
        with self.lock:
            self.running[name] = time.monotonic()
        self.tick()

    def finish(self, outcome: Outcome) -> None:
        with self.lock:
            self.running.pop(outcome.name, None)
            self.finished.add(outcome.name)
            self.done += 1
            done = self.done
        detail = {"cached": "cache hit", "computed": f"computed in {format_duration(outcome.wall_s)}",
                  "failed": f"FAILED: {outcome.error}"}.get(outcome.status, outcome.status)
        verdicts = verdict_line(outcome.result)
        eta = f"; ETA ~{format_duration(self.eta())}" if done < self.total else ""
        width = len(str(self.total))
        self.emit(f"[{done:>{width}}/{self.total}] {outcome.name}: {detail}" + (f" ({verdicts})" if verdicts else "")
                  + eta)
        if self.bar is not None:
            with self.lock:
                self.bar.update(1)
        self.tick()

    def tick(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.set_postfix_str(self._status(), refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def ticker(progress: Progress, every: float = 1.0) -> Iterator[None]:
    """Refresh the progress bar from a background thread while the main thread computes."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            progress.tick()

    thread = threading.Thread(target=loop, daemon=True) if progress.bar is not None else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join()


@contextlib.contextmanager
def exclusive(out: Path, command: str = "reproduce") -> Iterator[None]:
    """Hold ``out/.<command>.lock`` (released automatically if the process dies)."""
    path = out / f".{command}.lock"
    try:
        fh = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {out}: {e.strerror}; choose another --out") from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ConfigError(f"another `flowvar {command}` ({_holder(fh)}) is writing to {out}; wait for it or "
                                  f"choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def _holder(fh: IO[str]) -> str:
    """Who holds a lock file: what its holder wrote into it (``pid N``)."""
    fh.seek(0)
    return fh.read().strip() or "another process"


def refuse_if_locked(out: Path, command: str = "reproduce", writer: str = "flowvar run") -> None:
    """A :class:`ConfigError` when a ``flowvar {command}`` holds ``out/.<command>.lock`` (:func:`exclusive`): ``writer``
    must not put results into a folder whose report that command is about to write. Checked once, up front, and not
    held: several ``flowvar run`` of different experiments may still share one folder. Creates nothing (no folder, no
    lock file: a folder without one has no holder)."""
    try:
        fh = open(out / f".{command}.lock")  # noqa: SIM115 - closed below, after the probe
    except OSError:
        return
    with fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return
        try:  # a shared probe: it fails only while the command holds its exclusive lock
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"a `flowvar {command}` ({_holder(fh)}) is writing to {out}; `{writer}` would write "
                              f"beside it: wait for it to finish, or give another --out") from None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


OUTPUT_MARKERS: dict[str, tuple[str, ...]] = {"reproduce": ("results.json", ".reproduce.lock"),
                                              "sweep": ("sweep.json", ".sweep.lock")}
"""The files that make a folder the output of ``flowvar reproduce`` or ``flowvar sweep`` (its index, or the lock
that a run of it, finished or interrupted before its index, left)."""


def output_folder_hint(folder: Path) -> str:
    """``"; FOLDER is a `flowvar reproduce` output folder: its cache ..."`` (default ``OUT/.cache``) for a reproduce or
    sweep output folder named as ``--cache``, else ``""``."""
    for command, markers in OUTPUT_MARKERS.items():
        if any((folder / m).exists() for m in markers):
            inner = folder / ".cache"
            where = (f"its cache is {inner}: --cache {inner}" if inner.is_dir() else
                     f"its cache was {inner} unless it ran with another --cache, and there is none there")
            return f"; {folder} is a `flowvar {command}` output folder: {where}"
    return ""


def refuse_other_output(out: Path, command: str) -> None:
    """A one-line :class:`ConfigError` when ``out`` holds the output of the other of ``reproduce`` and ``sweep``
    (:data:`OUTPUT_MARKERS`), finished, interrupted or still running: the two would share one folder, and
    ``flowvar show`` lists only the sweep of such a folder. Creates nothing."""
    for other, markers in OUTPUT_MARKERS.items():
        found = [m for m in markers if other != command and (out / m).exists()]
        if found:
            raise ConfigError(f"{out} holds the output of a `flowvar {other}` ({found[0]}); `flowvar {command}` "
                              f"would write beside it and `flowvar show` would list only one of them: give "
                              f"another --out")


OWN_FILES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "reproduce": ("results.json", ("meta", "experiments"), ("report.md", "report.html")),
    "sweep": ("sweep.json", ("meta", "axes", "points"), ("sweep.csv",))}
"""Per command: the index it writes into ``--out``, the keys every index it writes holds, and the files it writes
beside that index (after it: a folder with them but no index is not flowvar's)."""


def check_output_folder(out: Path | str, command: str, experiments: Sequence[str] = ()) -> Path:
    """Refuse, before anything is computed or written, an ``--out`` whose files ``flowvar {command}`` (run,
    reproduce or sweep) would replace although they are not flowvar's — a user's own ``report.md`` or ``sweep.csv``
    in a project folder must never be lost to a shared file name:

    * an empty ``--out`` (``Path("")`` is the current folder: everything would land beside the user's files);
    * an index (:data:`OWN_FILES`: ``results.json`` / ``sweep.json``) that is not a JSON object with the keys
      flowvar writes;
    * a file written beside the index (``report.md``, ``report.html`` / ``sweep.csv``) without that index;
    * ``OUT/EXPERIMENT/result.json``, for each of ``experiments``, that is not a JSON object recording that
      experiment.

    flowvar's own earlier output (a rerun, ``--only`` into a reproduce folder, a resume, an extended sweep) passes;
    so does anything in a folder holding the command's lock file (:data:`OUTPUT_MARKERS`, left by every earlier
    run of it there): its files are flowvar's, and an index a crash or a hand damaged is rewritten by the rerun its
    own error asks for. A one-line :class:`ConfigError` naming the file and "choose another --out"; creates nothing.
    Returns ``out``."""
    if str(out) == "":
        raise ConfigError(f"--out is empty: `flowvar {command}` would write into the current folder, beside its "
                          f"files; choose another --out (a folder of its own, e.g. --out runs)")
    out = Path(out)
    if any((out / marker).exists() for marker in OUTPUT_MARKERS.get(command, ())[1:]):
        return out  # an earlier run of this command wrote here: its files are flowvar's
    if command in OWN_FILES:
        index, keys, beside = OWN_FILES[command]
        path = out / index
        if path.exists() or path.is_symlink():
            why = _not_json_with(path, keys)
            if why:
                raise ConfigError(f"{path} is not the {index} of a `flowvar {command}` ({why}), so it is not "
                                  f"replaced: move it or choose another --out")
        else:
            for name in beside:
                if (out / name).exists() or (out / name).is_symlink():
                    raise ConfigError(f"{out / name} is not flowvar's (no {index} beside it), so `flowvar {command}` "
                                      f"does not replace it: move it or choose another --out")
    for name in experiments:
        path = out / name / "result.json"
        if path.is_file():
            why = _not_json_with(path, ("experiment",), experiment=name)
            if why:
                raise ConfigError(f"{path} is not a flowvar result of {name} ({why}), so it is not replaced: move "
                                  f"it or choose another --out")
    return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _not_json_with(path: Path, keys: Sequence[str], experiment: str | None = None) -> str | None:
    """Why ``path`` is not a JSON object holding ``keys`` (and, given ``experiment``, recording that experiment), in
    words, or None when it is. Reads the file once."""
    try:
        data = _read_json(path)
    except (OSError, UnicodeDecodeError) as e:
        return f"it cannot be read: {getattr(e, 'strerror', None) or type(e).__name__}"
    except ValueError:
        return "it is not JSON"
    if not isinstance(data, dict):
        return "it is not a JSON object"
    missing = [k for k in keys if k not in data]
    if missing:
        return f"it has no {', '.join(missing)}"
    if experiment is not None and data.get("experiment") != experiment:
        return f"it records experiment {data.get('experiment')!r}"
    return None


def probe_writable(out: Path) -> None:
    """:func:`check_writable`'s verdict without creating anything (``--dry-run``): ``out``'s nearest existing
    ancestor must be a folder this process can write (:func:`flowvar.files.check_writable_folder`)."""
    from flowvar.files import check_writable_folder

    problem = check_writable_folder(out)
    if problem:
        raise ConfigError(f"cannot write to output folder {out}: {problem}; choose another --out")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before, before_env = torch.get_num_threads(), os.environ.get(THREADS_ENV)
    choose_threads(n)  # the count was chosen (--threads, or $FLOWVAR_THREADS's default)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if before_env is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = before_env


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {out}: {e.strerror or e}; choose another --out") from None


__all__ = ["BACKENDS", "DEFAULT_EXPECTED_S", "OUTPUT_MARKERS", "OWN_FILES", "POOL_BREAKS", "Backend", "Outcome",
           "ProcessBackend", "Progress", "RayBackend", "SerialBackend", "Task", "check_config_threads",
           "check_output_folder", "check_ray_address", "check_threads", "check_writable", "compute", "cpu_cores",
           "default_threads", "dispatch", "exclusive", "init_worker", "install_computed", "interrupted_text",
           "make_backend", "output_folder_hint", "probe_writable", "refuse_if_locked", "refuse_other_output",
           "sigterm_as_interrupt", "terminate_workers", "ticker", "torch_threads", "verdict_line", "worker_pool"]
