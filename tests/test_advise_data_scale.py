"""How the data reach the σ study, said where it matters (hostile review 3): uint8 vectors that use a sliver of
0..255 (counts, codes) are warned about — the same numbers as int64 are used as given and get another σ advice —
every rescaling is named in the data line, integer images get a value range computed from their own maximum and
worded per command, and a folder of grey images read as RGB says so."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowvar.data import load_array, load_folder
from flowvar.errors import DataError


def test_uint8_count_vectors_are_warned_and_the_rescaling_is_named(tmp_path: Path) -> None:
    counts = np.random.default_rng(0).poisson(3.0, size=(300, 6))
    np.save(tmp_path / "u8.npy", counts.astype(np.uint8))
    np.save(tmp_path / "i64.npy", counts.astype(np.int64))
    with pytest.warns(UserWarning, match=r"uint8 vectors with values 0\.\.\d+, mapped as 8-bit pixels from 0\.\.255 "
                                         r"to \[−1, 1\] \(spread becomes 0\.01\d+\); if they are counts"):
        u8 = load_array(tmp_path / "u8.npy")
    assert "uint8 rescaled from 0..255 to [−1, 1]" in u8.source
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        i64 = load_array(tmp_path / "i64.npy")
    assert "rescaled" not in i64.source and float(i64.images.max()) == counts.max()


def test_uint8_vectors_spanning_the_pixel_range_are_not_warned(tmp_path: Path) -> None:
    np.save(tmp_path / "px.npy", np.random.default_rng(1).integers(0, 256, size=(50, 16)).astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_array(tmp_path / "px.npy")
    assert float(data.images.min()) >= -1 and float(data.images.max()) <= 1


def test_uint8_images_keep_the_pixel_map_and_say_so(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.full((4, 1, 6, 6), 8, dtype=np.uint8))  # dark images: no vector warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_array(tmp_path / "img.npy")
    assert "uint8 rescaled from 0..255 to [−1, 1]" in data.source
    assert float(data.images.max()) == pytest.approx(8 / 127.5 - 1)


def test_integer_images_get_their_own_range_per_command(tmp_path: Path) -> None:
    np.save(tmp_path / "digits.npy", np.random.default_rng(0).integers(0, 17, size=(20, 8, 8)).astype(np.int64))
    with pytest.raises(DataError) as err:
        load_array(tmp_path / "digits.npy")
    text = str(err.value)
    assert "value_range=(0, 16) to load_array" in text and "`flowvar audit` pass --value-range 0,16" in text
    assert "for `flowvar run` / `flowvar advise-sigma` save them as float32 already scaled, a / 16 * 2 - 1" in text
    assert "(0, 255)" not in text


def test_signed_integer_images_get_a_range_that_holds_their_negative_values(tmp_path: Path) -> None:
    """CT-like int16 images (−1023..2992): the suggested range was (0, 2992), which the values then fall outside, and
    the float formula a / 2992 * 2 - 1 mapped them below −1; both now start at the data's own floor."""
    values = np.random.default_rng(0).integers(-1023, 2993, size=(6, 8, 8)).astype(np.int16)
    values[0, 0, 0], values[0, 0, 1] = -1023, 2992
    np.save(tmp_path / "ct.npy", values)
    with pytest.raises(DataError) as err:
        load_array(tmp_path / "ct.npy")
    text = str(err.value)
    assert "value_range=(-1023, 2992) to load_array" in text and "--value-range -1023,2992" in text
    assert "(a + 1023) / 4015 * 2 - 1" in text
    data = load_array(tmp_path / "ct.npy", value_range=(-1023, 2992))  # the advice works
    assert float(data.images.min()) == pytest.approx(-1.0) and float(data.images.max()) == pytest.approx(1.0)


def test_grey_folder_read_as_rgb_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    data = load_folder(tmp_path, resolution=8)
    assert data.images.shape[1] == 3 and "3 identical channels (grey images: pass channels=1" in data.source
    assert "identical" not in load_folder(tmp_path, resolution=8, channels=3).source  # asked for: not remarked
    colour = tmp_path / "c"
    colour.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(colour / f"{i}.png")
    assert load_folder(colour, resolution=8).source.endswith("8x8, RGB")
