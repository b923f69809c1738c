"""Review cacheR: what the cache key covers (libraries), what a hit installs (summary.md rendered now), entries a
user cannot read (kept, never deleted), results that are not of their key's inputs, and the staging-folder and
waiting-message details of `flowvar run --cache`."""

import ast
import importlib.metadata
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

import flowvar.cache
import flowvar.cache_key
import flowvar.report.markdown
from cache_entries import TINY, copy_cache, store_prop1
from flowvar.cache import (
    CACHE_FORMAT,
    MANIFEST,
    Cache,
    StoreError,
    host_tag,
    install,
    key_inputs,
    run_cached,
    staging_writer,
)
from flowvar.cache_admin import NOT_READABLE, OTHER_INSTALLATION, prune, survey
from flowvar.cache_key import (
    KEYED_LIBRARIES,
    UNKEYED_IMPORTS,
    _key_of,
    _sources,
    cache_key,
    file_digest,
    library_versions,
)
from flowvar.errors import ConfigError, DataError
from flowvar.experiments.base import build_config, get_experiment
from flowvar.results import Result

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return store_prop1(tmp_path_factory)



def _rehash(cache: Cache, key: str) -> None:
    """Record the current digest of every file of an entry in its manifest, as a tamperer (or a buggy writer) would."""
    manifest = cache.manifest(key)
    manifest["files"] = {rel: file_digest(cache.path(key) / rel) for rel in manifest["files"]}
    (cache.path(key) / MANIFEST).write_text(json.dumps(manifest))


# --- 1: the libraries that compute reported numbers are in the key -------------------------------------------------


def test_the_key_holds_the_versions_of_the_libraries_that_compute_reported_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cacheR 1: the key held torch only; an upgraded scipy (p-values, verdicts) or torchdiffeq (dopri5) served the
    old libraries' numbers as hits. Each keyed library's installed version is now a key input, an absent one None."""
    config = build_config(get_experiment("prop1"), quick=True)
    inputs = key_inputs("prop1", config, True)
    assert CACHE_FORMAT == 2 and inputs["format"] == 2
    assert set(inputs["libraries"]) == {"numpy", "scipy", "pot", "torchdiffeq", "scikit-learn", "scikit-image",
                                        "pillow"}
    assert inputs["libraries"]["scipy"] == importlib.metadata.version("scipy")
    assert inputs["libraries"]["torchdiffeq"] == importlib.metadata.version("torchdiffeq")
    key = cache_key("prop1", config, True)
    upgraded = {**library_versions(), "scipy": "99.0.0"}
    monkeypatch.setattr(flowvar.cache_key, "library_versions", lambda: upgraded)
    assert cache_key("prop1", config, True) != key
    monkeypatch.undo()

    real_version = importlib.metadata.version

    def without_skimage(name: str) -> str:
        if name == "scikit-image":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    library_versions.cache_clear()
    monkeypatch.setattr(importlib.metadata, "version", without_skimage)
    try:
        absent = key_inputs("prop1", config, True)["libraries"]
    finally:
        monkeypatch.undo()
        library_versions.cache_clear()
    assert absent["scikit-image"] is None and absent["scipy"] == inputs["libraries"]["scipy"]
    assert cache_key("prop1", config, True) == key  # the cache cleared, this installation again


def test_every_third_party_import_of_the_computing_code_is_keyed_or_says_why_not() -> None:
    """The list of keyed libraries stays true: a new import by any module that counts in the code version (not the
    front end) must be added to KEYED_LIBRARIES or to UNKEYED_IMPORTS with its reason."""
    imported: dict[str, set[str]] = {}
    for rel, source in _sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in ("flowvar", "__future__"):
                    imported.setdefault(top, set()).add(rel)
    unlisted = {m: sorted(files) for m, files in imported.items() if m not in KEYED_LIBRARIES
                and m not in UNKEYED_IMPORTS}
    assert unlisted == {}
    assert {"scipy", "ot", "torchdiffeq", "sklearn", "numpy"} <= set(imported) & set(KEYED_LIBRARIES)
    assert not set(KEYED_LIBRARIES) & set(UNKEYED_IMPORTS)


def test_an_entry_of_another_librarys_version_is_another_installations(stored: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    """cache_admin treats a keyed library like torch: an entry recorded with another scipy is valid there, listed
    'other installation' with the versions, kept by prune unless asked."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    inputs = cache.manifest(key)["inputs"]
    old = {**inputs, "libraries": {**inputs["libraries"], "scipy": "1.0.0", "scikit-image": None}}
    other = _key_of("prop1", old)
    cache.store(other, cache.path(key), old)
    here = library_versions()
    states = {i.name: (i.status, i.detail) for i in survey(cache).entries}
    assert states[key] == ("current", "")
    assert states[other] == (OTHER_INSTALLATION, f"scikit-image none; this installation has {here['scikit-image']}, "
                                                 f"scipy 1.0.0; this installation has {here['scipy']}")
    assert prune(cache).removed == [] and cache.path(other).is_dir()
    assert [i.name for i in prune(cache, other_installations=True).removed] == [other]


