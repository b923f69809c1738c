"""What table2 and table3 load and record of their data (flowvar.experiments._image_data; prepare in _imaging): a folder
left at ``channels=None`` is read in its own mode (a grey folder as one channel, not three identical ones, which would
make D and every distance √3 larger), a size the readable files cannot meet is an error naming the experiment's config
key (table2's ``ns``, table3's ``n``), and result.json records the data used (absolute path, files found / loaded /
skipped, colour conversion, the cache key's data digest), kept when the result is judged again."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiment_checks import IMAGE_TINY as TINY
from flowvar.cache_key import data_digest
from flowvar.data import TooFewImagesError
from flowvar.experiments._image_data import describe_data, source_channels
from flowvar.experiments._imaging import prepare
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.sweep.assemble import rejudge_result


def _folder(path: Path, count: int, mode: str, *, broken: int = 0, side: int = 8) -> Path:
    """``count`` random ``mode`` PNGs of side ``side`` in ``path``, then ``broken`` unreadable .png files."""
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (side, side) if mode == "L" else (side, side, 3)
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(path / f"img{i:03d}.png")
    for i in range(broken):
        (path / f"zz_broken{i}.png").write_bytes(b"not a png")
    return path


def _config(name: str, folder: Path, size: int, **extra: str) -> object:
    key = "ns" if name == "table2" else "n"
    overrides = {**TINY, "dataset": "folder", "data_dir": str(folder), key: str(size), **extra}
    return build_config(get_experiment(name), quick=True, overrides=overrides)


@pytest.mark.parametrize("name", ["table2", "table3"])
def test_a_folder_left_at_channels_none_is_read_in_its_own_mode(tmp_path: Path, name: str) -> None:
    grey = _folder(tmp_path / "grey", 6, "L")
    colour = _folder(tmp_path / "colour", 6, "RGB")
    config = _config(name, grey, 6)
    assert config.channels is None and source_channels(config) == 1
    images = prepare(config, 6, "ns" if name == "table2" else "n")
    assert images.images.shape == (6, 1, 8, 8)  # D = 64, not 3 × 64
    assert "grey" in images.source and "identical" not in images.source
    assert prepare(_config(name, colour, 6), 6, "n").images.shape == (6, 3, 8, 8)
    # an explicit setting is kept: a grey folder asked for 3 channels gets them
    assert prepare(_config(name, grey, 6, channels="3"), 6, "n").images.shape == (6, 3, 8, 8)
    # the bundled grey digits are not a folder: their own single channel, as before
    assert source_channels(build_config(get_experiment(name), quick=True, overrides=TINY)) is None


@pytest.mark.parametrize(("name", "key"), [("table2", "ns"), ("table3", "n")])
def test_too_few_readable_files_names_the_experiments_key(tmp_path: Path, name: str, key: str) -> None:
    folder = _folder(tmp_path / "grey", 5, "L", broken=1)
    config = _config(name, folder, 6)
    config.validate()  # 6 files: validation counts files without decoding them
    with pytest.raises(TooFewImagesError, match=rf"^{key} asks for 6 images but only 5 of the 6 files in data_dir "
                                                rf"{folder} could be read \(1 unreadable: .*zz_broken0\.png.*\); "
                                                rf"lower {key} to at most 5 or repair or remove the unreadable "
                                                rf"file\(s\)$") as caught:
        prepare(config, 6, key)
    error = caught.value
    assert (error.requested, error.available, error.total, len(error.unreadable)) == (6, 5, 6, 1)
    assert "asked for n=" not in str(error)  # the loader's wording, in its argument n


def test_table2_on_a_grey_folder_records_the_data_it_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "grey", 6, "L", broken=1)  # ns = 6 of 7 files: the draw must skip the broken one
    monkeypatch.chdir(tmp_path)  # data_dir given relative, as typed on a command line
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file"):
        whole = run_experiment("table2", tmp_path / "run", quick=True,
                               overrides={**TINY, "dataset": "folder", "data_dir": "grey", "ns": "6", "eval_max": "4"})
    stored = json.loads((tmp_path / "run" / "table2" / "result.json").read_text())
    assert stored["config"]["data_dir"] == "grey"  # the config as written
    # one channel: D = 64 and σ√D = 0.05 · 8, as for the bundled 8 × 8 digits (three identical channels gave 0.69)
    scales = stored["metrics"]["table2"]["N=6"]["scales"]
    assert scales["D"] == 64 and scales["sigma_sqrt_D"] == pytest.approx(0.4)
    data = stored["metrics"]["data"]
    assert data["data_dir"] == str(folder.resolve())
    assert (data["items_in_source"], data["items_loaded"], data["unreadable_skipped"]) == (7, 6, ["zz_broken0.png"])
    assert data["channels"] == 1 and "first readable image is grey" in data["channels_from"]
    assert "PIL mode L" in data["colour_conversion"]
    assert data["digest"] == data_digest(folder) and data["digest"].startswith("listing-sha256:")
    assert data["source"].startswith(f"image folder {folder.resolve()} (7 files, 6 loaded, 1 unreadable skipped)")
    assert data["source"] in stored["choices"]["data"] and data["digest"] in stored["choices"]["data"]
    # judged again from the stored numbers, the record and the choice are kept
    again, _ = rejudge_result(tmp_path / "run" / "table2", tmp_path / "again")
    assert again.metrics["data"] == data and again.choices["data"] == stored["choices"]["data"]
    assert again.to_dict()["claims"] == whole.to_dict()["claims"]


def test_table3_on_a_grey_folder_records_the_data_it_used(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "grey", 10, "L")
    run_experiment("table3", tmp_path / "run", quick=True,
                   overrides={**TINY, "dataset": "folder", "data_dir": str(folder), "n": "10", "base_steps": "3",
                              "eval_max": "4"})
    stored = json.loads((tmp_path / "run" / "table3" / "result.json").read_text())
    assert stored["metrics"]["runs"][0]["exact_sigma=0.05"]["sigma_sqrt_D"] == pytest.approx(0.05 * math.sqrt(64))
    data = stored["metrics"]["data"]
    assert (data["items_in_source"], data["items_loaded"], data["unreadable_skipped"]) == (10, 10, [])
    assert data["channels"] == 1 and data["digest"] == data_digest(folder)
    assert data["source"] in stored["choices"]["data"]
    again, _ = rejudge_result(tmp_path / "run" / "table3", tmp_path / "again")
    assert again.metrics["data"] == data and again.choices["data"] == stored["choices"]["data"]


def test_bundled_digits_record() -> None:
    config = build_config(get_experiment("table2"), quick=True, overrides={**TINY, "ns": "6"})
    images = prepare(config, 6, "ns")
    data = describe_data(config, images)
    assert images.images.shape == (6, 1, 8, 8)
    assert data["data_dir"] is None and data["digest"] is None and data["items_in_source"] == 1797
    assert data["channels"] == 1 and data["items_loaded"] == 6 and data["unreadable_skipped"] == []
    assert data["source"] == images.source
