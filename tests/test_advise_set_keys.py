"""advise-sigma's list of valid ``--set`` keys holds only keys ``--set`` accepts: not ``sigmas``, ``seed``,
``dataset`` or ``data_dir`` (its own arguments), nor the GMM's knobs with data from a file (review K, 7f)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowvar.advise import GMM_ONLY_KEYS, OWN_ARGUMENT_KEYS, advise_sigma
from flowvar.errors import ConfigError


def test_the_valid_keys_named_are_the_settable_ones(tmp_path: Path) -> None:
    data = tmp_path / "vec.npy"
    np.save(data, np.random.default_rng(0).normal(size=(64, 4)).astype("float32"))
    with pytest.raises(ConfigError) as info:
        advise_sigma(data, quick=True, stepz=3)
    listed = str(info.value).split("valid keys: ", 1)[1].split(" (", 1)[0].split(", ")
    assert "steps" in listed and "n_train" in listed
    assert not set(listed) & {*OWN_ARGUMENT_KEYS, *GMM_ONLY_KEYS}
    assert not {"sigmas", "seed", "dataset", "data_dir", "dim", "n_components"} & set(listed)
