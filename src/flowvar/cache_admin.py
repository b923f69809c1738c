"""Housekeeping of a result cache (:mod:`flowvar.cache`): ``flowvar cache list`` and ``flowvar cache prune``.

A cache only grows: entries of older code versions are never looked up again, and the work folders of interrupted
runs of older code or configs stay. :func:`survey` says what a cache folder holds — each entry with its experiment,
mode, size, age and whether its code version is the current one for its experiment; each work folder
(``.work/<key>``) with its size, age, whether another process computes its key now (its lock is held) and whether
current code can resume it (from its ``inputs.json``, :meth:`flowvar.cache.Cache.start_work`); the staging folders
(``.tmp-<pid>@<host>-*``) — and :func:`prune` removes what no run of this code uses again. "Current" is relative to this
installation: a cache shared with an older flowvar loses that one's entries. Entries and work folders recorded with
another torch version, another version of a library that computes reported numbers
(:data:`flowvar.cache_key.KEYED_LIBRARIES`: numpy, scipy, POT, ...) or another device (all part of the key) are of
*another installation*: a cache shared by machines (a GPU box and a laptop, a cluster's nodes) holds valid results of
each, so prune removes them only when asked (``other_installations``: after an upgrade, the old installation's). An
entry whose ``cache.json`` this user may not read (another user's, on a shared cache) is *not readable here* and
never pruned: it may be valid for its owner.

Reading is all :func:`survey` does. :func:`prune` takes each key's lock (:meth:`flowvar.cache.Cache.computing`)
while it removes the key's folders, so it never deletes under a process computing the key, and checks under the lock
that the folder is still what the survey saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowvar.cache import (
    CACHE_FORMAT,
    MANIFEST,
    WORK_INPUTS,
    Cache,
    _key_lock,
    code_version,
    staging_prefix,
    staging_writer,
)
from flowvar.cache_key import is_record_of, library_versions
from flowvar.errors import ConfigError, DataError
from flowvar.files import remove_path

OTHER_INSTALLATION = "other installation"
"""The state of an entry or work folder recorded with another torch version, keyed library version
(:data:`flowvar.cache_key.KEYED_LIBRARIES`) or device than this installation's."""
NOT_READABLE = "not readable here"
"""The state of an entry whose ``cache.json`` this user may not read (``PermissionError``): another user's, valid or
not; a lookup leaves it in place (:class:`flowvar.cache.Unreadable`), and so does prune."""
ENTRY_STATES = ("current", "outdated", OTHER_INSTALLATION, "corrupt", "unknown experiment", "unknown version",
                "unreadable", NOT_READABLE)
WORK_STATES = ("resumable", "outdated", OTHER_INSTALLATION, "stored", "unknown origin", "unknown experiment")
STAGING_STATES = ("being written", "left by a killed run")
_KEY_SHAPE = re.compile(r"[^./][^/]*-[0-9a-f]{16}")
"""What a key looks like (:func:`flowvar.cache.cache_key`: ``<experiment>-<16 hex digits>``): a folder in
``.work`` named otherwise is no work folder of flowvar's, whatever it holds, and is never touched."""


@dataclass(frozen=True)
class Item:
    """One thing in a cache folder: an entry, a work folder (``.work/<key>``) or a staging folder (``.tmp-*``)."""

    kind: str
    """``entry``, ``work`` or ``staging``."""
    name: str
    """The folder's name: the key for entries and work folders."""
    path: Path
    size: int
    """Bytes of its files (links not followed)."""
    age_s: float | None
    """Seconds since the entry was stored (its manifest's ``created``), or since a work or staging folder was last
    written (its newest file); None when unknown."""
    status: str
    """One of :data:`ENTRY_STATES`, :data:`WORK_STATES`, :data:`STAGING_STATES`."""
    experiment: str | None = None
    quick: bool | None = None
    locked: bool = False
    """Another process holds the key's lock (:meth:`Cache.computing`): it is being computed now."""
    version: str | None = None
    """The code version recorded with it, if any."""
    detail: str = ""
    """Why the status, when it needs saying (an unreadable manifest's error)."""

    def prunable(self, all_work: bool = False, other_installations: bool = False) -> bool:
        """Whether ``prune`` (``all_work``: ``prune --all-work``; ``other_installations``: also what another torch,
        keyed library or device computed) removes it, a lock held by another process aside."""
        if self.status == OTHER_INSTALLATION:  # valid for the installation that computed it (a shared cache)
            return other_installations or (self.kind == "work" and all_work)
        if self.kind == "entry":
            # no run of any installation looks these up (outdated) or uses them (a lookup deletes a corrupt one,
            # nothing reads an unreadable one); prune holds the key's lock, so none is a live run's entry being stored
            return self.status in ("outdated", "corrupt", "unreadable")
        if self.kind == "work":
            return all_work or self.status in ("outdated", "stored")
        return self.status == "left by a killed run"


