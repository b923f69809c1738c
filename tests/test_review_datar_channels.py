"""Review dataR finding 1: table2, table3 and sigma_tradeoff read a folder left at ``channels=None`` in its own mode
through :func:`flowvar.data.default_geometry`, as the audit does — every header is read, so a colour folder whose
first file (in sorted order) is grey warns, naming how many files are colour and the setting that reads them in
colour. Before, :func:`~flowvar.experiments._image_data.source_channels` read one header
(:func:`flowvar.data.first_image_geometry`) and the whole folder became grey without a word: D a third, the colour
gone from every distance, OT cost and σ√D."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiment_checks import IMAGE_TINY as TINY
from flowvar.experiments._image_data import describe_data, load_subset, source_channels
from flowvar.experiments.base import build_config, get_experiment


def _preview_first(path: Path, colour: int = 12) -> Path:
    """A grey ``0000_preview.png`` (sorted first) and ``colour`` RGB JPEGs: a colour folder with a grey thumbnail."""
    path.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path / "0000_preview.png")
    for i in range(colour):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path / f"img{i:03d}.jpg")
    return path


def _config(name: str, folder: Path, size: int, **extra: str) -> object:
    key = {"table2": "ns", "table3": "n", "sigma_tradeoff": "n_train"}[name]
    overrides = {**TINY, "dataset": "folder", "data_dir": str(folder), key: str(size), **extra}
    if name == "sigma_tradeoff":
        overrides = {"dataset": "folder", "data_dir": str(folder), "n_train": "4", "n_eval": "8", "min_heldout": "8",
                     **extra}
    return build_config(get_experiment(name), quick=True, overrides=overrides)


@pytest.mark.parametrize("name", ["table2", "table3", "sigma_tradeoff"])
def test_a_colour_folder_with_a_grey_first_file_warns_naming_the_colour_files(tmp_path: Path, name: str) -> None:
    folder = _preview_first(tmp_path / "mixed", colour=12)
    config = _config(name, folder, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        channels = source_channels(config)
    assert channels == 1  # the first file's mode, as the audit reads it (default_geometry: one rule for both)
    texts = [str(w.message) for w in caught]
    assert len(texts) == 1, texts
    assert (f"the images of folder {folder} differ in colour: its first, 0000_preview.png, is grey, which sets the "
            f"default channels 1, but 12 of the 13 readable images are colour") in texts[0]
    assert "channels=3" in texts[0]


def test_the_record_names_the_first_file_and_channels_3_reads_the_folder_in_colour(tmp_path: Path) -> None:
    """The warned-about case end to end (the reviewer's chan.py): the run warns, records where its channel count
    came from, and ``channels=3`` (the warning's remedy) reads every file in colour without a warning."""
    folder = _preview_first(tmp_path / "mixed", colour=12)
    config = _config("table2", folder, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_subset(config, 6, "ns")
    assert any("differ in colour" in str(w.message) for w in caught)
    assert images.images.shape == (6, 1, 8, 8)
    assert describe_data(config, images)["channels_from"].startswith(
        "the folder's own (channels=None): its first readable image is grey")
    fixed = _config("table2", folder, 6, channels="3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert source_channels(fixed) == 3
        assert load_subset(fixed, 6, "ns").images.shape == (6, 3, 8, 8)


def test_a_folder_of_one_mode_is_read_in_it_without_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "colour"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    # sizes differ from the resolution asked (8) and from each other's squares: the experiments set the resolution,
    # so only the channels are defaulted and no size warning may come from the header scan
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(folder / "z_big.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert source_channels(_config("table3", folder, 6)) == 3


def test_table2_docs_quote_the_warning_as_it_is_given(tmp_path: Path) -> None:
    """docs/experiments/table2.md ("Colour and what the result records") quotes the warning for the reviewer's folder
    (one grey preview, 40 colour JPEGs): the quote is the message, after the folder's path."""
    folder = _preview_first(tmp_path / "mixed", colour=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source_channels(_config("table2", folder, 6))
    (message,) = [str(w.message) for w in caught]
    docs = " ".join((Path(__file__).resolve().parents[1] / "docs" / "experiments" / "table2.md").read_text().split())
    quoted = docs.split('warns: "the images of folder … ', 1)[1].split('"', 1)[0]
    assert message == f"the images of folder {folder} {quoted}"
