"""The result cache: keys, entries that are stored whole or not at all, corruption detection, `flowvar run --cache`."""

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest

from flowvar.cache import (
    MANIFEST,
    Cache,
    StagingWriter,
    cache_key,
    code_version,
    data_digest,
    data_digests,
    host_tag,
    install,
    key_inputs,
    lookup,
    run_cached,
    source_digest,
    staging_prefix,
    staging_writer,
    store,
)
from flowvar.cache_admin import Survey, format_survey, prune, survey
from flowvar.cli import main
from flowvar.errors import ConfigError, DataError
from flowvar.experiments.base import build_config, get_experiment
from flowvar.results import Result

TINY = {"n_samples": "300", "angles": "0,180"}



@pytest.fixture(scope="module")
def prop1_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real prop1 run (tiny), stored in a cache: (cache root, key)."""
    root = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    run = run_cached("prop1", out, Cache(root), quick=True, overrides=TINY)
    assert not run.hit
    return root, run.key


def test_key_is_stable_and_covers_config_mode_name_and_code() -> None:
    spec = get_experiment("prop1")
    config = build_config(spec, quick=True)
    key = cache_key("prop1", config, True)
    assert key.startswith("prop1-") and len(key) == len("prop1-") + 16
    assert cache_key("prop1", build_config(spec, quick=True), True) == key
    # the key can be recomputed from the config stored in result.json
    assert cache_key("prop1", json.loads(json.dumps(dataclasses.asdict(config))), True) == key
    assert cache_key("prop1", dataclasses.replace(config, n_samples=config.n_samples + 1), True) != key
    assert cache_key("prop1", config, False) != key
    assert cache_key("prop1_copy", config, True) != key
    assert cache_key("prop1", config, True, threads=1) != cache_key("prop1", config, True, threads=2)
    inputs = key_inputs("prop1", config, True)
    assert inputs["code_version"] == code_version("prop1") and inputs["torch"] and inputs["torch_threads"] >= 1


def test_code_version_covers_the_library_the_kits_and_the_own_module_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowvar.cache_key as cache_module

    sources = {"gaussian.py": b"x = 1", "experiments/base.py": b"", "experiments/_kit.py": b"k = 1",
               "experiments/a.py": b"a = 1", "experiments/b.py": b"b = 1"}
    monkeypatch.setattr(cache_module, "_sources", lambda: dict(sources))
    monkeypatch.setattr(cache_module, "_plugin_source", lambda name: None)
    before = {name: source_digest(name) for name in ("a", "b")}
    sources["experiments/b.py"] = b"b = 2"  # another experiment: a's key stays
    assert source_digest("a") == before["a"] and source_digest("b") != before["b"]
    for shared in ("experiments/_kit.py", "gaussian.py", "experiments/base.py"):  # shared code: every key moves
        sources[shared] += b"\n# edited"
        assert source_digest("a") != before["a"]
        before["a"] = source_digest("a")
    monkeypatch.undo()
    assert code_version().startswith("0.") and code_version("prop1") != code_version("fig4")
    # the front end never counts
    assert all(not f.startswith(("report/", "audit/", "sweep/")) and f not in ("cli.py", "runner.py")
               for f in cache_module._sources())


def test_store_lookup_and_install(prop1_run: tuple[Path, str], tmp_path: Path) -> None:
    root, key = prop1_run
    entry = lookup(key, root)
    assert entry is not None and (entry / MANIFEST).is_file()
    manifest = Cache(root).manifest(key)
    assert manifest["experiment"] == "prop1" and manifest["inputs"]["config"]["n_samples"] == 300
    assert set(manifest["files"]) >= {"result.json", "summary.md", "variance_by_angle.png"}
    assert Cache(root).last_runtime("prop1", True) == Result.load(entry / "result.json").runtime_s
    dest = tmp_path / "prop1"
    assert install(entry, dest) is True
    stamp = (dest / "result.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert install(entry, dest) is False  # up to date: untouched
    assert (dest / "result.json").stat().st_mtime_ns == stamp
    # storing a copy in another cache works (its inputs: those of the result, in this installation), storing it
    # under a key that is not its result's (review cacheR 4), or a folder without a result, does not
    copy = store(key, dest, tmp_path / "other")
    assert (copy / "result.json").read_bytes() == (dest / "result.json").read_bytes()
    assert Cache(tmp_path / "other").manifest(key)["inputs"] == manifest["inputs"]
    with pytest.raises(ConfigError, match=rf"cannot cache {dest} under prop1-copy: its key inputs hash to {key}, "
                                          r"not to prop1-copy; store it under the key of its inputs"):
        store("prop1-copy", dest, tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no valid result\.json"):
        Cache(tmp_path / "other").store("x", tmp_path / "empty")


@pytest.mark.parametrize("damage", ["edit_result", "delete_figure", "bad_manifest", "truncate"])
def test_corrupted_entry_is_reported_removed_and_missed(prop1_run: tuple[Path, str], tmp_path: Path,
                                                       damage: str) -> None:
    root, key = prop1_run
    cache = Cache(tmp_path / "c")
    cache.store(key, Cache(root).path(key))
    entry = cache.path(key)
    if damage == "edit_result":
        data = json.loads((entry / "result.json").read_text())
        data["claims"][0]["verdict"] = "refuted"
        (entry / "result.json").write_text(json.dumps(data))
    elif damage == "delete_figure":
        (entry / "variance_by_angle.png").unlink()
    elif damage == "bad_manifest":
        (entry / MANIFEST).write_text("{")
    else:
        (entry / "result.json").write_bytes((entry / "result.json").read_bytes()[:50])
    reasons: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, r: reasons.append(r)) is None
    assert len(reasons) == 1 and not entry.exists()
    assert cache.lookup(key) is None  # now simply absent


def test_clean_stale_removes_only_dead_writers(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    dead = tmp_path / f".tmp-999999999@{host_tag()}-abc"
    alive = tmp_path / f".tmp-{os.getpid()}@{host_tag()}-abc"
    dead.mkdir()
    alive.mkdir()
    assert cache.clean_stale() == 1 and not dead.exists() and alive.exists()


def test_staging_folders_name_their_machine_and_another_machines_are_kept(prop1_run: tuple[Path, str],
                                                                          tmp_path: Path) -> None:
    """On a cache shared by a cluster's nodes a pid means something only on its own machine: a staging folder
    written on another machine is never removed from here (its pid is dead here, its writer may not be)."""
    other = "0123abcd" if host_tag() != "0123abcd" else "abcd0123"
    cache = Cache(tmp_path)
    cache.check_writable()
    dead, alive = tmp_path / f".tmp-999999999@{host_tag()}-abc", tmp_path / f"{staging_prefix()}abc"
    remote = tmp_path / f".tmp-999999999@{other}-work-xyz"
    for folder in (dead, alive, remote):
        folder.mkdir()
        (folder / "result.json").write_text("{}")
    assert staging_writer(alive.name) == StagingWriter(os.getpid(), host_tag())
    assert staging_writer(remote.name) == StagingWriter(999999999, other)
    assert staging_writer(".tmp-12@not-a-tag-x") is None and staging_writer(".tmp-x-y") is None
    assert {i.name: i.status for i in survey(cache).staging} == {
        dead.name: "left by a killed run", alive.name: "being written",
        remote.name: "another machine's (being written, or left there: only that machine can tell; kept)"}
    assert [i.name for i in prune(cache).removed] == [dead.name]
    assert cache.clean_stale() == 0 and alive.is_dir() and remote.is_dir()
    # what this process writes carries its machine
    root, key = prop1_run
    seen: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(*args: object, **kw: object) -> str:
        seen.append(str(kw.get("prefix")))
        return real_mkdtemp(*args, **kw)  # type: ignore[arg-type]

    with mock.patch("flowvar.cache.tempfile.mkdtemp", spy):
        cache.store(key, Cache(root).path(key))
    assert seen == [staging_prefix()] and staging_writer(seen[0] + "x") == StagingWriter(os.getpid(), host_tag())


def test_run_cache_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "prop1", "--quick", "--quiet", "--set", "n_samples=300", "--set", "angles=0,120",
            "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    assert main([*args]) == 0
    assert "cache hit" not in capsys.readouterr().out
    stamp = (tmp_path / "out" / "prop1" / "result.json").stat().st_mtime_ns
    assert main([*args]) == 0
    assert "cache hit" in capsys.readouterr().out
    assert (tmp_path / "out" / "prop1" / "result.json").stat().st_mtime_ns == stamp


def test_an_unwritable_cache_is_one_line_naming_it_before_anything_runs(tmp_path: Path) -> None:
    """A cache that cannot take entries (read-only, or under a file as here: what a test running as root can build)
    stops run_cached before the experiment runs, and reproduce refuses it in one line before anything is written
    (it was a raw PermissionError of the work folder, with no fix; then a per-experiment failure beside a written
    report)."""
    from flowvar.reproduce import Options, reproduce

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = Cache(blocker / "cache")
    with pytest.raises(ConfigError, match=r"cannot write to the cache folder .*file/cache: .*choose another --cache"):
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    assert not (tmp_path / "out").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".work").write_text("a file where the work folders go")
    with pytest.raises(ConfigError, match=r"cannot write to the cache folder .*other \(\.work: .*\); make it writable"):
        run_cached("prop1", tmp_path / "out", Cache(tmp_path / "other"), quick=True, overrides=TINY)

    with pytest.raises(ConfigError, match=r"cannot write to the cache folder .*file/cache: .*choose another --cache"):
        reproduce(Options(out=tmp_path / "rep", quick=True, only=["prop1"], cache_dir=blocker / "cache",
                          quiet=True, overrides={"prop1": TINY}))
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("refusal", ["EROFS", "EACCES"])
def test_a_corrupt_entry_of_a_cache_that_cannot_delete_it_is_a_miss_then_one_line(
        prop1_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], refusal: str) -> None:
    """A corrupt entry in a cache that refuses its deletion (a read-only mount: EROFS; a folder of someone else's:
    EACCES) is reported corrupt and not removable, and looked up as a miss; ``flowvar run --cache`` then stops with the
    one-line unwritable-cache error (review revX 2: an uncaught OSError from the rename that sets it aside)."""
    import errno
    import pathlib

    root, key = prop1_run
    cache = Cache(tmp_path / "ro")
    entry = cache.store(key, Cache(root).path(key))
    (entry / "result.json").write_bytes((entry / "result.json").read_bytes()[:50])
    real_rename = pathlib.Path.rename
    code = getattr(errno, refusal)

    def refuse(self: Path, target: Path) -> Path:
        if cache.root.resolve() in self.resolve().parents:
            raise OSError(code, os.strerror(code), str(self))
        return real_rename(self, target)

    def unwritable(self: Cache) -> None:  # as check_writable finds a read-only mount (root ignores permission bits)
        raise ConfigError(f"cannot write to the cache folder {self.root}: {os.strerror(code)}; make it writable or "
                          f"choose another --cache")

    monkeypatch.setattr(pathlib.Path, "rename", refuse)
    monkeypatch.setattr(Cache, "check_writable", unwritable)
    reasons: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, reason: reasons.append(reason)) is None
    assert reasons == [f"result.json was modified (checksum mismatch); it could not be removed: {os.strerror(code)}"]
    assert entry.is_dir()  # left as it was
    capsys.readouterr()
    assert main(["run", "prop1", "--quick", "--quiet", "--set", "n_samples=300", "--set", "angles=0,180",
                 "--out", str(tmp_path / "out"), "--cache", str(cache.root)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (f"is corrupted (result.json was modified (checksum mismatch); it could not be removed: "
            f"{os.strerror(code)})") in err
    assert err.strip().splitlines()[-1] == (f"flowvar: error: cannot write to the cache folder {cache.root}: "
                                            f"{os.strerror(code)}; make it writable or choose another --cache")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_entry_that_cannot_be_removed_from_a_writable_cache_is_reported_once(
        prop1_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the entry refuses its removal (a folder of someone else's in a shared cache): run_cached reports it
    once (not again by its lookup under the key's lock), computes, and the result the cache cannot store in the
    entry's place is complete in OUT."""
    import errno
    import pathlib

    root, key = prop1_run
    cache = Cache(tmp_path / "shared")
    entry = cache.store(key, Cache(root).path(key))
    (entry / "result.json").write_bytes((entry / "result.json").read_bytes()[:50])
    real_rename = pathlib.Path.rename

    def refuse(self: Path, target: Path) -> Path:
        if self == entry:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", refuse)
    reasons: list[str] = []
    with pytest.raises(DataError, match=r"the result is complete in .*out/prop1 \(installed there\)"):
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY,
                   on_corrupt=lambda k, reason: reasons.append(reason))
    assert reasons == [f"result.json was modified (checksum mismatch); it could not be removed: "
                       f"{os.strerror(errno.EACCES)}"]
    assert Result.load(tmp_path / "out" / "prop1" / "result.json").experiment == "prop1"


