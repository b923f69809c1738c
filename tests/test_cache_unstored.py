"""The compute step of ``flowvar reproduce`` and ``flowvar sweep`` (:func:`flowvar.runner.compute`) stores a miss
in the cache by a rename and installs nothing; a result the cache's disk refuses to store is handed to the command,
which installs it into its output folder (it is not lost), and every message says where the result is in the
command that prints it."""

from __future__ import annotations

import errno
import io
import os
import shutil
import sys
from pathlib import Path

import pytest

import flowvar.cache
from flowvar.cache import Cache, staging_writer
from flowvar.errors import DataError
from flowvar.reproduce import Options, reproduce
from flowvar.runner import compute
from flowvar.sweep import Options as SweepOptions
from flowvar.sweep import plan, sweep

TOY = str(Path(__file__).parent / "plugins" / "toy_sweep.py")
TINY = {"n_samples": "300", "angles": "0,180"}


def staging_left(root: Path) -> list[str]:
    """The staging folders (``.tmp-…``) left in a cache folder."""
    return [p.name for p in root.iterdir() if staging_writer(p.name) is not None] if root.is_dir() else []


def refuse_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache disk that fills up as the entry's manifest is written: every ``fsync`` of a ``cache.json`` fails with
    ENOSPC (the store's last write, after the result's files are complete); every other file writes."""
    if not sys.platform.startswith("linux"):
        pytest.skip("tells the file of a descriptor by /proc/self/fd")
    fsync = os.fsync

    def full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/cache.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


def test_compute_stores_a_miss_by_rename_and_copies_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It ran run_cached into a temporary output folder inside the cache: every miss was copied once more from the
    entry into that folder, then deleted."""
    copies: list[str] = []
    copy2 = shutil.copy2
    monkeypatch.setattr(shutil, "copy2", lambda src, dst, **kw: copies.append(str(dst)) or copy2(src, dst, **kw))
    reply = compute("prop1", TINY, True, None, None, str(tmp_path / "cache"), 1)
    assert reply["status"] == "computed" and not reply["hit"] and "unstored" not in reply, reply
    assert Cache(tmp_path / "cache").check(reply["key"])[0] is not None
    assert copies == []
    assert staging_left(tmp_path / "cache") == []


