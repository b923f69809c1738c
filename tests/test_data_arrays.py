""".npy / .npz arrays: images and vectors, pixel scales and value ranges, channels-last and truncated files,
empty items, and every error path."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvar.data import check_labels, count_items, load_array, load_images
from flowvar.errors import ConfigError, DataError, ShapeError

# --------------------------------------------------------------------------------------------- arrays


def test_npy_grey_uint8_images(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, size=(10, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    s = load_array(tmp_path / "a.npy")
    assert s.images.shape == (10, 1, 6, 6)
    torch.testing.assert_close(s.images[:, 0], torch.from_numpy(a).float() / 127.5 - 1)
    sub = load_array(tmp_path / "a.npy", n=4, seed=1, resolution=4, channels=3)
    assert sub.images.shape == (4, 3, 4, 4) and len(set(sub.indices.tolist())) == 4
    via_name = load_images("npy", data_dir=tmp_path / "a.npy", n=4, seed=1, resolution=4, channels=3)
    assert torch.equal(via_name.images, sub.images)


def test_load_images_npy_keeps_the_arrays_own_size_unless_a_resolution_is_given(tmp_path: Path) -> None:
    # resolution=32 used to be forwarded always: vectors failed on an argument the user never passed, and 8x8
    # images were silently upsampled to 32x32
    vectors = np.random.default_rng(0).random((10, 5)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    v = load_images("npy", data_dir=tmp_path / "v.npy")
    assert v.images.shape == (10, 5) and torch.equal(v.images, torch.from_numpy(vectors))
    images = np.random.default_rng(1).random((6, 1, 8, 8)).astype(np.float32) * 2 - 1
    np.save(tmp_path / "i.npy", images)
    own = load_images("npy", data_dir=tmp_path / "i.npy")
    assert torch.equal(own.images, load_array(tmp_path / "i.npy").images) and own.images.shape == (6, 1, 8, 8)
    with pytest.warns(UserWarning, match=r"pass --resolution 8 / resolution=8 \(their own size\) or less"):
        assert load_images("npy", data_dir=tmp_path / "i.npy", resolution=16).images.shape == (6, 1, 16, 16)
    # the other sources keep their default side of 32
    assert load_images("digits", n=3).resolution == 32 == load_images("digits", n=3, resolution=None).resolution


def test_npy_value_range_and_colour(tmp_path: Path) -> None:
    a = np.zeros((3, 3, 4, 4), dtype=np.float32)
    a[:, 0] = 10.0  # R = 10 on a [0, 10] scale → 1
    np.save(tmp_path / "c.npy", a)
    s = load_array(tmp_path / "c.npy", value_range=(0.0, 10.0))
    assert s.images.shape == (3, 3, 4, 4)
    assert torch.equal(s.images[:, 0], torch.ones(3, 4, 4)) and torch.equal(s.images[:, 1], -torch.ones(3, 4, 4))
    grey = load_array(tmp_path / "c.npy", value_range=(0.0, 10.0), channels=1)
    torch.testing.assert_close(grey.images, torch.full((3, 1, 4, 4), 0.299 * 1 + 0.701 * -1))
    with pytest.raises(DataError, match=r"outside value_range \(0.0, 5.0\)"):
        load_array(tmp_path / "c.npy", value_range=(0.0, 5.0))


def test_npy_vectors(tmp_path: Path) -> None:
    v = np.random.default_rng(1).normal(size=(20, 5))
    np.save(tmp_path / "v.npy", v)
    s = load_array(tmp_path / "v.npy", n=8, seed=0)
    assert s.images.shape == (8, 5) and s.event_shape == (5,)
    torch.testing.assert_close(s.images, torch.from_numpy(v[s.indices.numpy()]).float())
    with pytest.raises(ShapeError, match="vectors"):
        _ = s.resolution
    with pytest.raises(ConfigError, match="images only"):
        load_array(tmp_path / "v.npy", resolution=8)


def test_npy_error_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_array(tmp_path / "none.npy")
    np.save(tmp_path / "hwc.npy", np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ShapeError, match="channels-last"):
        load_array(tmp_path / "hwc.npy")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match="non-finite"):
        load_array(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects, not numbers"):
        load_array(tmp_path / "obj.npy")
    np.save(tmp_path / "one_d.npy", np.zeros(5))
    with pytest.raises(ShapeError, match=r"\(N, H, W\)"):
        load_array(tmp_path / "one_d.npy")
    np.save(tmp_path / "few.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"n=4 .* only 3"):
        load_array(tmp_path / "few.npy", n=4)


# --------------------------------------------------------------------------------------------- messy real-world arrays


def test_npy_integer_and_float_pixel_scales(tmp_path: Path) -> None:
    """Only uint8 has one pixel scale. uint16 / int64 images used to pass through unscaled (values up to 65535);
    now they are refused with the value_range that maps them, and float 0..255 images get a warning."""
    a16 = np.array([0, 65535, 32768, 257], dtype=np.uint16).reshape(1, 1, 2, 2)
    np.save(tmp_path / "u16.npy", a16)
    with pytest.raises(DataError, match=r"uint16 images \(values 0\.\.65535\).*value_range=\(0, 65535\)"):
        load_array(tmp_path / "u16.npy")
    s = load_array(tmp_path / "u16.npy", value_range=(0, 65535))
    torch.testing.assert_close(s.images.flatten(), torch.from_numpy(a16.flatten() / 32767.5 - 1).float())
    np.save(tmp_path / "i64.npy", np.full((2, 4, 4), 255, dtype=np.int64))
    with pytest.raises(DataError, match=r"int64 images .*value_range=\(0, 255\)"):
        load_array(tmp_path / "i64.npy")
    np.save(tmp_path / "ints.npy", np.arange(12).reshape(4, 3))  # integer vectors are data, used as given
    assert load_array(tmp_path / "ints.npy").images.max() == 11
    np.save(tmp_path / "f255.npy", np.full((2, 1, 4, 4), 255.0, dtype=np.float32))
    with pytest.warns(UserWarning, match=r"values in \[255, 255\], used as given.*uint8"):
        assert load_array(tmp_path / "f255.npy").images.max() == 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_array(tmp_path / "f255.npy", value_range=(0, 255))


def test_npy_channels_last_rgba_truncated_npz_and_wrapping_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "rgba.npy", np.zeros((3, 8, 8, 4), dtype=np.float32))  # used to load as 8 channels of 8x4
    with pytest.raises(ShapeError, match="channels-last"):
        load_array(tmp_path / "rgba.npy")
    np.savez(tmp_path / "full.npz", x=np.zeros((5, 3)))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "full.npz").read_bytes()[:100])  # a partial download
    with pytest.raises(DataError, match=r"cut\.npz is not a readable \.npz array .*numpy\.savez"):
        load_array(tmp_path / "cut.npz")
    with pytest.raises(DataError, match="beyond int64"):
        check_labels("labels", np.array([0, 2**63 + 5], dtype=np.uint64), 2)


def test_npy_float64_beyond_float32_and_a_folder_given_as_the_array(tmp_path: Path) -> None:
    """Finite float64 values past float32's range used to be reported as NaN/Inf the file does not hold."""
    np.save(tmp_path / "big.npy", np.array([[1e300, 0.0], [1.0, 2.0]]))
    with pytest.raises(DataError, match=r"values up to 1e\+300, beyond float32 .*rescale"):
        load_array(tmp_path / "big.npy")
    np.save(tmp_path / "inf.npy", np.array([[np.inf, 0.0]]))
    with pytest.raises(DataError, match="non-finite"):
        load_array(tmp_path / "inf.npy")
    with pytest.raises(DataError, match=r"is a folder; .*load_folder"):
        load_array(tmp_path)


