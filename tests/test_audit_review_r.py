"""``flowvar audit`` on a user's own trained model (auditR review): integer tensors refused as integer arrays are,
float images on a 0..255 scale warned about in memory as in a ``.npy`` file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvar.audit import audit, loading
from flowvar.audit.loading import load_conditions, load_labelled, load_labels
from flowvar.errors import ConfigError, DataError
from flowvar.models.mlp import MLPField


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_tensors_are_refused_as_integer_arrays_are(dtype: torch.dtype) -> None:
    """auditR 3: torchvision's MNIST ``.data`` and ``PILToTensor`` give uint8 tensors; they were used as raw pixel
    values 0..255 (the same numpy array was refused), and ``audit(model, x1.long(), pairs=x0)`` ran to a verdict."""
    pixels = torch.randint(0, 256, (10, 1, 8, 8), generator=torch.Generator().manual_seed(0)).to(dtype)
    with pytest.raises(ConfigError, match=rf"--data is an integer tensor \({dtype}\): its pixel scale is unknown in "
                                          rf"memory; convert it to floats on the model's scale \(e\.g\. x / 127\.5"):
        load_labelled("--data", pixels)
    with pytest.raises(ConfigError, match=r"integer array \(uint8\)"):  # as before: the numpy twin
        load_labelled("--data", pixels.to(torch.uint8).numpy())
    x1 = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ConfigError, match=r"--data is an integer tensor"):
        audit(MLPField(3, 8, 1), x1.mul(10).to(dtype), pairs=torch.randn(12, 3), samples=10)
    # labels are integers: a tensor of them is still taken; integer conditions keep their own error
    assert load_labels("--labels", torch.arange(12) % 3, 12).tolist() == (np.arange(12) % 3).tolist()
    with pytest.raises(DataError, match=r"--conditions holds integers \(int64\): class ids go to --labels"):
        load_conditions("--conditions", torch.arange(12).reshape(12, 1), 12)
    with pytest.raises(ConfigError, match=r"--data must be a real tensor"):
        load_labelled("--data", torch.zeros(4, 3, dtype=torch.complex64))


def test_float_image_tensors_on_a_pixel_scale_are_warned_about_as_npy_files_are(tmp_path: Path) -> None:
    """A float tensor of 0..255 images was used in silence, while the same values in a ``.npy`` file warn ("holds
    float images with values in [0, 255], used as given"); images in [−1, 1] and vectors are used without a word."""
    pixels = torch.randint(0, 256, (10, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    pixels[0, 0, 0, 0], pixels[0, 0, 0, 1] = 0.0, 255.0
    with pytest.warns(UserWarning, match=r"--data holds float images with values in \[0, 255\], used as given"):
        got, _, _ = load_labelled("--data", pixels)
    assert torch.equal(got, pixels)  # used as given: a model may be trained on any scale
    with pytest.warns(UserWarning, match=r"holds float images with values in \[0, 255\], used as given"):
        load_labelled("--data", pixels.numpy())  # a float array in memory: the same
    np.save(tmp_path / "px.npy", pixels.numpy())
    with pytest.warns(UserWarning, match=r"px\.npy holds float images with values in \[0, 255\], used as given"):
        load_labelled("--data", str(tmp_path / "px.npy"))  # the .npy twin, whose bound this shares
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_labelled("--data", pixels / 127.5 - 1)  # on flowvar's scale
        load_labelled("--data", pixels.flatten(1))  # vectors: any scale is a scale
        load_labelled("--data", torch.full((4, 1, 2, 2), loading.PIXEL_SCALE_WARN))  # at the bound, not past it