def test_reproduce_installs_a_result_the_cache_could_not_store(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A full cache disk at the store: the result, complete in compute's staging folder, is installed into --out
    with one warning that says so (it was installed into compute's temporary folder, which was then deleted: lost)."""
    refuse_manifests(monkeypatch)
    cache, out, stream = tmp_path / "cache", tmp_path / "r", io.StringIO()
    summary = reproduce(Options(out=out, quick=True, only=["prop1"], cache_dir=cache, quiet=True,
                                overrides={"prop1": TINY}), stream=stream)
    (outcome,) = summary.outcomes
    assert (outcome.status, outcome.error) == ("computed", None)
    assert (out / "prop1" / "result.json").is_file() and outcome.result is not None
    assert Cache(cache).check(outcome.key) == (None, None)  # not stored
    assert staging_left(cache) == []  # the staging folder is deleted once installed
    assert (f"flowvar: warning: prop1: cannot store the result of prop1 in the cache {cache.resolve()}: No space "
            f"left on device; the result is complete in {out / 'prop1'} (installed there), the cache was not "
            f"updated: free space or choose another --cache for the next run to find it") in stream.getvalue()
    assert ".tmp-" not in stream.getvalue()


def test_a_sweep_installs_a_point_the_cache_could_not_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_manifests(monkeypatch)
    out, stream = tmp_path / "sw", io.StringIO()
    options = SweepOptions("toy_sweep", grid=["x=1,2"], out=out, plugins=[TOY], quiet=True)
    summary = sweep(options, stream=stream)
    assert summary.count("computed") == 2
    for point in plan(options).points:
        assert (out / "points" / point.key / "result.json").is_file()
        assert Cache(out / ".cache").check(point.key) == (None, None)
    assert staging_left(out / ".cache") == []
    assert stream.getvalue().count("the cache was not updated: free space or choose another --cache") == 2


def test_reproduce_says_a_result_it_cannot_install_is_kept_in_the_cache(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A computed result --out cannot take: the failure says the result is in the cache and a rerun installs it
    (it was compute's install into its own temporary folder that spoke: "choose another output folder; …" naming
    CACHE/.tmp-…-work-…), and the rerun does, as a cache hit."""
    install = flowvar.cache.install

    def out_full(entry: Path, dest: Path) -> bool:
        raise flowvar.cache.DataError(f"cannot write {dest}: No space left on device; free space or choose another "
                                      f"output folder")

    monkeypatch.setattr(flowvar.cache, "install", out_full)
    cache, out = tmp_path / "cache", tmp_path / "r"
    options = Options(out=out, quick=True, only=["prop1"], cache_dir=cache, quiet=True, overrides={"prop1": TINY})
    (outcome,) = reproduce(options).outcomes
    assert outcome.status == "failed"
    assert outcome.error == (f"DataError: cannot write {out / 'prop1'}: No space left on device; free space or choose "
                             f"another output folder; the computed result of prop1 is complete in the cache "
                             f"{cache.resolve()} ({outcome.key}): once it can be written, rerun the same command to "
                             f"install it without recomputing")
    # one text, whichever command installs: flowvar run --cache says the same (cache.install_entry)
    with pytest.raises(flowvar.cache.DataError) as run_said:
        flowvar.cache.run_cached("prop1", out, flowvar.cache.Cache(cache.resolve()), quick=True, overrides=TINY)
    assert str(run_said.value) == outcome.error.removeprefix("DataError: ").replace("computed result", "cached result")
    monkeypatch.setattr(flowvar.cache, "install", install)
    (again,) = reproduce(options).outcomes
    assert again.status == "cached" and (out / "prop1" / "result.json").is_file()


def test_a_refused_metric_on_a_point_the_cache_could_not_store_says_it_is_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt --metric checked against the first computed point, which the full cache could not store: the
    refusal says that point is not kept, and names no file of it (review revX 4: it said the point "is cached" and
    that every valid name is in the staging folder's result.json, both deleted by then)."""
    refuse_manifests(monkeypatch)
    out = tmp_path / "sw"
    options = SweepOptions("toy_sweep", grid=["x=1,2"], out=out, plugins=[TOY], quiet=True, metrics=["stats.yy"])
    with pytest.raises(flowvar.cache.ConfigError) as refused:
        sweep(options, stream=io.StringIO())
    message = str(refused.value)
    assert message.startswith("--metric 'stats.yy' names no metric of toy_sweep (close: stats.y")
    assert "is cached" not in message and ".tmp-" not in message and "result.json" not in message
    assert (f"the point computed to learn them is not kept: the cache {(out / '.cache').resolve()} could not store it "
            f"(No space left on device); {out}'s sweep.csv, sweep.json and figures are as they were") in message
    assert staging_left(out / ".cache") == [] and not (out / "points").exists()


def test_a_workers_refusal_keeps_its_own_remedy_in_the_parents_message(tmp_path: Path) -> None:
    """A worker's unstored reply carries the refusal's remedy (an unreadable entry of another user: chmod, not 'free
    space'); the parent's message gave the default remedy, rebuilt from the reason alone (fixCache's note)."""
    from flowvar.experiments.base import run_experiment
    from flowvar.runner import install_computed

    run_experiment("counterexample1", tmp_path / "staging", quick=True)  # a real result, 0.5 s
    result = tmp_path / "staging" / "counterexample1"
    dest = tmp_path / "out"
    reply = {"status": "computed", "key": "counterexample1-0", "hit": False,
             "unstored": {"folder": str(result), "staging": str(tmp_path / "staging"),
                          "experiment": "counterexample1",
                          "root": str(tmp_path / "cache"), "reason": "an entry of this key is unreadable",
                          "remedy": "ask its owner to run chmod -R a+rX on it"}}
    try:
        _, message = install_computed(reply, Cache(tmp_path / "cache"), dest, "counterexample1")
    except DataError as lost:  # dest refused it too: the message still names the worker's remedy
        message = str(lost)
    assert "chmod -R a+rX" in message and "free space" not in message, message
