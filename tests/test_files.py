"""flowvar.files: atomic writes, staged result folders, and the can-this-folder-be-written check."""

import os

import pytest

from flowvar.files import check_writable_folder, nearest_existing


def test_written_files_and_installed_folders_get_normal_permissions(tmp_path) -> None:
    import os
    import stat

    from flowvar.files import atomic_write_text, staged_folder

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with staged_folder(tmp_path / "exp") as stage:
            atomic_write_text(stage.path / "result.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "exp").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "exp" / "result.json").stat().st_mode) == 0o644


def test_a_failed_write_is_one_line_naming_the_path_and_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    import errno
    import os

    import flowvar.files as files_mod
    from flowvar.errors import DataError
    from flowvar.files import atomic_write_text

    target = tmp_path / "report.md"
    target.write_text("old")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_mod.os, "fsync", disk_full)
    with pytest.raises(DataError, match=r"cannot write .*report\.md: No space left on device"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["report.md"]


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run_but_a_live_one_is_kept(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from flowvar.files import staged_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    killed = tmp_path / f".exp.{dead_pid}.abc123"
    (killed / "half").mkdir(parents=True)
    live = tmp_path / f".exp.{os.getppid()}.def456"  # our parent is alive: a concurrent run's staging folder
    live.mkdir()
    unrelated = tmp_path / ".exp.notapid.x"
    unrelated.mkdir()
    with staged_folder(tmp_path / "exp") as stage:
        (stage.path / "result.json").write_text("{}")
        assert stage.path.name.startswith(f".exp.{os.getpid()}.")
    assert not killed.exists() and live.exists() and unrelated.exists()
    assert (tmp_path / "exp" / "result.json").is_file()


def test_a_run_that_keeps_no_result_leaves_no_folder_it_created(tmp_path) -> None:
    """An interrupted `--out new/folder` left an empty new/folder behind while saying "nothing of this run is kept":
    the parent folders staging created are removed again while empty; ones that existed, or that something else
    wrote into meanwhile, stay."""
    from flowvar.files import staged_folder

    with pytest.raises(KeyboardInterrupt), staged_folder(tmp_path / "new" / "deeper" / "exp") as stage:
        (stage.path / "partial.txt").write_text("x")
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists() and tmp_path.is_dir()
    (tmp_path / "kept").mkdir()
    with staged_folder(tmp_path / "kept" / "exp") as stage:
        stage.keep = False
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "busy" / "exp"):
        (tmp_path / "busy" / "notes.txt").write_text("someone else's file")
        raise RuntimeError
    assert (tmp_path / "busy" / "notes.txt").is_file()


def test_nearest_existing_and_the_writable_folder_check(tmp_path) -> None:
    """One walk to the nearest existing ancestor for every 'can this folder be created and written' check (the
    image experiments' checkpoint_dir, the audit's --out): a file on the way, or a read-only ancestor, is named."""
    assert nearest_existing(tmp_path / "a" / "b" / "c") == tmp_path
    assert nearest_existing(tmp_path) == tmp_path
    assert check_writable_folder(tmp_path / "new" / "deeper") is None
    afile = tmp_path / "x.npy"
    afile.write_bytes(b"data")
    assert nearest_existing(afile / "sub") == afile
    problem = check_writable_folder(afile / "sub")
    assert problem is not None and problem.is_file and str(problem) == f"{afile} is a file"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse
            pytest.skip("running as root")
        problem = check_writable_folder(locked / "ckpt")
        assert problem is not None and not problem.is_file and str(problem) == f"{locked} is not writable"
    finally:
        locked.chmod(0o700)


def _result(folder, text: str) -> None:
    """A minimal flowvar result in ``folder``: the marker and a summary saying ``text``."""
    (folder / "result.json").write_text('{"figures": ["old_figure.png"]}')
    (folder / "summary.md").write_text(text)


def test_a_mount_point_out_is_replaced_in_place_keeping_the_users_files(tmp_path) -> None:
    """A tmpfs mounted at --out cannot be renamed (EBUSY): its contents are replaced, the user's files kept."""
    import subprocess

    from flowvar.files import is_mount_point, staged_folder

    dest = tmp_path / "out"
    dest.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dest)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        assert is_mount_point(dest) and not is_mount_point(tmp_path)
        _result(dest, "old")
        (dest / "notes.txt").write_text("mine")
        (dest / "old_figure.png").write_bytes(b"png")  # listed in the old result.json
        with staged_folder(dest) as stage:
            _result(stage.path, "new")
        assert (dest / "summary.md").read_text() == "new" and (dest / "notes.txt").read_text() == "mine"
        assert not (dest / "old_figure.png").exists()
        assert not list(tmp_path.glob(".out.*")) and not list(tmp_path.glob("out.new-*"))
    finally:
        subprocess.run(["umount", str(dest)], check=False)


