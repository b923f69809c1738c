"""``flowvar reproduce`` where its disks meet trouble: a cache it cannot write (served when every experiment is a
hit, refused up front when something must be computed, as ``flowvar sweep`` does) and a full cache disk (the advice
names ``--cache``, the folder that is full, not the output folder)."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest

import flowvar.files
from flowvar.cache import Cache, staging_prefix
from flowvar.errors import ConfigError, DataError
from flowvar.experiments.base import run_experiment, write_remedy
from flowvar.reproduce import Options, reproduce


def read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every cache read-only as a read-only mount is (root ignores permission bits, so no chmod): the check
    refuses it, and any attempt to clean it up fails the test."""

    def refuse(self: Cache) -> None:
        raise ConfigError(f"cannot write to the cache folder {self.root}: Read-only file system; make it writable or "
                          f"choose another --cache")

    def no_writes(self: Cache) -> int:
        raise AssertionError(f"wrote into the read-only cache {self.root}")

    monkeypatch.setattr(Cache, "check_writable", refuse)
    monkeypatch.setattr(Cache, "clean_stale", no_writes)


def test_a_fully_cached_reproduce_reads_a_cache_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    cache = tmp_path / "cache"
    first = reproduce(Options(out=tmp_path / "a", quick=True, only=["prop1"], cache_dir=cache, quiet=True))
    assert [o.status for o in first.outcomes] == ["computed"]
    read_only(monkeypatch)
    again = reproduce(Options(out=tmp_path / "b", quick=True, only=["prop1"], cache_dir=cache, quiet=True))
    assert [o.status for o in again.outcomes] == ["cached"]
    assert (tmp_path / "b" / "prop1" / "result.json").read_bytes() == (tmp_path / "a" / "prop1" /
                                                                        "result.json").read_bytes()
    assert "the cache" in (log := (tmp_path / "b" / "reproduce.log").read_text()) and "is read-only" in log
    # something to compute (a miss, or --force): refused before anything runs or --out is created
    for options in (Options(out=tmp_path / "c", quick=True, only=["prop1", "lemma1"], cache_dir=cache, quiet=True),
                    Options(out=tmp_path / "d", quick=True, only=["prop1"], cache_dir=cache, quiet=True, force=True)):
        with pytest.raises(ConfigError, match=r"cannot write to the cache folder .*Read-only file system"):
            reproduce(options)
        assert not options.out.exists()


