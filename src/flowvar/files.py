"""How flowvar writes files and folders so that no work is lost and nothing foreign is overwritten.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` — the one way flowvar writes a file: a temporary file in the
  same folder, fsync, ``os.replace`` (a reader sees the old file or the new one, never a partial one);
* :func:`staged_folder` — a result folder filled aside and swapped in by renames (never half-written), refusing
  slots that are not flowvar's (:func:`check_replaceable`) and carrying a user's own files across
  (:func:`foreign_entries`); :func:`remove_stale_staging` / :func:`remove_stale_writes` clean what a killed process
  left, and :func:`settle_killed_installs` undoes or finishes an in-place install (a mount-point ``--out``) it cut
  off;
* :func:`nearest_existing` / :func:`check_writable_folder` — whether a folder that may not exist yet can be
  created and written, checked before any work so that a run does not fail at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowvar.results import RESULT_FILES, RESULT_MARKER


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (where the platform can open and fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, what: str = "",
                       remedy: str = "free space or choose another output folder") -> None:
    """The one way flowvar writes a file: a temporary file in the same folder, fsync, ``os.replace``.

    A reader sees the old file or the new one, never a partial one, and the rename is made durable (the folder is
    fsynced). The file gets the permissions of any file the user creates (0666 less the umask; ``mkstemp`` alone
    would leave it private, 0600). A write that fails (disk full, read-only or forbidden folder) removes the
    temporary file (named ``.NAME.XXXX.tmp``) and raises :class:`~flowvar.errors.WriteError` "cannot write {what}
    {path}: {reason}; {remedy}", with the old file left in place.
    """
    from flowvar.errors import WriteError

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise WriteError(path, f"cannot write {what + ' ' if what else ''}{path}: {err.strerror or err}",
                             remedy) from None
        raise
    fsync_directory(path.parent)


def remove_stale_writes(folder: Path, names: Sequence[str]) -> list[Path]:
    """Delete ``folder/.<name>.*.tmp`` for each file name in ``names``: the temporary files of
    :func:`atomic_write_bytes` that a killed process left (its ``os.replace`` never ran, so the file itself is
    intact); return them. Only a process that holds the folder for itself (the runner's ``exclusive`` lock) may call
    it: a live write's temporary file would go too."""
    removed = []
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@dataclass
class Staging:
    """A folder being filled by :func:`staged_folder`; set ``keep = False`` to drop it instead of installing it."""

    path: Path
    keep: bool = True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one that belongs to another user counts; when unsure, alive:
    a leftover is only ever removed when its writer is certainly gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def remove_stale_staging(dest: Path | str) -> list[Path]:
    """Remove the staging folders ``.<name>.<pid>.XXXX`` beside ``dest`` whose process is gone (a killed run's
    leftovers); those of live processes — a concurrent run — are kept. Returns what was removed."""
    dest = Path(dest)
    removed = []
    for stale in dest.parent.glob(f".{dest.name}.*.*"):
        pid = stale.name[len(dest.name) + 2:].split(".", 1)[0]
        if stale.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


def foreign_entries(folder: Path | str) -> list[str]:
    """The names of ``folder``'s entries that are not part of the flowvar result it holds: not its
    :data:`RESULT_FILES` nor a figure its ``result.json`` lists (all ``*.png`` where that file cannot be read) —
    files a user added (notes, an edited plot) that replacing the result must not delete (:func:`staged_folder`
    keeps them). Empty for a missing folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    try:
        figures = json.loads((folder / RESULT_MARKER).read_text(encoding="utf-8")).get("figures")
        ours = {*RESULT_FILES, *(f for f in figures if isinstance(f, str))}
    except (OSError, ValueError, AttributeError, TypeError):
        ours = {*RESULT_FILES, *(p.name for p in folder.glob("*.png"))}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours)


def _carry_foreign_entries(old: Path, new: Path) -> None:
    """Copy into ``new`` the :func:`foreign_entries` of ``old`` that ``new`` does not write itself (copied, not
    moved: until the swap ``old`` stays whole)."""
    for name in foreign_entries(old):
        source, target = old / name, new / name
        if target.exists() or target.is_symlink():
            continue  # the new result writes this name: its file wins, as for any file of the result
        _copy_entry(source, target)


def check_replaceable(dest: Path | str) -> None:
    """Refuse, in one line (:class:`~flowvar.errors.ConfigError`), an output slot flowvar must not replace: a file,
    a symbolic link (replacing it would delete or write through its target), or a folder holding files but no
    :data:`RESULT_MARKER` (someone else's files). A missing or empty folder, or one of flowvar's, is fine — so is
    one holding what a killed in-place install left (:func:`killed_installs`: it was flowvar's; the marker may be
    set aside, and the next install settles it first). Called before anything is computed and again when the
    result is installed."""
    from flowvar.errors import ConfigError

    dest = Path(dest)
    if dest.is_symlink():
        raise ConfigError(f"output {dest} is a symbolic link; flowvar writes its results to a real folder: remove "
                          f"the link or choose another --out")
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"output {dest} is a file, where the results folder {dest.name} goes: move it or choose "
                          f"another --out")
    if (dest.is_dir() and not (dest / RESULT_MARKER).is_file() and any(dest.iterdir())
            and not killed_installs(dest)):
        raise ConfigError(f"output folder {dest} holds files but no {RESULT_MARKER}: it is not a flowvar result, so "
                          f"it is not replaced; move its files or choose another --out")


def is_mount_point(folder: Path | str) -> bool:
    """Whether ``folder`` (an existing folder) is a mount point — a tmpfs, a bind mount, a Docker volume — which
    cannot be renamed (EBUSY): ``os.path.ismount``, or its device differs from its parent's."""
    folder = Path(folder)
    try:
        return os.path.ismount(folder) or folder.stat().st_dev != folder.resolve().parent.stat().st_dev
    except OSError:
        return False


# The work folder of an in-place install, ``dest/.install.<pid>.XXXX``: ``incoming/`` (the new entries),
# ``replaced/`` (the old ones set aside) and the journal ``install.json`` ({"new": names} — or {"phase":
# "restoring"} once an undo has begun) that lets :func:`settle_killed_installs` finish what a killed process began.
_INSTALL_PREFIX = ".install."
_JOURNAL = "install.json"
_KEPT_PREFIX = "replaced-by-a-killed-install-"


def _install_in_place(dest: Path, staged: Path) -> None:
    """Replace the flowvar result in ``dest`` by the one in ``staged`` without renaming ``dest`` (a mount point).

    A failure at any step is undone, so it leaves ``dest`` holding its old result and ``staged`` the complete new
    one — never neither, never a result split across two folders. All work happens in a hidden work folder
    ``dest/.install.<pid>.XXXX``:

    1. the new entries are copied (not moved: ``staged`` must stay whole until the end, and it lies on another
       filesystem) into its ``incoming/``; a full disk fails here, before ``dest`` changes;
    2. the journal ``install.json`` records the new entries' names (what a recovery after a kill needs to tell the
       new entries in ``dest`` from the old ones);
    3. the old result's own entries — a user's (:func:`foreign_entries`) only where the new result writes the same
       name — are renamed aside into its ``replaced/``, :data:`RESULT_MARKER` first;
    4. the new entries are renamed into ``dest``, :data:`RESULT_MARKER` last — so a folder killed midway holds no
       marker and is not mistaken for a complete result;

    then ``incoming/``, ``replaced/``, the journal (in that order: a journal without ``incoming/`` means every new
    entry was placed) and ``staged`` are deleted. Steps 3 and 4 are renames within one filesystem, atomic per
    entry; the whole is not atomic, unlike the swap. Where undoing itself fails, the old entries stay in the work
    folder rather than being deleted; a process killed midway leaves it to :func:`settle_killed_installs`.
    """
    foreign = set(foreign_entries(dest))
    new_names = sorted((entry.name for entry in staged.iterdir()), key=lambda name: name == RESULT_MARKER)
    old_names = sorted((entry.name for entry in dest.iterdir() if entry.name not in foreign
                        or entry.name in set(new_names)), key=lambda name: name != RESULT_MARKER)
    work = Path(tempfile.mkdtemp(prefix=f"{_INSTALL_PREFIX}{os.getpid()}.", dir=dest))
    incoming, replaced = work / "incoming", work / "replaced"
    placed: list[str] = []
    try:
        incoming.mkdir()
        for name in new_names:
            _copy_entry(staged / name, incoming / name)
        (work / _JOURNAL).write_text(json.dumps({"new": new_names}), encoding="utf-8")
        replaced.mkdir()
        for name in old_names:
            os.rename(dest / name, replaced / name)
        for name in new_names:
            os.rename(incoming / name, dest / name)
            placed.append(name)
    except BaseException:
        not_restored = _roll_back(dest, work, placed)
        if not_restored:  # the old entries left are the only copy: keep them for settle_killed_installs
            shutil.rmtree(incoming, ignore_errors=True)
        else:
            _remove_work_folder(work)
        raise
    _remove_work_folder(work)
    shutil.rmtree(staged, ignore_errors=True)
    fsync_directory(dest)


def _remove_work_folder(work: Path) -> None:
    """Delete an install's work folder in the order :func:`settle_killed_installs` relies on: ``incoming/``, then
    ``replaced/``, then the journal (a kill in between leaves a state it reads right)."""
    shutil.rmtree(work / "incoming", ignore_errors=True)
    shutil.rmtree(work / "replaced", ignore_errors=True)
    with contextlib.suppress(OSError):
        (work / _JOURNAL).unlink()
    shutil.rmtree(work, ignore_errors=True)


def _roll_back(dest: Path, work: Path, placed: Sequence[str]) -> list[str]:
    """Undo a partial :func:`_install_in_place`: delete the new entries ``placed`` in ``dest`` (``staged`` holds
    them all), then rename the old ones in ``work/replaced`` back into ``dest``, :data:`RESULT_MARKER` last. Returns
    the old entries not put back (left in ``work/replaced``): never one whose name ``dest`` holds again — an old
    entry is only moved onto a free name, never deleted."""
    for name in reversed(placed):
        with contextlib.suppress(OSError):
            remove_path(dest / name)
    replaced = work / "replaced"
    if not replaced.is_dir():  # the failure came before anything was set aside
        return []
    # from here on nothing in dest is deleted: a kill during the restore leaves a journal that says so, and the
    # recovery then only moves back what dest lacks (deleting "placed" names again would delete restored old ones)
    with contextlib.suppress(OSError):
        (work / _JOURNAL).write_text(json.dumps({"phase": "restoring"}), encoding="utf-8")
    return _restore_missing(dest, replaced)


def _restore_missing(dest: Path, aside: Path) -> list[str]:
    """Rename each entry of ``aside`` back into ``dest`` where ``dest`` has no entry of that name,
    :data:`RESULT_MARKER` last (a folder cut off midway holds no marker); return the names left in ``aside``."""
    left = []
    for entry in sorted(aside.iterdir(), key=lambda entry: entry.name == RESULT_MARKER):
        try:
            if os.path.lexists(dest / entry.name):
                raise FileExistsError(entry.name)
            os.rename(entry, dest / entry.name)
        except OSError:
            left.append(entry.name)
    return left


def _dead_writer(folder: Path, prefix: str) -> int | None:
    """The pid in ``folder``'s name ``<prefix><pid>.XXXX`` (``XXXX`` as ``mkdtemp`` makes it: 8 of ``a-z0-9_``, so
    a user's own folder is not taken for one) when that process is gone, else None."""
    match = re.fullmatch(r"(\d+)\.[a-z0-9_]{8}", folder.name[len(prefix):])
    if match and folder.is_dir() and not folder.is_symlink() and not pid_alive(int(match.group(1))):
        return int(match.group(1))
    return None


def killed_installs(dest: Path | str) -> list[Path]:
    """The work folders in ``dest`` of in-place installs whose process is gone (``.install.<pid>.*``, and the
    ``.incoming.<pid>.*`` / ``.replaced.<pid>.*`` of flowvar versions before them): what
    :func:`settle_killed_installs` settles. Empty for a missing folder."""
    dest = Path(dest)
    if not dest.is_dir() or dest.is_symlink():
        return []
    return [folder for prefix in (_INSTALL_PREFIX, ".incoming.", ".replaced.")
            for folder in sorted(dest.glob(f"{prefix}*.*")) if _dead_writer(folder, prefix) is not None]


def settle_killed_installs(dest: Path | str) -> list[Path]:
    """Finish what in-place installs into ``dest`` (:func:`_install_in_place`) killed midway left; return the
    folders where old entries are kept (each named in a warning).

    The kill leaves ``dest/.install.<pid>.XXXX`` (pid gone); its journal and ``incoming/`` say how far it came:

    * no journal: nothing was set aside yet (the journal comes first), ``dest`` is untouched — the folder goes;
    * new entries still in ``incoming/``: the install did not finish — it is undone (the new entries placed are
      deleted, the old ones moved back, marker last), so ``dest`` holds its old result again;
    * every new entry placed: the install finished — of the old entries set aside, those whose name ``dest`` holds
      (replaced by the new result) go, as a finished install deletes them;
    * a journal saying "restoring" (an undo was cut off): the old entries ``dest`` lacks are moved back.

    An old entry is never deleted unless ``dest`` holds its name: one that ``dest`` lacks may be the only copy of a
    file (a figure of the old result, a user's note the new result overwrote). Any left are moved into a visible
    ``dest/replaced-by-a-killed-install-<pid>-XXXX`` and a warning names them (a user's file, from then on, kept by
    every later install). The leftovers of earlier flowvar versions: a ``.incoming.<pid>.*`` goes (it only held
    copies); a ``.replaced.<pid>.*`` has no journal, so its entries are moved back only when ``dest`` holds none of
    their names (the kill came while setting aside), else kept and named as above. A folder is first renamed to
    this process's pid, so two runs starting together settle it once.
    """
    dest = Path(dest)
    kept: list[Path] = []
    for folder in killed_installs(dest):
        prefix = next(p for p in (_INSTALL_PREFIX, ".incoming.", ".replaced.") if folder.name.startswith(p))
        pid = _dead_writer(folder, prefix)
        suffix = folder.name[len(prefix):].split(".", 1)[-1]
        claimed = dest / f"{prefix}{os.getpid()}.{suffix}"
        try:
            os.rename(folder, claimed)  # atomic: of two runs settling it, one gets it
        except OSError:
            continue
        with contextlib.suppress(OSError):  # what cannot be settled now stays (under this pid), for a later run
            kept.extend(_settle_claimed(dest, claimed, prefix, pid))
    return kept


def _settle_claimed(dest: Path, claimed: Path, prefix: str, pid: int | None) -> list[Path]:
    """Settle one folder :func:`settle_killed_installs` claimed; return where old entries are kept (if anywhere)."""
    if prefix == ".incoming.":
        shutil.rmtree(claimed, ignore_errors=True)
        return []
    if prefix == ".replaced.":
        names = [entry.name for entry in claimed.iterdir()]
        if not any(os.path.lexists(dest / name) for name in names):
            _restore_missing(dest, claimed)
        aside = claimed
    else:
        _settle_install(dest, claimed)
        aside = claimed / "replaced"
    kept = []
    if aside.is_dir() and any(aside.iterdir()):
        kept.append(_keep_replaced(dest, aside, pid))
        if kept[-1] == aside:  # it could not be moved: the claimed folder holds the only copy
            return kept
    shutil.rmtree(claimed, ignore_errors=True)
    return kept


def _settle_install(dest: Path, work: Path) -> None:
    """Undo or finish the install whose work folder is ``work`` (see :func:`settle_killed_installs`); what it may
    not delete stays in ``work/replaced``."""
    try:
        journal = json.loads((work / _JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        journal = None  # none (or cut off while written): written before anything is set aside
    replaced = work / "replaced"
    if not isinstance(journal, dict) or not replaced.is_dir():
        return
    if journal.get("phase") == "restoring":
        _restore_missing(dest, replaced)
        return
    new_names = [name for name in journal.get("new", []) if isinstance(name, str)]
    waiting = {entry.name for entry in (work / "incoming").iterdir()} if (work / "incoming").is_dir() else set()
    if any(name in waiting for name in new_names):
        _roll_back(dest, work, [name for name in new_names if name not in waiting])
    else:
        for entry in list(replaced.iterdir()):
            if os.path.lexists(dest / entry.name):
                remove_path(entry)


def _keep_replaced(dest: Path, aside: Path, pid: int | None) -> Path:
    """Move the folder ``aside`` of old entries that may be the only copy to a visible name in ``dest`` and warn
    naming it; return that name (``aside`` itself where no rename works)."""
    import warnings

    names = sorted(entry.name for entry in aside.iterdir())
    kept = _rename_to_fresh(aside, dest, f"{_KEPT_PREFIX}{pid}-") or aside
    warnings.warn(f"an install into {dest} was killed midway (process {pid}); old entries it had set aside that "
                  f"could not go back into {dest} are kept in {kept} (they may be the only copy): {', '.join(names)}"
                  f" — delete that folder once you no longer need them", stacklevel=3)
    return kept


def _copy_entry(source: Path, target: Path) -> None:
    """Copy a file, link or folder (a link as a link, never what it points to), with its permissions and times."""
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def remove_path(path: Path) -> None:
    """Delete a folder tree (what of it can be deleted), or the file or link in its place (a link itself, never what
    it points to); nothing if absent. Another process may rename a folder into place between the look and the
    unlink (a cache entry being stored): the folder is then deleted too, never an ``IsADirectoryError``."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError):  # a folder now (unlink of a folder: EISDIR, EPERM on macOS)
        if not path.is_dir() or path.is_symlink():
            raise
        shutil.rmtree(path, ignore_errors=True)


def _keep_staged(dest: Path, staged: Path) -> Path:
    """Give a staged result that could not be installed a visible name beside ``dest`` and return where it is:
    ``<name>.new-<pid>``, or ``<name>.new-<pid>-XXXX`` where that is taken (containers reuse small pids, and an
    earlier kept result must not be overwritten). A hidden staging folder would be removed as stale by the next
    run; only where no rename works is ``staged`` itself returned."""
    preferred = dest.with_name(f"{dest.name}.new-{os.getpid()}")
    if not os.path.lexists(preferred):
        with contextlib.suppress(OSError):
            os.rename(staged, preferred)
            return preferred
    return _rename_to_fresh(staged, dest.parent, f"{preferred.name}-") or staged


def _rename_to_fresh(folder: Path, parent: Path, prefix: str) -> Path | None:
    """Rename ``folder`` to a fresh name ``<prefix>XXXX`` in ``parent`` (never over an existing one: ``mkdtemp``
    reserves the name, and a folder renamed onto an empty folder replaces it) and return it; None where that fails
    (``folder`` stays where it was)."""
    fresh = None
    try:
        fresh = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        os.rename(folder, fresh)
        return fresh
    except OSError:
        if fresh is not None:
            with contextlib.suppress(OSError):
                fresh.rmdir()
        return None


@contextlib.contextmanager
def staged_folder(dest: Path | str) -> Iterator[Staging]:
    """Fill a hidden sibling ``.<name>.<pid>.XXXX`` of ``dest``; on success it replaces ``dest`` by renames.

    So ``dest`` is always either its old self or the complete new folder, never half-written: on an exception
    (or ``keep = False``) the staging folder is removed and ``dest`` is left as it was; one left by a killed process
    is removed by the next call (:func:`remove_stale_staging`). An old ``dest`` is renamed aside, the new folder
    renamed in, then the old one deleted (deleting first would lose both to a kill in between). Only
    :func:`check_replaceable` slots are replaced, and what a user added to the old folder
    (:func:`foreign_entries`) is copied into the new one first; a folder that cannot be created is a one-line
    :class:`~flowvar.errors.ConfigError` naming it. Parent folders it created are removed again, while empty, when
    no result is kept (an interrupted ``--out new/folder`` leaves nothing).

    A ``dest`` that is a mount point (:func:`is_mount_point`: a tmpfs, a Docker volume) cannot be renamed; it is
    detected before the work and its contents replaced in place (:func:`_install_in_place`, not atomic, but undone
    on failure). When the install fails anyway (a ``chattr +i`` or read-only folder, a full disk), ``dest`` keeps its
    old result, the staged result is kept as ``<name>.new-<pid>`` (a fresh ``-XXXX`` suffix where that name is taken)
    and a one-line :class:`~flowvar.errors.DataError` says where it is: the work is not lost. Once the install has
    begun the staging folder is never deleted on an error (an interrupt mid-install leaves it to the next run's
    :func:`remove_stale_staging`); what a process killed mid-install left inside ``dest`` is settled first
    (:func:`settle_killed_installs`). A slot that stopped being replaceable while the run computed (someone else's
    folder, a file, a link moved there) is not replaced, and the result is not lost either: it is kept as
    ``<name>.new-<pid>`` and the one-line :class:`~flowvar.errors.ConfigError` names it.
    """
    from flowvar.errors import ConfigError, DataError

    dest = Path(dest)
    settle_killed_installs(dest)  # first: a killed in-place install may have set this slot's marker aside
    check_replaceable(dest)
    in_place = dest.is_dir() and is_mount_point(dest)
    # the folders this call creates (deepest first): a run that ends without a result removes them again while
    # empty, so an interrupted `--out new/folder` leaves no empty folder behind
    created = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(dest)
        path = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", dir=dest.parent))
        os.chmod(path, 0o777 & ~current_umask())  # a normal folder once installed (mkdtemp makes it private, 0700)
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {dest.parent}: {e.strerror or e}; choose another --out"
                          ) from None
    stage = Staging(path)
    install_begun = False
    try:
        yield stage
        if stage.keep:
            try:
                check_replaceable(dest)  # again: the slot may have changed while the run computed
            except ConfigError as refusal:
                # someone else's folder (or a file, a link) took the slot meanwhile: it is not replaced, and the
                # computed result is not deleted either — it gets a visible name, as for a failed install
                install_begun = True
                kept = _keep_staged(dest, path)
                hidden = (" (a hidden staging folder, which the next run here removes: move it first)"
                          if kept == path else "")
                raise ConfigError(f"{refusal} (it changed while this run computed); the complete result of this "
                                  f"run is kept in {kept}{hidden}") from None
            install_begun = True
            try:
                if in_place or (dest.is_dir() and is_mount_point(dest)):
                    _install_in_place(dest, path)
                elif dest.exists():
                    _carry_foreign_entries(dest, path)
                    # aside under a staging name of this process, then swap: dest is absent only between the two
                    # renames, and a kill before the rmtree leaves the old copy to remove_stale_staging
                    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", dir=dest.parent))
                    old.rmdir()
                    dest.rename(old)
                    try:
                        path.rename(dest)
                    except OSError:
                        old.rename(dest)  # put the old result back before reporting
                        raise
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    path.rename(dest)
            except OSError as err:
                kept = _keep_staged(dest, path)
                hidden = (" (a hidden staging folder, which the next run here removes: move it first)"
                          if kept == path else "")
                raise DataError(f"cannot install the result in {dest}: {err.strerror or err}; the complete result "
                                f"is kept in {kept}{hidden} — move its files into {dest} or choose another --out"
                                ) from None
        else:
            shutil.rmtree(path, ignore_errors=True)
            _remove_if_empty(created)
    except BaseException:
        # once the install has begun, the staging folder may be the only complete copy of the result (the message
        # names it): an error only removes it before then
        if not install_begun:
            shutil.rmtree(path, ignore_errors=True)
            _remove_if_empty(created)
        raise


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while each is empty; stop at the first that is not (or cannot be)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def nearest_existing(path: Path | str) -> Path:
    """``path`` itself when it exists, else its nearest existing ancestor (the folder a ``mkdir -p`` would start in;
    the root at worst)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


@dataclass(frozen=True)
class FolderProblem:
    """Why a folder cannot be created and written: ``path``, its nearest existing ancestor, is a file
    (``is_file``) or is not writable. ``str()`` is the reason in words ("PATH is a file")."""

    path: Path
    is_file: bool

    def __str__(self) -> str:
        return f"{self.path} is {'a file' if self.is_file else 'not writable'}"


def check_writable_folder(folder: Path | str) -> FolderProblem | None:
    """Why ``folder`` cannot be (created as) a writable folder, or None when it can: its :func:`nearest_existing`
    ancestor must be a folder this process can write and enter. Nothing is created (validation has no side
    effects); callers raise their own error with the returned reason and their fix."""
    probe = nearest_existing(Path(folder).expanduser())
    if not probe.is_dir():
        return FolderProblem(probe, is_file=True)
    if not os.access(probe, os.W_OK | os.X_OK):
        return FolderProblem(probe, is_file=False)
    return None


__all__ = [
    "FolderProblem",
    "Staging",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_replaceable",
    "check_writable_folder",
    "current_umask",
    "foreign_entries",
    "fsync_directory",
    "is_mount_point",
    "killed_installs",
    "nearest_existing",
    "pid_alive",
    "remove_path",
    "remove_stale_staging",
    "remove_stale_writes",
    "settle_killed_installs",
    "staged_folder",
]