@dataclass
class Survey:
    """:func:`survey`: the entries, the work folders and the staging folders of a cache, oldest first within
    each, and the count of folders in the cache root that are not entries (no ``cache.json``: left alone) and in
    ``.work`` that are not named like a key (left alone). ``work_link``: ``.work`` is a link, whose folders are
    neither listed nor pruned (they are outside the cache folder)."""

    root: Path
    entries: list[Item]
    work: list[Item]
    staging: list[Item]
    foreign: int = 0
    foreign_work: int = 0
    work_link: bool = False

    @property
    def is_cache(self) -> bool:
        """Whether the folder is a flowvar cache: it holds a ``.work`` folder (every run makes one,
        :meth:`Cache.check_writable`) or an entry whose ``cache.json`` names it. :func:`prune` removes nothing from
        any other folder (a mistyped ``--cache``: a home folder, an output folder)."""
        return (self.root / ".work").is_dir() or any(i.status != "unreadable" for i in self.entries)

    @property
    def items(self) -> list[Item]:
        return [*self.entries, *self.work, *self.staging]

    @property
    def size(self) -> int:
        """Total bytes: the sum of every item's size."""
        return sum(i.size for i in self.items)


@dataclass
class PruneReport:
    """:func:`prune`: what was removed (or, ``dry_run``, would be), what was kept although prunable and why
    (being computed, being written), what could not be removed and why, and the bytes freed (the removed items'
    sizes added up)."""

    root: Path
    dry_run: bool
    all_work: bool
    removed: list[Item]
    kept: list[tuple[Item, str]]
    failed: list[tuple[Item, str]]

    @property
    def freed(self) -> int:
        return sum(i.size for i in self.removed)


def _tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of ``path``, a file); links are counted as links, never followed."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, f)).st_size
    return total


