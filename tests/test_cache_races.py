"""Races between a process replacing a cache entry (``--force``) and processes reading it (review revC 1).

Every interleaving that matters is forced deterministically, by a hook run between the writer's steps; one short
two-process stress test checks the same on real processes."""

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import flowvar.files
from flowvar.cache import MANIFEST, Cache, run_cached

TINY = {"n_samples": "300", "angles": "0,180"}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(key, result folder A, result folder B): one real prop1 result and a copy whose summary differs, two
    results a --force run may store one over the other."""
    root = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    run = run_cached("prop1", out, Cache(root), quick=True, overrides=TINY)
    a = out / "prop1"
    b = tmp_path_factory.mktemp("b") / "prop1"
    shutil.copytree(a, b)
    (b / "summary.md").write_text((b / "summary.md").read_text() + "\nversion B\n")
    return run.key, a, b


def _reader_at_every_step(monkeypatch: pytest.MonkeyPatch, read: Callable[[], None]) -> None:
    """Call ``read()`` before and after every rename and every step of every tree deletion the process makes (a
    deletion is stopped half-way once: its first file is gone), as a reader in another process could."""
    busy = [False]
    real_rename, real_rmtree = Path.rename, shutil.rmtree

    def hook() -> None:
        if not busy[0]:
            busy[0] = True
            try:
                read()
            finally:
                busy[0] = False

    def rename(self: Path, target: str | Path) -> Path:
        hook()
        moved = real_rename(self, target)
        hook()
        return moved

    def rmtree(path: str | Path, *args: object, **kwargs: object) -> None:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if not busy[0] else []
        if files:
            files[0].unlink()  # half-deleted, as a reader may find a folder rmtree is working through
            hook()
        real_rmtree(path, *args, **kwargs)
        hook()

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)


def test_a_reader_never_sees_a_half_replaced_entry(versions: tuple[str, Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding revC 1: store removed the old entry in place, then renamed the new one in; a reader in
    between called the half-removed entry corrupt and deleted it. Now each read finds the old entry whole, no
    entry, or the new one whole."""
    key, a, b = versions
    cache = Cache(tmp_path / "c")
    cache.store(key, a)
    summaries = {(a / "summary.md").read_text(): "A", (b / "summary.md").read_text(): "B"}
    seen: list[str] = []
    reports: list[str] = []

    def read() -> None:
        entry = cache.lookup(key, on_corrupt=lambda k, r: reports.append(r))
        seen.append("none" if entry is None else summaries[(entry / "summary.md").read_text()])

    _reader_at_every_step(monkeypatch, read)
    cache.store(key, b)
    monkeypatch.undo()
    assert reports == []
    assert seen and set(seen) <= {"A", "none", "B"} and seen[-1] == "B"
    assert seen == sorted(seen, key=["A", "none", "B"].index)  # never back to the old one after the new one
    entry = cache.lookup(key)
    assert entry is not None and (entry / "summary.md").read_text() == (b / "summary.md").read_text()
    assert not [p.name for p in cache.root.iterdir() if p.name.startswith(".tmp-")]  # nothing set aside is left


def test_a_reader_that_judged_an_entry_corrupt_never_deletes_a_newer_one(versions: tuple[str, Path, Path],
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader checked a corrupted entry; before it deleted it, a --force run stored a fresh entry of the same
    key. The reader must not delete that one (it did: the run's result was lost, 'missing from the cache')."""
    key, a, b = versions
    cache = Cache(tmp_path / "c")
    cache.store(key, a)
    (cache.path(key) / "result.json").write_text("{")  # corrupted
    real_check = Cache.check

    def check_then_a_writer_stores(self: Cache, k: str) -> tuple[Path | None, str | None]:
        judged = real_check(self, k)
        monkeypatch.setattr(Cache, "check", real_check)  # only the reader's first check is followed by the store
        Cache(self.root).store(k, b)
        return judged

    monkeypatch.setattr(Cache, "check", check_then_a_writer_stores)
    reports: list[str] = []
    found = cache.lookup(key, on_corrupt=lambda k, r: reports.append(r))
    entry = cache.lookup(key)
    assert entry is not None and (entry / "summary.md").read_text() == (b / "summary.md").read_text()
    assert found == entry and reports == []  # what it would delete was the valid newer entry: kept, and a hit
    # a genuinely corrupted entry is still reported and deleted
    (entry / "result.json").write_text("{")
    assert cache.lookup(key, on_corrupt=lambda k, r: reports.append(r)) is None
    assert len(reports) == 1 and not cache.path(key).exists()


def test_remove_path_tolerates_the_path_becoming_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """remove_path found no folder, then a writer renamed one into place before the unlink: IsADirectoryError
    crashed the reader (revC 1). The folder is removed instead."""
    target = tmp_path / "entry"
    real_is_dir = Path.is_dir

    def is_dir_then_a_folder_appears(self: Path) -> bool:
        answer = real_is_dir(self)
        if self == target and not answer:
            target.mkdir()
            (target / "result.json").write_text("{}")
        return answer

    monkeypatch.setattr(Path, "is_dir", is_dir_then_a_folder_appears)
    flowvar.files.remove_path(target)
    monkeypatch.undo()
    assert not os.path.lexists(target)


def test_two_processes_replacing_and_reading_one_key(versions: tuple[str, Path, Path], tmp_path: Path) -> None:
    """Real processes for about 4 s: one stores A and B over each other, one looks the key up; the reader sees no
    corruption and no error, and the last entry stored is there, valid."""
    key, a, b = versions
    root = tmp_path / "c"
    Cache(root).store(key, a)
    src = Path(__file__).resolve().parents[1] / "src"
    writer = textwrap.dedent(f"""
        import time
        from flowvar.cache import Cache
        cache, end, n = Cache({str(root)!r}), time.time() + 4, 0
        while time.time() < end:
            cache.store({key!r}, ({str(a)!r}, {str(b)!r})[n % 2]); n += 1
        cache.store({key!r}, {str(b)!r})
        print(n)
    """)
    reader = textwrap.dedent(f"""
        import time
        from flowvar.cache import Cache
        cache, end, reports, hits = Cache({str(root)!r}), time.time() + 4.5, [], 0
        while time.time() < end:
            hits += cache.lookup({key!r}, on_corrupt=lambda k, r: reports.append(r)) is not None
        print(hits, sorted(set(reports)))
    """)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for code in (writer, reader)]
    (w_out, w_err), (r_out, r_err) = (p.communicate(timeout=60) for p in procs)
    assert procs[0].returncode == 0, w_err
    assert procs[1].returncode == 0, r_err  # no IsADirectoryError, no FileNotFoundError
    hits, reports = r_out.split(" ", 1)
    assert int(w_out) > 10 and int(hits) > 0 and reports.strip() == "[]", (w_out, r_out)
    entry = Cache(root).lookup(key)
    assert entry is not None and (entry / "summary.md").read_text() == (b / "summary.md").read_text()
    assert (entry / MANIFEST).is_file()
