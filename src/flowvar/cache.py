"""A result cache for experiment runs, shared by ``flowvar reproduce``, ``flowvar run --cache`` and future sweeps.

Key. :mod:`flowvar.cache_key` (what identifies a run: the config, the code version, the torch version and
threads, the versions of the other libraries that compute reported numbers, the contents of user data named by
path); this module re-exports its names.

Layout. One folder per entry, ``<root>/<key>/``: the experiment's output files (``result.json``, ``summary.md``,
figures) and ``cache.json``, a manifest with the key's inputs, the creation time, the runtime and the SHA-256 of
every file (the entry's result is those files: only they are checked and installed). An entry is written into
``<root>/.tmp-<pid>@<host>-*`` and renamed into place when complete; an entry it replaces is renamed aside first and
deleted after, so a reader finds an entry whole or not at all. ``<root>/.work/<key>/`` holds the training
checkpoints of a run of ``key`` that has not finished (:meth:`Cache.work_dir`) and ``inputs.json``, the key's inputs
(:meth:`Cache.start_work`): an interrupted run resumes from them, and they are removed when the entry is stored;
``<root>/.work/<key>.lock`` is held while a process computes ``key``, so a second process computing it in the same
cache waits and then uses the stored entry (:meth:`Cache.computing`). :meth:`Cache.lookup` re-hashes every file and
reloads ``result.json``; an entry that fails any check (edited, truncated, a file missing, a result that is not of
the recorded inputs) is reported, deleted and treated as a miss: a corrupted result is recomputed, never trusted.
An entry this user cannot read (another user's) is a miss left in place (:class:`Unreadable`). An entry's
``summary.md`` is installed rendered afresh from its ``result.json`` (:func:`install`).

Why this module is long: storing, looking up, discarding and computing an entry are one protocol between processes
sharing a cache folder (which renames happen in which order, what is checked under which lock); split across
modules, the order each step relies on would no longer be read in one place.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowvar.cache_key import (
    CACHE_FORMAT,
    FRONT_END,
    cache_key,
    code_version,
    config_dict,
    data_digest,
    data_digests,
    file_digest,
    is_data_path_field,
    is_record_of,
    key_inputs,
    key_of_inputs,
    library_versions,
    result_mismatch,
    source_digest,
)
from flowvar.errors import ConfigError, DataError, FlowvarError, WriteError
from flowvar.files import (
    atomic_write_bytes,
    current_umask,
    foreign_entries,
    pid_alive,
    remove_path,
    staged_folder,
)
from flowvar.results import Result, to_jsonable

MANIFEST = "cache.json"
WORK_INPUTS = "inputs.json"
"""The key's inputs (:func:`key_inputs`, code version included) in its work folder, written when the folder is made:
``flowvar cache`` reads it to tell whether the current code can still resume the folder."""
log = logging.getLogger("flowvar.cache")


def _tree_digests(folder: Path, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """``{relative path: digest}`` of the files under ``folder``, leaving out the top-level entries ``skip`` (a
    skipped folder with everything in it)."""
    return {p.relative_to(folder).as_posix(): file_digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def default_root() -> Path:
    """The cache used when none is named: ``$FLOWVAR_CACHE_DIR``, else ``$XDG_CACHE_HOME/flowvar``, else
    ``~/.cache/flowvar``. (``flowvar reproduce`` uses ``OUT/.cache`` unless given ``--cache``.)"""
    if os.environ.get("FLOWVAR_CACHE_DIR"):
        return Path(os.environ["FLOWVAR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flowvar"


def _unwritable(root: Path, error: OSError, folder: Path | None = None) -> str:
    where = f" ({folder.name}: {error.strerror or error})" if folder is not None and folder != root else \
        f": {error.strerror or error}"
    return f"cannot write to the cache folder {root}{where}; make it writable or choose another --cache"


@contextlib.contextmanager
def _key_lock(path: Path, key: str, root: Path, on_wait: Callable[[str], None] | None) -> Iterator[bool]:
    """Lock ``path`` (``flock``, created if absent), yielding True once held, removing it on release. With
    ``on_wait`` None it does not wait: it yields False when another process holds the lock. Where there is no
    ``fcntl`` (Windows) it yields True without locking."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield True
        return
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if on_wait is None:
                os.close(fd)
                yield False
                return
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            on_wait(f"{key} is being computed by {holder} sharing the cache {root}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed (or a later one replaced) the file while we waited: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _stderr_shows(logger: logging.Logger, level: int) -> bool:
    """Whether a record of ``level`` on ``logger`` reaches a handler that prints to stderr (``flowvar run``'s
    ``[HH:MM:SS]`` lines when stderr is no terminal, :func:`flowvar.cli._plain_log_lines`): its logger chain has a
    stream handler on ``sys.stderr`` at that level. Python's last-resort handler (WARNING, used only where no
    handler is attached) does not count."""
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
                    and handler.stream in (sys.stderr, sys.__stderr__) and level >= handler.level):
                return True
        current = current.parent if current.propagate else None
    return False


def _announce_wait(message: str) -> None:
    """A wait the user must see, said once: the log at INFO (reproduce.log, a sweep's log), and one line on stderr
    unless a handler already prints the log's INFO lines there (``flowvar run`` off a terminal, review cacheR 8: the
    line came twice). Reproduce and sweep only log their progress, so for them the stderr line is the one seen."""
    log.info("%s", message)
    if not _stderr_shows(log, logging.INFO):
        print(f"flowvar: {message}", file=sys.stderr, flush=True)