def test_a_folder_seen_as_mount_point_is_replaced_in_place_without_renaming_it(tmp_path, monkeypatch) -> None:
    import errno
    from pathlib import Path

    import flowvar.files as files_mod
    from flowvar.files import staged_folder

    dest = tmp_path / "out"
    dest.mkdir()
    _result(dest, "old")
    real_rename = Path.rename

    def busy(self: Path, target):  # what renaming a mount point does
        if self == dest:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    monkeypatch.setattr(files_mod, "is_mount_point", lambda folder: Path(folder) == dest)
    with staged_folder(dest) as stage:
        _result(stage.path, "new")
    assert (dest / "summary.md").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_final_swap_keeps_the_staged_result_and_says_where(tmp_path, monkeypatch) -> None:
    """An --out that cannot be renamed but is no mount point (a chattr +i folder): one line, the work kept."""
    import errno
    from pathlib import Path

    from flowvar.errors import DataError
    from flowvar.files import staged_folder

    dest = tmp_path / "out"
    dest.mkdir()
    _result(dest, "old")
    real_rename = Path.rename

    def busy(self: Path, target):
        if self == dest:
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    with pytest.raises(DataError) as err, staged_folder(dest) as stage:
        _result(stage.path, "new")
    message = str(err.value)
    kept = tmp_path / f"out.new-{os.getpid()}"
    assert "\n" not in message and "Operation not permitted" in message and str(kept) in message
    assert (kept / "summary.md").read_text() == "new"  # the staged result survives
    assert (dest / "summary.md").read_text() == "old"  # the old one is untouched



def _old_result_in(dest) -> None:
    """The old result a failed install must leave intact: marker, summary, a listed figure, a user's note."""
    (dest / "result.json").write_text('{"figures": ["old_figure.png"]}')
    (dest / "summary.md").write_text("old")
    (dest / "old_figure.png").write_bytes(b"old png")
    (dest / "notes.txt").write_text("mine")


_OLD_RESULT = {"result.json": '{"figures": ["old_figure.png"]}', "summary.md": "old", "old_figure.png": "old png",
               "notes.txt": "mine"}
_NEW_RESULT = {"a.png": "new a", "b.png": "new b", "c.txt": "new c", "result.json": '{"figures": ["a.png", "b.png"]}'}