def test_the_write_advice_names_the_folder_written(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    work = cache.work_dir("prop1-0123456789abcdef")
    staging = cache.root / f"{staging_prefix('run-')}abcd" / ".prop1.1.x" / "a.png"
    assert write_remedy(staging, work) == f"free space in the cache {cache.root.resolve()} or choose another --cache"
    # output written outside the cache (run_cached installing, a plain run) is advised as the output folder
    assert write_remedy(tmp_path / "out" / ".prop1.1.x" / "a.png", work) == ("free space or choose another output "
                                                                             "folder")
    assert write_remedy(staging, None) == "free space or choose another output folder"


def full_disk_for_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every figure write fails as on a full disk (ENOSPC when its temporary file is created); other files write."""
    mkstemp = tempfile.mkstemp

    def full(*args, **kwargs):
        if str(kwargs.get("prefix", "")).endswith(".png."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(flowvar.files.tempfile, "mkstemp", full)


def test_a_full_cache_disk_is_advised_as_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """reproduce computes a miss inside the cache (flowvar.runner.compute): a figure that cannot be written there
    says to free space in the cache or choose another --cache, not another output folder."""
    full_disk_for_figures(monkeypatch)
    cache = tmp_path / "cache"
    summary = reproduce(Options(out=tmp_path / "r", quick=True, only=["prop1"], cache_dir=cache, quiet=True))
    (outcome,) = summary.outcomes
    assert outcome.status == "failed"
    assert "cannot write figure" in outcome.error and str(cache) in outcome.error
    assert (f"No space left on device; free space in the cache {cache.resolve()} or choose another --cache"
            in outcome.error)
    assert "output folder" not in outcome.error
    # a run straight into an output folder is advised as the output folder
    with pytest.raises(DataError, match=r"No space left on device; free space or choose another output folder$"):
        run_experiment("prop1", tmp_path / "o", quick=True)


def test_a_forced_recompute_that_fails_stays_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``reproduce --force`` whose recompute fails is a failure (exit 1), though the cache still holds the earlier
    entry of the key: that entry is not the recompute's result, so it is neither installed nor reported computed
    (review revX 1: a failed reply was judged computed whenever the cache held the key). A failed compute with
    nothing in the cache stays a failure too."""
    import json

    import flowvar.experiments.base
    from flowvar.cli import main

    cache, out = tmp_path / "cache", tmp_path / "r"
    first = reproduce(Options(out=out, quick=True, only=["prop1"], cache_dir=cache, quiet=True))
    assert [o.status for o in first.outcomes] == ["computed"]
    entry = Cache(cache).check(first.outcomes[0].key)[0]
    assert entry is not None
    stored = (entry / "result.json").read_bytes()

    def failing(*args, **kwargs):
        raise ConfigError("injected failure of the forced recompute")

    monkeypatch.setattr(flowvar.experiments.base, "run_experiment", failing)
    capsys.readouterr()
    code = main(["reproduce", "--quick", "--only", "prop1", "--out", str(out), "--cache", str(cache), "--force",
                 "--quiet"])
    printed = capsys.readouterr()
    assert code == 1
    assert "0 computed" in printed.out and "1 failed" in printed.out
    assert "FAILED prop1: ConfigError: injected failure of the forced recompute" in printed.out
    assert "installed" not in printed.err and "all the same" not in printed.err
    (record,) = json.loads((out / "results.json").read_text())["experiments"]
    assert (record["status"], record["error"]) == ("failed", "ConfigError: injected failure of the forced recompute")
    # the earlier entry is still the cache's (a failed --force deletes nothing), untouched
    assert (Cache(cache).check(first.outcomes[0].key)[0] / "result.json").read_bytes() == stored
    # without --force the cached entry is served as before
    again = reproduce(Options(out=tmp_path / "s", quick=True, only=["prop1"], cache_dir=cache, quiet=True))
    assert [o.status for o in again.outcomes] == ["cached"]
    # a compute that failed with nothing stored stays a failure
    failed = reproduce(Options(out=tmp_path / "t", quick=True, only=["prop1"], cache_dir=tmp_path / "empty",
                               quiet=True))
    assert [(o.status, o.error) for o in failed.outcomes] == [
        ("failed", "ConfigError: injected failure of the forced recompute")]


def test_a_fully_cached_reproduce_verifies_each_entry_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry is re-hashed once per run (review revX 8: planning checked it to decide whether something must be
    computed, then serving looked it up again, hashing every file twice); a corrupt one is still reported and
    recomputed."""
    cache = tmp_path / "cache"
    first = reproduce(Options(out=tmp_path / "a", quick=True, only=["prop1", "lemma1"], cache_dir=cache, quiet=True))
    assert [o.status for o in first.outcomes] == ["computed", "computed"]
    judged: list[str] = []
    problem = Cache._problem

    def counted(self: Cache, entry: Path, key: str) -> str | None:
        judged.append(key)
        return problem(self, entry, key)

    monkeypatch.setattr(Cache, "_problem", counted)
    again = reproduce(Options(out=tmp_path / "b", quick=True, only=["prop1", "lemma1"], cache_dir=cache, quiet=True))
    assert [o.status for o in again.outcomes] == ["cached", "cached"]
    assert sorted(judged) == sorted(o.key for o in first.outcomes)
    # a corrupt entry: judged at planning, then deleted (judged on what was set aside) and recomputed
    prop1 = Cache(cache).path(first.outcomes[0].key)
    (prop1 / "result.json").write_bytes((prop1 / "result.json").read_bytes()[:50])
    third = reproduce(Options(out=tmp_path / "c", quick=True, only=["prop1", "lemma1"], cache_dir=cache, quiet=True))
    assert [(o.status, o.corrupted) for o in third.outcomes] == [
        ("computed", "result.json was modified (checksum mismatch)"), ("cached", None)]
