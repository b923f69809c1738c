"""A user's data argument (``resolve_data``) and the train / held-out split the σ advisor and
``sigma_tradeoff`` train on (``load_split``): its minimum sizes, corrupt files, duplicated or constant data, and data
far from the N(0, I) source."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_checks import solid
from flowvar.data import count_items, load_split, resolve_data
from flowvar.errors import ConfigError, DataError

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


def test_a_celeba_root_is_named_with_the_option_that_reads_it_as_celeba(tmp_path: Path) -> None:
    """Before: the hint said to pass img_align_celeba itself, which reads the images as a plain folder (largest
    central square), not CelebA's 140×140 face crop that only dataset='celeba' gives."""
    images = tmp_path / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    for i in range(2):
        solid("RGB", (178, 218), (i, 0, 0)).save(images / f"{i + 1:06d}.jpg")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")
    with pytest.raises(DataError, match=r"laid out as CelebA \(its 2 images are in .*img_align_celeba\): pass "
                                        r"--dataset celeba .*140x140 face crop, or pass .*img_align_celeba to read "
                                        r"them as a plain folder"):
        resolve_data(tmp_path / "celeba")
    assert resolve_data(tmp_path / "celeba", dataset="celeba").dataset == "celeba"


def _rows(x: np.ndarray) -> list[tuple[float, ...]]:
    return [tuple(r) for r in x.reshape(len(x), -1).round(5).tolist()]


@pytest.mark.parametrize("source", ["npy", "folder", "folder_with_a_corrupt_file", "digits"])
def test_load_split_is_nested_the_held_out_size_never_changes_the_training_items(tmp_path: Path,
                                                                                 source: str) -> None:
    """n_heldout (a sweep's n_eval) leaves the training items and their order alone, and a larger held-out set
    extends a smaller one: before, the split permuted whatever was loaded, so n_eval = 16 and 24 trained on
    different items and a sweep over n_eval confounded it with the training set."""
    if source == "npy":
        np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32))
        dataset, data_dir = "npy", str(tmp_path / "v.npy")
    elif source == "digits":
        dataset, data_dir = "digits", None
    else:
        rng = np.random.default_rng(1)
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
        if source == "folder_with_a_corrupt_file":
            (tmp_path / "07.png").write_bytes(b"not an image")
        dataset, data_dir = "folder", str(tmp_path)
    splits = {}
    for n_heldout in (8, 16, 24):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the corrupt file's warning
            _, train, held = load_split(dataset, data_dir, 12, n_heldout, resolution=8, channels=None, seed=3,
                                        min_heldout=8)
        splits[n_heldout] = (_rows(train.numpy()), _rows(held.numpy()))
        assert len(held) == n_heldout and not set(splits[n_heldout][0]) & set(splits[n_heldout][1])
    assert splits[8][0] == splits[16][0] == splits[24][0]
    assert splits[24][1][:16] == splits[16][1] and splits[16][1][:8] == splits[8][1]
    _, other, _ = load_split(dataset, data_dir, 12, 8, resolution=8, channels=None, seed=4, min_heldout=8)
    assert _rows(other.numpy()) != splits[8][0]  # the seed still chooses the items
