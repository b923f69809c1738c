"""CelebA: the crop-and-resize geometry against a hand-computed triangle filter, the release layouts
(Kaggle, torchvision, PNG, Google Drive, macOS copies), and the errors that name the layout."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_checks import level, solid
from flowvar.data import count_items, load_celeba, load_images
from flowvar.errors import ConfigError, DataError


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
    with pytest.raises(DataError, match=r"1 of the 1 image files .* not the 178x218 .*\(000001\.jpg is 1024x1024\).*"
                                        r"name='folder'"):
        load_celeba(tmp_path, resolution=16)
    archive = tmp_path / "download"
    archive.mkdir()
    (archive / "Img").mkdir()
    (archive / "Img" / "img_align_celeba.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match=r"Img.img_align_celeba\.zip: extract them first"):
        load_celeba(archive, resolution=16)


def celeba_with_one_odd_file(root: Path, good: int = 12) -> Path:
    """``root/img_align_celeba``: ``good`` CelebA-size JPEGs and a 100×100 ``999999.jpg`` last in the listing."""
    d = root / "img_align_celeba"
    d.mkdir(parents=True)
    for i in range(good):
        solid("RGB", (178, 218), (10 * i, 0, 0)).save(d / f"{i + 1:06d}.jpg")
    solid("RGB", (100, 100), (0, 0, 0)).save(d / "999999.jpg")
    return d


def test_a_wrong_size_file_is_refused_whatever_n_and_the_seed(tmp_path: Path) -> None:
    """Before: only the files a seeded draw picked were checked, so n=1 loaded (and a table2 run with ns=[16]
    finished) while n=None refused the same folder."""
    celeba_with_one_odd_file(tmp_path)
    want = (r"1 of the 13 image files in CelebA folder .*img_align_celeba are not the 178x218 .*\(999999\.jpg is "
            r"100x100, smaller than the 140x140 centre crop\); remove them")
    for n in (1, 2, 12, None):
        for seed in range(3):
            with pytest.raises(DataError, match=want):
                load_images("celeba", data_dir=tmp_path, n=n, resolution=8, seed=seed)
    with pytest.raises(DataError, match=want):  # validation: configs call count_items before anything runs
        count_items("celeba", str(tmp_path))


def test_the_size_check_counts_and_names_the_first_odd_files(tmp_path: Path) -> None:
    d = celeba_with_one_odd_file(tmp_path, good=2)
    for name, size in (("000010.jpg", (218, 178)), ("000011.jpg", (64, 64)), ("000012.jpg", (300, 300))):
        solid("RGB", size, (0, 0, 0)).save(d / name)
    with pytest.raises(DataError, match=r"4 of the 6 image files .*\(000010\.jpg is 218x178; 000011\.jpg is 64x64, "
                                        r"smaller than the 140x140 centre crop; 000012\.jpg is 300x300; …\)"):
        count_items("celeba", str(tmp_path))


def test_the_size_check_reads_the_exif_orientation_as_the_loader_does(tmp_path: Path) -> None:
    """A 218×178 JPEG tagged "rotate 90°" is shown, and loaded, as 178×218: the header check agrees; an unreadable
    file is left to the loader, which skips it with a warning."""
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    img = solid("RGB", (218, 178), (0, 200, 0))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(d / "000001.jpg", exif=exif)
    solid("RGB", (178, 218), (0, 0, 200)).save(d / "000002.jpg")
    (d / "000003.jpg").write_bytes(b"not a jpeg")
    assert count_items("celeba", str(tmp_path)) == 3
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable .*000003\.jpg"):
        s = load_celeba(tmp_path, resolution=8)
    assert s.files == ("000001.jpg", "000002.jpg") and s.unreadable == ("000003.jpg",)
    assert "(3 files, 2 loaded, 1 unreadable skipped)" in s.source
