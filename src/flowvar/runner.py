"""The runner shared by ``flowvar reproduce`` and ``flowvar sweep``: backends, workers that die with their parent.

* :func:`compute` — the one compute step: run one experiment configuration (a cache miss) into the cache. The
  caller, holding the output folder's lock, installs the stored entry; workers never write the output folder.
* :class:`Backend` — where :func:`compute` runs: :class:`SerialBackend` (this process), :class:`ProcessBackend`
  (``jobs`` spawned workers) or :class:`RayBackend` (a Ray cluster or a local instance); :func:`make_backend`
  picks one from the command line, :func:`dispatch` runs a list of items on it with a start callback per slot.

* :func:`worker_pool` — a spawn-context process pool whose workers set their torch thread count, ignore SIGINT
  (the parent decides what an interrupt means) and watch their parent: on Linux the kernel sends them SIGKILL when
  it dies (``PR_SET_PDEATHSIG``), and on every platform a watchdog thread exits the worker within a second of its
  parent disappearing (a ``kill -9`` of the parent, or of its whole process group). When the ``with`` block ends by
  an exception (an interrupt included) every worker is terminated before the exception goes on, so no worker can
  write into the output folder after the parent has released its lock.
* :func:`completed` — the one wait loop over the pool's futures: yields each task with its reply as it finishes, a
  worker that died (killed, out of memory) becoming a failed reply.
* :func:`sigterm_as_interrupt` — SIGTERM (what ``timeout``, CI cancellation and ``kill`` send) raises
  KeyboardInterrupt in the main thread, so it takes the same clean path as Ctrl-C.
* the rest of a run that both commands share: :class:`Task` and :class:`Outcome` (what runs, how it ended), the
  :class:`Progress` bar or lines, the output folder's lock (:func:`exclusive`), the
  torch thread count (:func:`torch_threads`, :func:`default_threads`) and the writability probe
  (:func:`check_writable`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from flowvar.errors import ConfigError
from flowvar.logs import forwarded_from_workers, send_to_parent
from flowvar.report import format_duration
from flowvar.results import Result

T = TypeVar("T")
WATCH_INTERVAL_S = 0.5


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


def init_worker(threads: int, parent: int, log_queue: Any = None) -> None:
    """Spawned worker set-up: torch threads, SIGINT ignored (the parent ends its workers), parent watch, and its
    ``flowvar`` log records sent to the parent (:func:`flowvar.logs.send_to_parent`)."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _die_with_parent(parent)
    if log_queue is not None:
        send_to_parent(log_queue)


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


@contextlib.contextmanager
def worker_pool(jobs: int, threads: int) -> Iterator[ProcessPoolExecutor]:
    """``jobs`` spawned workers (see the module doc); on an exception every worker is ended before it propagates."""
    context = multiprocessing.get_context("spawn")
    log_queue = context.Queue()
    with forwarded_from_workers(log_queue):  # stopped after the workers: their last records are in the queue
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=init_worker,
                                   initargs=(threads, os.getpid(), log_queue))
        try:
            yield pool
        except BaseException:
            terminate_workers(pool)
            raise
        pool.shutdown(wait=True)


