"""CUDA paths, against the same computation on the CPU or torch.func: the variance engine (MLP and UNet, float32
and float64), the monitor in a user's loop, the trainer with the fused Adam kernel, exact OT on CUDA tensors, and
`flowvar audit` on the GPU.

Skipped without a GPU (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import GaussianMixture, StandardNormal
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import MLPField
from flowvar.ot import exact_ot_permutation
from flowvar.train import TrainConfig, train
from flowvar.variance.engine import GradNormEngine
from flowvar.variance.monitor import GradientVarianceMonitor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
F64 = torch.float64
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(autouse=True)
def _exact_cuda_math() -> Iterator[None]:
    """TF32 would make float32 products differ between the engine's and torch.func's kernels by ~1e-3."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def rel(a: Tensor, b: Tensor) -> float:
    a, b = a.to(F64), b.to(F64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def per_sample_grads(model: nn.Module, x: Tensor, t: Tensor, u: Tensor) -> dict[str, Tensor]:
    """g_i = ∇_θ ‖model(x_i, t_i) − u_i‖² by torch.func, in the model's dtype on its device (so that the comparison
    measures the engine's algebra, not float32 rounding carried through a float64 forward pass)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, Tensor], xi: Tensor, ti: Tensor, ui: Tensor) -> Tensor:
        return (functional_call(model, p, (xi[None], ti[None])) - ui[None]).pow(2).sum()

    return vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, x, t, u)


def _models() -> dict[str, nn.Module]:
    from flowvar.models.unet import UNetField

    torch.manual_seed(0)
    return {"mlp": MLPField(3, width=32, depth=2),
            "unet": UNetField(8, in_channels=1, base_channels=8, channel_mult=(1, 2), groups=4, head_channels=8,
                              attention_resolutions=(4,))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["mlp", "unet"])
def test_engine_on_cuda_matches_torch_func(name: str, dtype: torch.dtype) -> None:
    model = _models()[name].to(CUDA, dtype)
    g = torch.Generator(device=CUDA).manual_seed(1)
    shape = (12, 3) if name == "mlp" else (6, 1, 8, 8)
    x = torch.randn(shape, generator=g, device=CUDA, dtype=dtype)
    u = torch.randn(shape, generator=g, device=CUDA, dtype=dtype)
    t = torch.rand(shape[0], generator=g, device=CUDA, dtype=dtype)
    with GradNormEngine(model, elementwise=True) as engine:
        losses = (model(x, t) - u).pow(2).flatten(1).sum(1)
        losses.sum().backward()
        stats = engine.compute(reduction="sum", losses=losses)
    assert not stats.fallback, stats.fallback
    ref = per_sample_grads(copy.deepcopy(model), x, t, u)
    for param, gi in ref.items():
        flat = gi.reshape(gi.shape[0], -1)
        assert rel(stats.param_sq_norms[param], flat.pow(2).sum(1)) < TOL[dtype], param
        assert rel(stats.sq_sum[param].reshape(-1), flat.pow(2).sum(0)) < TOL[dtype], param
        assert rel(stats.grad_sum[param].reshape(-1), flat.sum(0)) < TOL[dtype], param


def test_monitor_in_a_cuda_loop_logs_what_the_cpu_logs() -> None:
    """The same float64 loop on CUDA and on the CPU (same data, same initialisation): equal logged records."""
    histories = []
    for device in (CUDA, torch.device("cpu")):
        torch.manual_seed(0)
        model = MLPField(2, width=16, depth=2).to(device, F64)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        monitor = GradientVarianceMonitor(model, t_bins=4, profile_every=1)
        loss = CFMLoss(Interpolant(sigma=0.1))
        coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
        gen = torch.Generator().manual_seed(2)
        for step in range(4):
            path = loss.draw(coupling, 64, gen)
            path = type(path)(**{k: getattr(path, k).to(device) for k in path.__dataclass_fields__})
            losses = per_sample_loss(model, path)
            opt.zero_grad()
            losses.mean().backward()
            monitor.step(step, losses, path.t)
            opt.step()
        monitor.close()
        histories.append(monitor.history)
    for on_gpu, on_cpu in zip(*histories, strict=True):
        for key in ("loss", "trace", "mean_grad_sq_norm", "normalised", "mean_sq_norm"):
            assert math.isclose(on_gpu[key], on_cpu[key], rel_tol=1e-9), key


def test_trainer_on_cuda_uses_fused_adam_and_follows_the_cpu_run() -> None:
    params = {}
    for device in (CUDA, torch.device("cpu")):
        torch.manual_seed(0)
        model = MLPField(2, width=32, depth=2).to(device, F64)
        coupling = IndependentCoupling(StandardNormal(2, F64), GaussianMixture.random(2, seed=2, dtype=F64))
        result = train(model, CFMLoss(Interpolant(sigma=0.1)), coupling,
                       TrainConfig(steps=30, batch_size=128, lr=1e-3, progress=False, log_every=0))
        assert all(math.isfinite(v) for v in result.losses)
        params[device.type] = torch.cat([p.detach().cpu().reshape(-1) for p in model.parameters()])
    assert rel(params["cuda"], params["cpu"]) < 1e-8


class _CudaDropoutField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Dropout(0.3), nn.Linear(16, 2))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t[:, None]], 1))


def test_trainer_on_cuda_seeds_dropout_and_restores_the_global_rngs() -> None:
    """Dropout on CUDA draws from the device's RNG: the trainer seeds it (two runs agree) inside a fork (the caller's
    CUDA and CPU streams are as they were just before the call, whatever the caller had drawn)."""
    def run(caller_seed: int) -> list[float]:
        torch.manual_seed(0)
        model = _CudaDropoutField().to(CUDA)
        torch.manual_seed(caller_seed)  # the caller's streams differ between the two runs
        torch.randn(3, device=CUDA)
        cuda_before, cpu_before = torch.cuda.get_rng_state(), torch.get_rng_state()
        coupling = IndependentCoupling(StandardNormal(2), GaussianMixture.random(2, seed=2))
        losses = train(model, CFMLoss(Interpolant(sigma=0.1)), coupling,
                       TrainConfig(steps=10, batch_size=64, lr=1e-3, progress=False, log_every=0)).losses
        assert torch.equal(torch.cuda.get_rng_state(), cuda_before)
        assert torch.equal(torch.get_rng_state(), cpu_before)
        return losses

    assert run(caller_seed=1) == run(caller_seed=2)


def test_make_adam_is_fused_on_cuda() -> None:
    from flowvar.train import make_adam

    opt = make_adam([nn.Parameter(torch.zeros(3, device=CUDA))], lr=1e-3)
    assert opt.defaults.get("fused") is True


def test_exact_ot_on_cuda_tensors_is_as_optimal_as_the_cpu_pairing() -> None:
    """The cost (and the alignment) are formed on the GPU: a bijection on the GPU whose total under the CPU's cost is
    the CPU optimum's (the two costs differ by rounding, so a near-tie may resolve the other way)."""
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(n, 2, generator=g), GaussianMixture.random(2, seed=3).sample(n, g)) for n in (64, 600, 1100)]
    cases.append((torch.randn(256, 3, 32, 32, generator=g), torch.rand(256, 3, 32, 32, generator=g) * 2 - 1))
    for x0, x1 in cases:  # below and above the alignment's and the sparse solve's thresholds, and a batch of images
        on_gpu = exact_ot_permutation(x0.to(CUDA), x1.to(CUDA))
        assert on_gpu.device.type == "cuda"
        on_gpu = on_gpu.cpu()
        assert torch.equal(on_gpu.sort().values, torch.arange(len(x0)))
        cpu = exact_ot_permutation(x0, x1)
        a, b = x0.double().flatten(1), x1.double().flatten(1)
        cost = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # direct differences
        rows = torch.arange(len(x0))
        best = float(cost[rows, cpu].sum())
        assert float(cost[rows, on_gpu].sum()) == pytest.approx(best, rel=1e-10)