def test_the_docs_name_every_keyed_library() -> None:
    """docs/reproduce.md's list of what the key covers is the code's (it said torch only)."""
    text = DOCS.read_text()
    covers = text[text.index("Every result is stored in the cache under a key"):text.index("An entry is the folder")]
    for name in ("numpy", "scipy", "POT", "torchdiffeq", "scikit-learn", "scikit-image", "Pillow"):
        assert name in covers, name
    assert "matplotlib" in covers  # said not to be keyed, and why


# --- 2: a hit installs summary.md rendered by the current renderer ------------------------------------------------


def test_a_hit_installs_summary_md_rendered_by_the_current_renderer(stored: tuple[Path, str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """cacheR 2: a hit copied the summary.md the renderer of the day it was stored wrote; a wording fix in
    report/markdown.py (front end, not keyed) never reached a cached experiment. A hit now renders it from the
    entry's result.json; the entry itself keeps its checksummed summary.md and stays valid."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    entry_summary = (cache.path(key) / "summary.md").read_bytes()
    first = run_cached("prop1", tmp_path / "a", cache, quick=True, overrides=TINY)
    assert first.hit and (first.output / "summary.md").read_bytes() == entry_summary  # same renderer: same bytes

    real = flowvar.report.markdown.result_markdown
    monkeypatch.setattr(flowvar.report.markdown, "result_markdown",
                        lambda result: real(result) + "\nRENDERER-V2 MARKER\n")
    corrupt: list[str] = []
    again = run_cached("prop1", tmp_path / "b", cache, quick=True, overrides=TINY,
                       on_corrupt=lambda k, r: corrupt.append(r))
    assert again.hit and corrupt == []
    assert (again.output / "summary.md").read_text().count("RENDERER-V2 MARKER") == 1
    assert (again.output / "result.json").read_bytes() == (cache.path(key) / "result.json").read_bytes()
    # the folder installed before is refreshed too, and then up to date
    assert install(cache.path(key), first.output) is True
    assert "RENDERER-V2 MARKER" in (first.output / "summary.md").read_text()
    assert install(cache.path(key), first.output) is False
    assert (cache.path(key) / "summary.md").read_bytes() == entry_summary and cache.check(key)[1] is None


# --- 3: an unreadable entry is a miss, never deleted ---------------------------------------------------------------


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """``file_digest`` of the file ``denied`` fails as for another user's file under umask 077 (the tests run as
    root, whom permissions do not stop)."""
    real = flowvar.cache.file_digest

    def digest(path: Path) -> str:
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(flowvar.cache, "file_digest", digest)


def test_an_unreadable_entry_is_a_miss_that_is_kept_and_never_replaced(stored: tuple[Path, str], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """cacheR 3: a PermissionError was reported 'summary.md is missing' and the valid entry deleted (another
    user's, on a shared cache). Now it is a miss left in place, told as unreadable, and a store does not replace
    it: a run that computed the result says the cache was not updated and why."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    before = sorted(p.name for p in cache.path(key).iterdir())
    _deny(monkeypatch, cache.path(key) / "summary.md")
    corrupt: list[str] = []
    told: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, r: corrupt.append(r), on_unreadable=lambda k, m: told.append(m)) \
        is None
    assert corrupt == [] and len(told) == 1
    assert f"the cache entry {cache.path(key)} cannot be read here: summary.md is unreadable (Permission denied)" \
        in told[0] and "it is left in place" in told[0] and "chmod -R a+rX" in told[0]
    assert "missing" not in told[0]
    assert sorted(p.name for p in cache.path(key).iterdir()) == before
    with caplog.at_level(logging.WARNING, logger="flowvar.cache"):
        assert cache.lookup(key) is None  # the default: a warning line
    assert "summary.md is unreadable (Permission denied)" in caplog.text and "corrupt" not in caplog.text

    with pytest.raises(StoreError, match=r"its entry .* there cannot be read here \(summary\.md is unreadable "
                                         r"\(Permission denied\): another user's entry\?\) and is left in place; "
                                         r"ask its owner to make it readable"):
        cache.store(key, stored[0] / key)
    with pytest.raises(DataError) as caught:
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    assert "the result is complete in" in str(caught.value) and "the cache was not updated" in str(caught.value)
    assert (tmp_path / "out" / "prop1" / "result.json").is_file()
    monkeypatch.undo()
    assert sorted(p.name for p in cache.path(key).iterdir()) == before and cache.lookup(key) == cache.path(key)


def test_an_entry_whose_manifest_is_unreadable_is_kept_by_lookup_and_prune(stored: tuple[Path, str], tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    manifest = cache.path(key) / MANIFEST
    real = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self == manifest:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    told: list[str] = []
    assert cache.lookup(key, on_unreadable=lambda k, m: told.append(m)) is None
    assert "cache.json is unreadable (Permission denied)" in told[0] and manifest.is_file()
    [item] = survey(cache).entries
    assert (item.status, item.detail) == (NOT_READABLE, "unreadable cache.json (Permission denied)")
    assert prune(cache).removed == [] and manifest.is_file()


# --- 4: a result must be that of its key's recorded inputs ---------------------------------------------------------


def test_a_result_that_is_not_of_its_recorded_inputs_is_not_served(stored: tuple[Path, str], tmp_path: Path) -> None:
    """cacheR 4: a result.json edited (config n_samples 7, a verdict) and re-hashed into cache.json was served; the
    checksums agreed, nothing compared the result with the key's inputs. It is now corrupt: reported, deleted."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    path = cache.path(key) / "result.json"
    data = json.loads(path.read_text())
    data["config"]["n_samples"] = 7
    data["claims"][0]["verdict"] = "refuted"
    path.write_text(json.dumps(data))
    _rehash(cache, key)
    reasons: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, r: reasons.append(r)) is None
    assert reasons == ["result.json is not the result of the key's recorded inputs (config n_samples: 7 in "
                       "result.json, 300 in the key's inputs)"]
    assert not cache.path(key).exists()
    # the quick flag too
    cache = copy_cache(stored, tmp_path / "q")
    path = cache.path(key) / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "quick": False}))
    _rehash(cache, key)
    assert cache.check(key)[1] == ("result.json is not the result of the key's recorded inputs (quick: False in "
                                   "result.json, True in the key's inputs)")


def test_store_refuses_a_result_that_is_not_of_the_inputs_given(stored: tuple[Path, str], tmp_path: Path) -> None:
    """The documented API `Cache.store(key, result_dir, inputs)` could poison a key with another run's result."""
    root, key = stored
    inputs = Cache(root).manifest(key)["inputs"]
    other = tmp_path / "other" / "prop1"
    shutil.copytree(root / key, other)
    (other / MANIFEST).unlink()
    data = json.loads((other / "result.json").read_text())
    data["config"]["angles"] = [0.0, 90.0]
    (other / "result.json").write_text(json.dumps(data))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ConfigError, match=rf"cannot cache {other} under {key}: its result\.json is not the result "
                                          r"of the key inputs given \(config angles: \[0\.0, 90\.0\] in result\.json, "
                                          r"\[0\.0, 180\.0\] in the key's inputs\)"):
        cache.store(key, other, inputs)
    assert not cache.path(key).exists()
    # an older format's record (a format-1 entry copied in) is no record of any key this flowvar computes
    with pytest.raises(ConfigError, match=r"its key inputs are of cache format 1, this flowvar keys results in "
                                          r"format 2"):
        cache.store(key, root / key, {**inputs, "format": 1})


def test_an_entry_without_recorded_inputs_is_not_served(stored: tuple[Path, str], tmp_path: Path) -> None:
    """An entry stored with inputs={} skipped the record check and was served whatever it held."""
    cache = copy_cache(stored, tmp_path)
    key = stored[1]
    manifest = cache.manifest(key)
    manifest["inputs"] = {}
    (cache.path(key) / MANIFEST).write_text(json.dumps(manifest))
    [item] = survey(cache).entries
    assert (item.status, item.detail) == ("corrupt", "it records no key inputs")
    reasons: list[str] = []
    assert cache.lookup(key, on_corrupt=lambda k, r: reasons.append(r)) is None
    assert reasons == ["its manifest records no key inputs, so nothing ties its result to its key"]


# --- 6, 7: staging folders -----------------------------------------------------------------------------------------


def test_run_cached_removes_the_staging_folders_of_killed_runs(tmp_path: Path) -> None:
    """cacheR 6: a kill -9's staging folder stayed after the resumed `flowvar run --cache` (only reproduce and
    sweep cleaned). A miss now cleans as they do, and keeps a live writer's folder."""
    cache = Cache(tmp_path / "cache")
    cache.check_writable()
    dead = cache.root / f".tmp-999999999@{host_tag()}-run-abc"
    alive = cache.root / f".tmp-{os.getpid()}@{host_tag()}-run-xyz"
    for folder in (dead, alive):
        (folder / ".prop1.1.x").mkdir(parents=True)
    run = run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    assert not run.hit and not dead.exists() and alive.is_dir()


def test_a_users_folder_named_like_an_old_staging_folder_is_never_deleted(tmp_path: Path) -> None:
    """cacheR 7: `.tmp-99999-mydata` (the hostless form of an older flowvar) was taken for a killed run's staging
    folder: removed by prune and by every reproduce and sweep. Only `.tmp-<pid>@<8 hex>-` names are staging
    folders now."""
    cache = Cache(tmp_path)
    cache.check_writable()
    mine = tmp_path / ".tmp-99999-mydata"
    mine.mkdir()
    (mine / "data.txt").write_text("weeks of work")
    assert staging_writer(mine.name) is None
    assert staging_writer(f".tmp-99999@{host_tag()}-run-x") is not None
    assert survey(cache).staging == []
    assert cache.clean_stale() == 0 and prune(cache).removed == []
    assert (mine / "data.txt").read_text() == "weeks of work"


# --- 8: the waiting message once --------------------------------------------------------------------------------------


def test_the_waiting_message_is_printed_once_under_flowvar_run(capsys: pytest.CaptureFixture[str]) -> None:
    """cacheR 8: with stderr no terminal, `flowvar run` prints the log's INFO lines to stderr, and the wait was also
    printed: twice. Once now, with that handler and without it (reproduce and sweep only log)."""
    from flowvar.cache import _announce_wait
    from flowvar.cli import _plain_log_lines

    message = "prop1-0123456789abcdef is being computed by pid 1 sharing the cache C; waiting for it to finish"
    with _plain_log_lines():
        _announce_wait(message)
    assert capsys.readouterr().err.count(message) == 1
    _announce_wait(message)
    assert capsys.readouterr().err == f"flowvar: {message}\n"


def test_a_real_entry_records_the_libraries_and_is_the_result_of_its_inputs(stored: tuple[Path, str]) -> None:
    """A stored entry is its own result: its result.json is the result of its recorded inputs (what lookup now
    checks), for a real run."""
    root, key = stored
    result = Result.load(root / key / "result.json")
    inputs = Cache(root).manifest(key)["inputs"]
    assert flowvar.cache_key.result_mismatch(result.experiment, result.quick, result.config, inputs) is None
    assert inputs["libraries"] == library_versions()