@pytest.mark.parametrize(("shape", "dtype"), [((50, 0), np.float32), ((50, 1, 0, 0), np.float32),
                                              ((50, 0, 4), np.float32), ((5, 0, 8, 8), np.uint16),
                                              ((5, 3, 8, 0), np.uint8)])
def test_load_array_refuses_zero_size_items_in_one_line(tmp_path: Path, shape: tuple[int, ...], dtype: type) -> None:
    """(50, 0) vectors or (50, 1, 0, 0) images crashed later inside torch (``max(): Expected reduction dim``);
    they are refused at load with the shape, .npy and .npz alike."""
    np.save(tmp_path / "empty.npy", np.zeros(shape, dtype=dtype))
    np.savez(tmp_path / "empty.npz", x=np.zeros(shape, dtype=dtype))
    for name in ("empty.npy", "empty.npz"):
        with pytest.raises(ShapeError, match=re.escape(f"shape {shape}, whose items are empty")):
            load_array(tmp_path / name)
    with pytest.raises(ShapeError, match="whose items are empty"):  # counted without loading, as the experiments do
        count_items("npy", str(tmp_path / "empty.npy"))


# --------------------------------------------------------------------------------------------- value ranges


@pytest.mark.parametrize("value_range", ["0,1", (0, math.inf), (-math.inf, 1), (math.nan, 1), (1, 0), (2, 2),
                                         (0,), (0, 1, 2), ("0", "1"), (False, True), 5])
def test_load_array_refuses_a_bad_value_range(tmp_path: Path, value_range: object) -> None:
    # "0,1" used to raise a raw ValueError from float(), and (0, inf) mapped every value to −1
    np.save(tmp_path / "v.npy", np.full((4, 2), 0.5, dtype=np.float32))
    with pytest.raises(ConfigError, match=r"value_range must be (a pair of numbers|two finite numbers with lo < hi)"):
        load_array(tmp_path / "v.npy", value_range=value_range)  # type: ignore[arg-type]


def test_load_array_accepts_numeric_value_ranges(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.full((4, 2), 0.5, dtype=np.float32))
    for value_range in [(0, 1), [0.0, 1.0], (np.float32(0), np.int64(1)), np.array([0.0, 1.0])]:
        loaded = load_array(tmp_path / "v.npy", value_range=value_range)  # type: ignore[arg-type]
        torch.testing.assert_close(loaded.images, torch.zeros(4, 2))


def test_count_items_names_a_folder_given_as_the_array(tmp_path: Path) -> None:
    """``flowvar run table2 --set dataset=npy --set data_dir=<a folder>`` validates with count_items, which said the
    array file "does not exist" before load_array could say what is wrong."""
    with pytest.raises(DataError, match=r"array file .* is a folder; .*dataset=folder"):
        count_items("npy", str(tmp_path))
    with pytest.raises(DataError, match=r"array file .*nope\.npy does not exist"):
        count_items("npy", str(tmp_path / "nope.npy"))
