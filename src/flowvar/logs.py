"""The ``flowvar`` loggers of a run: its log file, the records kept until that file exists, and the records of
worker processes brought back to the parent.

* :func:`log_to` — a timestamped file handler (``OUT/reproduce.log``, ``OUT/sweep.log``) for the block;
  :func:`held_log_records` keeps the records of work done before the file may be created, for it to write first.
* :func:`send_to_parent` (in a spawned worker) and :func:`forwarded_from_workers` (in the parent): a worker's
  records (INFO and up) travel through a multiprocessing queue and reach the parent's handlers as its own, so a
  parallel run's log holds a worker's "resumed from ..." as a serial run's does.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["attached_handler", "forwarded_from_workers", "held_log_records", "log_to", "send_to_parent"]


class _Records(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def attached_handler(handler: logging.Handler, name: str = "flowvar") -> Iterator[None]:
    """``handler`` on the logger ``name`` (default: the ``flowvar`` loggers), at INFO at least, for the block; the
    logger's level is restored after."""
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@contextlib.contextmanager
def held_log_records() -> Iterator[list[logging.LogRecord]]:
    """Keep the ``flowvar`` log records (INFO and up) of work done before the log file may be created (validating
    every config first), for :func:`log_to` to write once it is open."""
    records: list[logging.LogRecord] = []
    with attached_handler(_Records(records)):
        yield records


@contextlib.contextmanager
def log_to(path: Path, earlier: Sequence[logging.LogRecord] = ()) -> Iterator[None]:
    """Attach a timestamped file handler for the ``flowvar`` loggers while the block runs; ``earlier`` records (from
    :func:`held_log_records`) are written first."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for record in earlier:
        handler.handle(record)
    try:
        with attached_handler(handler):
            yield
    finally:
        handler.close()


def send_to_parent(queue: Any) -> None:
    """In a spawned worker: its ``flowvar`` log records (INFO and up) go to ``queue``, for the parent's
    :func:`forwarded_from_workers`."""
    logger = logging.getLogger("flowvar")
    logger.addHandler(logging.handlers.QueueHandler(queue))
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


@contextlib.contextmanager
def forwarded_from_workers(queue: Any) -> Iterator[None]:
    """While the block runs, a thread hands each record the workers put on ``queue`` to the logger of its name in
    this process. Stopped with a time limit: a worker killed in the middle of a put can leave a message that never
    completes, and an interrupted run must not hang on its log."""
    def forward() -> None:
        while True:
            try:
                record = queue.get()
            except Exception:  # a broken message from a killed worker: stop forwarding
                return
            if record is None:
                return
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)

    thread = threading.Thread(target=forward, name="flowvar-worker-logs", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            queue.put_nowait(None)
        thread.join(timeout=2.0)
        queue.cancel_join_thread()
        queue.close()
