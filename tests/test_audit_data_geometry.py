"""The geometry an image folder is read in when ``--resolution`` / ``--channels`` are left out: its first image's,
said aloud when the others differ; and ``--heldout`` read in ``--data``'s geometry, its channels too.

Before: one 8×8 thumbnail sorted first shrank twelve 64×64 images to 8×8 without a word (a fully convolutional model
runs at any size, so nothing failed later); a grey first file turned a colour folder grey; and a colour ``--heldout``
folder whose first file was grey was refused as "not the same kind", --channels not named.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from flowvar.audit import audit
from flowvar.audit.loading import load_labelled
from flowvar.data import default_geometry
from flowvar.errors import ShapeError


def _save(path: Path, side: int, grey: bool, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (side, side) if grey else (side, side, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def _silent(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


def test_a_small_first_image_sets_the_resolution_with_a_warning_naming_the_others(tmp_path: Path) -> None:
    folder = tmp_path / "mix"
    _save(folder / "_thumb.png", 5, False, 9)  # sorted first ("_" < "i")
    _save(folder / ".thumb.png", 2, False, 9)  # hidden: not data, not counted
    for i in range(11):
        _save(folder / f"img{i:02d}.png", 16, False, 20 * i)
    _save(folder / "img99.png", 12, False, 250)
    with pytest.warns(UserWarning) as caught:
        x, _, desc = load_labelled("--data", folder)
    assert x.shape == (13, 3, 5, 5) and "resized to 5x5" in desc
    texts = [str(w.message) for w in caught]
    assert texts == [f"the images of folder {folder} differ in size: its first, _thumb.png, sets the default "
                     f"resolution 5 (its largest central square is 5x5), but 12 of the 13 readable images are another "
                     f"size (their squares 12..16 px a side, most often 16), and every image is resized to 5x5; pass "
                     f"--resolution / resolution= to choose, e.g. --resolution 16"]
    # chosen: no word about the sizes (the upsampling of the thumbnail is the loader's own warning)
    with pytest.warns(UserWarning, match=r"2 of the 13 images .* are smaller than 16x16 and were upsampled") as chosen:
        x, _, _ = load_labelled("--data", folder, resolution=16)
    assert x.shape == (13, 3, 16, 16) and not any("differ in size" in str(w.message) for w in chosen)


def test_a_grey_first_image_sets_the_channels_with_a_warning_naming_channels(tmp_path: Path) -> None:
    folder = tmp_path / "modes"
    _save(folder / "a.png", 8, True, 100)
    _save(folder / "b.png", 8, False, 30)
    _save(folder / "c.png", 8, False, 60)
    with pytest.warns(UserWarning) as caught:
        x, _, _ = load_labelled("--data", folder)
    assert x.shape == (3, 1, 8, 8)
    assert [str(w.message) for w in caught] == [
        f"the images of folder {folder} differ in colour: its first, a.png, is grey, which sets the default channels "
        f"1, but 2 of the 3 readable images are colour, and every image is read grey (colour ones by ITU-R 601-2 "
        f"luma); pass --channels 3 / channels=3 to read them in colour"]
    x, _, _ = _silent(load_labelled, "--data", folder, channels=3)
    assert x.shape == (3, 3, 8, 8)
    assert _silent(default_geometry, folder, 8, 3) == (8, 3)  # nothing defaulted: no header is read, nothing said


def test_class_folders_and_uniform_folders(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for k, name in enumerate(("cat", "dog")):
        for i in range(2):
            _save(tree / name / f"{i}.png", 8, False, 50 * k + 10 * i)
    x, labels, _ = _silent(load_labelled, "--data", tree)  # one size, one mode: silent
    assert x.shape == (4, 3, 8, 8) and labels is not None
    _save(tree / "dog" / "2.png", 8, True, 7)
    with pytest.warns(UserWarning, match=r"its first, cat/0\.png, is colour, .* but 1 of the 5 readable images are "
                                         r"grey, and every image is read as RGB \(grey ones as 3 identical channels\); "
                                         r"pass --channels 1 / channels=1 to read them grey"):
        load_labelled("--data", tree)


class _ZeroField(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_heldout_is_read_in_the_datas_channels(tmp_path: Path) -> None:
    data, held = tmp_path / "data", tmp_path / "held"
    _save(data / "only.png", 8, False, 40)  # one item: the audit then stops right after the held-out check
    _save(held / "a.png", 8, True, 100)  # grey first, colour after
    _save(held / "b.jpg", 8, False, 30)
    _save(held / "c.png", 8, False, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read in --data's geometry: nothing defaulted, nothing to warn of
        with pytest.raises(ShapeError, match=r"^--data holds 1 item; the audit needs at least 2 "
                                              r"\(called from Python: in audit\(\), --data is data=\)$"):
            audit(_ZeroField(), data, heldout=held, device="cpu")
