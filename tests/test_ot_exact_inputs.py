"""flowvar.ot.exact_ot_permutation: inputs it cannot pair are refused in one line (the pairing itself: test_ot.py)."""

import pytest
import torch

from flowvar.errors import DataError
from flowvar.ot import exact_ot_permutation


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_points_are_refused_not_stripped_of_their_imaginary_part(dtype: torch.dtype) -> None:
    """coreA finding 5: the float64 cost took the real part only (torch's 'Casting complex values to real discards
    the imaginary part' warning aside), pairing other points than those given."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 2, generator=g, dtype=dtype)
    real = torch.randn(6, 2, generator=g)
    for x0, x1, name in [(z, z.flip(0), "x0"), (real, z, "x1")]:
        with pytest.raises(DataError, match=rf"^exact OT pairing needs real points, got {name} of dtype "
                                            rf"{str(dtype).replace('.', '[.]')}.*torch\.view_as_real\({name}\)"):
            exact_ot_permutation(x0, x1)
    # the suggested fix pairs them: real and imaginary parts as coordinates
    perm = exact_ot_permutation(torch.view_as_real(z).flatten(1), torch.view_as_real(z.flip(0)).flatten(1))
    assert torch.equal(perm, torch.arange(5, -1, -1))


def test_meta_tensors_are_refused_in_one_line() -> None:
    """coreA finding 5: a meta tensor (a shape without values) failed with torch's raw 'Tensor.item() cannot be
    called on meta tensors'."""
    meta = torch.empty(5, 3, device="meta")
    for x0, x1, name in [(meta, torch.zeros(5, 3), "x0"), (torch.zeros(5, 3), meta, "x1")]:
        with pytest.raises(DataError, match=rf"^exact OT pairing needs points with values, got {name} on the meta "
                                            rf"device \(a shape without data\); pass it on the CPU or a GPU$"):
            exact_ot_permutation(x0, x1)
