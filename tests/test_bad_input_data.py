"""Bad data sources and checkpoint folders of the image experiments and the σ study are refused by config validation:
one line naming the config keys (not the library's arguments), exit status 2 under ``run``, ``reproduce`` and
``sweep`` alike, before anything is written or trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import flowvar.experiments._imaging as imaging
from experiment_checks import IMAGE_TINY as TINY
from flowvar.cli import main
from flowvar.errors import DataError
from flowvar.experiments.base import build_config, get_experiment
from flowvar.train import save_checkpoint


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty").mkdir()
    _png(tmp_path / "one" / "a.png", 10)
    for i in range(4):
        _png(tmp_path / "nested" / "sub" / f"{i}.png", 40 * i)
    np.save(tmp_path / "vectors.npy", np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32))
    (tmp_path / "celeba").mkdir()
    (tmp_path / "afile").write_text("")
    _png(tmp_path / "mixed" / "preview.png", 10)  # a class tree with a preview and a sample grid left at its top
    _png(tmp_path / "mixed" / "grid.png", 20)
    for i in range(3):
        _png(tmp_path / "mixed" / "cat" / f"{i}.png", 40 * i)
    root = tmp_path / "celebroot" / "img_align_celeba"  # a CelebA root passed as dataset=folder
    root.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((218, 178, 3), 50 * i, dtype=np.uint8)).save(root / f"{i + 1:06d}.jpg")
    return {p.name: p for p in tmp_path.iterdir()}


def _sets(values: dict[str, str], prefix: str = "") -> list[str]:
    """``--set prefix+key=value`` for each item, as argv words."""
    return [word for k, v in values.items() for word in ("--set", f"{prefix}{k}={v}")]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowvar: error: "), err
    return lines[0]


@pytest.mark.parametrize(("name", "overrides", "expected"), [
    ("table2", {"dataset": "folder", "data_dir": "/no/such/dir"}, "data_dir /no/such/dir does not exist"),
    ("table2", {"dataset": "folder", "data_dir": "empty"}, "data_dir {empty} holds no image files"),
    # the library says "pass recursive=True", a keyword the CLI has not
    ("table2", {"dataset": "folder", "data_dir": "nested"},
     "its 4 image(s) are in sub-folders, which dataset=folder does not read: set data_dir to the sub-folder"),
    # before: "… set data_dir to the sub-folder that holds them", neither img_align_celeba nor dataset=celeba named
    ("table2", {"dataset": "folder", "data_dir": "celebroot"},
     "data_dir {celebroot} holds no image files, but it is laid out as CelebA (its 2 images are in "
     "{celebroot}/img_align_celeba): set dataset=celeba for CelebA's 140x140 face crop (data_dir as it is), or "
     "data_dir={celebroot}/img_align_celeba to read them as a plain folder of images"),
    # before: the two top images were read as the whole data set (ns=[2] passed validation)
    ("table2", {"dataset": "folder", "data_dir": "mixed", "ns": "[2]"},
     "folder {mixed} holds 2 image file(s) of its own (grid.png, preview.png) and 3 in its sub-folders (cat (3)), so "
     "which are the data is ambiguous and neither part is read alone; to read the 3 in the sub-folders, set data_dir "
     "to the sub-folder that holds them (e.g. {mixed}/cat) or gather them into one folder; to read only its own 2, "
     "move the sub-folders out of it (or the 2 into a folder of their own, and set data_dir to that)"),
    ("sigma_tradeoff", {"dataset": "folder", "data_dir": "mixed"}, "folder {mixed} holds 2 image file(s) of its own"),
    # the library says "lower n to at most 1 (or pass n=None …)"; table2's key is ns, and ns needs 2 at least
    ("table2", {"dataset": "folder", "data_dir": "one", "ns": "[2]"},
     "ns asks for 2 images but data_dir {one} holds only 1; add images"),
    ("table3", {"dataset": "folder", "data_dir": "one", "n": "2"},
     "n asks for 2 images but data_dir {one} holds only 1; add images"),
    # the library says "drop --resolution / --channels (resolution= / channels= …)"
    ("table2", {"dataset": "npy", "data_dir": "vectors.npy"}, "table2 trains a UNet on images, but data_dir "
                                                              "{vectors.npy} holds (N, d) vectors"),
    # the library says "use name='lfw'"
    ("table3", {"dataset": "celeba", "data_dir": "celeba"}, "without it set dataset=lfw or dataset=digits"),
    ("sigma_tradeoff", {"dataset": "folder", "data_dir": "empty"}, "{empty} holds 0 item(s), but the study needs"),
])
def test_bad_data_is_one_line_naming_config_keys_and_exit_2_everywhere(
        sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        name: str, overrides: dict[str, str], expected: str) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the data were validated")

    monkeypatch.setattr(imaging, "train_cfm", no_training)
    if overrides["data_dir"] in sources:
        overrides = {**overrides, "data_dir": str(sources[overrides["data_dir"]])}
    for key, path in sources.items():
        expected = expected.replace("{" + key + "}", str(path))
    tiny = TINY if name != "sigma_tradeoff" else {}
    values = {**tiny, **overrides}
    commands = {
        "run": ["run", name, "--quick", "--out", str(tmp_path / "o_run"), *_sets(values)],
        "reproduce": ["reproduce", "--quick", "--only", name, "--out", str(tmp_path / "o_rep"),
                      *_sets(values, f"{name}.")],
        "sweep": ["sweep", name, "--quick", "--grid", "seed=0,2", "--out", str(tmp_path / "o_sweep"), *_sets(values)],
    }
    for command, argv in commands.items():
        assert main(argv) == 2, command
        line = _one_line(capsys.readouterr().err)
        assert expected in line, (command, line)
    assert not any((tmp_path / d).exists() for d in ("o_run", "o_rep", "o_sweep"))  # nothing written


def test_an_unwritable_checkpoint_dir_is_refused_before_training(sources: dict[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint_dir under a regular file failed only when the first training wrote its checkpoint (~25 s in)."""
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before checkpoint_dir was checked")

    monkeypatch.setattr(imaging, "train_cfm", no_training)
    for bad in (sources["afile"], sources["afile"] / "sub"):
        sets = _sets({**TINY, "checkpoint_dir": str(bad)})
        assert main(["run", "table2", "--quick", "--out", str(tmp_path / "o"), *sets]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"checkpoint_dir {bad} cannot be a folder: {sources['afile']} is a file" in line
    # a folder still to be made under a writable one is fine, and validation creates nothing
    fresh = tmp_path / "new" / "ckpt"
    assert build_config(get_experiment("table2"), quick=True, overrides={**TINY, "checkpoint_dir": str(fresh)})
    assert not (tmp_path / "new").exists()


def test_a_failed_first_checkpoint_does_not_claim_a_previous_one_is_kept(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import flowvar.train as train_module

    calls: list[str] = []

    def failing_write(path: Path, data: bytes, *, what: str, remedy: str) -> None:
        calls.append(remedy)
        raise DataError(f"cannot write {what}: {remedy}")

    monkeypatch.setattr(train_module, "atomic_write_bytes", failing_write)
    with pytest.raises(DataError, match="no checkpoint was written; free space"):
        save_checkpoint({"w": torch.zeros(1)}, tmp_path)
    (tmp_path / train_module.CHECKPOINT_NAME).write_bytes(b"old")
    with pytest.raises(DataError, match="the previous checkpoint is kept; free space"):
        save_checkpoint({"w": torch.zeros(1)}, tmp_path)
    assert len(calls) == 2


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: p.write_text("1,2,3\n4,5,6\n"), "is not a .npy file (it does not start with numpy's header"),
    (lambda p: np.save(p, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True),
     "holds Python objects, not numbers; convert them to a numeric array"),
])
def test_an_unreadable_npy_file_is_told_what_it_is_not_to_allow_pickle(make, words, tmp_path) -> None:
    """sweepR 5 (session 30): numpy calls a renamed text file "pickled (object) data" and suggests allow_pickle; an
    object array saved with numpy.save was told to "save it with numpy.save"."""
    from flowvar.data import load_array

    path = tmp_path / "x.npy"
    make(path)
    with pytest.raises(DataError) as err:
        load_array(path)
    assert words in str(err.value) and "allow_pickle" not in str(err.value)
