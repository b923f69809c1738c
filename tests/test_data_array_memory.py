"""Arrays of huge N: ``load_array`` memory-maps a ``.npy`` file and converts only the rows it returns, and
``load_split`` reads an ``.npz`` file's array once.

Before: ``load_array(path, n=10)`` loaded the whole file, converted all of it to float32 and rescaled it twice more
before choosing its 10 rows — about 12.7× the file (a 15 GB uint8 array, ImageNet-64 size, would have needed
~190 GB) — and ``load_split`` decompressed an ``.npz`` three times (count, shape, load). The whole-file checks
(NaN, a value range, the scale warnings) still see every row, so whether a file is refused does not depend on n.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import flowvar.data as data_module
from flowvar.data import choose_indices, load_array, load_split
from flowvar.errors import DataError

N = 4000  # 4000 × 1 × 32 × 32 uint8: a 4 MB file, its float32 copy 16 MB


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    a = np.random.default_rng(0).integers(0, 256, (N, 1, 32, 32), dtype=np.uint8)
    path = tmp_path_factory.mktemp("arrays") / "big.npy"
    np.save(path, a)
    return path, a


def test_ten_rows_of_a_big_array_cost_ten_rows_not_the_file(big: tuple[Path, np.ndarray]) -> None:
    path, a = big
    load_array(path, n=10, seed=3)  # imports and caches warmed up
    tracemalloc.start()
    try:
        images = load_array(path, n=10, seed=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < a.nbytes / 8, f"peak {peak / 1e6:.1f} MB for 10 rows of a {a.nbytes / 1e6:.1f} MB file"
    # the same numbers as converting the whole file and then choosing the rows
    idx = choose_indices(N, 10, 3, "array")
    assert torch.equal(images.indices, idx)
    assert torch.equal(images.images, torch.from_numpy(a[idx.numpy()].astype(np.float32)) / 127.5 - 1.0)


def test_the_checks_still_see_every_row(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(500, 3, 4, 4)).astype(np.float32)
    x[-1, 0, 0, 0] = np.nan  # a row a subset of 5 does not choose
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match=r"holds 1 non-finite value\(s\) \(NaN or Inf\) out of 24000"):
        load_array(tmp_path / "nan.npy", n=5)
    x[-1, 0, 0, 0] = 300.0
    np.save(tmp_path / "wide.npy", x)
    with pytest.raises(DataError, match=r"values in \[-[\d.]+, 300\.0\], outside value_range \(-10\.0, 10\.0\)"):
        load_array(tmp_path / "wide.npy", n=5, value_range=(-10, 10))
    np.save(tmp_path / "pixels.npy", np.abs(x) * 10)
    with pytest.warns(UserWarning, match=r"float images with values in \[[\d.e-]+, 3000\], used as given"):
        load_array(tmp_path / "pixels.npy", n=5)
    counts = np.zeros((300, 8), dtype=np.uint8)
    counts[:, 0] = np.arange(300) % 13
    np.save(tmp_path / "counts.npy", counts)
    with pytest.warns(UserWarning, match=r"uint8 vectors with values 0\.\.12, .*spread becomes 0\.0[0-9]+\)"):
        v = load_array(tmp_path / "counts.npy", n=4)
    assert v.images.shape == (4, 8)


def test_a_split_of_an_npz_array_reads_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(2).normal(size=(100, 6)).astype(np.float32)
    np.savez_compressed(tmp_path / "v.npz", x=x, labels=np.arange(100) % 3)
    reads: list[str] = []
    real = data_module.npz_arrays

    def counting(file: Path, npz: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray | None]:
        reads.append(str(file))
        return real(file, npz)

    monkeypatch.setattr(data_module, "npz_arrays", counting)
    items, train, heldout = load_split("npy", str(tmp_path / "v.npz"), 20, 30, resolution=8, channels=None, seed=0,
                                       min_heldout=8)
    assert len(reads) == 1
    assert train.shape == (20, 6) and heldout.shape == (30, 6) and len(items) == 50
    assert data_module.count_items("npy", str(tmp_path / "v.npz")) == 100 and len(reads) == 1  # the header only