@functools.cache
def host_tag() -> str:
    """This machine in staging folder names: 8 hex digits of a hash of its host name (a name may hold ``-``, ``.``
    or ``@``, which the names' parser splits on)."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def staging_prefix(purpose: str = "") -> str:
    """The name prefix of a staging folder this process writes into a cache folder: ``.tmp-<pid>@<host>-<purpose>``
    (:meth:`Cache.store`, the runner's work folders, a prune's trash). The host matters on a cache shared by several
    machines (a Ray cluster's nodes): a pid says whether its writer lives only on its own machine."""
    return f".tmp-{os.getpid()}@{host_tag()}-{purpose}"


@dataclass(frozen=True)
class StagingWriter:
    """Who writes a staging folder, from its name: ``pid`` on ``host`` (:func:`host_tag`)."""

    pid: int
    host: str

    @property
    def local(self) -> bool:
        return self.host == host_tag()

    @property
    def alive(self) -> bool:
        """Whether the writer may still be writing: its pid lives on this machine; another machine's writer is
        assumed alive (this machine cannot tell), so its folder is never removed from here."""
        return pid_alive(self.pid) if self.local else True


def staging_writer(name: str) -> StagingWriter | None:
    """The writer of a staging folder named ``.tmp-<pid>@<host>-...`` (:func:`staging_prefix`), or None for any
    other name. An older flowvar's hostless ``.tmp-<pid>-...`` is no longer recognised (review cacheR 7): a user's
    folder named so (``.tmp-99999-mydata``) was taken for a killed run's and deleted by every reproduce and sweep.
    The host tag, 8 hex digits after ``@``, is what no such name has by chance; a leftover of that older flowvar
    stays until removed by hand."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != ".tmp":
        return None
    pid, at, host = parts[1].partition("@")
    if not pid.isdigit() or not at or not (len(host) == 8 and all(c in "0123456789abcdef" for c in host)):
        return None
    return StagingWriter(int(pid), host)


STORE_REMEDY = "free space or choose another --cache"
"""What to do about a cache whose disk refused a result (full, read-only): :class:`StoreError`'s default remedy."""


class StoreError(DataError):
    """A result the cache folder refused (its disk full or read-only, or an entry of the key there that this user
    cannot read and must not replace): ``experiment``, the cache ``root``, the ``reason`` (the system's words) and
    the ``remedy``, for callers that say more about where the result is."""

    def __init__(self, experiment: str, root: Path, reason: str, remedy: str = STORE_REMEDY) -> None:
        super().__init__(f"cannot store the result of {experiment} in the cache {root}: {reason}; {remedy}")
        self.experiment, self.root, self.reason, self.remedy = experiment, root, reason, remedy


class UnstoredResultError(DataError):
    """A result computed in full that the cache's disk refused to store (:class:`StoreError`): it is kept whole in
    ``folder`` (``staging/<experiment>``, a staging folder of the cache, not an entry: no manifest) for the caller to
    install where there is room (:func:`install` copies it like an entry), then to delete ``staging``
    (:func:`install_unstored` does both). ``refused``: the store's error (the cache, the system's reason); ``key``:
    the cache key the result was computed for."""

    def __init__(self, refused: StoreError, key: str, folder: Path, staging: Path) -> None:
        super().__init__(f"{refused}; the computed result is kept in {folder} until it is installed")
        self.refused, self.key, self.folder, self.staging = refused, key, folder, staging


class CacheFullError(WriteError):
    """The cache's disk ran out of space (``ENOSPC``, or a quota: ``EDQUOT``) while the experiment wrote its own files
    (result.json, a figure) into the cache's staging folder. Unlike :class:`UnstoredResultError` nothing complete is
    left to install: the files are written while the experiment runs, and the run stops at the first refused one, so
    the computed result is lost (a training's checkpoints in the work folder survive where they fit, and a rerun
    resumes from them). ``flowvar reproduce`` and ``flowvar sweep`` therefore compute nothing more into that cache
    (:func:`flowvar.runner.dispatch`)."""


def _is_disk_full(err: WriteError) -> bool:
    """Whether a :class:`WriteError` is a full disk or exhausted quota: :func:`flowvar.files.atomic_write_bytes`
    keeps the system's words (``strerror``), not the errno, in its ``problem``."""
    return any(os.strerror(code) in err.problem for code in (errno.ENOSPC, errno.EDQUOT))


class Unreadable(str):
    """A reason (:meth:`Cache.check`) that says an entry cannot be read by this user (``PermissionError``: another
    user's entry on a shared cache, made under umask 077), not that it is corrupt. Such an entry is a miss that is
    never deleted (review cacheR 3: it was called "missing" and deleted, a valid entry of another user's lost):
    :meth:`Cache.lookup` leaves it in place, and :meth:`Cache.store` refuses to replace it."""


def writable_cache(cache: Cache, needed: bool) -> bool:
    """Whether ``cache`` can take new entries (:meth:`Cache.check_writable`), for ``flowvar reproduce`` and
    ``flowvar sweep`` alike. When ``needed`` (something must be computed and stored) a cache that cannot is refused
    with that method's one-line :class:`ConfigError` ("cannot write to the cache folder …; make it writable or choose
    another --cache"); otherwise the answer is False and the run only reads the cache: a read-only cache (an archive,
    a shared mount) serves valid entries."""
    try:
        cache.check_writable()
    except ConfigError:
        if needed:
            raise
        return False
    return True


def unreadable_message(entry: Path, problem: str) -> str:
    """The one line told of an entry this user cannot read (:class:`Unreadable` ``problem``): a miss, left in place,
    with the remedy."""
    return (f"the cache entry {entry} cannot be read here: {problem} (another user's entry?); it is left in place "
            f"and its result computed again: ask its owner to make it readable (chmod -R a+rX {entry}) or use "
            f"another --cache")


@dataclass
class Cache:
    """A folder of cache entries (see the module doc). Safe for concurrent writers of different keys; two writers
    of the same key keep whichever entry lands first (both are results of the same inputs)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid cache key {key!r}")
        return self.root / key

    def check(self, key: str) -> tuple[Path | None, str | None]:
        """``(entry, None)`` for a valid entry, ``(None, None)`` for none, ``(None, reason)`` for a corrupted one,
        or for one this user cannot read (the reason is then an :class:`Unreadable`)."""
        entry = self.path(key)
        problem = self._problem(entry, key)
        return (entry, None) if problem is None else (None, problem or None)

    def _problem(self, entry: Path, key: str) -> str | None:
        """Why the folder ``entry`` is no valid entry of ``key``: None when it is, ``""`` when nothing is there.

        Valid: its manifest names ``key`` and this cache format, it records the key's inputs and they hash to ``key``
        (:func:`~flowvar.cache_key.is_record_of`: an edited record is no record of this key; an entry recording none
        cannot be checked against its key and is not served), every file it lists has its checksum, ``result.json``
        loads, is of the manifest's experiment and is the result of those inputs (its experiment, quick flag and
        config: :func:`~flowvar.cache_key.result_mismatch`; review cacheR 4: a result stored under another key's
        inputs was served), and every figure the result lists is among the files. A file this user may not read is
        an :class:`Unreadable` reason, not a corrupt one."""
        if not entry.is_dir():
            return "not a folder" if entry.exists() or entry.is_symlink() else ""
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except PermissionError as e:
            return Unreadable(f"{MANIFEST} is unreadable ({e.strerror or 'Permission denied'})")
        except (OSError, ValueError) as e:
            return f"unreadable manifest ({type(e).__name__})"
        if not isinstance(manifest, dict) or manifest.get("key") != key or manifest.get("format") != CACHE_FORMAT:
            return "manifest does not match its key"
        inputs = manifest.get("inputs")
        if not inputs:
            return "its manifest records no key inputs, so nothing ties its result to its key"
        if not is_record_of(inputs, key):
            return "its recorded inputs do not hash to its key (the manifest was edited)"
        files = manifest.get("files")
        if not isinstance(files, dict) or "result.json" not in files:
            return "manifest lists no result.json"
        for rel, expected in files.items():
            path = entry / rel
            try:
                if file_digest(path) != expected:
                    return f"{rel} was modified (checksum mismatch)"
            except PermissionError as e:  # there, but not this user's to read: not corrupt, never deleted
                return Unreadable(f"{rel} is unreadable ({e.strerror or 'Permission denied'})")
            except OSError:  # gone (or a folder): also when a writer moved the entry aside while this one read it
                return f"{rel} is missing"
        try:
            result = Result.load(entry / "result.json")
        except PermissionError as e:
            return Unreadable(f"result.json is unreadable ({e.strerror or 'Permission denied'})")
        except (OSError, ValueError, TypeError, KeyError) as e:
            return f"result.json does not load ({type(e).__name__})"
        if result.experiment != manifest.get("experiment"):
            return "result.json belongs to another experiment"
        mismatch = result_mismatch(result.experiment, result.quick, result.config, inputs)
        if mismatch is not None:
            return f"result.json is not the result of the key's recorded inputs ({mismatch})"
        missing = [f for f in result.figures if f not in files]
        if missing:
            return f"figure {missing[0]} is missing"
        return None

    def lookup(self, key: str, on_corrupt: Callable[[str, str], None] | None = None,
               on_unreadable: Callable[[str, str], None] | None = None) -> Path | None:
        """The folder of a valid entry for ``key``, or None.

        A corrupted entry is deleted and reported through ``on_corrupt(key, reason)`` (default: a warning on the
        ``flowvar.cache`` logger), then treated as a miss. No lock is taken, so a writer may replace the entry
        between the check and the deletion: the deletion moves the entry aside first and checks what it moved, and
        a valid entry (a newer one, stored meanwhile) is put back, never deleted (:meth:`_discard_corrupt`). An
        entry this user cannot read (:class:`Unreadable`) is a miss left in place, reported through
        ``on_unreadable(key, message)`` (default: that warning on the ``flowvar.cache`` logger), the message saying
        what is unreadable and the remedy.
        """
        entry, problem = self.check(key)
        if problem is None:
            return entry
        if isinstance(problem, Unreadable):
            message = unreadable_message(self.path(key), problem)
            (on_unreadable or (lambda k, m: log.warning("%s", m)))(key, message)
            return None
        reason = self._discard_corrupt(key)
        if reason is not None:
            (on_corrupt or (lambda k, r: log.warning("corrupted cache entry %s (%s): recomputing", k, r)))(key, reason)
            return None
        return self.check(key)[0]  # replaced by a whole entry meanwhile (put back), or gone

    def _set_aside(self, key: str, purpose: str) -> Path | None:
        """Rename whatever is at :meth:`path` (``key``) to a fresh staging name of this process and return it, or
        None when nothing is there. A rename is atomic: a reader sees the entry whole or no entry, and a process
        killed before deleting what it set aside leaves a staging folder :meth:`clean_stale` removes."""
        aside = self.root / f"{staging_prefix(purpose)}{secrets.token_hex(4)}-{key}"
        try:
            self.path(key).rename(aside)
        except FileNotFoundError:
            return None
        return aside

    def _discard_corrupt(self, key: str) -> str | None:
        """Delete the corrupted entry of ``key`` and return why it is corrupt, judged on what was deleted; None when
        nothing was deleted: nothing is there any more, or what is there now is a valid entry (a writer replaced the
        corrupted one since it was judged), which stays. A cache that refuses the deletion (a read-only mount, a
        folder of someone else's) leaves the entry in place: judged where it is, it is reported corrupt with ``"; it
        could not be removed: <the system's reason>"`` and is a miss all the same (a run then meets the unwritable
        cache's one-line error, :meth:`check_writable`)."""
        try:
            aside = self._set_aside(key, "corrupt-")
        except OSError as refused:  # not "gone" (that is None): the rename was refused
            problem = self._problem(self.path(key), key)
            if not problem or isinstance(problem, Unreadable):
                return None
            return f"{problem}; it could not be removed: {refused.strerror or refused}"
        if aside is None:
            return None
        problem = self._problem(aside, key)
        if problem is None or isinstance(problem, Unreadable):
            # whole and valid (a newer entry), or one this user cannot read (another user's, stored meanwhile):
            # put it back unless yet another one took the place
            with contextlib.suppress(OSError):
                aside.rename(self.path(key))
            remove_path(aside)  # (only left when another valid entry of the same inputs is in place)
            return None
        remove_path(aside)
        return problem

    def new_staging(self, purpose: str = "") -> Path:
        """A fresh staging folder of this process in the cache (``.tmp-<pid>@<host>-<purpose>*``, removed as stale
        if the process dies: :meth:`clean_stale`) with a normal folder's permissions (``mkdtemp`` makes it private,
        0700; an entry is renamed from it). A cache folder that cannot take it is a one-line :class:`ConfigError`."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=staging_prefix(purpose), dir=self.root))
            os.chmod(folder, 0o777 & ~current_umask())
        except OSError as e:
            raise ConfigError(_unwritable(self.root, e)) from None
        return folder

    def manifest(self, key: str) -> dict[str, Any]:
        """The manifest of an existing entry."""
        return json.loads((self.path(key) / MANIFEST).read_text())

    def store(self, key: str, result_dir: Path | str, inputs: dict[str, Any] | None = None, *,
              move: bool = False) -> Path:
        """Copy a finished result folder into the cache under ``key`` (replacing an older entry) and return it.

        ``inputs`` (:func:`key_inputs` of the run) are recorded in the manifest; None: those recorded by the cache
        entry ``result_dir`` is (a copy of an entry), else the key inputs of the result's own experiment, config
        and quick flag in this installation (:func:`key_inputs`, this process's thread count). The folder must hold
        a loadable ``result.json`` that is the result of ``inputs`` (its experiment, quick flag and config:
        :func:`~flowvar.cache_key.result_mismatch`), and ``inputs`` must hash to ``key``; otherwise nothing is stored
        and a one-line :class:`ConfigError` says which differs (review cacheR 4: a result stored under another
        key's inputs was served). ``move``: ``result_dir`` is a staging folder of this process inside the cache
        folder (:func:`run_cached` computes there); it becomes the entry by a rename, nothing is copied, and a
        failed store leaves it in place (its caller still has the result). A store the disk refuses, or an entry of
        ``key`` already there that this user cannot read (:class:`Unreadable`: never replaced, as that would delete
        another user's entry), is a :class:`StoreError`.
        """
        source = Path(result_dir)
        try:
            result = Result.load(source / "result.json")
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"cannot cache {source}: no valid result.json ({type(e).__name__})") from None
        inputs = self._inputs_of(key, source, result, inputs)
        unreadable = self._problem(self.path(key), key)
        if isinstance(unreadable, Unreadable):
            raise StoreError(result.experiment, self.root, f"its entry {key} there cannot be read here ({unreadable}: "
                             f"another user's entry?) and is left in place",
                             f"ask its owner to make it readable (chmod -R a+rX {self.path(key)}) or choose another "
                             f"--cache")
        tmp = source if move else self.new_staging()
        try:
            for path in sorted(source.rglob("*")) if not move else ():
                rel = path.relative_to(source)
                if path.is_file() and rel.as_posix() != MANIFEST:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, tmp / rel)
            manifest = {"format": CACHE_FORMAT, "key": key, "experiment": result.experiment, "quick": result.quick,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runtime_s": result.runtime_s,
                        "inputs": inputs, "files": _tree_digests(tmp)}
            # written in place, not by atomic_write_text: the folder is a staging folder, made visible whole by
            # the rename below; and a refusal stays an OSError, told as the cache's (StoreError), not a DataError
            # advising "another output folder"
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(manifest, indent=1))
                fh.flush()
                os.fsync(fh.fileno())
            final = self.path(key)
            # replaced in two renames, the old entry moved aside first (never deleted in place): a reader sees the
            # old entry whole, no entry, or the new one whole, never a half-deleted one it would call corrupt
            old = self._set_aside(key, "old-")
            try:
                tmp.rename(final)
            except OSError:
                if not (final.exists() or final.is_symlink()):  # no one else's entry: a real failure
                    if old is not None:
                        with contextlib.suppress(OSError):
                            old.rename(final)  # keep the old entry rather than none
                    raise
                # another process stored the same key in between: keep its entry (a result of the same inputs)
                if not move:
                    shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                remove_path(old)
            return final
        except BaseException as e:
            if move:
                with contextlib.suppress(OSError):
                    (tmp / MANIFEST).unlink()  # the caller's result as it was
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, FlowvarError):  # disk full while copying the result in
                raise StoreError(result.experiment, self.root, str(e.strerror or e)) from None
            raise

    @staticmethod
    def _inputs_of(key: str, source: Path, result: Result, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The key inputs :meth:`store` records for ``result`` (read from ``source``) under ``key``: ``inputs``, else
        those of the entry ``source`` is, else :func:`key_inputs` of the result; checked to be of this cache format,
        to hash to ``key`` and to be the inputs of ``result`` (a one-line :class:`ConfigError` naming the difference
        otherwise)."""
        if inputs is None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                inputs = json.loads((source / MANIFEST).read_text()).get("inputs") or None
        if inputs is None:
            inputs = key_inputs(result.experiment, result.config, result.quick)
        inputs = to_jsonable(dict(inputs))
        if inputs.get("format") != CACHE_FORMAT:  # an older flowvar's entry: its key is one no run computes now
            raise ConfigError(f"cannot cache {source} under {key}: its key inputs are of cache format "
                              f"{inputs.get('format')}, this flowvar keys results in format {CACHE_FORMAT}; store it "
                              f"with key_inputs(name, config, quick, threads) under cache_key(...)")
        mismatch = result_mismatch(result.experiment, result.quick, result.config, inputs)
        if mismatch is not None:
            raise ConfigError(f"cannot cache {source} under {key}: its result.json is not the result of the key "
                              f"inputs given ({mismatch}); store each result with the inputs of its own run "
                              f"(key_inputs(name, config, quick, threads))")
        if not is_record_of(inputs, key):
            raise ConfigError(f"cannot cache {source} under {key}: its key inputs hash to "
                              f"{key_of_inputs(inputs)}, not to {key}; store it under the key of its inputs "
                              f"(cache_key(name, config, quick, threads))")
        return inputs

    def check_writable(self) -> None:
        """Fail with one line (:class:`ConfigError` naming the folder and the fix) unless new entries and work
        folders can be written here: checked before a computation starts, not after it has run."""
        for folder in (self.root, self.root / ".work"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as e:
                raise ConfigError(_unwritable(self.root, e, folder)) from None

    def lock_path(self, key: str) -> Path:
        """``<root>/.work/<key>.lock``: the file whose ``flock`` a process computing ``key`` holds
        (:meth:`computing`)."""
        return self.root / ".work" / f"{self.path(key).name}.lock"

    @contextlib.contextmanager
    def computing(self, key: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold ``<root>/.work/<key>.lock`` while computing ``key``: a second process computing the same key (a
        shared cache) waits here, announced by ``on_wait(message)``, instead of training into the same work folder
        and deleting it under the first one. The lock is an ``flock``, released if the holder dies; the holder
        removes the file, and a waiter that wakes to a removed or replaced file locks the new one (no two holders)."""
        with _key_lock(self.lock_path(key), key, self.root, on_wait or _announce_wait) as held:
            assert held
            yield

    def work_dir(self, key: str) -> Path:
        """``<root>/.work/<key>``: the checkpoints of an unfinished run of ``key`` (whether or not it exists)."""
        return self.root / ".work" / self.path(key).name

    def start_work(self, key: str, inputs: Mapping[str, Any]) -> Path:
        """Make the work folder of ``key`` (:meth:`work_dir`) and record ``inputs`` (:func:`key_inputs`) in it as
        :data:`WORK_INPUTS`, written atomically; return the folder. The record says which code made the folder, so
        ``flowvar cache`` can tell the checkpoints current code resumes from those no run will use again."""
        work = self.work_dir(key)
        data = json.dumps(to_jsonable(dict(inputs)), indent=1, sort_keys=True).encode()
        try:
            work.mkdir(parents=True, exist_ok=True)
            if (work / WORK_INPUTS).is_file() and (work / WORK_INPUTS).read_bytes() == data:
                return work  # a resumed run: the record is already there
        except OSError as e:
            raise ConfigError(_unwritable(self.root, e, work.parent)) from None
        atomic_write_bytes(work / WORK_INPUTS, data, what="the work folder record",
                           remedy="free space or choose another --cache")
        return work

    def _drop_unused_work(self, key: str) -> None:
        """Remove the work folder of ``key`` if it holds nothing but its record (a run that stopped before its first
        checkpoint): there is nothing in it to resume."""
        from flowvar.experiments.base import ELAPSED_FILE  # lazily, as run_cached imports the experiments

        work = self.work_dir(key)
        with contextlib.suppress(OSError):
            # its time count goes with it: a run that starts over does not count the attempts it discards
            if work.is_dir() and {p.name for p in work.iterdir()} <= {WORK_INPUTS, ELAPSED_FILE}:
                shutil.rmtree(work, ignore_errors=True)

    def entries(self) -> list[dict[str, Any]]:
        """The manifests of every entry (unreadable ones skipped), oldest first."""
        out = []
        if not self.root.is_dir():
            return out
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                out.append(json.loads((entry / MANIFEST).read_text()))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda m: str(m.get("created", "")))

    def timed_entries(self, name: str, quick: bool) -> list[dict[str, Any]]:
        """The manifests of ``name``'s entries in this mode that record a runtime, oldest first (for ETAs)."""
        return [m for m in self.entries() if m.get("experiment") == name and m.get("quick") == quick
                and isinstance(m.get("runtime_s"), int | float)]

    def last_runtime(self, name: str, quick: bool) -> float | None:
        """The runtime of the newest entry of ``name`` in this mode (for ETAs), or None."""
        timed = self.timed_entries(name, quick)
        return float(timed[-1]["runtime_s"]) if timed else None

    def clean_stale(self) -> int:
        """Remove ``.tmp-<pid>@<host>-*`` folders whose writing process on this machine is gone (left by a killed
        run; another machine's are kept: see :class:`StagingWriter`), and the work
        folders (:meth:`work_dir`) of keys whose entry exists (a run killed between storing its result and removing
        its checkpoints) and the lock files killed runs left (:meth:`computing`); return how many. Work folders of
        unfinished keys are kept: they are what a rerun resumes. Nothing a live process is computing is touched
        (a ``--force`` run of a key whose entry exists holds its lock)."""
        removed = 0
        if not self.root.is_dir():
            return removed
        for tmp in self.root.glob(".tmp-*"):
            writer = staging_writer(tmp.name)
            if writer is not None and not writer.alive:
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        work = self.root / ".work"
        for folder in sorted(work.iterdir()) if work.is_dir() else ():
            lock = folder.name.endswith(".lock")
            key = folder.name.removesuffix(".lock")
            finished = folder.is_dir() and (self.root / key / MANIFEST).is_file()
            if not (finished or (lock and folder.is_file())) or not key or key.startswith("."):
                continue  # an unfinished key's checkpoints, or a lock file removed since the listing
            with _key_lock(self.lock_path(key), key, self.root, None) as idle:
                if idle and folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                removed += idle  # a lock file: released (and removed) on leaving the block
        return removed


def lookup(key: str, root: Path | str | None = None) -> Path | None:
    """:meth:`Cache.lookup` on ``root`` (default :func:`default_root`)."""
    return Cache(Path(root) if root is not None else default_root()).lookup(key)


def store(key: str, result_dir: Path | str, root: Path | str | None = None,
          inputs: dict[str, Any] | None = None) -> Path:
    """:meth:`Cache.store` on ``root`` (default :func:`default_root`)."""
    return Cache(Path(root) if root is not None else default_root()).store(key, result_dir, inputs)


def _result_files(entry: Path) -> dict[str, str]:
    """``{relative path: digest}`` of the result an entry holds: the files its manifest lists (what
    :meth:`Cache.check` verified), not files added to the folder by hand since (review revC 8: those were installed on
    a hit, unverified). A folder without a readable manifest (a result not stored yet) is all its files."""
    try:
        files = json.loads((entry / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    if isinstance(files, dict) and all(isinstance(v, str) for v in files.values()):
        return {str(rel): digest for rel, digest in files.items() if rel != MANIFEST}
    return _tree_digests(entry, frozenset({MANIFEST}))


def install(entry: Path, dest: Path) -> bool:
    """Make ``dest`` a copy of a cache entry's result files (those its manifest lists; not the manifest, nor a file
    added to the entry by hand), its ``summary.md`` rendered afresh from its ``result.json`` by the current report
    code (:func:`_rendered_summary`); return False if it already was.

    An up-to-date ``dest`` is left untouched (its files keep their modification times). Otherwise the copy is
    staged next to ``dest`` and renamed into place, so a failed copy leaves the previous ``dest`` (or none). A copy
    that fails (disk full, read-only or forbidden folder) is a one-line :class:`DataError` naming ``dest``.
    """
    for _ in range(INSTALL_ATTEMPTS):
        wanted = _result_files(entry)
        try:
            summary = _rendered_summary(entry, wanted)
        except _EntryChangedError:
            continue
        if summary is not None:
            wanted[SUMMARY] = hashlib.sha256(summary).hexdigest()
        # files a user added to dest are no part of the comparison (and staged_folder keeps them)
        if dest.is_dir() and _tree_digests(dest, frozenset(foreign_entries(dest))) == wanted:
            return False
        try:
            with staged_folder(dest) as stage:
                _copy_verified(entry, stage.path, wanted, summary)
            return True
        except _EntryChangedError:
            continue  # replaced while it was copied (a --force store beside us): copy the entry that is there now
        except OSError as e:
            raise DataError(f"cannot write {dest}: {e.strerror or e}; free space or choose another output folder"
                            ) from None
    raise DataError(f"the cache entry {entry} was replaced {INSTALL_ATTEMPTS} times while it was being installed "
                    f"into {dest} (another process storing results under the same key): rerun the command once it has "
                    f"finished")


INSTALL_ATTEMPTS = 3
"""Copies :func:`install` tries of an entry that another process keeps replacing meanwhile."""


class _EntryChangedError(Exception):
    """The entry :func:`install` copies from was replaced during the copy (its files no longer match its manifest)."""


SUMMARY = "summary.md"
"""The file of a result that is rendered from its ``result.json`` when installed (:func:`install`), not copied."""


def _rendered_summary(entry: Path, wanted: Mapping[str, str]) -> bytes | None:
    """``summary.md`` of the result in ``entry``, rendered now from its ``result.json`` by the current report code
    (:func:`flowvar.report.markdown.result_markdown`, as :mod:`flowvar.experiments.base` writes it after a run and
    ``flowvar show --write-report`` rewrites it), or None when ``wanted`` lists no ``result.json``.

    Why rendered and not copied (review cacheR 2): the report is front end, outside the key, so an entry's stored
    summary.md was written by the renderer of the day it was stored; a hit installed those words next to a report.md
    re-rendered now, and a corrected sentence never reached a cached experiment. The entry keeps its summary.md,
    checksummed like its other files, so its integrity checks still cover every byte it holds; the numbers it
    is rendered from are its verified ``result.json``, read once here and checked against ``wanted`` (a
    replacement meanwhile is :class:`_EntryChangedError`)."""
    from flowvar.report.markdown import result_markdown  # lazily, as base.py does: the cache loads without the report

    if "result.json" not in wanted:
        return None
    try:
        data = (entry / "result.json").read_bytes()
    except FileNotFoundError as err:
        raise _EntryChangedError("result.json") from err
    if hashlib.sha256(data).hexdigest() != wanted["result.json"]:
        raise _EntryChangedError("result.json")
    return result_markdown(Result.from_dict(json.loads(data))).encode()


def _copy_verified(entry: Path, stage: Path, wanted: dict[str, str], summary: bytes | None = None) -> None:
    """Copy the files ``wanted`` (``{relative path: digest}``, the manifest read before) of ``entry`` into ``stage``
    and check each copy's digest: a lookup verified the entry, but another process may replace it (two renames,
    :meth:`Cache.store`) before or while it is copied, which would mix two results' files. A source file gone or
    differing from the manifest raises :class:`_EntryChangedError`; a write that fails stays an ``OSError``.
    ``summary``: the bytes written as ``summary.md`` instead of the entry's (:func:`_rendered_summary`)."""
    if summary is not None:
        (stage / SUMMARY).write_bytes(summary)
    for rel, digest in wanted.items():
        if summary is not None and rel == SUMMARY:
            continue
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(entry / rel, target)
        except FileNotFoundError as err:
            if not (entry / rel).exists():  # the source went (the entry set aside), not the destination
                raise _EntryChangedError(rel) from err
            raise
        if file_digest(target) != digest:
            raise _EntryChangedError(rel)


def install_entry(entry: Path, dest: Path, name: str, root: Path, key: str, hit: bool = False) -> bool:
    """:func:`install` the cache entry ``entry`` (of ``key``, in the cache ``root``) into ``dest``, for ``flowvar run
    --cache``, ``reproduce`` and ``sweep`` alike. A ``dest`` that cannot take it (a full disk, a read-only folder) is
    the install's one-line error followed by the one text that says the result (``hit``: cached, else computed) is
    complete in the cache and the same command installs it without recomputing."""
    try:
        return install(entry, dest)
    except (ConfigError, DataError) as err:
        raise type(err)(f"{err}; the {'cached' if hit else 'computed'} result of {name} is complete in the cache "
                        f"{root} ({key}): once it can be written, rerun the same command to install it without "
                        f"recomputing") from None


@dataclass
class CachedRun:
    """The outcome of :func:`run_cached`: the result, whether it came from the cache, and where it lives: the cache
    ``entry`` and its installed copy ``output`` (the entry itself when nothing was installed)."""

    result: Result
    key: str
    hit: bool
    entry: Path
    output: Path
    corrupted: str | None = None


def _work_checkpoint_error(err: FlowvarError, work: Path, key: str, root: Path) -> FlowvarError:
    """``err`` itself, or, for a checkpoint of the work folder that cannot be resumed (corrupt, foreign, of another
    run: :mod:`flowvar.train` marks them with ``checkpoint_path`` and ``problem``), the same error with the remedy a
    command-line user can apply: train's own ("point checkpoint_dir at another folder") names no CLI option."""
    path = getattr(err, "checkpoint_path", None)
    problem = getattr(err, "problem", None)
    if not isinstance(path, Path) or not problem or work not in path.parents:
        return err
    return type(err)(f"the checkpoint {path} {problem}; it belongs to the interrupted run {key} of the cache {root}: "
                     f"delete {path.parent} to retrain that training only, or the run's work folder {work} (`flowvar "
                     f"cache prune --all-work --cache {root}` deletes every work folder) to start the run afresh")


def run_cached(name: str, out_dir: Path | str | None, cache: Cache, *, quick: bool = False, seed: int | None = None,
               overrides: dict[str, Any] | None = None, config_file: Path | str | None = None,
               force: bool = False, progress: bool = False,
               on_corrupt: Callable[[str, str], None] | None = None,
               on_wait: Callable[[str], None] | None = None) -> CachedRun:
    """Run experiment ``name`` unless ``cache`` holds its result; then make sure it does, and install it into
    ``out_dir/name`` (``out_dir`` None: install nothing, the result is the entry).

    On a hit the cached files are installed (nothing is recomputed); on a miss, or with ``force``, the experiment
    runs via :func:`flowvar.experiments.base.run_experiment` into a staging folder of the cache, is stored by a
    rename, then installed (:func:`_compute_and_store`). With an ``out_dir``: an output folder that cannot take the
    result (a full disk) is an error saying the result is in the cache and the same command installs it; a cache
    that cannot store the finished result, an error saying it is complete in ``out_dir/name``; a cache whose disk
    fills while the experiment writes its own files there, a :class:`CacheFullError` (that result is lost).
    Without (``flowvar reproduce`` and ``flowvar sweep``, whose parent process installs): a cache that cannot store
    it is an :class:`UnstoredResultError` naming the staging folder that holds it, for the caller to install where
    there is room.
    The run's trainings checkpoint into :meth:`Cache.work_dir` and resume from it when an earlier run of the same
    key was interrupted; it is removed once the result is stored (and before a ``force`` run). Another process
    computing the same key in the same cache is waited for (:meth:`Cache.computing`; ``on_wait`` announces it,
    default: a line on stderr), and its stored result is then used unless ``force``. With an ``out_dir``, what
    killed runs left in the cache is removed before computing (:meth:`Cache.clean_stale`), as ``flowvar reproduce``
    and ``flowvar sweep`` do once in their parent process.
    """
    from flowvar import distributed
    from flowvar.experiments.base import build_config, get_experiment

    spec = get_experiment(name)
    # a former name (ALIASES) runs, and is keyed, under the current one: its code version then covers the
    # experiment's module, and its output is where run_experiment writes it
    name = spec.name
    config = build_config(spec, quick=quick, seed=seed, overrides=overrides, config_file=config_file)
    key = cache_key(name, config, quick)
    if distributed.env_world_size() > 1:
        # under torchrun the ranks train together, so they must agree on hit or miss: rank 0 alone looks up, locks,
        # stores and installs, and tells the others (a lock taken by every rank deadlocked: rank 0 held it and
        # waited in the process group for rank 1, which waited for the lock)
        distributed.init_from_env()
        if not distributed.is_main_process():
            return _follow_rank0(name, key, config, quick, cache, progress)
    output = Path(out_dir) / name if out_dir is not None else None
    problems: list[str] = []

    def corrupt(k: str, reason: str) -> None:
        if reason in problems:  # the lookup under the lock found the same entry it could not remove: said once
            return
        problems.append(reason)
        if on_corrupt is not None:
            on_corrupt(k, reason)
        else:
            log.warning("corrupted cache entry %s (%s): recomputing", k, reason)

    told: list[str] = []

    def unreadable(k: str, message: str) -> None:
        if message not in told:  # the lookup under the lock finds the same entry: said once
            told.append(message)
            log.warning("%s", message)

    entry = None if force else cache.lookup(key, on_corrupt=corrupt, on_unreadable=unreadable)
    hit = entry is not None
    result: Result | None = None
    if entry is not None:
        _tell_other_ranks(entry)
    else:
        cache.check_writable()
        # what killed runs left (review cacheR 6: only reproduce and sweep removed it): their staging folders, the
        # work folders of keys stored since, their lock files; never what a live process writes or computes. Only
        # where this call installs (`flowvar run --cache`): reproduce and sweep (no out_dir, their parent installs)
        # clean once in the parent before they start, and their workers, cleaning again, would take the lock files
        # of the keys their siblings' killed workers left while those are being retried
        removed = cache.clean_stale() if output is not None else 0
        if removed:
            log.info("removed %d leftovers of interrupted runs from the cache %s (staging folders, work folders of "
                     "stored results, lock files)", removed, cache.root)
        with cache.computing(key, on_wait):
            # a process sharing the cache may have stored the key while this one waited for it
            entry = None if force else cache.lookup(key, on_corrupt=corrupt, on_unreadable=unreadable)
            hit = entry is not None
            _tell_other_ranks(entry)
            if entry is None:
                try:
                    entry, result = _compute_and_store(name, key, config, quick, output, cache, force, progress)
                except UnstoredResultError as unstored:
                    if output is None:
                        raise
                    raise DataError(install_unstored(unstored, output, name)[1]) from None
    if output is not None:
        install_entry(entry, output, name, cache.root, key, hit)
    if result is None:
        result = Result.load(entry / "result.json")
    return CachedRun(result, key, hit, entry, output if output is not None else entry,
                     problems[0] if problems else None)


def _tell_other_ranks(entry: Path | None) -> None:
    """Rank 0 of a torchrun group: tell the other ranks (:func:`_follow_rank0`) the key's cached result (a hit: the
    result itself, so they need not see the cache's disk) or None (a miss: compute it together). One collective,
    matched by theirs; nothing without a process group."""
    from flowvar import distributed

    if distributed.is_distributed():
        distributed.gather_objects(Result.load(entry / "result.json").to_dict() if entry is not None else None)


def _follow_rank0(name: str, key: str, config: Any, quick: bool, cache: Cache, progress: bool) -> CachedRun:
    """A rank > 0 of :func:`run_cached` under torchrun: wait for rank 0's hit or miss; on a miss run the experiment
    beside it — its trainings are collective, and they resume from the same checkpoints in the cache's work folder —
    into a folder of its own that is discarded (rank 0 writes, stores and installs the result)."""
    from flowvar import distributed
    from flowvar.experiments.base import run_experiment

    cached = distributed.gather_objects(None)[0]
    entry = cache.root / key
    if cached is not None:
        return CachedRun(Result.from_dict(cached), key, True, entry, entry)
    with tempfile.TemporaryDirectory(prefix=f"flowvar-rank{distributed.world().rank}-") as scratch:
        result = run_experiment(name, Path(scratch), quick=quick, config=config, progress=progress,
                                work_dir=cache.work_dir(key))
    return CachedRun(result, key, False, entry, entry)


def install_unstored(unstored: UnstoredResultError, dest: Path, name: str) -> tuple[bool, str]:
    """Install a result the cache could not store (``unstored``, :class:`UnstoredResultError`) into ``dest``, delete its
    staging folder, and return ``(installed, message)``: the message tells where the result is — complete in
    ``dest`` and not cached, or, when ``dest`` cannot take it either, lost (both disks refused it)."""
    refused = unstored.refused
    try:
        install(unstored.folder, dest)
    except (ConfigError, DataError) as lost:
        return False, (f"{refused}; installing it into {dest} failed too ({lost}): the computed result of {name} is "
                       f"lost")
    finally:
        remove_path(unstored.staging)
    return True, (f"cannot store the result of {name} in the cache {refused.root}: {refused.reason}; the result is "
                  f"complete in {dest} (installed there), the cache was not updated: {refused.remedy} for the next "
                  f"run to find it")


def _compute_and_store(name: str, key: str, config: Any, quick: bool, output: Path | None, cache: Cache,
                       force: bool, progress: bool) -> tuple[Path, Result]:
    """Run a cache miss of :func:`run_cached` (its key's lock held) and store it: ``(entry, result)``.

    The experiment writes into a staging folder of the cache (review revC 3: written into the output folder first,
    a full output disk lost a result the cache had room for), which then becomes the entry by a rename; the caller
    installs it into ``output`` (None: the caller's caller does). Where the cache's disk refuses to *store* the
    finished result (the manifest, the rename), an :class:`UnstoredResultError` hands the staging folder, the complete
    result, to the caller, who installs it where there is room. Where it refuses the experiment's *own* writes into
    the staging folder (result.json, a figure: written while the experiment runs), the run stops there and its result
    is lost, only the trainings' checkpoints kept where they fit: a :class:`CacheFullError` for a full disk (review
    cacheR 2), else a :class:`WriteError`, each naming the cache to free or replace."""
    from flowvar.experiments.base import run_experiment
    from flowvar.train import CHECKPOINT_NAME, ResumeWarning

    work = cache.work_dir(key)
    if work.exists() and not work.is_dir():  # garbage where the checkpoints go: nothing to resume
        log.warning("%s is not a folder of checkpoints: removed", work)
        remove_path(work)
    if force:
        shutil.rmtree(work, ignore_errors=True)  # recompute means from scratch, checkpoints included
    inputs = key_inputs(name, config, quick)
    if work.is_dir() and any(work.rglob(CHECKPOINT_NAME)):
        log.warning("resuming the interrupted run %s from its checkpoints in %s", key, work)
    cache.start_work(key, inputs)
    try:
        stage = cache.new_staging("run-")  # the entry is made in it
    except ConfigError:
        cache._drop_unused_work(key)
        raise
    handed_over = False
    try:
        try:
            with warnings.catch_warnings():
                # its trainings resume on purpose, announced once above, not once per training
                warnings.simplefilter("ignore", ResumeWarning)
                result = run_experiment(name, stage, quick=quick, config=config, progress=progress, work_dir=work)
        except FlowvarError as err:
            cache._drop_unused_work(key)
            if isinstance(err, WriteError) and stage in Path(err.path).parents:  # the cache's disk refused it
                # the writer's remedy may name the output folder; it is the cache that is full. Every file of a run
                # is written by files.atomic_write_bytes (a WriteError); a writer raising a plain DataError would
                # keep its own remedy here
                where = f", then installed into {output}" if output is not None else ""
                remedy = (f"free space in the cache {cache.root} or choose another --cache (the result is computed "
                          f"into the cache{where})")
                if _is_disk_full(err):
                    raise CacheFullError(err.path, err.problem, remedy) from None
                raise WriteError(err.path, err.problem, remedy) from None
            raise _work_checkpoint_error(err, work, key, cache.root) from None
        except BaseException:
            cache._drop_unused_work(key)  # an interrupted run keeps its checkpoints, not an empty folder
            raise
        try:
            entry = cache.store(key, stage / name, inputs, move=True)
        except BaseException as err:
            # a store that failed (a full disk) keeps the run's checkpoints, not a folder listed as resumable that
            # holds only its record
            cache._drop_unused_work(key)
            if not isinstance(err, StoreError):
                raise
            handed_over = True  # the complete result stays in the staging folder, for the caller to install
            raise UnstoredResultError(err, key, stage / name, stage) from None
        shutil.rmtree(work, ignore_errors=True)
        return entry, result
    finally:
        if not handed_over:
            shutil.rmtree(stage, ignore_errors=True)


__all__ = ["CACHE_FORMAT", "FRONT_END", "STORE_REMEDY", "Cache", "CacheFullError", "CachedRun", "StagingWriter",
           "StoreError",
           "Unreadable", "UnstoredResultError", "cache_key", "code_version", "config_dict", "data_digest",
           "data_digests", "default_root", "host_tag", "install", "install_entry", "install_unstored",
           "is_data_path_field", "key_inputs", "library_versions", "lookup", "run_cached", "source_digest",
           "staging_prefix", "staging_writer", "store", "unreadable_message", "writable_cache"]
