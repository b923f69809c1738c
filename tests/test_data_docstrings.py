"""What data.py's docstrings say of sizes holds: ``ImageSet.resolution`` is the side of square images — an array kept
at its own H × W (no ``resolution``) is not square and is refused rather than answered with H (before: an 8 × 20
array gave 8, which a UNet would have been built for) — and the bundled sets are enlarged to the default 32 without a
warning, while files and arrays smaller than the resolution asked for warn."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import flowvar.data as data_module
from flowvar.data import ImageSet, load_array, load_images
from flowvar.errors import ShapeError


def test_resolution_is_the_side_of_square_images_only(tmp_path: Path) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((10, 1, 8, 20), dtype=np.float32))
    kept = load_array(tmp_path / "wide.npy")
    assert kept.images.shape == (10, 1, 8, 20) and kept.channels == 1
    with pytest.raises(ShapeError, match=r"resolution is the side of square images; this set's are 8x20 \(H x W\): "
                                         r"read images\.shape\[-2:\], or load them with resolution= to make them "
                                         r"square"):
        _ = kept.resolution
    assert load_array(tmp_path / "wide.npy", resolution=8).resolution == 8
    assert "H = W" in (ImageSet.resolution.__doc__ or "")


def test_bundled_sets_are_enlarged_without_a_warning_files_and_arrays_with_one(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_images("digits", n=4).resolution == 32 and load_images("lfw", n=4).resolution == 32
    np.save(tmp_path / "small.npy", np.zeros((3, 1, 8, 8), dtype=np.float32))
    with pytest.warns(UserWarning, match="smaller than 32x32: they were upsampled"):
        load_array(tmp_path / "small.npy", resolution=32)
    doc = " ".join((data_module.__doc__ or "").split())
    assert "image files and arrays smaller than it are upsampled, with one warning" in doc
    assert "the bundled digits (8×8) and LFW (25×25) are enlarged without one" in doc
