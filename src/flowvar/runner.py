"""Worker processes that die with their parent, shared by ``flowvar reproduce`` and ``flowvar sweep``.

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
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

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


def init_worker(threads: int, parent: int) -> None:
    """Spawned worker set-up: torch threads, SIGINT ignored (the parent ends its workers), parent watch."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _die_with_parent(parent)


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
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(threads, os.getpid()))
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


__all__ = ["completed", "init_worker", "sigterm_as_interrupt", "terminate_workers", "worker_pool"]
