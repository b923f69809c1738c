"""Helpers shared by the Lightning test files (tests/test_integrations.py, tests/test_lightning_accumulation.py): a
tiny float64 flow-matching LightningModule, its data loader, and torch.func per-sample gradients as the reference.

Not a test module (pytest collects only ``test_*.py``); imported as ``from lightning_checks import ...`` after the
test file's ``pytest.importorskip("lightning")``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.models import MLPField

F64 = torch.float64


class Flow(L.LightningModule):
    """CFM with σ = 0 on a shifted 2-D Gaussian: the callback's contract's three pieces (model, per_sample_losses,
    their mean); keeps the last batch's (x_t, t, u_t) for the reference. ``calls``: per_sample_losses calls per
    training step (the contract wants one); ``optimizer``: the class configure_optimizers builds (lr 1e-2)."""

    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam

    def __init__(self, calls: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = MLPField(2, width=16, depth=2)
        self.calls = calls
        self.last: tuple[Tensor, Tensor, Tensor] | None = None

    def per_sample_losses(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        (x1,) = batch
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], dtype=x1.dtype)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        self.last = (xt.detach(), t, (x1 - x0).detach())
        return (self.model(xt, t) - (x1 - x0)).pow(2).sum(1), t

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        for _ in range(self.calls - 1):
            self.per_sample_losses(batch)
        losses, _ = self.per_sample_losses(batch)
        return losses.mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters(), lr=1e-2)


def loader(n: int = 240, batch: int = 24) -> torch.utils.data.DataLoader:
    """``n`` float64 points of N(3, I_2), shuffled into batches of ``batch`` by a seeded generator."""
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(n, 2, generator=g, dtype=F64) + 3.0)
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, generator=g)


def per_sample_gradients(model: nn.Module, xt: Tensor, t: Tensor, ut: Tensor) -> Tensor:
    """(B, P): the gradient of ‖v(x_t, t) − u_t‖² with respect to every parameter of ``model``, per sample
    (torch.func), flattened and concatenated in ``named_parameters`` order."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, Tensor], x: Tensor, s: Tensor, u: Tensor) -> Tensor:
        return (functional_call(model, p, (x[None], s[None])) - u[None]).pow(2).sum()

    per = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, xt, t, ut)
    return torch.cat([v.reshape(v.shape[0], -1) for v in per.values()], 1)