def test_audit_on_cuda_reads_what_the_cpu_reads() -> None:
    """`flowvar audit --device cuda` on a model that memorised 16 fixed pairs at σ = 0: the same verdict and the same
    test readings as on the CPU, and pair-recovery shares within a sample of each other."""
    from flowvar.audit import audit
    from flowvar.couplings import FixedPairs

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 8, generator=g)
    x1 = 0.5 * torch.randn(16, 8, generator=g) + 2.0
    heldout = 0.5 * torch.randn(64, 8, generator=g) + 2.0
    model = MLPField(8, width=128, depth=3)
    train(model, CFMLoss(Interpolant(0.0)), FixedPairs(x0, x1), TrainConfig(steps=1200, batch_size=64, lr=2e-3,
                                                                              log_every=0))
    reports = {dev: audit(copy.deepcopy(model), x1, pairs=x0, heldout=heldout, samples=200, grad_samples=32, seed=3,
                          device=dev) for dev in ("cpu", "cuda")}
    assert reports["cuda"].verdict == reports["cpu"].verdict == "memorising"
    readings = {dev: {c.id: c.verdict for c in r.result.claims} for dev, r in reports.items()}
    assert readings["cuda"] == readings["cpu"]
    own = {dev: next(c for c in r.result.claims if c.id == "audit.pair_recovery").evidence["fine"]["accuracy_own"]
           for dev, r in reports.items()}
    assert abs(own["cuda"] - own["cpu"]) <= 1 / 16


def test_audit_hands_a_model_spread_over_devices_back_the_way_it_came() -> None:
    """The audit runs the model on one device; a model whose layers live on different devices (a pipeline) gets
    each parameter and buffer back on its own device, as the same Parameter objects (an optimiser keeps them)."""
    from flowvar.audit import audit

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(16, 8, generator=g), 0.5 * torch.randn(16, 8, generator=g) + 2.0
    model = MLPField(8, width=32, depth=2)
    model.net[0].to(CUDA)  # the first layer on the GPU, the rest on the CPU
    before = {name: (p, p.device) for name, p in model.named_parameters()}
    assert {d.type for _, d in before.values()} == {"cuda", "cpu"}
    audit(model, x1, pairs=x0, samples=32, grad_samples=8, steps=10, coarse_steps=4, device="cuda")
    after = dict(model.named_parameters())
    for name, (param, device) in before.items():
        assert after[name] is param and param.device.type == device.type, name
