"""Image data: the bundled sets (digits, LFW faces), the loaders' configuration and argument checks, and the
wrappers around an image set. Folders are tested in tests/test_data_folders.py, CelebA in tests/test_data_celeba.py,
.npy / .npz arrays in tests/test_data_arrays.py, a user's data argument and the train / held-out split in
tests/test_data_split.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_checks import mixed_folder
from flowvar.couplings import IndependentCoupling
from flowvar.data import (
    ImageDistribution,
    ImageSet,
    check_resolution,
    load_array,
    load_folder,
    load_images,
    save_grid,
    to_uint8,
)
from flowvar.distributions import Distribution, StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError

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


@pytest.mark.parametrize("seed", [-1, 2**63, 1.0, True])
def test_loaders_refuse_seeds_outside_the_seed_range(tmp_path: Path, seed: object) -> None:
    # seed=-1 used to be accepted (torch.Generator wraps it to 2**64 - 1) while flowvar's seeds are in [0, 2**63)
    folder = mixed_folder(tmp_path)
    np.save(tmp_path / "v.npy", np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        load_folder(folder, n=3, resolution=4, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        load_array(tmp_path / "v.npy", n=3, seed=seed)  # type: ignore[arg-type]
    assert len(load_array(tmp_path / "v.npy", n=3, seed=np.int64(5))) == 3


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
