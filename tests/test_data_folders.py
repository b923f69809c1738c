"""Image folders: mixed modes and sizes, grey conversion, centre crop, EXIF orientation, corrupt, hidden and
unreadable files, 16-bit and float pixel scales, upsampling, and every error path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_checks import level, mixed_folder, solid
from flowvar.data import (
    TooFewImagesError,
    count_items,
    first_image_geometry,
    load_array,
    load_folder,
    load_images,
    subset_order,
)
from flowvar.errors import DataError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven readable images of mixed sizes and modes, one corrupt file, one non-image, one in a sub-folder."""
    return mixed_folder(tmp_path)


# --------------------------------------------------------------------------------------------- folders


def test_folder_mixed_modes_and_sizes(folder: Path) -> None:
    with pytest.warns(UserWarning, match=r"bad\.jpg"):
        s = load_images("folder", data_dir=folder, resolution=8, recursive=False)
    assert s.files == ("a_rgb.png", "b_rgb.jpg", "c_grey.png", "d_transparent.png", "e_palette.png", "f_small.bmp")
    assert s.images.shape == (6, 3, 8, 8)
    assert s.images.min() >= -1 and s.images.max() <= 1
    by_name = dict(zip(s.files, s.images, strict=True))
    expected = {
        "a_rgb.png": (200, 100, 50), "c_grey.png": (128, 128, 128), "d_transparent.png": (0, 0, 0),
        "e_palette.png": (0, 200, 0), "f_small.bmp": (0, 0, 255),
    }
    for name, rgb in expected.items():
        want = torch.tensor([level(v) for v in rgb])[:, None, None].expand(3, 8, 8)
        torch.testing.assert_close(by_name[name], want, atol=1e-6, rtol=0, msg=name)
    torch.testing.assert_close(by_name["b_rgb.jpg"].mean((1, 2)), torch.tensor([level(v) for v in (10, 20, 30)]),
                               atol=3 / 127.5, rtol=0)


def test_folder_grey_conversion_and_recursion(folder: Path) -> None:
    with pytest.warns(UserWarning, match=r"bad\.jpg"):
        s = load_folder(folder, resolution=4, channels=1, recursive=True)
    assert s.images.shape == (7, 1, 4, 4)
    assert s.files is not None and s.files[-1] == str(Path("sub") / "g_nested.png")
    # ITU-R 601-2 luma: L = (299 R + 587 G + 114 B) / 1000, rounded by PIL
    grey = dict(zip(s.files, s.images, strict=True))["a_rgb.png"]
    torch.testing.assert_close(grey, torch.full((1, 4, 4), level(124)), atol=1e-6, rtol=0)


def test_folder_non_square_images_are_centre_cropped(tmp_path: Path) -> None:
    a = np.zeros((20, 40, 3), dtype=np.uint8)  # H=20, W=40: the central square is columns 10..29
    a[:, :10] = 255
    a[:, 30:] = 255
    a[:, 10:30] = (30, 60, 90)
    Image.fromarray(a).save(tmp_path / "wide.png")
    b = np.zeros((40, 20, 3), dtype=np.uint8)  # tall: the central square is rows 10..29
    b[:10] = 255
    b[30:] = 255
    b[10:30] = (30, 60, 90)
    Image.fromarray(b).save(tmp_path / "tall.png")
    s = load_folder(tmp_path, resolution=5)
    want = torch.tensor([level(v) for v in (30, 60, 90)])[:, None, None].expand(3, 5, 5)
    for img in s.images:
        torch.testing.assert_close(img, want, atol=1e-6, rtol=0)


def test_folder_applies_exif_orientation(tmp_path: Path) -> None:
    a = np.zeros((12, 12, 3), dtype=np.uint8)
    a[:, :6] = (255, 0, 0)  # stored: left half red, right half blue
    a[:, 6:] = (0, 0, 255)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the red half ends up on top
    img.save(tmp_path / "photo.jpg", quality=95, exif=exif)
    s = load_folder(tmp_path, resolution=4)
    top, bottom = s.images[0, :, 0].mean(1), s.images[0, :, 3].mean(1)
    torch.testing.assert_close(top, torch.tensor([1.0, -1.0, -1.0]), atol=0.1, rtol=0)
    torch.testing.assert_close(bottom, torch.tensor([-1.0, -1.0, 1.0]), atol=0.1, rtol=0)