def _contents(folder) -> dict[str, str]:
    """Every file in ``folder`` (recursively, hidden ones included) by relative path, with its text."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail_renames(monkeypatch, should_fail, *, once: bool = True) -> list[tuple[str, str]]:
    """Make moving ``src`` to ``dst`` raise EROFS where ``should_fail(Path(src), Path(dst))`` — only the first such
    move when ``once`` (a failure, not a folder that refuses everything: undoing must be possible) — and return the
    failed moves. Both ``os.rename`` (``Path.rename`` calls it) and ``shutil.move`` (which would otherwise fall back
    to copying) fail, so this hits any way of moving an entry."""
    import errno
    import shutil
    from pathlib import Path

    failed: list[tuple[str, str]] = []

    def failing(real_move):
        def move(src, dst, *args, **kwargs):
            if should_fail(Path(src), Path(dst)) and not (once and failed):
                failed.append((str(src), str(dst)))
                raise OSError(errno.EROFS, "Read-only file system")
            return real_move(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "rename", failing(os.rename))
    monkeypatch.setattr(shutil, "move", failing(shutil.move))
    return failed


def _install_into_mount_point(tmp_path, monkeypatch):
    """Run ``staged_folder`` on ``tmp_path/out`` (holding the old result), seen as a mount point, writing
    :data:`_NEW_RESULT`; return the DataError it raised (None when it installed)."""
    from pathlib import Path

    import flowvar.files as files_mod
    from flowvar.errors import DataError

    dest = tmp_path / "out"
    monkeypatch.setattr(files_mod, "is_mount_point", lambda folder: Path(folder) == dest)
    try:
        with files_mod.staged_folder(dest) as stage:
            for name, text in _NEW_RESULT.items():
                (stage.path / name).write_text(text)
    except DataError as err:
        return err
    return None


@pytest.mark.parametrize("failing_entry", ["a.png", "b.png", "result.json"])  # first, middle, last (marker last)
def test_an_in_place_install_failing_at_any_entry_keeps_the_old_result_and_the_whole_new_one(
        tmp_path, monkeypatch, failing_entry: str) -> None:
    """Code review P, finding 2: a move into a mount-point --out failing at the 2nd entry left a.png in out/ and the
    rest in out.new-PID, while the message claimed "the complete result is kept" there. Whatever entry fails, out/
    holds its old result unchanged and the folder the one-line message names holds the complete new one."""
    dest = tmp_path / "out"
    dest.mkdir()
    _old_result_in(dest)
    failed = _fail_renames(monkeypatch, lambda src, dst: dst == dest / failing_entry)
    err = _install_into_mount_point(tmp_path, monkeypatch)
    assert err is not None and failed, "the injected failure must have been hit"
    kept = tmp_path / f"out.new-{os.getpid()}"
    message = str(err)
    assert "\n" not in message and "Read-only file system" in message and f"kept in {kept} " in message
    assert _contents(kept) == _NEW_RESULT
    assert _contents(dest) == _OLD_RESULT  # nothing of the new result, no hidden leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", kept.name]


@pytest.mark.parametrize("failing_entry", ["result.json", "summary.md"])  # the marker is set aside first
def test_an_in_place_install_failing_while_setting_the_old_result_aside_puts_it_back(
        tmp_path, monkeypatch, failing_entry: str) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    _old_result_in(dest)
    failed = _fail_renames(monkeypatch, lambda src, dst: src == dest / failing_entry)
    err = _install_into_mount_point(tmp_path, monkeypatch)
    assert err is not None and failed
    assert _contents(dest) == _OLD_RESULT
    assert _contents(tmp_path / f"out.new-{os.getpid()}") == _NEW_RESULT


def test_an_in_place_install_failing_on_a_full_disk_leaves_the_mount_point_untouched(tmp_path, monkeypatch) -> None:
    import errno
    import shutil

    dest = tmp_path / "out"
    dest.mkdir()
    _old_result_in(dest)
    real_copy2, copies = shutil.copy2, []

    def copy2(src, dst, *args, **kwargs):
        copies.append(dst)
        if len(copies) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy2(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy2)
    err = _install_into_mount_point(tmp_path, monkeypatch)
    assert err is not None and "No space left on device" in str(err)
    assert _contents(dest) == _OLD_RESULT
    assert _contents(tmp_path / f"out.new-{os.getpid()}") == _NEW_RESULT


def test_a_read_only_mount_point_keeps_both_results_and_a_taken_kept_name_is_not_overwritten(
        tmp_path, monkeypatch) -> None:
    """Code review P, finding 1: with out.new-PID already taken (pids repeat in containers) and every move into the
    mount point failing, the old result was deleted before the first move, the staged result was then deleted too,
    and the message named that deleted folder. Now out/ keeps its old result, the earlier kept result is untouched,
    and the message names an existing folder with the complete new result."""
    import re
    from pathlib import Path

    dest = tmp_path / "out"
    dest.mkdir()
    _old_result_in(dest)
    earlier = tmp_path / f"out.new-{os.getpid()}"
    earlier.mkdir()
    (earlier / "result.json").write_text("earlier")
    _fail_renames(monkeypatch, lambda src, dst: dst.parent == dest)  # the first move into out/ fails
    err = _install_into_mount_point(tmp_path, monkeypatch)
    assert err is not None
    match = re.search(r"kept in (\S+) ", str(err))
    assert match is not None
    kept = Path(match.group(1))
    assert kept.parent == tmp_path and kept.name.startswith(f"out.new-{os.getpid()}-") and not kept.name.startswith(".")
    assert _contents(kept) == _NEW_RESULT
    assert _contents(earlier) == {"result.json": "earlier"}
    assert _contents(dest) == _OLD_RESULT


def test_a_staged_result_that_cannot_even_be_renamed_is_kept_where_the_message_says(tmp_path, monkeypatch) -> None:
    """Where no visible name can be given, the hidden staging folder is the only copy of the work: it must not be
    deleted on the way out, and the message warns that the next run would remove it."""
    import re
    from pathlib import Path

    dest = tmp_path / "out"
    dest.mkdir()
    _old_result_in(dest)
    _fail_renames(monkeypatch, lambda src, dst: dst.parent == dest)  # the first move into out/ fails
    _fail_renames(monkeypatch, lambda src, dst: dst.parent == tmp_path, once=False)  # nothing is renamed beside it
    err = _install_into_mount_point(tmp_path, monkeypatch)
    assert err is not None
    match = re.search(r"kept in (\S+) ", str(err))
    assert match is not None
    kept = Path(match.group(1))
    assert kept.name.startswith(f".out.{os.getpid()}.") and "next run" in str(err)
    assert _contents(kept) == _NEW_RESULT
    assert _contents(dest) == _OLD_RESULT


def test_a_real_read_only_mount_point_keeps_its_old_result_and_the_new_one_beside_it(tmp_path) -> None:
    """A tmpfs remounted read-only at --out (EROFS even for root): both results survive. A guard on a real
    filesystem (the old code passed it too: there the very first change fails; the loss of finding 1 needs moves
    that fail after deletions succeeded, as the tests above inject)."""
    import subprocess

    from flowvar.errors import DataError
    from flowvar.files import staged_folder

    dest = tmp_path / "out"
    dest.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dest)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        _old_result_in(dest)
        subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True, capture_output=True)
        with pytest.raises(DataError, match="Read-only file system"), staged_folder(dest) as stage:
            for name, text in _NEW_RESULT.items():
                (stage.path / name).write_text(text)
        assert _contents(dest) == _OLD_RESULT
        assert _contents(tmp_path / f"out.new-{os.getpid()}") == _NEW_RESULT
    finally:
        subprocess.run(["umount", str(dest)], check=False)


def test_a_slot_taken_by_someone_elses_folder_while_the_run_computed_keeps_the_computed_result(tmp_path) -> None:
    """Session 27 finding 2: the slot was replaceable when the run started and someone else's folder took it before
    the install: the second check refused it and the staging folder — the computed result — was deleted. Now the
    foreign folder is left alone and the result kept in the out.new-PID folder the one-line error names."""
    import shutil

    from flowvar.errors import ConfigError
    from flowvar.files import staged_folder

    dest = tmp_path / "out"
    dest.mkdir()
    _result(dest, "old")
    with pytest.raises(ConfigError) as err, staged_folder(dest) as stage:
        _result(stage.path, "new")
        shutil.rmtree(dest)  # meanwhile, someone puts their own folder in the slot
        dest.mkdir()
        (dest / "theirs.txt").write_text("not flowvar's")
    kept = tmp_path / f"out.new-{os.getpid()}"
    message = str(err.value)
    assert "\n" not in message and "not a flowvar result" in message and f"kept in {kept}" in message
    assert _contents(kept) == {"result.json": '{"figures": ["old_figure.png"]}', "summary.md": "new"}
    assert _contents(dest) == {"theirs.txt": "not flowvar's"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", kept.name]


# A process killed (SIGKILL) at a chosen point of an in-place install into `out` (seen as a mount point): it stages
# _KILL_NEW beside `out` as staged_folder does, then installs it with _install_in_place.
_KILL_SCRIPT = r"""
import os, shutil, signal, sys, tempfile
from pathlib import Path
import flowvar.files as files
root, mode = Path(sys.argv[1]), sys.argv[2]
new = dict(a_png="new a", summary_md="new summary", c_txt="new c", result_json='{"figures": ["a.png"]}')
staged = Path(tempfile.mkdtemp(prefix=f".out.{os.getpid()}.", dir=root))
for name, text in new.items():
    (staged / name.replace("_", ".")).write_text(text)