def _newest_mtime(path: Path) -> float | None:
    """The latest modification time of ``path`` and everything under it (the last checkpoint written)."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return None
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for f in (*dirs, *files):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, f)).st_mtime)
    return newest


def _created(manifest: Mapping[str, Any]) -> float | None:
    """The manifest's ``created`` time (``%Y-%m-%dT%H:%M:%S%z``) as a Unix time, or None."""
    from datetime import datetime

    try:
        return datetime.strptime(str(manifest.get("created")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _held_elsewhere(lock: Path) -> bool:
    """Whether a process (this one included, through another open) holds the ``flock`` of ``lock``; creates
    nothing: no lock file, no holder. Where there is no ``fcntl`` nothing is ever held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class _Versions:
    """The current code version of each experiment registered in this process (flowvar's, and plugins' loaded
    before the survey), computed once each."""

    def __init__(self) -> None:
        import torch

        from flowvar.experiments.registry import experiments

        self.names = set(experiments())
        self.torch = str(torch.__version__)
        """This installation's torch version: part of every key (:func:`flowvar.cache.key_inputs`)."""
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        """The device a ``device: auto`` config resolves to here: part of such a config's key."""
        self.libraries = library_versions()
        """This installation's versions of the keyed libraries (None: not installed): part of every key."""
        self._cache: dict[str, str] = {}

    def current(self, experiment: str) -> str | None:
        if experiment not in self.names:
            return None
        if experiment not in self._cache:
            self._cache[experiment] = code_version(experiment)
        return self._cache[experiment]


def _other_installation(inputs: Mapping[str, Any], versions: _Versions) -> str | None:
    """Why a record of key inputs is another installation's (its torch version, the version of a keyed library
    (:func:`~flowvar.cache_key.library_versions`; ``none``: not installed), or the device its ``auto``/``cuda``
    config resolved to, differs from this one's: ``torch 2.3.0; this installation has 2.4.1, scipy 1.16.0; this
    installation has 1.17.1``), or None."""
    compared = [("torch", inputs.get("torch"), versions.torch),
                ("device", inputs.get("device"), versions.device)]
    recorded_libraries = inputs.get("libraries")
    if isinstance(recorded_libraries, Mapping):
        compared += [(name, recorded_libraries.get(name, "none") or "none", versions.libraries.get(name) or "none")
                     for name in sorted(set(recorded_libraries) | set(versions.libraries))]
    differences = [f"{what} {recorded}; this installation has {here}" for what, recorded, here in compared
                   if recorded is not None and str(recorded) != here]
    return ", ".join(differences) or None


def _judge(inputs: Any, versions: _Versions, current: str, other: str) -> tuple[str, str | None, str]:
    """``(status, recorded code version, detail)`` of a record of key inputs: ``current`` when its code version is
    this code's for its experiment, ``other`` when not."""
    if not isinstance(inputs, Mapping) or not inputs.get("code_version") or not inputs.get("experiment"):
        return "", None, "no code version recorded"
    version, experiment = str(inputs["code_version"]), str(inputs["experiment"])
    now = versions.current(experiment)
    if now is None:
        return "unknown experiment", version, f"{experiment} is not registered here (a plugin's? pass --plugin)"
    if inputs.get("format") != CACHE_FORMAT:
        return other, version, f"cache format {inputs.get('format')}, this code writes {CACHE_FORMAT}"
    return (current, version, "") if version == now else (other, version, f"code {version}; now {now}")


def _survey_entry(cache: Cache, folder: Path, versions: _Versions, now: float) -> Item:
    key = folder.name
    locked = _held_elsewhere(cache.lock_path(key))
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        # a manifest this user may not read is no sign of damage (another user's entry): kept, never pruned
        status = NOT_READABLE if isinstance(e, PermissionError) else "unreadable"
        return Item("entry", key, folder, _tree_size(folder), None, status, key.rpartition("-")[0] or None,
                    locked=locked, detail=f"unreadable {MANIFEST} ({reason})")
    created = _created(manifest)
    age = now - created if created is not None else None
    experiment = str(manifest.get("experiment")) if manifest.get("experiment") else None
    quick = manifest.get("quick") if isinstance(manifest.get("quick"), bool) else None
    inputs = manifest.get("inputs")
    if manifest.get("key") != key:
        status, version, detail = "unreadable", None, f"its {MANIFEST} names another key"
    elif not inputs and manifest.get("format") == CACHE_FORMAT:
        # nothing ties its result to its key: a lookup deletes it (an older format's is outdated, below)
        status, version, detail = "corrupt", None, "it records no key inputs"
    elif inputs and not is_record_of(inputs, key):
        # the key is the hash of the inputs: a record that does not hash to it was edited (a lookup deletes it)
        status, version, detail = "corrupt", None, "its recorded inputs do not hash to its key"
    else:
        status, version, detail = _judge({**(inputs if isinstance(inputs, Mapping) else {}),
                                          "format": manifest.get("format")}, versions, "current", "outdated")
        status = status or "unknown version"
        other = _other_installation(inputs, versions) if isinstance(inputs, Mapping) else None
        if status == "current" and other:
            # torch, the keyed libraries and the device are part of the key: no run of this installation looks it
            # up, one of the other does
            status, detail = OTHER_INSTALLATION, other
    return Item("entry", key, folder, _tree_size(folder), age, status, experiment, quick, locked, version, detail)


def _survey_work(cache: Cache, folder: Path, versions: _Versions, now: float) -> Item:
    key = folder.name
    locked = _held_elsewhere(cache.lock_path(key))
    mtime = _newest_mtime(folder)
    age = now - mtime if mtime is not None else None
    size = _tree_size(folder)
    experiment = key.rpartition("-")[0] or None
    if not folder.is_dir() or folder.is_symlink():
        return Item("work", key, folder, size, age, "unknown origin", experiment, None, locked, None, "not a folder")
    if (cache.root / key / MANIFEST).is_file():
        return Item("work", key, folder, size, age, "stored", experiment, None, locked, None,
                    "its result is stored: nothing left to resume")
    try:
        inputs = json.loads((folder / WORK_INPUTS).read_text())
    except FileNotFoundError:
        return Item("work", key, folder, size, age, "unknown origin", experiment, None, locked, None,
                    f"no {WORK_INPUTS}: made by an older flowvar")
    except (OSError, ValueError) as e:
        return Item("work", key, folder, size, age, "unknown origin", experiment, None, locked, None,
                    f"unreadable {WORK_INPUTS} ({type(e).__name__})")
    if not is_record_of(inputs, key):
        return Item("work", key, folder, size, age, "unknown origin", experiment, None, locked, None,
                    f"its {WORK_INPUTS} is not the record of this key")
    status, version, detail = _judge(inputs, versions, "resumable", "outdated")
    other = _other_installation(inputs, versions)
    if status == "resumable" and other:
        # another torch, library or device is another key: the installation that made these checkpoints resumes
        # them
        status, detail = OTHER_INSTALLATION, other
    quick = inputs.get("quick") if isinstance(inputs.get("quick"), bool) else None
    return Item("work", key, folder, size, age, status or "unknown origin", str(inputs["experiment"]), quick, locked,
                version, detail)


def survey(cache: Cache) -> Survey:
    """What ``cache`` holds, with sizes, ages and states (``flowvar cache list``); reads only.

    Entries are *current* when the code version in their manifest is this installation's
    :func:`~flowvar.cache.code_version` of their experiment, *outdated* otherwise (or of another cache format): no
    run of this code looks them up again; *other installation* when recorded with another torch version, keyed
    library version or device (part of the key: no run of this installation looks them up, one of that installation
    does); *corrupt* when their recorded inputs do not hash to their key or they record none (the state is derived
    from the key, as a lookup does: it deletes them); *unknown version* when their recorded inputs name no code
    version, *unreadable* when their manifest cannot be read (or names another key), *not readable here* when this
    user may not read it (another user's: kept). Work folders are *resumable* (their ``inputs.json`` names the
    current code version, torch, libraries and device), *outdated* (another code version), *other installation*
    (another torch, library or device), *stored* (their key's entry exists: nothing left to resume) or of
    *unknown origin*
    (no readable ``inputs.json``: made by an older flowvar). Entries and work folders of experiments not registered
    in this process (a plugin's, unless loaded) are *unknown experiment*. Staging folders (``.tmp-<pid>@<host>-*``)
    are *being written* while their process lives, else *left by a killed run*; another machine's (a cache shared by
    a cluster) are kept, since only that machine can tell. Folders in ``.work`` not named like a
    key are counted (``foreign_work``), not listed; a ``.work`` that is a link is not looked into (``work_link``).
    A missing cache folder is a one-line :class:`ConfigError`, an unreadable one a :class:`DataError`.
    """
    root = cache.root
    if not root.exists():
        raise ConfigError(f"no cache folder {root}; name the cache with --cache DIR (flowvar reproduce's is "
                          f"OUT/.cache, runs/.cache by default)")
    if not root.is_dir():
        raise ConfigError(f"the cache {root} is a file; name the cache folder with --cache DIR")
    try:
        children = sorted(root.iterdir())
        work_root = root / ".work"
        # a linked .work leads out of the cache folder: nothing there is listed, so nothing there is pruned
        work_link = work_root.is_symlink()
        # lock files are no folders of their own (they mark keys as locked); dot names are nobody's key
        work_children = sorted(p for p in work_root.iterdir() if not p.name.startswith(".")
                               and not (p.name.endswith(".lock") and p.is_file())) \
            if work_root.is_dir() and not work_link else []
    except OSError as e:
        raise DataError(f"cannot read the cache folder {root}: {e.strerror or e}; make it readable") from None
    versions, now = _Versions(), time.time()
    entries, staging, foreign = [], [], 0
    for child in children:
        writer = staging_writer(child.name)
        if writer is not None:
            mtime = _newest_mtime(child)
            state = ("being written" if writer.alive else "left by a killed run") if writer.local else \
                "another machine's (being written, or left there: only that machine can tell; kept)"
            staging.append(Item("staging", child.name, child, _tree_size(child),
                                now - mtime if mtime is not None else None, state))
        elif child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue  # .work, lock files, anything of the user's: not entries
        elif not (child / MANIFEST).exists():
            foreign += 1  # a folder that is not an entry (no manifest at all): never touched
        else:
            entries.append(_survey_entry(cache, child, versions, now))
    work = [_survey_work(cache, child, versions, now) for child in work_children if _KEY_SHAPE.fullmatch(child.name)]
    foreign_work = len(work_children) - len(work)

    def oldest_first(items: list[Item]) -> list[Item]:
        return sorted(items, key=lambda i: (-(i.age_s if i.age_s is not None else float("inf")), i.name))

    return Survey(root, oldest_first(entries), oldest_first(work), oldest_first(staging), foreign, foreign_work,
                  work_link)


def _recorded_version(item: Item) -> str | None:
    """The code version an entry's manifest or a work folder's record names now (None if none or unreadable)."""
    try:
        if item.kind == "entry":
            return json.loads((item.path / MANIFEST).read_text()).get("inputs", {}).get("code_version")
        return json.loads((item.path / WORK_INPUTS).read_text()).get("code_version")
    except (OSError, ValueError, AttributeError):
        return None


def _delete(cache: Cache, path: Path) -> None:
    """Rename ``path`` to a staging name of this process, then delete it: a reader sees the folder whole or not at
    all, and a prune killed midway leaves a ``.tmp-<pid>@<host>-*`` folder that the next run's clean-up removes."""
    trash = cache.root / f"{staging_prefix('prune-')}{path.name}"
    remove_path(trash)
    path.rename(trash)
    remove_path(trash)
    if trash.exists() or trash.is_symlink():
        raise OSError(f"could not delete {trash}")


_GONE = "gone since it was listed"
"""What :func:`_prune_one` says of a folder that another process (a run, another prune) removed first: not
reported as removed by this prune, whose ``freed`` counts only what it removed."""


def _changed(cache: Cache, item: Item, versions: _Versions) -> str | None:
    """Why ``item`` is no longer what the survey saw, checked under its key's lock; None if it still is."""
    if not (item.path.exists() or item.path.is_symlink()):
        return _GONE
    if item.status == "outdated" and _recorded_version(item) != item.version:
        return "changed since it was listed"  # a --force run may have replaced it
    if item.kind == "entry" and _survey_entry(cache, item.path, versions, time.time()).status != item.status:
        return "changed since it was listed"  # replaced by a whole entry of another state (a current one)
    if item.status == "stored" and not (cache.path(item.name) / MANIFEST).is_file():
        # its entry went (a lookup deletes a corrupted one) and a run may have checkpointed here since: resumable
        return "changed since it was listed (its entry is gone: a run may resume it)"
    return None


def _prune_one(cache: Cache, item: Item, versions: _Versions) -> str | None:
    """Remove one prunable item; return None, or why it was kept (:data:`_GONE`: removed by another process)."""
    if item.kind == "staging":
        writer = staging_writer(item.name)
        if writer is not None and writer.alive:
            return "being written" if writer.local else "another machine's"  # a pid reused since the survey
        if not (item.path.exists() or item.path.is_symlink()):
            return _GONE
        remove_path(item.path)
        return None
    with _key_lock(cache.lock_path(item.name), item.name, cache.root, None) as idle:
        if not idle:
            return "being computed"
        why = _changed(cache, item, versions)
        if why is None:
            _delete(cache, item.path)
    return why


def prune(cache: Cache, *, dry_run: bool = False, all_work: bool = False,
          other_installations: bool = False) -> PruneReport:
    """Remove what no run of this code uses again (``flowvar cache prune``) and say what and how many bytes.

    Removed: outdated, corrupt and unreadable entries, outdated work folders, work folders of stored keys, staging
    folders of killed runs; with ``all_work`` every work folder (resumable, unknown-origin and other installations'
    too: those runs start over); with ``other_installations`` the entries and work folders of another torch version,
    keyed library version or device (kept otherwise: on a cache shared by installations they are the other one's
    valid results). Never a key another process holds (checked again under the key's lock, which prune takes while
    it removes), nor an entry this user may not read (*not readable here*: another user's), nor a staging folder
    whose process lives, nor a folder without ``cache.json`` (not an entry), nor a folder in ``.work`` not
    named like a key, nor anything through a ``.work`` that is a link. Under each key's lock it checks that the
    folder is still what the survey saw (else it is kept, or skipped when another process removed it first). A
    folder that is not a flowvar cache (:attr:`Survey.is_cache`: no ``.work``, no entry) is a one-line
    :class:`ConfigError`, nothing removed. A folder is renamed out of place before it is deleted, so a reader sees
    it whole or not at all. ``dry_run``: remove nothing, report the same. ``freed`` = the sum of the removed
    items' sizes.
    """
    found = survey(cache)
    if not found.is_cache:
        from flowvar.runner import output_folder_hint  # the output folders' marks; the runner is slower to import

        raise ConfigError(f"{cache.root} is not a flowvar cache (no .work folder, no entry with its {MANIFEST}): "
                          f"nothing pruned; name the cache folder with --cache DIR{output_folder_hint(cache.root)}")
    report = PruneReport(cache.root, dry_run, all_work, [], [], [])
    versions = _Versions()
    for item in found.items:
        if not item.prunable(all_work, other_installations):
            continue
        if item.locked:
            report.kept.append((item, "being computed"))
            continue
        if dry_run:
            report.removed.append(item)
            continue
        try:
            why = _prune_one(cache, item, versions)
        except OSError as e:
            report.failed.append((item, str(e.strerror or e)))
            continue
        if why is None:
            report.removed.append(item)
        elif why != _GONE:
            report.kept.append((item, why))
    return report


def format_size(n: int) -> str:
    """Bytes as ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.1 GiB`` (powers of 1024)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def format_age(seconds: float | None) -> str:
    """An age as ``40 s``, ``12 min``, ``5 h``, ``3 d`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    s = max(0.0, seconds)
    for limit, unit, div in ((120, "s", 1), (120 * 60, "min", 60), (48 * 3600, "h", 3600)):
        if s < limit:
            return f"{int(s // div)} {unit}"
    return f"{int(s // 86400)} d"


def _table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as left-aligned columns, two spaces apart, indented by two."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _mode(item: Item) -> str:
    return "?" if item.quick is None else ("quick" if item.quick else "full")


def _state(item: Item) -> str:
    return f"{item.status} ({item.detail})" if item.detail and item.status not in ("current", "resumable") \
        else item.status


def _by_status(items: list[Item]) -> str:
    counts: dict[str, list[int]] = {}
    for i in items:
        counts.setdefault(i.status, [0, 0])
        counts[i.status][0] += 1
        counts[i.status][1] += i.size
    return ", ".join(f"{n} {status} {format_size(b)}" for status, (n, b) in counts.items())


def _n(count: int, noun: str) -> str:
    """``1 entry``, ``2 entries``, ``1 work folder``, ``3 work folders``."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def format_survey(survey: Survey) -> str:
    """The text of ``flowvar cache list``: one line per entry (key, experiment, quick/full, current/outdated, size,
    age), per work folder (key, size, age, locked, resumable or not) and per staging folder, then the totals and
    what ``prune`` would free."""
    lines = [f"cache {survey.root}"]
    if survey.entries:
        lines.append(f"entries ({len(survey.entries)}, {format_size(sum(i.size for i in survey.entries))}):")
        lines += _table([["KEY", "EXPERIMENT", "MODE", "CODE", "SIZE", "AGE", "LOCK"]] +
                        [[i.name, i.experiment or "?", _mode(i), _state(i), format_size(i.size), format_age(i.age_s),
                          "locked" if i.locked else "-"] for i in survey.entries])
    else:
        lines.append("entries: none")
    if survey.work:
        lines.append(f"work folders, the checkpoints of unfinished runs ({len(survey.work)}, "
                     f"{format_size(sum(i.size for i in survey.work))}):")
        lines += _table([["KEY", "SIZE", "AGE", "LOCK", "STATE"]] +
                        [[i.name, format_size(i.size), format_age(i.age_s),
                          "locked (being computed)" if i.locked else "-", _state(i)] for i in survey.work])
    else:
        lines.append("work folders: none")
    if survey.staging:
        lines.append(f"staging folders ({len(survey.staging)}, {format_size(sum(i.size for i in survey.staging))}):")
        lines += _table([[i.name, format_size(i.size), format_age(i.age_s), i.status] for i in survey.staging])
    lines.append(f"total {format_size(survey.size)}: {_n(len(survey.entries), 'entry')}"
                 + (f" ({_by_status(survey.entries)})" if survey.entries else "")
                 + f", {_n(len(survey.work), 'work folder')}"
                 + (f" ({_by_status(survey.work)})" if survey.work else "")
                 + (f", {_n(len(survey.staging), 'staging folder')}" if survey.staging else ""))
    prunable = [i for i in survey.items if i.prunable() and not i.locked]
    more = [i for i in survey.items if i.prunable(True) and not i.prunable() and not i.locked]
    others = [i for i in survey.entries if i.status == OTHER_INSTALLATION]
    lines.append(f"`flowvar cache prune` would free {format_size(sum(i.size for i in prunable))} "
                 f"({_n(len(prunable), 'folder')}); with --all-work {format_size(sum(i.size for i in more))} more "
                 f"({_n(len(more), 'work folder')} this code resumes, of unknown origin or of another installation)")
    if others:
        lines.append(f"note: {_n(len(others), 'entry')} of another installation (another torch, library or device), "
                     f"{format_size(sum(i.size for i in others))}: valid there, kept by prune (--other-installations "
                     f"removes them)")
    if survey.foreign:
        lines.append(f"note: {_n(survey.foreign, 'folder')} here without {MANIFEST} (not cache entries): left alone")
    if survey.foreign_work:
        lines.append(f"note: {_n(survey.foreign_work, 'folder')} in .work not named like a cache key (not work "
                     f"folders): left alone")
    if survey.work_link:
        lines.append(f"note: {survey.root / '.work'} is a link out of the cache folder: the work folders there are "
                     f"not listed, and prune never removes them")
    if not survey.is_cache:
        from flowvar.runner import output_folder_hint

        lines.append("note: this folder is not a flowvar cache (no .work folder, no entry): prune removes nothing "
                     "here" + output_folder_hint(survey.root))
    return "\n".join(lines)


def _describe(item: Item) -> str:
    what = {"entry": "entry", "work": "work folder", "staging": "staging folder"}[item.kind]
    about = ", ".join(x for x in (item.experiment, _mode(item) if item.kind == "entry" else None, _state(item))
                      if x)
    return f"{what} {item.name} ({about}, {format_size(item.size)})"


def format_prune(report: PruneReport) -> str:
    """The text of ``flowvar cache prune``: a line per folder removed (``would remove`` with ``--dry-run``), kept
    though prunable, or failed, then the space freed."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [f"cache {report.root}" + (" (dry run: nothing is removed)" if report.dry_run else "")]
    if report.all_work:
        lines.append("--all-work: removing every work folder, those current code would resume included: those "
                     "interrupted runs will start over")
    lines += [f"{verb} {_describe(i)}" for i in report.removed]
    lines += [f"kept {_describe(i)}: {why}" for i, why in report.kept]
    lines += [f"failed to remove {_describe(i)}: {why}" for i, why in report.failed]
    lines.append(f"{'would free' if report.dry_run else 'freed'} {format_size(report.freed)} "
                 f"({_n(len(report.removed), 'folder')})" + ("" if report.removed else ": nothing to prune"))
    return "\n".join(lines)



__all__ = ["ENTRY_STATES", "NOT_READABLE", "OTHER_INSTALLATION", "STAGING_STATES", "WORK_STATES", "Item", "PruneReport",
           "Survey", "format_age", "format_prune", "format_size", "format_survey", "prune", "survey"]
