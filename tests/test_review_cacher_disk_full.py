"""Review cacheR 2: when the cache's disk fills as an experiment writes its own files (result.json, a figure) into
the cache's staging folder, the result is lost (the run stops at the refused file), and reproduce went on computing
the next experiments into the same full disk. Now the error is a CacheFullError and runner.dispatch computes nothing
more into that cache; the docs say the result is lost instead of promising it is installed into OUT."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from flowvar import runner
from flowvar.cache import Cache, CacheFullError, run_cached


def _full_cache_disk(monkeypatch: pytest.MonkeyPatch, cache_root: Path) -> list[str]:
    """Make every file an experiment writes into the cache's staging folders fail as a full disk does (the real
    writer, files.atomic_write_bytes, turns the OSError into its WriteError); returns the refused names."""
    real = os.replace
    refused: list[str] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        target = Path(dst)
        if target.is_relative_to(cache_root) and any(p.startswith(".tmp-") for p in target.parts):
            refused.append(target.name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return refused


def test_a_full_cache_disk_is_a_cache_full_error_naming_the_cache(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = (tmp_path / "cache").resolve()
    refused = _full_cache_disk(monkeypatch, root)
    with pytest.raises(CacheFullError, match=r"No space left on device; free space in the cache .*cache"):
        run_cached("counterexample1", tmp_path / "out", Cache(root), quick=True)
    assert refused
    assert not (tmp_path / "out" / "counterexample1").exists()  # lost, as the docs now say


class _Counting(runner.SerialBackend):
    """The serial backend, counting the items that really ran an experiment."""

    def __init__(self) -> None:
        super().__init__(1, 1)
        self.computed: list[str] = []

    def run(self, items, args, on_start=lambda item: None):
        for item in items:
            on_start(item)
            a = args(item)
            if len(a) < 10:  # not refused by dispatch: it computes
                self.computed.append(item)
            yield item, runner.compute(*a)


def test_reproduce_computes_nothing_more_into_a_full_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = (tmp_path / "cache").resolve()
    root.mkdir()
    _full_cache_disk(monkeypatch, root)
    backend = _Counting()
    items = ["counterexample1", "lemma1", "prop1"]

    def args(name: str) -> tuple:
        return (name, {}, True, None, None, str(root), 1, (), False)

    replies = dict(runner.dispatch(backend, items, args, lambda item: None))
    assert backend.computed == ["counterexample1"]  # the two after it never ran into the full disk
    first = replies["counterexample1"]
    assert first["status"] == "failed" and first["cache_full"] is True
    assert first["error"].startswith("CacheFullError: cannot write")
    for name in ("lemma1", "prop1"):
        assert replies[name]["status"] == "failed" and replies[name]["wall_s"] == 0.0
        assert replies[name]["error"].startswith("not computed: the cache's disk is full (counterexample1: "
                                                 "CacheFullError: ")
        assert "free space in the cache" in replies[name]["error"]


def test_other_failures_do_not_stop_the_rest(tmp_path: Path) -> None:
    """Only a full cache disk stops the queue: an experiment failing otherwise leaves the next one computed."""
    root = (tmp_path / "cache").resolve()
    backend = _Counting()

    def args(name: str) -> tuple:
        return (name, {"no_such_field": 1} if name == "counterexample1" else {}, True, None, None, str(root), 1,
                (), False)

    replies = dict(runner.dispatch(backend, ["counterexample1", "prop1"], args, lambda item: None))
    assert replies["counterexample1"]["status"] == "failed" and "cache_full" not in replies["counterexample1"]
    assert backend.computed == ["counterexample1", "prop1"]
    assert replies["prop1"]["status"] == "computed"
