"""Where `flowvar run --cache` puts a result when a disk refuses it, and what an entry installs (review revC 3, 7, 8).

A run computes into the cache first, then installs into the output folder: a full output disk keeps the result in
the cache (the same command installs it), a full cache keeps it complete in the output folder; each error says
where the result is."""

import errno
import json
import shutil
from pathlib import Path

import pytest

import flowvar.experiments.base
from flowvar.cache import MANIFEST, Cache, install, run_cached
from flowvar.errors import DataError, FlowvarError, WriteError

TINY = {"n_samples": "300", "angles": "0,180"}


def _no_staging_left(cache: Cache) -> bool:
    return not [p for p in cache.root.iterdir() if p.name.startswith(".tmp-")]


def test_an_output_folder_that_refuses_the_result_keeps_it_in_the_cache(tmp_path: Path) -> None:
    """revC 3: the run wrote into OUT first and stored afterwards; OUT refusing it (a full disk) lost a result the
    cache had room for. Now the result is stored first, the error says so, and the same command installs it."""
    cache = Cache(tmp_path / "cache")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file: nothing can be written under it, as on a full disk")
    with pytest.raises(FlowvarError) as caught:
        run_cached("prop1", blocker / "out", cache, quick=True, overrides=TINY)
    message = str(caught.value)
    assert f"cannot write to output folder {blocker / 'out'}" in message
    assert f"computed result of prop1 is complete in the cache {cache.root}" in message
    assert "rerun the same command to install it without recomputing" in message
    entries = [p for p in cache.root.iterdir() if p.name.startswith("prop1-")]
    assert len(entries) == 1 and cache.lookup(entries[0].name) == entries[0]
    assert _no_staging_left(cache)
    blocker.unlink()
    again = run_cached("prop1", blocker / "out", cache, quick=True, overrides=TINY)
    assert again.hit and again.key == entries[0].name
    assert (blocker / "out" / "prop1" / "result.json").read_bytes() == (entries[0] / "result.json").read_bytes()


def test_a_cache_that_refuses_the_result_leaves_it_complete_in_the_output_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """revC 7: a full cache exited 2 "cannot store the result of fig4 in the cache" while OUT held the complete
    result, unsaid. Now the result is installed into OUT all the same and the error names it and says the cache was
    not updated."""
    cache = Cache(tmp_path / "cache")
    real_open = open

    def full_disk_for_manifests(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if str(file).endswith(MANIFEST) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_for_manifests)
    with pytest.raises(DataError) as caught:
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    monkeypatch.undo()
    output = tmp_path / "out" / "prop1"
    message = str(caught.value)
    assert message.startswith(f"cannot store the result of prop1 in the cache {cache.root}: No space left on device")
    assert f"the result is complete in {output} (installed there), the cache was not updated" in message
    assert {"result.json", "summary.md", "variance_by_angle.png"} <= {p.name for p in output.iterdir()}
    assert not [p for p in cache.root.iterdir() if p.name.startswith("prop1-")] and _no_staging_left(cache)


