"""Image data: bundled sets, folders, CelebA layout and geometry, .npy arrays, and every error path."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvar.couplings import IndependentCoupling
from flowvar.data import (
    ImageDistribution,
    ImageSet,
    check_labels,
    check_resolution,
    count_items,
    first_image_geometry,
    load_array,
    load_celeba,
    load_folder,
    load_images,
    load_split,
    resolve_data,
    save_grid,
    subset_order,
    to_uint8,
)
from flowvar.distributions import Distribution, StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError

# --------------------------------------------------------------------------------------------- helpers


def level(v: float) -> float:
    """An 8-bit pixel value in flowvar's [−1, 1] scale."""
    return v / 127.5 - 1.0


def solid(mode: str, size: tuple[int, int], color: object) -> Image.Image:
    return Image.new(mode, size, color)  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven readable images of mixed sizes and modes, one corrupt file, one non-image, one in a sub-folder."""
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    solid("RGB", (20, 30), (200, 100, 50)).save(d / "a_rgb.png")
    solid("RGB", (40, 40), (10, 20, 30)).save(d / "b_rgb.jpg", quality=95)
    solid("L", (16, 16), 128).save(d / "c_grey.png")
    solid("RGBA", (24, 24), (255, 255, 255, 0)).save(d / "d_transparent.png")  # fully transparent → black
    pal = solid("P", (10, 12), 0)
    pal.putpalette([0, 200, 0] + [0, 0, 0] * 255)
    pal.save(d / "e_palette.png")
    solid("RGB", (9, 9), (0, 0, 255)).save(d / "f_small.bmp")
    solid("RGB", (16, 16), (1, 2, 3)).save(d / "sub" / "g_nested.png")
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    (d / "notes.txt").write_text("not an image")
    return d


def triangle_resize_1d(values: np.ndarray, out: int) -> np.ndarray:
    """Hand computation of an antialiased bilinear (triangle-filter) downscale, PIL's convention.

    Output pixel j is centred at source coordinate (j + 0.5)·s with s = len(values)/out; the triangle has
    half-width s; source pixel k sits at k + 0.5; weights are renormalised where the window leaves the image.
    """
    n = len(values)
    s = n / out
    res = np.empty(out)
    for j in range(out):
        centre = (j + 0.5) * s
        k = np.arange(n)
        w = np.clip(1.0 - np.abs(k + 0.5 - centre) / s, 0.0, None)
        res[j] = (w * values).sum() / w.sum()
    return res


def celeba_pattern() -> Image.Image:
    """A 178×218 image whose crop region [19, 159) × [39, 179) holds ramps R = x − 19, G = y − 39, B = 0 and
    whose outside is white: any mistake in the crop offset puts 255s or shifted ramps into the output."""
    a = np.full((218, 178, 3), 255, dtype=np.uint8)
    ramp = np.arange(140, dtype=np.uint8)
    a[39:179, 19:159, 0] = ramp[None, :]
    a[39:179, 19:159, 1] = ramp[:, None]
    a[39:179, 19:159, 2] = 0
    return Image.fromarray(a)


# --------------------------------------------------------------------------------------------- bundled sets


def test_digits_shape_range_and_exact_values_at_native_size() -> None:
    from sklearn.datasets import load_digits as sk_digits

    s = load_images("digits", n=50, resolution=8, seed=3)
    assert isinstance(s, ImageSet) and s.name == "digits"
    assert s.images.shape == (50, 1, 8, 8) and s.images.dtype == torch.float32
    assert s.indices.shape == (50,) and bool((s.indices.diff() > 0).all())
    raw = torch.from_numpy(sk_digits().images[s.indices.numpy()]).float()
    torch.testing.assert_close(s.images[:, 0], raw / 8 - 1)


def test_digits_upsampled_range_and_channels() -> None:
    s = load_images("digits", n=200, resolution=16, seed=0, channels=3)
    assert s.images.shape == (200, 3, 16, 16)
    assert s.images.min() >= -1 and s.images.max() <= 1
    assert s.images.min() == -1 and s.images.max() > 0.9
    torch.testing.assert_close(s.images[:, 0], s.images[:, 2])
    assert (s.channels, s.resolution) == (3, 16)


def test_subsets_are_deterministic_nested_and_seed_dependent() -> None:
    a = load_images("digits", n=100, resolution=8, seed=7)
    b = load_images("digits", n=100, resolution=8, seed=7)
    c = load_images("digits", n=100, resolution=8, seed=8)
    big = load_images("digits", n=400, resolution=8, seed=7)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert not torch.equal(a.indices, c.indices)
    assert set(a.indices.tolist()) <= set(big.indices.tolist())
    assert len(set(big.indices.tolist())) == 400
    assert len(load_images("digits", resolution=8)) == 1797


def test_lfw_faces_shape_range_and_values() -> None:
    from skimage.data import lfw_subset

    s = load_images("lfw", n=30, resolution=25, seed=1)
    assert s.images.shape == (30, 1, 25, 25)
    raw = torch.from_numpy(np.asarray(lfw_subset(), dtype=np.float32))[s.indices]
    torch.testing.assert_close(s.images[:, 0], raw * 2 - 1)
    assert int(s.indices.max()) < 100, "only the 100 face images are used"
    down = load_images("lfw", n=30, resolution=16, seed=1)
    assert down.images.shape == (30, 1, 16, 16) and torch.equal(down.indices, s.indices)
    assert down.images.min() >= -1 and down.images.max() <= 1
    # an antialiased downscale keeps the mean brightness
    torch.testing.assert_close(down.images.mean((1, 2, 3)), s.images.mean((1, 2, 3)), atol=0.02, rtol=0)


def test_bundled_set_too_small_names_both_numbers() -> None:
    with pytest.raises(DataError, match=r"n=101 .* only 100"):
        load_images("lfw", n=101, resolution=16)
    with pytest.raises(DataError, match=r"n=2000 .* only 1797"):
        load_images("digits", n=2000, resolution=16)


# --------------------------------------------------------------------------------------------- folders


def test_folder_mixed_modes_and_sizes(folder: Path) -> None:
    with pytest.warns(UserWarning, match=r"bad\.jpg"):
        s = load_images("folder", data_dir=folder, resolution=8)
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
        full = load_folder(folder, resolution=4)
        for seed in range(6):
            s = load_folder(folder, n=5, resolution=4, seed=seed)
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
        load_folder(folder, n=8)
    with pytest.raises(DataError, match=r"only 6 of the 7 .*1 unreadable: .*bad\.jpg.*at most 6"):
        load_folder(folder, n=7, resolution=4)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    truncated = tmp_path / "trunc.jpg"
    solid("RGB", (64, 64), (5, 5, 5)).save(truncated, quality=90)
    (only_bad / "y.jpg").write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(DataError, match=r"none of the 2 image files .*x\.png .*y\.jpg"):
        load_folder(only_bad)


# --------------------------------------------------------------------------------------------- CelebA


def test_celeba_crop_and_resize_geometry(tmp_path: Path) -> None:
    """Crop 140 at offset (19, 39) then downscale ×10: compare with the triangle filter computed by hand.

    The pattern is stored losslessly (PNG bytes under the .jpg name CelebA's layout requires; PIL reads the
    content) so that the comparison is exact to PIL's rounding.
    """
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    celeba_pattern().save(d / "000001.jpg", format="PNG")
    s = load_images("celeba", data_dir=tmp_path, resolution=14)
    assert s.images.shape == (1, 3, 14, 14) and s.files == ("000001.jpg",)
    ramp = triangle_resize_1d(np.arange(140, dtype=np.float64), 14)
    assert np.allclose(ramp[1:-1], 10 * np.arange(1, 13) + 4.5)  # interior pixels: the ramp at their centres
    got = s.images[0].double()
    want_r = torch.tensor(ramp / 127.5 - 1).expand(14, 14)
    torch.testing.assert_close(got[0], want_r, atol=0.51 / 127.5, rtol=0)
    torch.testing.assert_close(got[1], want_r.T, atol=0.51 / 127.5, rtol=0)
    assert torch.equal(s.images[0, 2], torch.full((14, 14), -1.0))


def test_celeba_real_jpegs_layouts_and_subset(tmp_path: Path) -> None:
    nested = tmp_path / "kaggle" / "img_align_celeba" / "img_align_celeba"
    nested.mkdir(parents=True)
    for i in range(5):
        a = np.full((218, 178, 3), 255, dtype=np.uint8)
        a[39:179, 19:159] = (40 * i, 100, 180)
        Image.fromarray(a).save(nested / f"{i + 1:06d}.jpg", quality=95)
    s = load_celeba(tmp_path / "kaggle", n=3, resolution=8, seed=2)
    assert s.images.shape == (3, 3, 8, 8) and s.name == "celeba"
    means = s.images.mean((2, 3))
    want = torch.tensor([[level(40 * int(i)), level(100), level(180)] for i in s.indices])
    torch.testing.assert_close(means, want, atol=3 / 127.5, rtol=0)
    direct = load_images("celeba", data_dir=nested, n=3, resolution=8, seed=2)
    assert torch.equal(direct.images, s.images)
    grey = load_images("celeba", data_dir=nested, n=2, resolution=8, channels=1)
    assert grey.images.shape == (2, 1, 8, 8)


def test_celeba_missing_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected the aligned-and-cropped release laid out as .*"
                                        r"img_align_celeba.000001\.jpg"):
        load_images("celeba", data_dir=tmp_path / "nowhere", resolution=16)
    with pytest.raises(ConfigError, match="needs data_dir"):
        load_images("celeba", resolution=16)


def test_celeba_rejects_images_smaller_than_the_crop(tmp_path: Path) -> None:
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    solid("RGB", (100, 120), (0, 0, 0)).save(d / "000001.jpg")
    with pytest.raises(DataError, match=r"100x120, smaller than the 140x140 centre crop"):
        load_celeba(tmp_path, resolution=16)


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
    with pytest.raises(DataError, match=r"not a readable \.npy"):
        load_array(tmp_path / "obj.npy")
    np.save(tmp_path / "one_d.npy", np.zeros(5))
    with pytest.raises(ShapeError, match=r"\(N, H, W\)"):
        load_array(tmp_path / "one_d.npy")
    np.save(tmp_path / "few.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"n=4 .* only 3"):
        load_array(tmp_path / "few.npy", n=4)


# --------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("bad", [3, 0, -8, 16.0, "16", True])
def test_bad_resolution(bad: object) -> None:
    with pytest.raises(ConfigError, match="resolution must be an integer >= 4"):
        load_images("digits", n=5, resolution=bad)  # type: ignore[arg-type]
    assert check_resolution(np.int64(16)) == 16


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "cifar"}, r"unknown image source 'cifar'"),
    ({"name": "digits", "n": 0}, "n must be a positive integer"),
    ({"name": "digits", "n": 2.5}, "n must be a positive integer"),
    ({"name": "digits", "channels": 2}, "channels must be 1"),
    ({"name": "digits", "seed": "x"}, "seed must be an integer"),
    ({"name": "digits", "data_dir": "/tmp"}, "drop data_dir"),
    ({"name": "lfw", "recursive": True}, "recursive=True applies to name='folder' only"),
    ({"name": "folder"}, "needs data_dir"),
])
def test_bad_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_images(resolution=8, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- wrappers


def test_distribution_wrapper_samples_rows_and_couples(gen: torch.Generator) -> None:
    s = load_images("digits", n=20, resolution=8, seed=0)
    dist = s.distribution()
    assert isinstance(dist, ImageDistribution) and isinstance(dist, Distribution)
    assert dist.event_shape == (1, 8, 8) and dist.image_set is s
    x = dist.sample(64, gen)
    assert x.shape == (64, 1, 8, 8)
    dists = torch.cdist(x.flatten(1), s.images.flatten(1))
    assert bool((dists.min(1).values == 0).all()), "every sample is a row of the set"
    pairs = IndependentCoupling(StandardNormal(dist.event_shape), dist).sample(5, gen)
    assert pairs.x0.shape == pairs.x1.shape == (5, 1, 8, 8)


def test_imageset_validates_its_fields() -> None:
    with pytest.raises(ShapeError, match="indices"):
        ImageSet(torch.zeros(2, 1, 4, 4), "x", "x", torch.arange(3))
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        ImageSet(torch.zeros(2, 4, 4), "x", "x", torch.arange(2))


def test_to_uint8_and_save_grid(tmp_path: Path) -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).expand(3, 3, 2, 2)
    u = to_uint8(x)
    assert u.shape == (3, 2, 2, 3) and u.dtype == np.uint8
    assert u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    out = save_grid(x, tmp_path / "g" / "grid.png", nrow=2, padding=1)
    with Image.open(out) as img:
        assert img.size == (2 * 3 + 1, 2 * 3 + 1) and img.mode == "RGB"


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


# --------------------------------------------------------------------------------------------- a user's data argument


def test_resolve_data_names_and_errors(tmp_path: Path) -> None:
    assert resolve_data("gmm").dataset == "gmm" and resolve_data("digits").data_dir is None
    with pytest.raises(DataError, match="does not exist"):
        resolve_data(tmp_path / "nope")
    bad = tmp_path / "data.csv"
    bad.write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported data file .*\.csv"):
        resolve_data(bad)
    with pytest.raises(DataError, match="no image files"):
        resolve_data(tmp_path)
    with pytest.raises(ConfigError, match="dataset must be one of"):
        resolve_data("gmm", dataset="imagenet")


def test_npy_vectors_and_image_folder_split(tmp_path: Path) -> None:
    from PIL import Image

    arr = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    np.save(tmp_path / "v.npy", arr)
    _, train, held = load_split("npy", str(tmp_path / "v.npy"), 24, 100, resolution=8, channels=None, seed=0,
                                min_heldout=8)
    assert train.shape == (24, 5) and held.shape == (16, 5)
    rows = {tuple(r) for r in np.concatenate([train.numpy(), held.numpy()]).round(6).tolist()}
    assert rows == {tuple(r) for r in arr.round(6).tolist()}  # a split, nothing lost or repeated
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    assert resolve_data(folder).dataset == "folder"
    _, train, held = load_split("folder", str(folder), 4, 100, resolution=8, channels=1, seed=0, min_heldout=8)
    assert train.shape == (4, 1, 8, 8) and held.shape == (8, 1, 8, 8)
    assert float(train.min()) >= -1 and float(train.max()) <= 1
    with pytest.raises(DataError, match="lower n_train"):
        load_split("folder", str(folder), 8, 100, resolution=8, channels=1, seed=0, min_heldout=8)


def test_load_split_too_few_items_names_the_real_minimum(tmp_path: Path) -> None:
    # 3 items, n_train=8, min_heldout=16: it asked for 20 = 4 + min_heldout, and a 20-item file then failed with
    # "lower n_train to at most 4"; the minimum for n_train=8 is 24
    np.save(tmp_path / "n3.npy", np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32))
    with pytest.raises(DataError, match=r"holds 3 item\(s\), but the study needs n_train=8 training items plus at "
                                        r"least 16 held out; provide at least 24 items for n_train=8 \(at least 20 "
                                        r"with --set n_train=4, the smallest\) or lower min_heldout \(--set "
                                        r"min_heldout=8, the smallest\)$"):
        load_split("npy", str(tmp_path / "n3.npy"), 8, 100, resolution=8, channels=None, seed=0, min_heldout=16)
    np.save(tmp_path / "n24.npy", np.random.default_rng(0).normal(size=(24, 2)).astype(np.float32))
    _, train, held = load_split("npy", str(tmp_path / "n24.npy"), 8, 100, resolution=8, channels=None, seed=0,
                                min_heldout=16)
    assert train.shape == (8, 2) and held.shape == (16, 2)
    with pytest.raises(DataError, match=r"provide at least 12 items for n_train=4$"):  # nothing lower to offer
        load_split("npy", str(tmp_path / "n3.npy"), 4, 100, resolution=8, channels=None, seed=0, min_heldout=8)


def test_load_split_counts_readable_images_of_a_folder_with_a_corrupt_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(11):
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "99.png").write_bytes(b"not an image")  # 12 files, 11 readable
    # enough readable images for 3 + 8: every readable one is used, the corrupt one skipped with a warning
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\) .*99\.png"):
        items, train, held = load_split("folder", str(tmp_path), 3, 100, resolution=4, channels=1, seed=0,
                                        min_heldout=8)
    assert len(items) == 11 and train.shape[0] == 3 and held.shape[0] == 8 and "99.png" not in (items.files or ())
    # not enough: the count of readable images, the file, and fixes the user can apply (not "lower n")
    with pytest.raises(DataError, match=r"holds 12 image files of which only 11 can be read \(unreadable: "
                                        r".*99\.png .*\), but the study needs n_train=4 training items plus at "
                                        r"least 8 held out; provide at least 12 items for n_train=4 \(or repair or "
                                        r"remove the unreadable files\)$") as caught:
        load_split("folder", str(tmp_path), 4, 100, resolution=4, channels=1, seed=0, min_heldout=8)
    assert "lower n to" not in str(caught.value)


def test_load_split_refuses_duplicated_or_constant_data_with_a_fix_of_the_data(tmp_path: Path) -> None:
    # 2 distinct points each repeated 50 times: the MMD bandwidth is 0, and the metric's "pass bandwidth=h" named a
    # knob neither advise-sigma nor sigma_tradeoff has
    dup = np.repeat(np.random.default_rng(0).normal(size=(2, 4)), 50, 0).astype(np.float32)
    np.save(tmp_path / "dup.npy", dup)
    np.save(tmp_path / "const.npy", np.ones((40, 3), dtype=np.float32))
    for name, distinct in (("dup", 2), ("const", 1)):
        with pytest.raises(DataError, match=rf"{name}\.npy: most of the \d+ held-out items coincide \({distinct} "
                                            r"distinct\).*remove the duplicates") as caught:
            load_split("npy", str(tmp_path / f"{name}.npy"), 8, 16, resolution=8, channels=None, seed=0,
                       min_heldout=8)
        assert "bandwidth=h" not in str(caught.value)


def test_resolve_data_reads_npz_and_hints_at_nested_folders(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=arr, labels=np.arange(30) % 2)
    spec = resolve_data(tmp_path / "v.npz")
    assert spec.dataset == "npy" and count_items(spec.dataset, spec.data_dir) == 30
    _, train, held = load_split(spec.dataset, spec.data_dir, 10, 100, resolution=8, channels=None, seed=0,
                                min_heldout=8)
    assert train.shape == (10, 3) and held.shape == (20, 3)
    nested = tmp_path / "imgs" / "x" / "y"
    nested.mkdir(parents=True)
    for i in range(2):
        solid("RGB", (6, 6), (i, 0, 0)).save(nested / f"{i}.png")
    with pytest.raises(DataError, match=r"holds no image files .*, but its sub-folders hold 2 \(in x/y\); .*pass "
                                        r"the sub-folder that holds the images \(e\.g\. .*imgs/x/y\)"):
        resolve_data(tmp_path / "imgs")


# --------------------------------------------------------------------------------------------- messy real-world data


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
    assert count_items("folder", str(tmp_path)) == 1


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


def test_celeba_layouts_of_torchvision_the_png_release_and_macos_copies(tmp_path: Path) -> None:
    pattern = celeba_pattern()
    tv = tmp_path / "tv" / "celeba" / "img_align_celeba"  # torchvision.datasets.CelebA(root) keeps it here
    tv.mkdir(parents=True)
    pattern.save(tv / "000001.jpg", format="PNG")
    (tv / "._000001.jpg").write_bytes(b"\x00\x05\x16\x07")  # a macOS AppleDouble file: not an image
    png = tmp_path / "png" / "img_align_celeba_png"  # the official PNG release
    png.mkdir(parents=True)
    pattern.save(png / "000001.png")
    pattern.save(png / "000002.PNG")
    drive = tmp_path / "CelebA" / "Img" / "img_align_celeba"  # the official download, extracted in place
    drive.mkdir(parents=True)
    pattern.save(drive / "000001.jpg", format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = load_celeba(tmp_path / "tv", resolution=14)
        b = load_celeba(tmp_path / "png", resolution=14)
        c = load_celeba(tmp_path / "CelebA", resolution=14)
    assert a.files == ("000001.jpg",) and b.files == ("000001.png", "000002.PNG") and c.files == ("000001.jpg",)
    assert torch.equal(a.images[0], b.images[0]) and torch.equal(b.images[0], b.images[1])
    assert torch.equal(a.images[0], c.images[0])
    assert count_items("celeba", str(tmp_path / "png")) == 2


def test_celeba_refuses_other_images_and_names_an_unextracted_archive(tmp_path: Path) -> None:
    """Before: a 1024×1024 face folder was silently cut to its central 140×140 patch (CelebA's crop)."""
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    solid("RGB", (1024, 1024), (0, 0, 0)).save(d / "000001.jpg")
    with pytest.raises(DataError, match=r"000001\.jpg is 1024x1024, not the 178x218 .*name='folder'"):
        load_celeba(tmp_path, resolution=16)
    archive = tmp_path / "download"
    archive.mkdir()
    (archive / "Img").mkdir()
    (archive / "Img" / "img_align_celeba.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=r"Img.img_align_celeba\.zip: extract them first"):
        load_celeba(archive, resolution=16)


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


# --------------------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("seed", [-1, 2**63, 1.0, True])
def test_loaders_refuse_seeds_outside_the_seed_range(folder: Path, tmp_path: Path, seed: object) -> None:
    # seed=-1 used to be accepted (torch.Generator wraps it to 2**64 - 1) while flowvar's seeds are in [0, 2**63)
    np.save(tmp_path / "v.npy", np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        load_folder(folder, n=3, resolution=4, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        load_array(tmp_path / "v.npy", n=3, seed=seed)  # type: ignore[arg-type]
    assert len(load_array(tmp_path / "v.npy", n=3, seed=np.int64(5))) == 3


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


def test_load_split_warns_about_data_centred_far_from_the_source(tmp_path: Path) -> None:
    """A spread near 1 far from the origin (1e3 + N(0, 1), 300 ± 10 K) passed the magnitude and spread checks, yet
    CFM(σ = 0) then pairs at chance instead of memorising and the σ advice answers another question (re-test N1):
    warned, naming the distance and the standardisation; centred data are not."""
    rng = np.random.default_rng(0)
    for name, data in (("offset", 1e3 + rng.normal(size=(40, 3))), ("kelvin", 300 + 10 * rng.normal(size=(40, 3)))):
        np.save(tmp_path / f"{name}.npy", data.astype(np.float32))
        with pytest.warns(UserWarning, match=r"is centred .* source standard deviations from the origin.*standardise"):
            load_split("npy", str(tmp_path / f"{name}.npy"), 8, 100, resolution=8, channels=None, seed=0,
                       min_heldout=16)
    np.save(tmp_path / "near.npy", (5 + rng.normal(size=(40, 3))).astype(np.float32))  # the paper's μ = 5 scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_split("npy", str(tmp_path / "near.npy"), 8, 100, resolution=8, channels=None, seed=0, min_heldout=16)


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


def test_loader_messages_name_the_cli_option_and_the_keyword(tmp_path: Path) -> None:
    """The loaders serve the CLI (--channels, --resolution) and Python (channels=, resolution=): their messages name
    both, not only the keyword a CLI user cannot pass."""
    with pytest.raises(ConfigError, match=r"--channels on the command line, channels= from Python\), got 2"):
        load_images("digits", n=3, channels=2)
    np.save(tmp_path / "v.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(ConfigError) as info:
        load_array(tmp_path / "v.npy", resolution=8)
    assert "drop --resolution / --channels (resolution= / channels= from Python)" in str(info.value)
    assert "load_array(path)" not in str(info.value)
