"""A new user's first contact with the audit's Python API (review newR, items 4 and 10): ``audit`` takes what
``load_model`` returns, and a model the data do not fit is told so by the data's item shape and the layer that refused
them, not by torch's internal messages alone."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

from audit_checks import importable_module
from flowvar.audit import LoadedModel, audit, load_model
from flowvar.audit.loading import OWN_WEIGHTS
from flowvar.errors import DataError

NETS = '''
import torch
from flowvar.models.empirical import MemorisingField

_G = torch.Generator().manual_seed(3)
X0 = torch.randn(16, 4, generator=_G, dtype=torch.float64)
X1 = 2.0 + 0.5 * torch.randn(16, 4, generator=_G, dtype=torch.float64)


def memoriser():
    """The zero-loss field of 16 fixed pairs (Prop 2): a model that memorises, with no weights to load."""
    return MemorisingField(X0, X1)
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    yield from importable_module(tmp_path_factory, "newr_nets", NETS)


# ------------------------------------------------------------------ item 4: audit(load_model(...))


def test_audit_takes_what_load_model_returns(nets: ModuleType) -> None:
    """``audit(load_model(...), ...)`` was refused ("model must be a torch.nn.Module, got LoadedModel"); it audits
    the loaded module, and the report names it as load_model did (the source also decides whether an unfit model is
    asked about its checkpoint or its factory's own weights)."""
    loaded = load_model("newr_nets:memoriser", None)
    assert isinstance(loaded, LoadedModel) and loaded.source == f"newr_nets:memoriser() {OWN_WEIGHTS}"
    x1, x0 = nets.X1.float(), nets.X0.float()
    report = audit(loaded, x1, pairs=x0, seed=7, samples=40, grad_samples=8, t_bins=2, device="cpu")
    assert report.verdict == "memorising", report.summary()
    assert report.result.config["model"] == loaded.source
    assert report.summary().splitlines()[1] == f"model: {loaded.source}"
    # a model_source of the caller's own is kept
    named = audit(loaded, x1, pairs=x0, seed=7, samples=40, grad_samples=8, t_bins=2, device="cpu",
                  model_source="my memoriser")
    assert named.result.config["model"] == "my memoriser"
    assert named.verdict == report.verdict


def test_audit_refuses_a_non_module_naming_load_model() -> None:
    from flowvar.errors import ConfigError

    with pytest.raises(ConfigError, match=r"torch.nn.Module \(or what flowvar.audit.load_model returns\), got str"):
        audit("my_pkg:build", torch.randn(8, 4))  # type: ignore[arg-type]


# ------------------------------------------------------------------ item 10: a model the data do not fit


class TimeCatMLP(nn.Module):
    """v(x, t) = net([x, t]) for x (B, 8): its first layer takes 9 features."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(9, 16), nn.SiLU(), nn.Linear(16, 8))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t.reshape(-1, 1)], 1))


class TinyConvNet(nn.Module):
    """A UNet-like v(x, t) for 3-channel images: its time embedding is registered (and runs) before its first
    convolution, so neither "the first layer registered" nor "the first layer run" is the layer the data reach."""

    def __init__(self) -> None:
        super().__init__()
        self.time_embed = nn.Linear(1, 4)
        self.conv_in = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time_embed(t.reshape(-1, 1))[:, :, None, None]
        return self.conv_out(torch.relu(self.conv_in(x) + emb))


def _error(model: nn.Module, data: Tensor, **kwargs: object) -> str:
    with pytest.raises(DataError) as caught:
        audit(model, data, samples=8, grad_samples=2, t_bins=1, device="cpu", **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


@pytest.mark.parametrize("convention", [None, "xt"])
def test_a_shape_mismatch_names_the_items_and_the_layer_that_refused_them(convention: str | None) -> None:
    """The error surfaced torch's internals only ("Tensors must have same number of dimensions: got 4 and 2",
    "mat1 and mat2 shapes cannot be multiplied"): it now names the data's item shape and, where a Linear or Conv
    layer refused the data, its input width and what it was given — never a guess when no layer ran."""
    torch.manual_seed(0)
    mlp, conv = TimeCatMLP(), TinyConvNet()
    # images into an MLP: torch.cat fails in the forward before any layer runs, so only the items are named
    message = _error(mlp, torch.randn(20, 3, 4, 4), convention=convention)
    assert "the data's items have shape (3, 4, 4))" in message, message
    assert "its layer" not in message
    # 5 features where the model takes 8 (+ the time): the first Linear refuses (B, 6)
    message = _error(mlp, torch.randn(20, 5), convention=convention)
    assert ("the data's items have shape (5,); under the xt call, its layer net.0 (Linear) takes 9 input features "
            "and was given (128, 6))") in message, message
    # grey images into a 3-channel network: the convolution the data reach, not the time embedding that ran first
    message = _error(conv, torch.randn(20, 1, 8, 8), convention=convention)
    assert ("the data's items have shape (1, 8, 8); under the xt call, its layer conv_in (Conv2d) takes 3 input "
            "channels and was given (128, 1, 8, 8))") in message, message
    if convention is None:  # the probe's verdict leads, torch's own messages follow
        assert message.startswith("the model cannot be called on the training data under any convention (the "
                                  "data's items have shape (1, 8, 8);"), message
        # a bare Linear: model(x, t) enters its pre-hooks, then raises a TypeError (its signature), which names no
        # width; model(cat([x, t])) reaches it and its width is named
        message = _error(nn.Linear(4, 4), torch.randn(20, 5))
        assert ("the data's items have shape (5,); under the cat call, the model itself (Linear) takes 4 input "
                "features and was given (128, 6))") in message, message
    # the probe's hooks are gone: the caller's model is left as it came
    for model in (mlp, conv):
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