def test_a_second_process_computing_the_same_key_waits_and_uses_the_first_ones_result(
        prop1_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs sharing a cache compute the same key: the second waits for the first (a line says so) and then takes
    its stored result instead of training into the same work folder (which the first deletes when it stores).
    flock conflicts between two opens in one process too, so a thread stands for the first process."""
    import threading

    import flowvar.experiments.base as base

    root, key = prop1_run
    cache = Cache(tmp_path / "shared")
    holding, go = threading.Event(), threading.Event()

    def first() -> None:
        with cache.computing(key):
            holding.set()
            go.wait(30)
            cache.store(key, root / key)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(30)

    def not_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second run computed the key the first one was computing")

    monkeypatch.setattr(base, "run_experiment", not_again)
    waits: list[str] = []
    run = run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY,
                     on_wait=lambda message: (waits.append(message), go.set()))
    thread.join(30)
    assert run.hit and run.key == key and (tmp_path / "out" / "prop1" / "result.json").is_file()
    assert len(waits) == 1 and key in waits[0] and "waiting" in waits[0] and f"pid {os.getpid()}" in waits[0]
    assert not list((cache.root / ".work").glob("*.lock"))  # the holder removes its lock file


def test_compute_reports_a_key_another_process_stored_meanwhile_as_a_hit(prop1_run: tuple[Path, str],
                                                                         tmp_path: Path) -> None:
    """runner.compute runs a planned miss; when a process sharing the cache stored the key first (it waited for
    it), the reply says hit, so reproduce and sweep list it as cached rather than computed."""
    from flowvar.runner import compute

    root, key = prop1_run
    cache = Cache(tmp_path / "shared")
    cache.store(key, root / key)
    reply = compute("prop1", TINY, True, None, None, str(cache.root), 1)
    assert reply["status"] == "computed" and reply["key"] == key and reply["hit"] is True
    fresh = compute("prop1", {**TINY, "n_samples": "200"}, True, None, None, str(cache.root), 1)
    assert fresh["status"] == "computed" and fresh["hit"] is False


def test_clean_stale_spares_a_key_being_computed_and_removes_lock_files_of_killed_runs(tmp_path: Path) -> None:
    """A `--force` run recomputing a key whose entry exists holds the key's lock: another run's clean_stale must not
    delete its work folder (it deleted every work folder of a stored key). A lock file left by a killed run goes."""
    import threading

    cache = Cache(tmp_path / "cache")
    busy, killed = "prop1-00000000000000aa", "prop1-00000000000000bb"
    for key in (busy, killed):
        (cache.work_dir(key) / "sigma=0.0").mkdir(parents=True)
        cache.path(key).mkdir()
        (cache.path(key) / MANIFEST).write_text("{}")
    left = cache.root / ".work" / "prop1-00000000000000cc.lock"  # its holder was killed: no process holds it
    left.write_text("pid 999999")
    holding, done = threading.Event(), threading.Event()

    def forced_run() -> None:
        with cache.computing(busy):
            holding.set()
            done.wait(30)

    thread = threading.Thread(target=forced_run)
    thread.start()
    try:
        assert holding.wait(30)
        assert cache.clean_stale() == 2
        assert cache.work_dir(busy).is_dir() and not cache.work_dir(killed).exists() and not left.exists()
    finally:
        done.set()
        thread.join(30)
    assert cache.clean_stale() == 1 and not cache.work_dir(busy).exists()
    assert not list((cache.root / ".work").iterdir())


def test_an_entry_is_a_normal_folder_others_sharing_the_cache_can_read(prop1_run: tuple[Path, str],
                                                                       tmp_path: Path) -> None:
    """Entries are staged in mkdtemp folders, which are private (0700): once stored, an entry has the permissions of
    any folder the user makes, so a cache shared between users (a group folder) serves everyone."""
    from flowvar.files import current_umask

    root, key = prop1_run
    entry = Cache(tmp_path / "shared").store(key, root / key)
    assert entry.stat().st_mode & 0o777 == 0o777 & ~current_umask()


def test_a_file_in_place_of_an_entry_is_reported_removed_and_recomputed(prop1_run: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    """Garbage where an entry's folder goes (a file, a dangling link) is a corrupted entry like any other: reported,
    removed, recomputed (it was a miss, then a raw NotADirectoryError when the new entry was stored, every run)."""
    _, key = prop1_run
    cache = Cache(tmp_path / "cache")
    cache.root.mkdir()
    cache.path(key).write_text("garbage")
    reasons: list[str] = []
    run = run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY,
                     on_corrupt=lambda k, reason: reasons.append(reason))
    assert reasons == ["not a folder"] and not run.hit and run.corrupted == "not a folder"
    assert cache.check(key) == (cache.path(key), None)
    shutil.rmtree(cache.path(key))
    cache.path(key).symlink_to(tmp_path / "nowhere")
    assert cache.lookup(key, on_corrupt=lambda k, reason: reasons.append(reason)) is None
    assert reasons[-1] == "not a folder" and not cache.path(key).is_symlink()


# ------------------------------------------------------------------------------------ flowvar cache list / prune

def _files(root: Path) -> dict[str, int]:
    """Every file under root (relative path → size): the whole state of a cache folder."""
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _change_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Edit a library module, as far as code versions can tell: every experiment's code version moves."""
    import flowvar.cache_key as cache_module

    sources = dict(cache_module._sources())
    sources["gaussian.py"] = sources.get("gaussian.py", b"") + b"\n# edited"
    monkeypatch.setattr(cache_module, "_sources", lambda: dict(sources))


def _unfinished(cache: Cache, n_samples: int, checkpoint_bytes: int) -> str:
    """A work folder of prop1 made the way run_cached makes one (with its inputs.json), holding a checkpoint."""
    config = build_config(get_experiment("prop1"), quick=True, overrides={"n_samples": str(n_samples)})
    key = cache_key("prop1", config, True)
    work = cache.start_work(key, key_inputs("prop1", config, True))
    (work / "seed=0").mkdir()
    (work / "seed=0" / "checkpoint.pt").write_bytes(b"x" * checkpoint_bytes)
    return key


@pytest.fixture()
def mixed_cache(prop1_run: tuple[Path, str], tmp_path: Path) -> tuple[Cache, str, str, str]:
    """A cache with one entry (current code), the work folder of an interrupted run of current code, and a work
    folder without inputs.json (as older flowvar made them): (cache, entry key, resumable key, unknown key)."""
    root, key = prop1_run
    cache = Cache(tmp_path / "cache")
    cache.store(key, root / key, Cache(root).manifest(key)["inputs"])
    resumable = _unfinished(cache, 200, 3000)
    unknown = "fig4-00000000000000ff"
    (cache.work_dir(unknown) / "d=2").mkdir(parents=True)
    (cache.work_dir(unknown) / "d=2" / "checkpoint.pt").write_bytes(b"y" * 5000)
    return cache, key, resumable, unknown


def test_survey_tells_current_from_outdated_and_sizes_add_up(mixed_cache: tuple[Cache, str, str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache, key, resumable, unknown = mixed_cache
    seen = survey(cache)
    status = {i.name: i.status for i in seen.items}
    assert status == {key: "current", resumable: "resumable", unknown: "unknown origin"}
    [entry] = seen.entries
    assert entry.experiment == "prop1" and entry.quick is True and not entry.locked
    assert entry.age_s is not None and 0 <= entry.age_s < 600
    for item in seen.items:  # each size is its files' bytes, and the total their sum
        assert item.size == sum(_files(item.path).values())
    assert seen.size == sum(i.size for i in seen.items) == sum(
        size for rel, size in _files(cache.root).items() if not rel.endswith(".lock"))
    assert [i for i in seen.items if i.prunable()] == []  # nothing is outdated yet

    _change_the_code(monkeypatch)
    status = {i.name: i.status for i in survey(cache).items}
    assert status == {key: "outdated", resumable: "outdated", unknown: "unknown origin"}


def test_prune_removes_what_current_code_never_uses_and_dry_run_nothing(
        mixed_cache: tuple[Cache, str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache, key, resumable, unknown = mixed_cache
    fresh = _unfinished(cache, 250, 1000)
    _change_the_code(monkeypatch)
    current = _unfinished(cache, 260, 700)  # made by the changed code: resumable
    before = _files(cache.root)

    dry = prune(cache, dry_run=True)
    assert _files(cache.root) == before  # a dry run removes nothing
    assert {i.name for i in dry.removed} == {key, resumable, fresh}
    assert dry.freed == sum(i.size for i in dry.removed) > 0

    report = prune(cache)
    assert {i.name for i in report.removed} == {key, resumable, fresh} and report.freed == dry.freed
    assert not report.kept and not report.failed
    assert not cache.path(key).exists() and not cache.work_dir(resumable).exists()
    assert cache.work_dir(unknown).is_dir() and cache.work_dir(current).is_dir()  # kept without --all-work
    after = _files(cache.root)
    assert sum(before.values()) - sum(after.values()) == report.freed  # the space freed is what went
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".tmp-")]  # nothing left half-deleted

    everything = prune(cache, all_work=True)
    assert {i.name for i in everything.removed} == {unknown, current}
    assert not any((cache.root / ".work").iterdir())
    assert prune(cache).removed == []


def test_a_locked_key_is_never_pruned(mixed_cache: tuple[Cache, str, str, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A key another process computes (its lock held: a thread stands for the process, flock conflicts within one
    process too) is listed as locked and kept, its entry and its work folder, even with --all-work."""
    import threading

    cache, key, resumable, unknown = mixed_cache
    _change_the_code(monkeypatch)
    (cache.work_dir(key) / "seed=0").mkdir(parents=True)  # a --force run of the outdated key's work folder
    holding, done = threading.Event(), threading.Event()

    def computing(k: str) -> None:
        with cache.computing(k):
            holding.set()
            done.wait(30)

    threads = [threading.Thread(target=computing, args=(k,)) for k in (key, resumable)]
    try:
        for t in threads:
            holding.clear()
            t.start()
            assert holding.wait(30)
        seen = survey(cache)
        assert {(i.kind, i.name): i.locked for i in seen.items} == {
            ("entry", key): True, ("work", key): True, ("work", resumable): True, ("work", unknown): False}
        report = prune(cache, all_work=True)
        assert {i.name for i in report.removed} == {unknown}
        assert {(i.kind, i.name) for i, why in report.kept if why == "being computed"} == {
            ("entry", key), ("work", key), ("work", resumable)}
        assert cache.path(key).is_dir() and cache.work_dir(key).is_dir() and cache.work_dir(resumable).is_dir()
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert {i.name for i in prune(cache).removed} == {key, resumable}  # once released, they go


def test_staging_folders_of_killed_runs_go_those_being_written_stay(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.check_writable()  # a cache, as every run leaves one (with its .work folder); prune refuses other folders
    dead, alive = tmp_path / f".tmp-999999999@{host_tag()}-abc", tmp_path / f".tmp-{os.getpid()}@{host_tag()}-abc"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "result.json").write_text("{}")
    assert {i.name: i.status for i in survey(cache).staging} == {dead.name: "left by a killed run",
                                                                  alive.name: "being written"}
    report = prune(cache)
    assert [i.name for i in report.removed] == [dead.name] and report.freed == 2
    assert alive.is_dir() and not dead.exists()


def test_run_cached_records_the_key_inputs_in_the_work_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The work folder of an interrupted run says which code made it (inputs.json: the key's inputs), so `flowvar
    cache` reports it resumable; a run stopped before its first checkpoint leaves no folder behind."""
    import flowvar.experiments.base as base

    cache = Cache(tmp_path / "cache")
    config = build_config(get_experiment("prop1"), quick=True, overrides=TINY)
    key = cache_key("prop1", config, True)

    def interrupted(name: str, out_dir: Path, **kwargs: object) -> None:
        work = kwargs["work_dir"]
        assert isinstance(work, Path) and json.loads((work / "inputs.json").read_text()) == json.loads(
            json.dumps(key_inputs("prop1", config, True)))
        (work / "seed=0").mkdir()  # one training checkpointed, then Ctrl-C
        (work / "seed=0" / "checkpoint.pt").write_bytes(b"z")
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "run_experiment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    [work] = survey(cache).work
    assert work.name == key and work.status == "resumable" and work.quick is True

    def early(name: str, out_dir: Path, **kwargs: object) -> None:
        raise RuntimeError("stopped before any checkpoint")

    monkeypatch.setattr(base, "run_experiment", early)
    with pytest.raises(RuntimeError):
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides={**TINY, "n_samples": "200"})
    assert [i.name for i in survey(cache).work] == [key]  # the second run's empty folder is gone


def test_cache_cli_list_prune_and_errors(mixed_cache: tuple[Cache, str, str, str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cache, key, resumable, unknown = mixed_cache
    broken = cache.root / "prop1-00000000000000ee"
    broken.mkdir()
    (broken / MANIFEST).write_text("{")
    (cache.root / "not-an-entry").mkdir()
    assert main(["cache", "list", "--cache", str(cache.root)]) == 0
    out = capsys.readouterr().out
    line = {name: next(x for x in out.splitlines() if x.strip().startswith(name)) for name in
            (key, resumable, unknown, broken.name)}
    assert "prop1" in line[key] and "quick" in line[key] and "current" in line[key]
    assert "resumable" in line[resumable] and "unknown origin" in line[unknown]
    assert "unreadable" in line[broken.name]
    assert "total " in out and "would free" in out and "1 folder here without cache.json" in out

    assert main(["cache", "prune", "--cache", str(cache.root), "--dry-run", "--all-work"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "--all-work: removing every work folder" in out
    assert f"would remove work folder {resumable}" in out and f"would remove work folder {unknown}" in out
    assert cache.work_dir(resumable).is_dir()
    assert main(["cache", "prune", "--cache", str(cache.root)]) == 0
    out = capsys.readouterr().out
    # an unreadable entry goes (revC 11: nothing but a lookup's deletion ever used it); foreign folders stay
    assert f"removed entry {broken.name}" in out and "freed 1 B (1 folder)" in out
    assert not broken.exists() and (cache.root / "not-an-entry").is_dir()

    assert main(["cache", "list", "--cache", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowvar: error: no cache folder") and "--cache" in err and len(err.splitlines()) == 1
    (tmp_path / "file").write_text("x")
    assert main(["cache", "prune", "--cache", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def _tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under root, links not followed: (mode, mtime in ns, bytes' SHA-256 or link target)."""
    import hashlib

    out = {}
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            p = Path(folder) / name
            st = p.lstat()
            what = os.readlink(p) if p.is_symlink() else (
                hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder")
            out[p.relative_to(root).as_posix()] = (st.st_mode, st.st_mtime_ns, what)
    return out


def test_a_reproduce_or_sweep_folder_named_as_the_cache_is_told_where_its_cache_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    (runs / "fig4").mkdir(parents=True)
    (runs / "results.json").write_text("{}")
    assert main(["cache", "list", "--cache", str(runs)]) == 0
    assert f"{runs} is a `flowvar reproduce` output folder: its cache was {runs / '.cache'} unless it ran with " \
           "another --cache" in capsys.readouterr().out
    (runs / ".cache" / ".work").mkdir(parents=True)
    assert main(["cache", "prune", "--cache", str(runs)]) == 2
    assert f"its cache is {runs / '.cache'}: --cache {runs / '.cache'}" in capsys.readouterr().err
    sweep = tmp_path / "sweeps" / "fig4"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    assert main(["cache", "list", "--cache", str(sweep)]) == 0
    assert "is a `flowvar sweep` output folder" in capsys.readouterr().out
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["cache", "list", "--cache", str(plain)]) == 0
    assert "output folder" not in capsys.readouterr().out


def test_prune_removes_nothing_from_a_folder_that_is_not_a_cache_nor_through_links(tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture[str]
                                                                                   ) -> None:
    """A mistyped --cache (a home folder) is refused; a folder in .work not named like a key is nobody's work
    folder, even with --all-work; a .work that is a link leads out of the cache: nothing there is removed."""
    home = tmp_path / "home"
    (home / ".tmp-999999999-build").mkdir(parents=True)  # named like a killed run's staging folder, but not ours
    (home / ".tmp-999999999-build" / "a.o").write_text("object")
    (home / "project").mkdir()
    (home / "project" / MANIFEST).write_text('{"tool": "someone else\'s cache.json"}')
    before = _tree(home)
    with pytest.raises(ConfigError, match="not a flowvar cache"):
        prune(Cache(home), all_work=True)
    assert main(["cache", "prune", "--cache", str(home), "--all-work"]) == 2
    assert "not a flowvar cache" in capsys.readouterr().err
    assert main(["cache", "list", "--cache", str(home)]) == 0
    assert "prune removes nothing here" in capsys.readouterr().out
    assert _tree(home) == before

    (home / ".work" / "thesis").mkdir(parents=True)  # a .work folder of the user's own
    (home / ".work" / "thesis" / "chapter1.tex").write_text("weeks of work")
    report = prune(Cache(home), all_work=True)
    assert (home / ".work" / "thesis" / "chapter1.tex").read_text() == "weeks of work"
    assert "thesis" not in {i.name for i in report.removed} and survey(Cache(home)).foreign_work == 1

    outside, cache = tmp_path / "outside", Cache(tmp_path / "cache")
    (outside / "fig4-00000000000000aa").mkdir(parents=True)  # key-shaped, and outside the cache folder
    (outside / "fig4-00000000000000aa" / "checkpoint.pt").write_bytes(b"c")
    cache.root.mkdir()
    (cache.root / ".work").symlink_to(outside)
    before = _tree(outside)
    seen = survey(cache)
    assert seen.work == [] and seen.work_link and "is a link out of the cache folder" in format_survey(seen)
    assert prune(cache, all_work=True).removed == []
    assert _tree(outside) == before


def test_prune_rechecks_under_the_lock_what_changed_since_its_survey(
        mixed_cache: tuple[Cache, str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Between prune's survey and its removal of a key (under the key's lock), a process may change it: a lookup
    deletes the corrupted entry of a key whose work folder was 'stored' and a run checkpoints there (resumable
    now: kept), or another prune removes a folder first (not counted as removed, nor as freed, by this one)."""
    import flowvar.cache_admin as admin

    cache, key, resumable, unknown = mixed_cache
    (cache.work_dir(key) / "seed=0").mkdir(parents=True)  # a run killed between storing and clearing its checkpoints
    (cache.work_dir(key) / "seed=0" / "checkpoint.pt").write_bytes(b"old")
    real = admin.survey

    def then_a_run_resumes(c: Cache) -> Survey:
        seen = real(c)
        assert {i.name: i.status for i in seen.work}[key] == "stored"
        (cache.path(key) / "result.json").write_text("{}")  # found corrupted by a lookup, deleted
        assert cache.lookup(key, on_corrupt=lambda k, reason: None) is None and not cache.path(key).exists()
        (cache.work_dir(key) / "seed=0" / "checkpoint.pt").write_bytes(b"new")  # then recomputed, interrupted
        return seen

    monkeypatch.setattr(admin, "survey", then_a_run_resumes)
    report = prune(cache)
    assert report.removed == [] and [(i.name, why.split(" (")[0]) for i, why in report.kept] == [
        (key, "changed since it was listed")]
    assert (cache.work_dir(key) / "seed=0" / "checkpoint.pt").read_bytes() == b"new"

    def then_another_prune(c: Cache) -> Survey:
        seen = real(c)
        shutil.rmtree(cache.work_dir(unknown))
        return seen

    monkeypatch.setattr(admin, "survey", then_another_prune)
    report = prune(cache, all_work=True)
    assert unknown not in {i.name for i in report.removed} and report.freed == sum(i.size for i in report.removed)
    assert {i.name for i in report.removed} == {key, resumable} and not report.kept


def test_a_former_name_is_cached_under_the_current_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`flowvar run memorization_phase --cache` keys (and records) the run as memorisation_phase: the code version
    of a former name would leave out the experiment's own module, and prune would never judge it."""
    import flowvar.experiments.base as base

    seen: list[Path] = []

    def interrupted(name: str, out_dir: Path, **kwargs: object) -> None:
        seen.append(Path(str(kwargs["work_dir"])))
        (seen[-1] / "checkpoint.pt").write_bytes(b"c")  # one checkpoint, then Ctrl-C: the folder stays
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "run_experiment", interrupted)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        run_cached("memorization_phase", tmp_path / "out", cache, quick=True)
    config = build_config(get_experiment("memorisation_phase"), quick=True)
    assert seen == [cache.work_dir(cache_key("memorisation_phase", config, True))]
    assert json.loads((seen[0] / "inputs.json").read_text())["code_version"] == code_version("memorisation_phase")


# --------------------------------------------------------------------------- the data a config names by path


def test_data_digest_covers_a_files_bytes_and_a_folders_listing(tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    data.write_bytes(b"first contents")
    first = data_digest(data)
    assert first.startswith("sha256:")
    data.write_bytes(b"other contents")
    assert data_digest(data) != first
    data.write_bytes(b"first contents")  # the same bytes again (a new modification time): the same digest
    os.utime(data, ns=(1, 123_456_789))
    assert data_digest(data) == first
    assert data_digest(tmp_path / "absent.npy") == "missing"

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"a")
    (folder / "sub" / "b.png").write_bytes(b"b")
    listing = data_digest(folder)
    assert listing.startswith("listing-sha256:") and data_digest(folder) == listing
    (folder / ".DS_Store").write_bytes(b"finder")  # hidden: the loaders skip it, so does the key
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_bytes(b"ref")
    assert data_digest(folder) == listing
    (folder / "sub" / "b.png").write_bytes(b"bb")  # a file rewritten with another size
    assert data_digest(folder) != listing
    changed = data_digest(folder)
    (folder / "c.png").write_bytes(b"c")  # an image added
    assert data_digest(folder) not in (listing, changed)

    config = {"dataset": "npy", "data_dir": str(data), "checkpoint_dir": str(folder),
              "inner": {"train_data_path": str(folder)}, "data_file": None}
    assert data_digests(config) == {"data_dir": first, "inner.train_data_path": data_digest(folder)}


def test_a_changed_data_file_is_a_cache_miss_and_the_same_contents_a_hit(tmp_path: Path) -> None:
    """hostile_cli H1: a rescaled .npy at the same path gave a cache hit with the old numbers (and its work folder
    would have mixed the two data sets); only the path was in the key."""
    import numpy as np

    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).normal(size=(60, 3)).astype("float32"))
    overrides = {"dataset": "npy", "data_dir": str(data), "n_seeds": "1", "steps": "10", "sigmas": "[0,0.5]",
                 "n_eval": "16", "n_train": "8", "width": "8", "depth": "1"}
    cache = Cache(tmp_path / "cache")
    first = run_cached("sigma_tradeoff", tmp_path / "out1", cache, quick=True, overrides=overrides)
    config = build_config(get_experiment("sigma_tradeoff"), quick=True, overrides=overrides)
    assert key_inputs("sigma_tradeoff", config, True)["data"] == {"data_dir": data_digest(data)}
    np.save(data, 100 + 50 * np.random.default_rng(1).normal(size=(60, 3)).astype("float32"))
    second = run_cached("sigma_tradeoff", tmp_path / "out2", cache, quick=True, overrides=overrides)
    assert not second.hit and second.key != first.key
    assert second.result.metrics != first.result.metrics
    np.save(data, np.random.default_rng(0).normal(size=(60, 3)).astype("float32"))  # the first contents again
    third = run_cached("sigma_tradeoff", tmp_path / "out3", cache, quick=True, overrides=overrides)
    assert third.hit and third.key == first.key
    # built-in data name no path: their keys hold no digest, so they are what they were
    assert "data" not in key_inputs("prop1", build_config(get_experiment("prop1"), quick=True), True)


def test_one_data_file_named_relatively_or_absolutely_is_one_key(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """re-test N7: ``data.npy`` and ``/abs/data.npy`` (or ``./data.npy``) were two keys, so the same run recomputed;
    another file at another path stays another key."""
    import numpy as np

    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "data.npy", np.zeros((80, 2), dtype="float32"))
    np.save(tmp_path / "sub" / "data.npy", np.ones((80, 2), dtype="float32"))
    monkeypatch.chdir(tmp_path)
    spec = get_experiment("sigma_tradeoff")

    def key(path: str) -> str:
        config = build_config(spec, quick=True, overrides={"dataset": "npy", "data_dir": path})
        return cache_key("sigma_tradeoff", config, True, threads=1)

    same = {key("data.npy"), key("./data.npy"), key(str(tmp_path / "data.npy")), key("sub/../data.npy")}
    assert len(same) == 1
    assert key("sub/data.npy") not in same
    config = build_config(spec, quick=True, overrides={"dataset": "npy", "data_dir": "data.npy"})
    assert config.data_dir == "data.npy"  # the config itself (result.json) keeps the path as written


def _helper_plugin(folder: Path, name: str, factor: str) -> Path:
    """A plugin experiment whose number comes from a helper module beside it (``import <name>_helper``)."""
    (folder / f"{name}_helper.py").write_text(f"FACTOR = {factor}\n")
    path = folder / f"{name}.py"
    path.write_text(
        "from dataclasses import dataclass\n"
        "from flowvar.experiments.base import register\n"
        f"import {name}_helper\n\n"
        "@dataclass\nclass C:\n    seed: int = 0\n\n"
        f"@register({name!r}, title='helper', config=C)\n"
        f"def run(config, ctx):\n    ctx.metric('y', {name}_helper.FACTOR)\n")
    return path


def test_a_plugins_helper_module_is_part_of_its_code_version(tmp_path: Path) -> None:
    """Review finding (sweeprev 2): a plugin importing a helper from its folder kept its cache key when the helper
    changed (FACTOR 1 → 10), and the old numbers came back as cache hits. The helpers it imports count now, found in
    its source (not in sys.modules, which differs between a sweep's parent and its workers: the first fix keyed
    them apart); installed packages (flowvar, torch) and other modules of the folder never do."""
    import hashlib
    import subprocess
    import sys

    from flowvar.cache_key import _plugin_source, code_version
    from flowvar.experiments.registry import load_plugin

    plugin = _helper_plugin(tmp_path, "helper_probe", "1.0")
    (tmp_path / "unrelated.py").write_text("X = 1\n")  # beside it, not imported
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "deep.py").write_text("from . import leaf\n")
    (tmp_path / "pkg" / "leaf.py").write_text("LEAF = 1\n")
    with plugin.open("a") as fh:
        fh.write("\ndef later():\n    from pkg import deep\n    return deep\n")  # an import inside a function
    load_plugin(plugin)
    source = _plugin_source("helper_probe")
    assert source is not None and b"helper_probe_helper.py\0FACTOR = 1.0" in source
    names = [chunk.decode() for chunk in source.split(b"\0")[0::2] if chunk]
    assert names == ["helper_probe.py", "helper_probe_helper.py", "pkg/__init__.py", "pkg/deep.py", "pkg/leaf.py"]
    before = code_version("helper_probe")
    (tmp_path / "unrelated.py").write_text("X = 2\n")
    assert code_version("helper_probe") == before  # a module it does not import
    (tmp_path / "helper_probe_helper.py").write_text("FACTOR = 10.0\n")
    after = code_version("helper_probe")
    assert after != before
    # another process (a sweep's worker, which imported nothing else from the folder) reads the same plugin source,
    # so computes the same version. Compared on the plugin's part only: flowvar's own sources are read once per
    # process (cache_key._sources), so a checkout edited while the suite runs (another session committing) gave a
    # fresh process another version of flowvar itself, and this assertion failed for a reason no part of this test
    probe = ("import sys, hashlib; from flowvar.experiments.registry import load_plugin; from flowvar.cache_key "
             "import _plugin_source; load_plugin(sys.argv[1]); "
             "print(hashlib.sha256(_plugin_source('helper_probe')).hexdigest())")
    other = subprocess.run([sys.executable, "-c", probe, str(plugin)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == hashlib.sha256(_plugin_source("helper_probe")).hexdigest()


def test_the_key_of_a_device_auto_config_names_the_device_it_resolves_to() -> None:
    """An image experiment with device auto runs on CUDA where one is visible: its key says which, so a cache moved
    from a GPU machine is not read as a CPU result. Configs without a device field keep their keys."""
    import torch

    from flowvar.cache_key import key_inputs

    spec = get_experiment("table2")
    config = build_config(spec, quick=True)
    assert config.device == "auto"
    assert key_inputs("table2", config, True)["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = dataclasses.replace(config, device="cpu")
    assert "device" not in key_inputs("table2", cpu, True)
    assert "device" not in key_inputs("prop1", build_config(get_experiment("prop1"), quick=True), True)


def test_a_store_that_fails_leaves_no_empty_work_folder_listed_as_resumable(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding (sweeprev 14): a store refused by a full disk left CACHE/.work/KEY holding only its record,
    which `flowvar cache list` showed as resumable. prop1 writes no checkpoint, so nothing is left to resume."""
    from flowvar.errors import DataError

    cache = Cache(tmp_path / "cache")

    def full_disk(self: Cache, key: str, result_dir: Path, inputs: dict | None = None, **kwargs: object) -> Path:
        raise DataError("cannot store the result of prop1 in the cache: No space left on device")

    monkeypatch.setattr(Cache, "store", full_disk)
    with pytest.raises(DataError, match="No space left"):
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    work = cache.root / ".work"
    assert not work.exists() or not any(work.iterdir())


def test_show_refuses_a_cache_naming_its_entries_in_the_right_number(prop1_run: tuple[Path, str], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``flowvar show CACHE`` of a cache holding one entry says "(1 entry)", not "(1 entries)" (review revX 10)."""
    root, key = prop1_run
    cache = Cache(tmp_path / "c")
    cache.store(key, root / key)
    assert main(["show", str(cache.root)]) == 2
    assert capsys.readouterr().err.strip() == (f"flowvar: error: {cache.root} is a result cache (1 entry), not a run "
                                               f"folder; list its entries with `flowvar cache list --cache "
                                               f"{cache.root}`")