def test_a_cache_that_refuses_a_file_of_the_run_names_the_cache_as_the_remedy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run now writes into the cache's staging folder: a figure the cache's disk refuses must not advise
    "choose another output folder" alone (it is not the output folder that is full)."""
    cache = Cache(tmp_path / "cache")

    def full_cache(name: str, out_dir: Path, **kwargs: object) -> None:
        figure = out_dir / name / "x.png"
        raise WriteError(figure, f"cannot write figure {figure}: No space left on device",
                         "free space or choose another output folder")

    monkeypatch.setattr(flowvar.experiments.base, "run_experiment", full_cache)
    with pytest.raises(WriteError) as caught:
        run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    message = str(caught.value)
    assert message.startswith(f"cannot write figure {cache.root}")  # a file of the cache's staging folder
    output = tmp_path / "out" / "prop1"
    assert message.endswith(f"x.png: No space left on device; free space in the cache {cache.root} or choose another "
                            f"--cache (the result is computed into the cache, then installed into {output})")
    assert "output folder" not in message
    assert not (tmp_path / "out").exists() and _no_staging_left(cache)


def test_only_the_manifests_files_are_installed(tmp_path: Path) -> None:
    """revC 8: files added to an entry by hand (unverified by check, which reads the manifest) were installed on a
    hit. An entry's result is the files its manifest lists: only those are installed; the others are ignored, not
    treated as corruption (they change nothing check verified; deleting the entry would force a recompute)."""
    cache = Cache(tmp_path / "cache")
    run = run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    (run.entry / "EXTRA.txt").write_text("added by hand")
    (run.entry / "sub").mkdir()
    (run.entry / "sub" / "x.png").write_bytes(b"not a figure of the result")
    shutil.rmtree(tmp_path / "out")
    hit = run_cached("prop1", tmp_path / "out", cache, quick=True, overrides=TINY)
    assert hit.hit
    installed = {p.relative_to(hit.output).as_posix() for p in hit.output.rglob("*")}
    assert installed == set(Cache(cache.root).manifest(run.key)["files"])
    assert install(hit.entry, hit.output) is False  # up to date: the hand-added files are no difference


RESULT = Path(__file__).resolve().parents[1] / "results" / "prop1" / "result.json"


def _entry_of_two_files(folder: Path, text: str) -> Path:
    """A stored-looking entry: a result.json (the published prop1 result, titled ``text``), its figure and
    summary.md, and a manifest listing their digests (the figure copied after result.json)."""
    from flowvar.cache_key import file_digest

    folder.mkdir(parents=True)
    data = {**json.loads(RESULT.read_text()), "title": f"title {text}", "figures": ["fig.png"]}
    (folder / "result.json").write_text(json.dumps(data))
    (folder / "fig.png").write_text(f"figure {text}")
    (folder / "summary.md").write_text(f"summary.md {text}")
    files = {name: file_digest(folder / name) for name in ("result.json", "fig.png", "summary.md")}
    (folder / MANIFEST).write_text(json.dumps({"files": files}))
    return folder


def _installed(dest: Path) -> dict[str, str]:
    """``{file: what it is}`` of an installed folder: the title of its result.json, and whether its summary.md is
    the current renderer's of that result (install renders it: review cacheR 2)."""
    from flowvar.report.markdown import result_markdown
    from flowvar.results import Result

    result = Result.load(dest / "result.json")
    rendered = (dest / "summary.md").read_text() == result_markdown(result)
    return {"result.json": result.title, "fig.png": (dest / "fig.png").read_text(),
            "summary.md": f"rendered from {result.title}" if rendered else "stale"}


def _replace(entry: Path, text: str) -> None:
    """Replace ``entry`` as a --force store does: aside first, then the new folder renamed into place."""
    fresh = _entry_of_two_files(entry.parent / f"new-{text}", text)
    entry.rename(entry.parent / f"old-{text}")
    fresh.rename(entry)


def test_an_entry_replaced_while_it_is_installed_is_not_installed_half_old_half_new(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup verified the entry, then another process replaced it (--force) while this one copied it: the first
    file came from the old result, the second from the new. install checks each copy against the manifest it read
    and copies again from the entry that is there now; one that keeps changing is a one-line error."""
    import flowvar.cache

    entry = _entry_of_two_files(tmp_path / "cache" / "prop1-key", "old")
    real_copy = shutil.copy2
    replacements = iter(["new"])

    def copy_then_replace(src: Path, dst: Path) -> None:
        real_copy(src, dst)
        if Path(src).name == "result.json":  # between the two files of one copy
            text = next(replacements, None)
            if text is not None:
                _replace(entry, text)

    monkeypatch.setattr(flowvar.cache.shutil, "copy2", copy_then_replace)
    dest = tmp_path / "out" / "prop1"
    assert install(entry, dest) is True
    assert _installed(dest) == {"result.json": "title new", "fig.png": "figure new",
                                "summary.md": "rendered from title new"}
    counter = iter(range(100))
    replacements = (f"v{next(counter)}" for _ in range(100))  # replaced during every copy
    (tmp_path / "out2").mkdir()
    with pytest.raises(DataError, match=rf"the cache entry {entry} was replaced 3 times while it was being installed"):
        install(entry, tmp_path / "out2" / "prop1")
    assert not (tmp_path / "out2" / "prop1").exists() and list((tmp_path / "out2").iterdir()) == []