def test_folder_subset_picks_the_next_file_when_one_is_corrupt(folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = load_folder(folder, resolution=4, recursive=False)
        for seed in range(6):
            s = load_folder(folder, n=5, resolution=4, seed=seed, recursive=False)
            assert len(s) == 5 and s.files is not None and "bad.jpg" not in s.files
            assert set(s.files) <= set(full.files or ())


def test_folder_error_paths(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folder .*missing.* does not exist"):
        load_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "deeper").mkdir(parents=True)
    solid("L", (8, 8), 0).save(empty / "deeper" / "x.png")
    with pytest.raises(DataError, match=r"no image files .*recursive=True"):
        load_folder(empty)
    with pytest.raises(DataError, match=r"n=8 .* only 7"):
        load_folder(folder, n=8, recursive=False)
    with pytest.raises(DataError, match=r"only 6 of the 7 .*1 unreadable: .*bad\.jpg.*at most 6"):
        load_folder(folder, n=7, resolution=4, recursive=False)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    truncated = tmp_path / "trunc.jpg"
    solid("RGB", (64, 64), (5, 5, 5)).save(truncated, quality=90)
    (only_bad / "y.jpg").write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(DataError, match=r"none of the 2 image files .*x\.png .*y\.jpg"):
        load_folder(only_bad)


def test_many_corrupt_images_give_one_summary_warning(tmp_path: Path) -> None:
    for i in range(3):
        solid("L", (8, 8), 40 * i).save(tmp_path / f"ok{i}.png")
    for i in range(40):
        (tmp_path / f"broken{i:02d}.png").write_bytes(b"not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_folder(tmp_path, resolution=4)
    assert len(s) == 3
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and lines[0].startswith("skipped 40 unreadable image file(s) in ")
    assert "broken00.png" in lines[0] and lines[0].endswith("; …")


# -------------------------------------------------------------------------------------------- messy real-world folders


def test_folder_leaves_out_hidden_files_and_folders(tmp_path: Path) -> None:
    """macOS AppleDouble ``._x.png`` files, a hidden image and Jupyter's checkpoint folder are not data: before,
    the first was counted (and warned about) as a corrupt image, the others were loaded as training images."""
    solid("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    solid("RGB", (8, 8), (255, 0, 0)).save(tmp_path / ".hidden.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    solid("RGB", (8, 8), (0, 255, 0)).save(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png")
    (tmp_path / "sub").mkdir()
    solid("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "sub" / "b.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = load_folder(tmp_path, resolution=8, recursive=True)
    assert s.files == ("a.png", str(Path("sub") / "b.png"))
    # nor are they counted on either side of a folder with images of its own and in a sub-folder, which is refused
    with pytest.raises(DataError, match=r"holds 1 image file\(s\) of its own \(a\.png\) and 1 in its sub-folders "
                                        r"\(sub \(1\)\)"):
        count_items("folder", str(tmp_path))


def test_class_subfolders_ignore_a_hidden_checkpoint_folder(tmp_path: Path) -> None:
    """The audit's class-per-subfolder layout: a stray ``.ipynb_checkpoints`` used to raise a bare KeyError."""
    from flowvar.audit.loading import load_labelled

    for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / name).mkdir()
        solid("RGB", (8, 8), colour).save(tmp_path / name / "x.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    solid("RGB", (8, 8), (0, 255, 0)).save(tmp_path / ".ipynb_checkpoints" / "x.png")
    x, labels, _ = load_labelled("--data", tmp_path)
    assert x.shape == (2, 3, 8, 8) and labels is not None and labels.tolist() == [0, 1]


def test_sixteen_bit_images_keep_their_scale_however_dark(tmp_path: Path) -> None:
    """16-bit pixels v map to v / 257 on the 8-bit scale for every format. A dark 16-bit PGM (PIL mode "I", max
    200 of 65535) used to be read as 8-bit: 257× too bright. A 32-bit integer image has no known scale: refused."""
    header = b"P5\n4 4\n65535\n"
    (tmp_path / "dark.pgm").write_bytes(header + np.full(16, 200, dtype=">u2").tobytes())
    (tmp_path / "mid.pgm").write_bytes(header + np.full(16, 32896, dtype=">u2").tobytes())  # 128 · 257
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)).save(tmp_path / "dark.png")
    s = load_folder(tmp_path, resolution=4, channels=1)
    got = dict(zip(s.files or (), s.images[:, 0, 0, 0].tolist(), strict=True))
    assert got == pytest.approx({"dark.pgm": level(1), "mid.pgm": level(128), "dark.png": level(1)}, abs=1e-6)
    Image.fromarray(np.full((4, 4), 100, dtype=np.int32)).save(tmp_path / "deep.tif")
    with pytest.raises(DataError, match=r"deep\.tif is a 32-bit integer image .*save it as an 8-bit or 16-bit"):
        load_folder(tmp_path, resolution=4)


def test_float_images_of_a_folder_share_one_scale(tmp_path: Path) -> None:
    """Float TIFFs ("F") are on [0, 1] when their maximum is <= 1, else on [0, 255] — decided once per folder: a
    dark image (maximum 0.8) of a 0..255 set used to be read on [0, 1], 255× too bright."""
    (tmp_path / "byte").mkdir()
    for name, value in (("bright.tif", 200.0), ("dark.tif", 0.8)):
        Image.fromarray(np.full((4, 4), value, dtype=np.float32)).save(tmp_path / "byte" / name)
    s = load_folder(tmp_path / "byte", resolution=4, channels=1)
    got = dict(zip(s.files or (), s.images[:, 0, 0, 0].tolist(), strict=True))
    assert got == pytest.approx({"bright.tif": level(200), "dark.tif": level(1)}, abs=1e-6)  # 0.8 rounds to 1
    (tmp_path / "unit").mkdir()
    for name, value in (("a.tif", 0.5), ("b.tif", 0.8)):  # a [0, 1] set stays on [0, 1]
        Image.fromarray(np.full((4, 4), value, dtype=np.float32)).save(tmp_path / "unit" / name)
    s = load_folder(tmp_path / "unit", resolution=4, channels=1)
    got = dict(zip(s.files or (), s.images[:, 0, 0, 0].tolist(), strict=True))
    assert got == pytest.approx({"a.tif": level(128), "b.tif": level(204)}, abs=1e-6)  # round(255 · v)


@pytest.mark.filterwarnings("ignore:skipped 1 unreadable image file")
def test_float_scale_is_decided_from_the_whole_folder_not_the_subset(tmp_path: Path) -> None:
    """The dark image's values must not depend on which subset was drawn: every subset reads it on the folder's
    [0, 255] scale (it was read on [0, 1], 200x brighter, whenever the subset held no bright float image)."""
    Image.fromarray(np.full((4, 4), 0.8, dtype=np.float32)).save(tmp_path / "a_dark.tif")
    for k in range(3):
        Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32)).save(tmp_path / f"b{k}.tif")
    solid("L", (4, 4), 9).save(tmp_path / "c.png")  # a non-float file and a corrupt one are passed over
    (tmp_path / "d.tif").write_bytes(b"not an image")
    full = load_folder(tmp_path, resolution=4, channels=1)
    assert full.files is not None and full.files[0] == "a_dark.tif"
    dark = full.images[0]
    assert float(dark.mean()) == pytest.approx(level(1), abs=1e-6)
    for n in (1, 2, 3):
        for seed in range(6):
            sub = load_folder(tmp_path, n=n, seed=seed, resolution=4, channels=1)
            for row, i in enumerate(sub.indices.tolist()):
                assert torch.equal(sub.images[row], full.images[full.indices.tolist().index(i)])
    seed = next(s for s in range(100) if int(subset_order(6, s)[0]) == 0)  # the report's case: n=1 draws a_dark
    only_dark = load_folder(tmp_path, n=1, seed=seed, resolution=4, channels=1)
    assert only_dark.files == ("a_dark.tif",) and torch.equal(only_dark.images[0], dark)


def test_upsampling_is_reported_with_the_smallest_image(tmp_path: Path) -> None:
    solid("RGB", (6, 10), (1, 2, 3)).save(tmp_path / "small.png")
    solid("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "big.png")
    with pytest.warns(UserWarning, match=r"1 of the 2 images .* smaller than 8x8 .*small\.png, a 6x6 square.*"
                                         r"resolution=6"):
        load_folder(tmp_path, resolution=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_folder(tmp_path, resolution=6)
    np.save(tmp_path / "a.npy", np.zeros((2, 1, 5, 5), dtype=np.uint8))
    with pytest.warns(UserWarning, match=r"5x5 images, smaller than 8x8.*resolution=5"):
        load_array(tmp_path / "a.npy", resolution=8)


def test_first_image_geometry_passes_over_unreadable_files(tmp_path: Path) -> None:
    """The audit's default geometry (first image's size and mode): a corrupt first file used to raise PIL's
    UnidentifiedImageError, and a 2×2 first image an unrelated 'resolution must be >= 4' ConfigError."""
    (tmp_path / "a.png").write_bytes(b"not a png")
    solid("L", (2, 3), 7).save(tmp_path / "b.png")
    solid("RGB", (9, 9), 7).save(tmp_path / "c.png")
    assert first_image_geometry(tmp_path) == (4, 1)
    (tmp_path / "b.png").unlink()
    assert first_image_geometry(tmp_path) == (9, 3)
    (tmp_path / "c.png").unlink()
    with pytest.raises(DataError, match=r"none of the 1 image files .* could be read"):
        first_image_geometry(tmp_path)


def test_too_few_readable_images_carries_its_numbers(folder: Path) -> None:
    """Callers with their own setting names (an experiment's ``ns`` list) rephrase the loader's error from its
    numbers: before, they were only inside the message."""
    with pytest.raises(TooFewImagesError) as short:
        load_folder(folder, n=7, resolution=4, recursive=False)
    assert (short.value.requested, short.value.available, short.value.total) == (7, 6, 7)
    assert len(short.value.unreadable) == 1 and short.value.unreadable[0].split(" (")[0].endswith("bad.jpg")
    with pytest.raises(TooFewImagesError) as over:
        load_folder(folder, n=9, resolution=4, recursive=False)
    assert (over.value.requested, over.value.available, over.value.total, over.value.unreadable) == (9, 7, 7, ())
    with pytest.raises(TooFewImagesError) as digits:
        load_images("digits", n=1800)
    assert (digits.value.requested, digits.value.available) == (1800, 1797)


def test_source_says_how_many_files_were_loaded_and_skipped(folder: Path) -> None:
    """Before: "(7 files)" for the 6 images loaded from a folder of 7 files, one unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        every = load_folder(folder, resolution=4, recursive=False)
        subset = load_folder(folder, n=3, resolution=4, seed=1, recursive=False)
    assert len(every) == 6 and every.unreadable == ("bad.jpg",)
    # notes.txt is left out by extension, and the line says so (dataR 7)
    assert "(7 files, 6 loaded, 1 unreadable skipped, 1 other file left out (notes.txt))" in every.source
    assert "(7 files, 3 loaded" in subset.source and len(subset) == 3
    readable = folder.parent / "readable"
    readable.mkdir()
    for i in range(2):
        solid("L", (6, 6), 50 * i).save(readable / f"{i}.png")
    clean = load_folder(readable, resolution=4)
    assert "(2 files)" in clean.source and clean.unreadable == ()