def completed(futures: dict[Future, T], on_tick: Callable[[], None] | None = None
              ) -> Iterator[tuple[T, dict[str, Any]]]:
    """Yield ``(task, reply)`` for each future as it finishes; a dead worker's reply is a failed one."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
        for future in done:
            try:
                reply = future.result()
            except Exception as e:  # the worker died (killed, out of memory)
                reply = {"status": "failed", "error": f"worker process failed: {type(e).__name__}: {e}",
                         "wall_s": 0.0}
            yield futures[future], reply
        if on_tick is not None:
            on_tick()


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
            cache_root: str, threads: int, plugins: Sequence[str] = (), force: bool = False) -> dict[str, Any]:
    """Run one experiment configuration (a cache miss) and store it in the cache; nothing else is written.

    The one compute step of ``flowvar reproduce`` and ``flowvar sweep``, run in this process, in a worker of
    :func:`worker_pool` or as a Ray task. The experiment runs in a work folder inside the cache root (named like
    the cache's staging folders, so :meth:`flowvar.cache.Cache.clean_stale` removes it if this process is
    killed); the caller, which holds the output folder's lock, installs the stored entry. The trainings resume from
    the checkpoints an interrupted run of the same key left in the cache (:meth:`flowvar.cache.Cache.work_dir`)
    unless ``force`` (``--force``: recompute from scratch). Returns a plain
    (picklable) dict: ``status`` computed/failed, the cache ``key``, ``wall_s``, ``hit`` (True when a process
    sharing the cache stored the key first, while this one waited for it), and for a failure the error line
    and the traceback.
    """
    import tempfile
    import traceback

    from flowvar.cache import Cache, run_cached, staging_prefix
    from flowvar.experiments.base import load_plugin

    start = time.perf_counter()
    try:
        with torch_threads(threads):
            for plugin in plugins:
                load_plugin(plugin)
            cache = Cache(Path(cache_root))
            cache.check_writable()
            with tempfile.TemporaryDirectory(prefix=staging_prefix("work-"), dir=cache.root) as work:
                run = run_cached(name, work, cache, quick=quick, seed=seed, overrides=overrides,
                                 config_file=config_file, force=force)
        return {"status": "computed", "key": run.key, "wall_s": time.perf_counter() - start, "hit": run.hit}
    except Exception as e:
        error = f"{type(e).__name__}: {e}".strip()
        return {"status": "failed", "error": error.splitlines()[0] if error else type(e).__name__,
                "wall_s": time.perf_counter() - start, "traceback": traceback.format_exc()}


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

    def run(self, items: Sequence[T], args: Callable[[T], tuple]) -> Iterator[tuple[T, dict[str, Any]]]:
        raise NotImplementedError


class SerialBackend(Backend):
    """In this process, one after another (no start-up cost: the fastest for short runs)."""

    @property
    def slots(self) -> int:
        return 1

    def run(self, items, args):
        for item in items:
            yield item, compute(*args(item))


class ProcessBackend(Backend):
    """``jobs`` spawned worker processes (spawn: nothing inherited from the parent, as with Ray); they die with
    this process and are ended before an interrupt leaves the lock (:func:`worker_pool`). Queued items start in
    the order given."""

    def run(self, items, args):
        if not items:
            return
        with worker_pool(min(self.jobs, len(items)), self.threads) as pool:
            futures: dict[Future, Any] = {pool.submit(compute, *args(item)): item for item in items}
            yield from completed(futures)


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

    def run(self, items, args):
        ray = self.import_ray()
        if not ray.is_initialized():
            self.start()
        remote = ray.remote(num_cpus=self.threads, max_retries=0)(compute)
        refs = {remote.remote(*args(item)): item for item in items}
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

    The first ``backend.slots`` items start at once and the next one each time one finishes, the order in which
    the backends take them up (worker pools and Ray queue in submission order).
    """
    queue = list(items)
    for item in queue[: backend.slots]:
        on_start(item)
    waiting = queue[backend.slots:]
    for item, reply in backend.run(queue, args):
        yield item, reply
        if waiting:
            on_start(waiting.pop(0))


# ---------------------------------------------------------------------------------------------------------- runs


DEFAULT_EXPECTED_S = 60.0
"""ETA guess for an experiment with neither a YAML estimate nor an earlier run in the cache."""


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> int | None:
    """``threads`` unchanged if it is None or a thread count torch can start here: 1 to 4 × the cores (at least
    64); else a one-line :class:`ConfigError` (torch's thread pool fails to start hundreds of thousands, with a
    segmentation fault)."""
    if threads is None:
        return None
    limit = max(64, 4 * cpu_cores())
    if not 1 <= threads <= limit:
        raise ConfigError(f"--threads must be between 1 and {limit} on this machine ({cpu_cores()} cores), got "
                          f"{threads}")
    return threads


def default_threads() -> int:
    """torch threads per experiment: ``$FLOWVAR_THREADS`` if set, else 1.

    flowvar's tensors are small: on a 2-core machine, intra-op threading of small matmuls and convolutions costs
    more than it gains, and under any other load it is 5–25× slower (measured). Use ``--jobs`` to fill cores.
    """
    raw = os.environ.get("FLOWVAR_THREADS", "1")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"FLOWVAR_THREADS must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"FLOWVAR_THREADS must be a positive integer, got {raw!r}")
    return value


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


def verdict_line(result: Result | None) -> str:
    if result is None:
        return ""
    counts: dict[str, int] = {}
    for c in result.claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items()) or "no claims"


class Progress:
    """One overall bar with the running experiments and an ETA (terminal), else one line per experiment."""

    def __init__(self, tasks: list[Task], jobs: int, quiet: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.expected = {t.name: t.expected_s for t in tasks}
        self.total = len(tasks)
        self.jobs = jobs
        self.done = 0
        self.running: dict[str, float] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.bar = None
        if not quiet and self.stream.isatty():
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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {out}: {e.strerror or e}; choose another --out") from None


__all__ = ["BACKENDS", "DEFAULT_EXPECTED_S", "Backend", "Outcome", "ProcessBackend", "Progress", "RayBackend",
           "SerialBackend", "Task", "check_ray_address", "check_threads", "check_writable", "completed", "compute",
           "cpu_cores", "default_threads", "dispatch", "exclusive", "init_worker", "make_backend",
           "refuse_if_locked", "sigterm_as_interrupt", "terminate_workers", "ticker", "torch_threads",
           "verdict_line", "worker_pool"]