real_rename, real_copy2, real_rmtree, renames = os.rename, shutil.copy2, shutil.rmtree, []
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def rename(src, dst):
    renames.append((Path(src), Path(dst)))
    if mode.isdigit() and len(renames) == int(mode):
        die()
    if mode == "restoring" and Path(src).name == "result.json":
        if Path(src).parent.name == "incoming":  # placing the marker fails: the install is undone ...
            raise OSError(30, "Read-only file system")
        if Path(src).parent.name == "replaced":
            die()  # ... and killed while it puts the old marker back, the last old entry
    return real_rename(src, dst)
def copy2(src, dst, *args, **kwargs):
    if mode == "copying" and Path(dst).parent.name == "incoming" and len(os.listdir(Path(dst).parent)) == 2:
        die()
    return real_copy2(src, dst, *args, **kwargs)
def rmtree(path, *args, **kwargs):
    if mode == "cleanup" and Path(path).name == "replaced":
        die()
    return real_rmtree(path, *args, **kwargs)
os.rename, shutil.copy2, shutil.rmtree = rename, copy2, rmtree
try:
    files._install_in_place(root / "out", staged)
except OSError:
    pass
print("not killed")
"""
_KILL_NEW = {"a.png": "new a", "summary.md": "new summary", "c.txt": "new c", "result.json": '{"figures": ["a.png"]}'}


def _killed_install(tmp_path, mode: str):
    """Run :data:`_KILL_SCRIPT` on ``tmp_path/out`` holding :data:`_OLD_RESULT`; return ``out`` once it died."""
    import subprocess
    import sys

    dest = tmp_path / "out"
    dest.mkdir()
    _old_result_in(dest)
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), mode], capture_output=True, text=True)
    assert proc.returncode == -9, (proc.stdout, proc.stderr)  # killed by SIGKILL where the mode says
    assert [p.name for p in dest.iterdir() if p.name.startswith(".install.")], "a killed install leaves its work"
    return dest


# set-aside renames come first (3: the marker, summary.md, old_figure.png), then the placing ones (4, marker last)
@pytest.mark.parametrize("mode", ["copying", "1", "2", "4", "6", "7", "restoring"])
def test_an_in_place_install_killed_before_it_finished_is_undone_by_the_next_run(tmp_path, mode: str) -> None:
    """Session 27 finding 1: a kill midway through an in-place install left hidden .incoming/.replaced folders
    that nothing removed (the old result's files among them, its marker set aside) and the next run refused the
    slot as "not a flowvar result". Wherever the kill came before the new marker was placed — while copying, with
    nothing, the marker or everything set aside, with some or all but the marker placed, during an undo — the next
    run's settling puts the old result back whole, with nothing hidden left."""
    import warnings

    from flowvar.files import check_replaceable, killed_installs, settle_killed_installs

    dest = _killed_install(tmp_path, mode)
    assert killed_installs(dest)
    check_replaceable(dest)  # flowvar's slot, marker or not: reproduce checks before computing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: every old entry went back
        assert settle_killed_installs(dest) == []
    assert _contents(dest) == _OLD_RESULT and sorted(p.name for p in dest.iterdir()) == sorted(_OLD_RESULT)
    assert not killed_installs(dest)


def test_an_in_place_install_killed_while_cleaning_up_keeps_the_old_entries_only_it_held(tmp_path) -> None:
    """Killed after the new marker was placed: the install finished. The old entries whose names the new result
    took go (as a finished install deletes them); old_figure.png, which the new result does not have, may be the
    only copy: it is moved to a visible folder that a warning names, never deleted."""
    import warnings

    from flowvar.files import settle_killed_installs

    dest = _killed_install(tmp_path, "cleanup")
    with pytest.warns(UserWarning, match=r"killed midway .*kept in .*replaced-by-a-killed-install-.*old_figure\.png"):
        kept = settle_killed_installs(dest)
    assert len(kept) == 1 and kept[0].parent == dest and kept[0].name.startswith("replaced-by-a-killed-install-")
    assert _contents(kept[0]) == {"old_figure.png": "old png"}
    assert _contents(dest) == {**_KILL_NEW, "notes.txt": "mine", f"{kept[0].name}/old_figure.png": "old png"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # settled once: a later run has nothing to settle, nothing to warn about
        assert settle_killed_installs(dest) == []


def test_the_next_install_into_a_slot_a_killed_install_left_markerless_replaces_it(tmp_path, monkeypatch) -> None:
    """End to end: with the old marker set aside and two new entries placed when the kill came, `out` held no
    result.json; the next staged_folder installs its result, the user's note kept, no hidden folder left."""
    from pathlib import Path

    import flowvar.files as files_mod

    dest = _killed_install(tmp_path, "6")
    assert not (dest / "result.json").exists()
    monkeypatch.setattr(files_mod, "is_mount_point", lambda folder: Path(folder) == dest)
    with files_mod.staged_folder(dest) as stage:
        _result(stage.path, "third")
    assert _contents(dest) == {"result.json": '{"figures": ["old_figure.png"]}', "summary.md": "third",
                               "notes.txt": "mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the killed run's staging folder went too


def test_leftovers_of_the_earlier_in_place_install_are_settled_without_deleting_an_only_copy(tmp_path) -> None:
    """The .incoming.<pid>.* / .replaced.<pid>.* an earlier flowvar left (no journal): the incoming copies go; set
    aside entries go back when `out` holds none of their names, else they are kept visible and named. A folder
    that only looks like one (not mkdtemp's 8 characters) or whose process lives is not touched."""
    import subprocess
    import sys

    from flowvar.files import settle_killed_installs

    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    for case, dest_has in (("restorable", {}), ("taken", {"summary.md": "new summary"})):
        dest = tmp_path / case / "out"
        dest.mkdir(parents=True)
        (dest / "notes.txt").write_text("mine")
        for name, text in dest_has.items():
            (dest / name).write_text(text)
        (dest / f".incoming.{dead_pid}.ab_12cde").mkdir()
        (dest / f".incoming.{dead_pid}.ab_12cde" / "a.png").write_text("new a")
        aside = dest / f".replaced.{dead_pid}.zz9_xy0q"
        aside.mkdir()
        (aside / "result.json").write_text("{}")
        (aside / "summary.md").write_text("old")
        (dest / f".incoming.{dead_pid}.mine").mkdir()  # a user's own folder
        (dest / f".replaced.{os.getppid()}.abcdefgh").mkdir()  # a live process's
        if case == "restorable":
            assert settle_killed_installs(dest) == []
            assert _contents(dest) == {"notes.txt": "mine", "result.json": "{}", "summary.md": "old"}
        else:
            with pytest.warns(UserWarning, match=r"summary\.md"):
                kept = settle_killed_installs(dest)
            assert len(kept) == 1 and _contents(kept[0]) == {"result.json": "{}", "summary.md": "old"}
            assert (dest / "summary.md").read_text() == "new summary"
        assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".")) == [
            f".incoming.{dead_pid}.mine", f".replaced.{os.getppid()}.abcdefgh"]
