"""The data-loader review (dataR, session 33): channels-last arrays the old test missed, [0, 1] float arrays, float
image files outside their scale, extensions Pillow reads, tRNS colour keys, and the distributions' input checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import flowvar.data as data_module
from flowvar.data import (
    ImageSet,
    check_split_size,
    count_items,
    load_array,
    load_folder,
    load_images,
    load_split,
    subset_order,
)
from flowvar.errors import ConfigError, DataError, ShapeError

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------- channels-last arrays


@pytest.mark.parametrize(("shape", "read_as"), [
    ((10, 16, 16, 2), "10 images of 16x16 with 2 channel(s), which would be read as 16 channels of 16x2"),
    ((10, 4, 4, 3), "10 images of 4x4 with 3 channel(s), which would be read as 4 channels of 4x3"),
    ((5, 8, 8, 1), "5 images of 8x8 with 1 channel(s)"),
    ((4, 8, 8, 3), "4 images of 8x8 with 3 channel(s)"),  # the classic case, refused before too
    ((3, 16, 32, 3), "3 images of 16x32 with 3 channel(s)"),  # not square: the old rule's C in (1, 3, 4)
])
def test_channels_last_images_are_refused_naming_the_layout_and_the_transpose(tmp_path: Path, shape: tuple[int, ...],
                                                                             read_as: str) -> None:
    # (10, 16, 16, 2) loaded as 16 "channels" of 16x2 images, (10, 4, 4, 3) as 4 channels of 4x3, without a word
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random(shape, dtype=np.float32))
    for load in (lambda: load_array(tmp_path / "a.npy"), lambda: count_items("npy", str(tmp_path / "a.npy"))):
        with pytest.raises(ShapeError) as caught:
            load()
        text = str(caught.value)
        assert "\n" not in text and f"shape {shape}" in text and "channels-last (N, H, W, C)" in text
        assert read_as in text and "np.transpose(a, (0, 3, 1, 2))" in text


def test_a_single_channels_last_image_is_refused_with_its_reshape(tmp_path: Path) -> None:
    # (32, 32, 3) uint8 loaded as 32 grey images of 32x3
    np.save(tmp_path / "one.npy", np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for load in (lambda: load_array(tmp_path / "one.npy"), lambda: count_items("npy", str(tmp_path / "one.npy"))):
        with pytest.raises(ShapeError, match=r"shape \(32, 32, 3\), which looks like one channels-last \(H, W, C\) "
                                             r"image \(32x32 with 3 channel\(s\)\), which would be read as 32 grey "
                                             r"images of 32x3.*a\.transpose\(2, 0, 1\)\[None\].*a\.reshape\(32, -1\)"):
            load()
    fixed = np.load(tmp_path / "one.npy").transpose(2, 0, 1)[None]  # the fix the message gives loads
    np.save(tmp_path / "fixed.npy", fixed)
    assert load_array(tmp_path / "fixed.npy").images.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("shape", [(6, 3, 3, 3), (6, 4, 4, 4), (6, 3, 3, 4), (6, 3, 16, 16), (6, 2, 16, 16),
                                   (6, 5, 16, 16), (6, 16, 16), (6, 4, 4), (6, 3, 3), (6, 2, 3), (6, 4, 5)])
def test_channels_first_and_ambiguous_shapes_still_load(tmp_path: Path, shape: tuple[int, ...]) -> None:
    # (N, C, H, W) and (N, H, W) as they are meant; (N, 3, 3, 3)-like shapes could be either and are read as given
    np.save(tmp_path / "a.npy", np.zeros(shape, dtype=np.uint8))
    expected = shape if len(shape) == 4 else (shape[0], 1, *shape[1:])
    assert tuple(load_array(tmp_path / "a.npy").images.shape) == expected
    assert count_items("npy", str(tmp_path / "a.npy")) == 6


def test_the_split_check_names_the_layout_before_the_item_count(tmp_path: Path) -> None:
    # advise-sigma said "holds 10 item(s), but the study needs n_train=64 …" first, the layout only after n_train=4
    np.save(tmp_path / "nhwc.npy", np.zeros((10, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(ShapeError, match="channels-last"):
        check_split_size("npy", str(tmp_path / "nhwc.npy"), 64, 8)
    np.save(tmp_path / "two.npy", np.random.default_rng(0).random((100, 8, 8, 2), dtype=np.float32))
    with pytest.raises(ShapeError, match="channels-last"):  # it trained on (20, 8, 8, 8) items before
        load_split("npy", str(tmp_path / "two.npy"), 20, 50, resolution=8, channels=None, seed=0, min_heldout=8)


# --------------------------------------------------------------------------------------------- float arrays on [0, 1]


def test_float_images_on_0_1_are_used_as_given_with_a_warning_naming_the_fix(tmp_path: Path) -> None:
    # torchvision ToTensor's scale, the most common float image array, came through with no word, on half the width
    # of the [−1, 1] the docs promised
    a = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "f01.npy", a)
    with pytest.warns(UserWarning, match=r"f01\.npy holds float images with values in \[0\.0\d*, 0\.99\d*\], used "
                                         r"as given.*save them as x \* 2 - 1 \(any command, advise-sigma included\), "
                                         r"or pass value_range=\(0, 1\) in Python / --value-range 0,1 in "
                                         r"`flowvar audit`"):
        used = load_array(tmp_path / "f01.npy")
    assert torch.equal(used.images, torch.from_numpy(a))  # still used as given: nothing is rescaled behind the user
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fix it names is quiet and maps [0, 1] to [−1, 1]
        torch.testing.assert_close(load_array(tmp_path / "f01.npy", value_range=(0, 1)).images,
                                   torch.from_numpy(a * 2 - 1))
        np.save(tmp_path / "pm1.npy", a * 2 - 1)  # already [−1, 1]: quiet
        load_array(tmp_path / "pm1.npy")
        np.save(tmp_path / "zeros.npy", np.zeros((3, 1, 8, 8), dtype=np.float32))  # no pixel scale to guess
        load_array(tmp_path / "zeros.npy")
        np.save(tmp_path / "vectors.npy", a.reshape(6, -1))  # vectors are data, not pixels
        load_array(tmp_path / "vectors.npy")


def test_the_texts_no_longer_promise_minus_one_to_one_for_float_arrays() -> None:
    def flat(text: str | None) -> str:
        return " ".join((text or "").split())

    module = flat(data_module.__doc__)
    assert not module.startswith("Image data sets as tensors ``(N, C, H, W)`` scaled to [−1, 1]")
    assert "float arrays used as given" in module
    assert "a float array's values as given" in flat(ImageSet.__doc__)
    assert "in [−1, 1] for every source but a float ``.npy`` array, whose values are used as given" in flat(
        load_images.__doc__)
    doc = flat((ROOT / "docs" / "experiments" / "sigma_tradeoff.md").read_text(encoding="utf-8"))
    assert "images and `uint8` vectors are scaled to [−1, 1]; float and other integer vectors are used as given" \
        not in doc
    assert ("image files, the bundled sets and `uint8` arrays are scaled to [−1, 1]; float arrays (images or vectors) "
            "and other integer vectors are used as given") in doc


# --------------------------------------------------------------------------------------------- distributions


def test_standard_normal_keeps_its_validated_event_shape() -> None:
    from flowvar.distributions import StandardNormal

    # [2.0] reached torch.randn as a float ("argument 'size' failed to unpack"), np.int64(3) was "not iterable"
    assert StandardNormal([2.0]).sample(3, torch.Generator().manual_seed(0)).shape == (3, 2)
    for shape, expected in ((np.int64(3), (3,)), ((np.int64(2), 3), (2, 3)), (np.array([4, 5]), (4, 5)),
                            (torch.Size([1, 8, 8]), (1, 8, 8)), (4, (4,))):
        dist = StandardNormal(shape)
        assert dist.event_shape == expected and all(type(s) is int for s in dist.event_shape)
        assert dist.sample(2).shape == (2, *expected)
    for bad in (2.5, [2, 0], [3.5], "abc", None, True, [True]):
        with pytest.raises(ConfigError, match=r"event_shape"):
            StandardNormal(bad)  # type: ignore[arg-type]


def test_gaussian_mixture_docstring_and_error_say_integer_arrays_are_refused_and_how_to_convert() -> None:
    from flowvar.distributions import GaussianMixture

    # the docstring said "a numpy array or nested list of numbers" while an integer array was refused (integer data
    # are refused throughout flowvar, tests/test_distributions.py holds that); now both say so and the error converts
    doc = " ".join((GaussianMixture.__doc__ or "").split())
    assert "a floating-point numpy array (its dtype kept)" in doc and "An integer tensor or array is refused" in doc
    for ints in (np.array([[0, 0], [3, 3]]), torch.tensor([[0, 0], [3, 3]])):
        with pytest.raises(ConfigError, match=r"floating-point tensor \(K, d\), got .*int64; convert it, e\.g\. "
                                              r"torch\.as_tensor\(means, dtype=torch\.float32\)"):
            GaussianMixture(ints)
    fixed = GaussianMixture(torch.as_tensor(np.array([[0, 0], [3, 3]]), dtype=torch.float32))
    assert torch.equal(fixed.means, GaussianMixture([[0, 0], [3, 3]]).means)
    kept = GaussianMixture(np.array([[0.0, 1.0]], dtype=np.float64))  # a float array keeps its dtype, as before
    assert kept.means.dtype == torch.float64


# --------------------------------------------------------------------------------------------- float image files


def _float_tiff(folder: Path, name: str, values: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.float32)).save(folder / name)
    return folder / name


@pytest.mark.parametrize(("values", "message"), [
    (np.linspace(-1, 1, 64).reshape(8, 8), r"x\.tif is a float image spanning \[-1, 1\]; float images are read on "
                                           r"\[0, 1\] \(when every value is <= 1\) or \[0, 255\].*\(x \+ 1\) / 2"),
    (np.full((8, 8), 300.0), r"x\.tif is a float image spanning \[300, 300\].*by the scale its values were made on"),
    (np.full((8, 8), np.nan), r"x\.tif is a float image holding 64 NaN or infinite value\(s\) of 64"),
    (np.where(np.arange(64).reshape(8, 8) == 0, np.nan, 0.5), r"x\.tif is a float image holding 1 NaN or infinite"),
    (np.full((8, 8), np.inf), r"x\.tif is a float image holding 64 NaN or infinite"),
])
def test_float_image_files_off_both_scales_are_refused_naming_the_file(tmp_path: Path, values: np.ndarray,
                                                                        message: str) -> None:
    # before: [−1, 1] lost its dark half to the clip (mean 64.8 of 255), NaN came out black and Inf white, silently
    _float_tiff(tmp_path / "f", "x.tif", values)
    with pytest.raises(DataError, match=message) as caught:
        load_folder(tmp_path / "f", resolution=8)
    assert "\n" not in str(caught.value)


def test_float_image_files_on_their_scales_still_load(tmp_path: Path) -> None:
    _float_tiff(tmp_path / "unit", "a.tif", np.full((8, 8), 0.5))  # [0, 1]: 0.5 → 127.5 → 128
    _float_tiff(tmp_path / "byte", "a.tif", np.full((8, 8), 0.5))  # beside a [0, 255] image: 0.5 → 0 (dark stays)
    _float_tiff(tmp_path / "byte", "b.tif", np.full((8, 8), 200.0))
    # a refused image elsewhere in the folder sets no scale for the ones loaded (NaN compares "not <= 1")
    _float_tiff(tmp_path / "unit_nan", "a.tif", np.full((8, 8), 0.5))
    _float_tiff(tmp_path / "unit_nan", "b.tif", np.full((8, 8), np.nan))

    def pixels(folder: Path, **kw: object) -> list[float]:
        images = load_folder(folder, resolution=8, channels=1, **kw).images  # type: ignore[arg-type]
        return [float(((x + 1) * 127.5).round().mean()) for x in images]

    assert pixels(tmp_path / "unit") == [128.0]
    assert pixels(tmp_path / "byte") == [0.0, 200.0]
    first = next(s for s in range(50) if int(subset_order(2, s)[0]) == 0)  # a seed whose draw of 1 takes a.tif
    assert pixels(tmp_path / "unit_nan", n=1, seed=first) == [128.0]


def test_a_trns_colour_key_is_composited_onto_black_like_a_palette_transparent_index(tmp_path: Path) -> None:
    from PIL import Image

    half = np.zeros((8, 8), dtype=np.uint8)
    half[:, 4:] = 1  # the right half holds the key colour, the left half another
    grey = Image.fromarray(np.where(half, 200, 90).astype(np.uint8))
    rgb = Image.fromarray(np.where(half[..., None], [200, 100, 50], [10, 20, 30]).astype(np.uint8))
    for name, img, key, channels, kept in (("L", grey, 200, 1, [90.0]), ("RGB", rgb, (200, 100, 50), 3,
                                                                         [10.0, 20.0, 30.0])):
        folder = tmp_path / name
        folder.mkdir()
        img.save(folder / "x.png", transparency=key)
        assert "transparency" in Image.open(folder / "x.png").info
        px = ((load_folder(folder, resolution=8, channels=channels).images[0] + 1) * 127.5).round()
        # the key colour stayed 200 / (200, 100, 50) before
        assert px[:, :, 4:].eq(0).all(), f"{name}: the key colour stays {px[:, 0, 4].tolist()}"
        assert px[:, :, :4].flatten(1).unique(dim=1).flatten().tolist() == kept  # other pixels are untouched


# --------------------------------------------------------------------------------------------- extensions, colour keys


def test_jfif_pnm_and_pbm_files_are_read_and_other_files_are_counted(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "ext"
    folder.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "a.png")
    Image.new("RGB", (8, 8), (255, 255, 255)).save(folder / "b.jfif", format="JPEG", quality=95)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(folder / "c.pnm", format="PPM")
    Image.new("1", (8, 8), 1).save(folder / "d.pbm")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"hidden: neither read nor counted")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a text file beside the images is no image anyone meant: no warning
        loaded = load_folder(folder, resolution=8)
    assert loaded.files == ("a.png", "b.jfif", "c.pnm", "d.pbm")  # before: only a.png, the others dropped unsaid
    # red, white (a JPEG), blue, white (mode "1"): each decoded as what it shows
    assert torch.allclose(loaded.images.mean((1, 2, 3)), torch.tensor([-1 / 3, 1.0, -1 / 3, 1.0]), atol=0.02)
    assert "(4 files, 1 other file left out (notes.txt))" in loaded.source
    Image.new("RGB", (8, 8)).save(folder / "e.tga")  # a format Pillow reads: an image the user likely meant
    Image.new("RGB", (8, 8)).save(folder / "f.ico")
    with pytest.warns(UserWarning, match=r"2 file\(s\) in folder .*ext are images Pillow reads but whose extension "
                                         r"flowvar does not, and were left out \(e\.tga, f\.ico\); flowvar reads "
                                         r"\.jpg, .*convert them"):
        again = load_folder(folder, resolution=8)
    assert "(4 files, 3 other files left out (e.tga, f.ico, notes.txt))" in again.source


