"""Gradient-variance cost: flowvar's fast engine vs a plain forward+backward, BackPACK, Opacus, torch.func and a loop.

Quantities (all exact; the script checks that every method returns the same tr Cov(g)):

* trace: tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² of the per-sample CFM gradients g_i = ∇ℓ_i, ℓ_i = ‖v(x_i, t_i) − u_i‖²;
* element-wise: Var(g)_j = (1/B) Σ_i g_ij² − ḡ_j² for every parameter coordinate j.

Methods: ``plain`` (forward + backward of the mean loss: the denominator of every ratio), ``flowvar trace`` /
``flowvar elementwise`` (GradNormEngine; includes the forward and backward), BackPACK ``BatchL2Grad`` (trace)
and ``Variance`` (element-wise), Opacus ``GradSampleModule`` (materialised per-sample gradients, then both
reductions), ``torch.func`` vmap(grad) (materialised, then both reductions) and a per-sample loop (B
single-sample forward+backward passes). Models: the time-conditioned MLP (d+1 → 256 → 256 → 256 → d, SELU)
the image UNet (``flowvar.models.unet.UNetField`` defaults, 3 channels) at B = 32 and 128, and two transformers
(``DiTField``; one built from ``nn.TransformerEncoderLayer``) on 16² images at B = 32 and 128 (B = 128: flowvar
and plain only).

Also: the monitor's overhead on a full training step (sampling, forward, backward, Adam), and the peak
extra memory of each method over a plain step, measured as the peak RSS of a fresh child process.

    python benchmarks/gradvar.py            # full grid (about 15-25 min on a loaded 2-core machine)
    python benchmarks/gradvar.py --quick    # reduced grid, under two minutes
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from _common import (
    clock_note,
    command,
    fmt_ratio,
    fmt_time,
    interleaved,
    machine_line,
    parse_args,
    peak_rss_mb,
    setup,
    table,
    write_section,
)
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import StandardNormal
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import MLPField
from flowvar.variance.engine import GradNormEngine
from flowvar.variance.monitor import GradientVarianceMonitor

Batch = tuple[Tensor, Tensor, Tensor]  # x, t, u


def has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------- problems


def mlp_problem(d: int, B: int) -> tuple[nn.Module, Batch]:
    gen = torch.Generator().manual_seed(d * 100003 + B)
    model = MLPField(d, width=256, depth=3, activation="selu")
    x = torch.randn(B, d, generator=gen)
    return model, (x, torch.rand(B, generator=gen), torch.randn(B, d, generator=gen))


def image_batch(channels: int, px: int, B: int, seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, channels, px, px, generator=gen)
    return x, torch.rand(B, generator=gen), torch.randn(B, channels, px, px, generator=gen)


class MHATransformerField(nn.Module):
    """A transformer velocity field built from PyTorch's own ``nn.TransformerEncoderLayer`` (``nn.MultiheadAttention``
    inside; batch first, pre-norm): patchify conv, sinusoidal time embedding added to every token, ``depth`` layers,
    a linear head, unpatchify. The other transformer family the issue names beside the DiT."""

    def __init__(self, size: int, channels: int = 3, patch: int = 2, width: int = 128, depth: int = 6,
                 heads: int = 4) -> None:
        super().__init__()
        from flowvar.models.transformer import sincos_position_embedding

        self.size, self.channels, self.patch, self.width, self.grid = size, channels, patch, width, size // patch
        self.patchify = nn.Conv2d(channels, width, patch, stride=patch)
        self.register_buffer("position", sincos_position_embedding(width, self.grid, self.grid)[None],
                             persistent=False)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                                                norm_first=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, patch * patch * channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        from flowvar.models.unet import sinusoidal_embedding

        B, p, g = x.shape[0], self.patch, self.grid
        tokens = self.patchify(x).flatten(2).transpose(1, 2) + self.position
        tokens = tokens + self.time(sinusoidal_embedding(t, self.width, scale=1000.0))[:, None]
        for layer in self.layers:
            tokens = layer(tokens)
        out = self.head(self.norm(tokens)).reshape(B, g, g, p, p, self.channels)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(B, self.channels, self.size, self.size)


def transformer_problem(kind: str, B: int) -> tuple[nn.Module, Batch]:
    """16² RGB images as 64 tokens of width 128, 6 blocks, 4 heads: ``dit`` (flowvar's DiTField: qkv Linear +
    scaled_dot_product_attention + MLP, adaLN time conditioning) or ``mha`` (:class:`MHATransformerField`)."""
    from flowvar.models.transformer import DiTField

    torch.manual_seed(0)
    model: nn.Module = (DiTField(16, channels=3, patch=2, width=128, depth=6, heads=4, zero_init=False)
                        if kind == "dit" else MHATransformerField(16))
    return model, image_batch(3, 16, B, 31 * B)


def unet_problem(px: int, B: int) -> tuple[nn.Module, Batch]:
    from flowvar.models.unet import UNetField

    gen = torch.Generator().manual_seed(px * 7919 + B)
    model = UNetField(px, in_channels=3)
    x = torch.randn(B, 3, px, px, generator=gen)
    return model, (x, torch.rand(B, generator=gen), torch.randn(B, 3, px, px, generator=gen))


def sq_err(model: nn.Module, batch: Batch) -> Tensor:
    x, t, u = batch
    return (model(x, t) - u).pow(2).flatten(1).sum(1)


# --------------------------------------------------------------------------------------------- methods
# Each factory returns a zero-argument callable that runs one measurement and returns (trace, notes).


def make_plain(model: nn.Module, batch: Batch) -> Callable[[], tuple[float, str]]:
    def run() -> tuple[float, str]:
        model.zero_grad(set_to_none=True)
        sq_err(model, batch).mean().backward()
        return math.nan, ""
    return run


def make_ours(model: nn.Module, batch: Batch, elementwise: bool, own_grads: bool = True
              ) -> Callable[[], tuple[float, str]]:
    model = copy.deepcopy(model)
    engine = GradNormEngine(model, elementwise=elementwise, own_grads=own_grads)

    def run() -> tuple[float, str]:
        model.zero_grad(set_to_none=True)
        losses = sq_err(model, batch)
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses)
        if elementwise:
            assert stats.sq_sum is not None
        return stats.trace, f"fallback: {sorted(stats.fallback)}" if stats.fallback else ""
    return run


def _bp_model(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    import backpack

    m = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = backpack.extend(m)
    return m, backpack.extend(nn.MSELoss(reduction="sum"))


def make_backpack(model: nn.Module, batch: Batch, which: str) -> Callable[[], tuple[float, str]]:
    import backpack
    from backpack.extensions import BatchL2Grad, Variance

    m, lossfn = _bp_model(model)
    B = batch[0].shape[0]
    x, t, u = batch

    def run() -> tuple[float, str]:
        m.zero_grad(set_to_none=True)
        ext = BatchL2Grad() if which == "l2" else Variance()
        with warnings.catch_warnings(record=True) as caught, backpack.backpack(ext):
            warnings.simplefilter("always")
            lossfn(m(x, t), u).backward()
        params = list(m.parameters())
        field = "batch_l2" if which == "l2" else "variance"
        missing = [p for p in params if not hasattr(p, field)]
        done = [p for p in params if hasattr(p, field)]
        if which == "l2":
            sq = sum(float(p.batch_l2.sum()) for p in done)
            trace = sq / B - sum(float(p.grad.pow(2).sum()) for p in done) / B**2
        else:
            trace = sum(float(p.variance.sum()) for p in done)
        for p in params:
            for f in ("batch_l2", "variance"):
                if hasattr(p, f):
                    delattr(p, f)
        note = ""
        if missing:
            skipped = sum(p.numel() for p in missing)
            ids = {id(p) for p in missing}
            kinds = sorted({type(mod).__name__ for mod in m.modules()
                            if any(id(p) in ids for p in mod.parameters(recurse=False))})
            warned = any("does not have an extension" in str(w.message) for w in caught)
            note = (f"incomplete: skips {len(missing)} parameter tensors ({skipped} parameters) of "
                    f"{', '.join(kinds)}{' with only a UserWarning' if warned else ''}")
        return (trace if not missing else math.nan), note
    return run


def _reduce(flat_parts: list[Tensor], B: int) -> float:
    sq = sum(float(g.pow(2).sum()) for g in flat_parts) / B
    mean_sq = sum(float(g.sum(0).pow(2).sum()) for g in flat_parts) / B**2
    for g in flat_parts:  # the element-wise variance, to time the same quantity as Variance
        g.var(0, unbiased=False)
    return sq - mean_sq


def make_opacus(model: nn.Module, batch: Batch) -> Callable[[], tuple[float, str]]:
    from opacus import GradSampleModule

    m = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    B = batch[0].shape[0]

    def run() -> tuple[float, str]:
        m.zero_grad(set_to_none=True)
        sq_err(m, batch).sum().backward()
        parts = [p.grad_sample.reshape(B, -1) for p in m.parameters()]
        return _reduce(parts, B), ""
    return run


def make_vmap(model: nn.Module, batch: Batch) -> Callable[[], tuple[float, str]]:
    m = copy.deepcopy(model)
    params = {k: v.detach() for k, v in m.named_parameters()}
    B = batch[0].shape[0]

    def loss(p: dict[str, Tensor], xi: Tensor, ti: Tensor, ui: Tensor) -> Tensor:
        return (functional_call(m, p, (xi[None], ti[None])) - ui[None]).pow(2).sum()

    def run() -> tuple[float, str]:
        grads = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, *batch)
        return _reduce([g.reshape(B, -1) for g in grads.values()], B), ""
    return run


def make_loop(model: nn.Module, batch: Batch) -> Callable[[], tuple[float, str]]:
    m = copy.deepcopy(model)
    params = list(m.parameters())
    x, t, u = batch
    B = x.shape[0]

    def run() -> tuple[float, str]:
        sq = 0.0
        total = [torch.zeros_like(p) for p in params]
        total_sq = [torch.zeros_like(p) for p in params]
        for i in range(B):
            gs = torch.autograd.grad((m(x[i:i + 1], t[i:i + 1]) - u[i:i + 1]).pow(2).sum(), params)
            for g, s, s2 in zip(gs, total, total_sq):
                sq += float(g.pow(2).sum())
                s += g
                s2 += g * g
        return sq / B - sum(float(s.pow(2).sum()) for s in total) / B**2, ""
    return run


def factories(model: nn.Module, batch: Batch, own_off: bool = False
              ) -> dict[str, Callable[[], Callable[[], tuple[float, str]]]]:
    out: dict[str, Callable[[], Callable[[], tuple[float, str]]]] = {
        "plain": lambda: make_plain(model, batch),
        "flowvar trace": lambda: make_ours(model, batch, False),
        "flowvar elementwise": lambda: make_ours(model, batch, True),
    }
    if own_off:  # the engine measuring after autograd computed every gradient (GradNormEngine(own_grads=False))
        out[OWN_OFF] = lambda: make_ours(model, batch, False, own_grads=False)
    if has("backpack"):
        out["BackPACK BatchL2Grad"] = lambda: make_backpack(model, batch, "l2")
        out["BackPACK Variance"] = lambda: make_backpack(model, batch, "var")
    if has("opacus"):
        out["Opacus per-sample"] = lambda: make_opacus(model, batch)
    out["torch.func vmap"] = lambda: make_vmap(model, batch)
    out["per-sample loop"] = lambda: make_loop(model, batch)
    return out


SLOW = ("Opacus per-sample", "torch.func vmap", "per-sample loop")  # timed in their own group with plain
OWN_OFF = "flowvar trace, autograd's gradients"
FAST_ONLY = ("plain", "flowvar trace", "flowvar elementwise", OWN_OFF)  # large batches: the others take minutes
BLOCK = 10  # training steps per timed block in the monitor-overhead benchmark


# --------------------------------------------------------------------------------------------- timing


def time_grid(label: str, model: nn.Module, batch: Batch, rounds: int, slow: tuple[str, ...], slow_rounds: int,
              budget_s: float, own_off: bool = False, only: tuple[str, ...] | None = None
              ) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Median seconds, traces and notes per method; slow methods timed in a second interleaved group with plain.
    ``only``: run just these methods (the rest are noted "not run (time)")."""
    facts = factories(model, batch, own_off)
    runners: dict[str, Callable[[], tuple[float, str]]] = {}
    notes: dict[str, str] = {}
    for name, make in facts.items():
        if (name in SLOW and name not in slow) or (only is not None and name not in only):
            notes[name] = "not run (time)"
            continue
        try:
            runners[name] = make()
        except Exception as error:  # a library that cannot wrap this model: record why
            notes[name] = f"fails: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
    traces: dict[str, float] = {}
    failed: set[str] = set()

    def timed(name: str) -> Callable[[], None]:
        def call() -> None:
            if name in failed:
                return
            try:
                trace, note = runners[name]()
            except Exception as error:  # e.g. a library that cannot handle a layer: record it, drop the method
                notes[name] = f"fails: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
                failed.add(name)
                return
            traces[name] = trace
            if note:
                notes[name] = note
        return call

    fast = {n: timed(n) for n in runners if n not in SLOW}
    medians = interleaved(fast, rounds, warmup=1, budget_s=budget_s)
    slow_group = {n: timed(n) for n in runners if n in SLOW}
    if slow_group:
        slow_group = {"plain": timed("plain"), **slow_group}
        slow_medians = interleaved(slow_group, slow_rounds, warmup=0, budget_s=budget_s)
        scale = medians["plain"] / slow_medians["plain"]  # express in the fast group's plain time
        for n in slow_group:
            if n != "plain":
                medians[n] = slow_medians[n] * scale
                own = slow_medians[n] / slow_medians["plain"]
                notes[n] = (notes.get(n, "") + f" (timed in its own group with plain: {own:.1f}×)").strip()
    for n in failed:
        medians.pop(n, None)
    print(f"{label}: " + ", ".join(f"{n} {fmt_time(v)}" for n, v in medians.items()), flush=True)
    return medians, traces, notes


def agreement(traces: dict[str, float]) -> float:
    ref = traces.get("flowvar trace", math.nan)
    vals = [v for n, v in traces.items() if n != "plain" and math.isfinite(v)]
    return max(abs(v - ref) / abs(ref) for v in vals) if vals and ref else math.nan


# --------------------------------------------------------------------------------------------- memory


def memory_child(method: str, model_kind: str, size: int, B: int) -> None:
    """Child process: peak RSS after two plain steps, then after two calls of ``method``; prints JSON."""
    setup(1)
    model, batch = mlp_problem(size, B) if model_kind == "mlp" else unet_problem(size, B)
    plain = make_plain(model, batch)
    run = factories(model, batch)[method]() if method != "plain" else plain
    plain()
    plain()
    base = peak_rss_mb()
    run()
    run()
    print(json.dumps({"base": base, "peak": peak_rss_mb()}))


def measure_memory(method: str, model_kind: str, size: int, B: int) -> float:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", method, model_kind, str(size), str(B)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return math.nan
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["peak"] - data["base"]


# --------------------------------------------------------------------------------------------- monitor


def monitor_overhead(d: int, B: int, rounds: int, budget_s: float, tmp: Path) -> dict[str, float]:
    """Median seconds of one full training step (draw, forward, backward, Adam) without and with the monitor
    logging every step to CSV: no t-profile; the default t-profile (10 bins, conditional traces on every 10th
    log); conditional traces on every log."""
    coupling = IndependentCoupling(StandardNormal(d), StandardNormal(d))
    loss = CFMLoss(Interpolant(sigma=0.0))
    base = MLPField(d)

    def trainer(kind: str) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(1)
        monitor = None
        if kind != "plain":
            monitor = GradientVarianceMonitor(model, every=1, t_bins=None if kind == "monitor" else 10,
                                              profile_every=1 if kind == "all-bins" else 10,
                                              log_path=tmp / f"{kind}-{d}-{B}.csv", warn=False)
        step = [0]

        def block() -> None:  # BLOCK consecutive steps: less cache interference between the variants
            for _ in range(BLOCK):
                path = loss.draw(coupling, B, gen)
                losses = per_sample_loss(model, path)
                opt.zero_grad(set_to_none=True)
                losses.mean().backward()
                if monitor is not None:
                    monitor.step(step[0], losses, path.t)
                opt.step()
                step[0] += 1
        return block

    kinds = ("plain", "monitor", "default", "all-bins")
    med = interleaved({k: trainer(k) for k in kinds}, rounds, warmup=1, budget_s=budget_s)
    return {k: v / BLOCK for k, v in med.items()}


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args.threads, args.clock)
    quick = args.quick
    started = time.perf_counter()
    lines = ["## Gradient variance: cost and memory", "",
             command("gradvar.py", args), "",
             machine_line(args.threads), "", clock_note(args.clock), ""]
    method_names = list(factories(nn.Linear(1, 1), (torch.zeros(1, 1),) * 3))  # type: ignore[arg-type]

    # MLP grid
    grid = [(2, 1024)] if quick else [(d, B) for d in (2, 50) for B in (256, 1024, 4096)]
    rounds = 5 if quick else 15
    rows, worst = [], 0.0
    mlp_ratio: dict[tuple[int, int], dict[str, float]] = {}
    for d, B in grid:
        model, batch = mlp_problem(d, B)
        slow = ("Opacus per-sample", "torch.func vmap")
        if not quick and B <= 1024:
            slow += ("per-sample loop",)
        medians, traces, notes = time_grid(f"MLP d={d} B={B}", model, batch, rounds, slow,
                                           slow_rounds=2 if quick else 3, budget_s=25 if quick else 90)
        worst = max(worst, agreement(traces)) if math.isfinite(agreement(traces)) else worst
        plain = medians["plain"]
        mlp_ratio[(d, B)] = {n: v / plain for n, v in medians.items()
                             if not notes.get(n, "").startswith(("fails", "incomplete"))}
        for name in method_names:
            if name == "plain":
                rows.append([f"d={d}", str(B), name, fmt_time(plain), "1.00×", ""])
            elif name in medians:
                rows.append([f"d={d}", str(B), name, fmt_time(medians[name]), fmt_ratio(medians[name] / plain),
                             notes.get(name, "")])
            else:
                rows.append([f"d={d}", str(B), name, "–", "–", notes.get(name, "not installed")])
    lines += ["### MLP (d+1 → 256 → 256 → 256 → d, SELU), float32", "",
              "Ratio = median time / median time of a plain forward+backward of the same batch (same run).", "",
              table(["model", "B", "method", "time", "ratio to plain", "notes"], rows), "",
              f"All methods that ran agree with flowvar's trace to {worst:.1e} relative (float32).", ""]

    # UNet and transformers: B = 32 beside every other method, B = 128 ours only
    image_ratio: dict[tuple[str, str, int], dict[str, float]] = {}
    image_names = [*method_names[:3], OWN_OFF, *method_names[3:]]

    def image_rows(kind: str, label: str, problem: Callable[[int], tuple[nn.Module, Batch]], B: int,
                   rounds: int, budget: float, full: bool) -> list[list[str]]:
        model, batch = problem(B)
        slow = (("Opacus per-sample",) if quick else SLOW) if full else ()
        medians, traces, notes = time_grid(f"{kind} {label} B={B}", model, batch, rounds, slow, slow_rounds=2,
                                           budget_s=budget, own_off=True, only=None if full else FAST_ONLY)
        plain = medians["plain"]
        image_ratio[(kind, label, B)] = {n: v / plain for n, v in medians.items()}
        out = []
        for name in image_names:
            if name in medians:
                out.append([label, str(B), name, fmt_time(medians[name]), fmt_ratio(medians[name] / plain),
                            notes.get(name, "")])
            elif full or name in FAST_ONLY:
                out.append([label, str(B), name, "–", "–", notes.get(name, "not installed")])
        a = agreement(traces)
        out.append([label, str(B), "agreement", "", "", f"max relative trace difference {a:.1e}"])
        return out

    rows = []
    for px in ((16,) if quick else (16, 32)):
        for B in ((32,) if quick else (32, 128)):
            rounds = 2 if quick else (7 if B == 32 else 5)
            rows += image_rows("UNet", f"{px}×{px}", partial(unet_problem, px), B, rounds, 20 if quick else 150,
                               full=B == 32)
    n_params = sum(p.numel() for p in unet_problem(16, 1)[0].parameters())
    lines += [f"### UNet (`UNetField` defaults, 3 channels, {n_params / 1e6:.2f}M parameters), float32", "",
              f"`{OWN_OFF}`: the same engine with `own_grads=False` (autograd computes every gradient, the engine "
              "measures afterwards), for comparison: by default the engine computes the gradients of the layers "
              "whose per-sample gradients it materialises anyway (docs/gradient_variance.md).", "",
              table(["image", "B", "method", "time", "ratio to plain", "notes"], rows), ""]
    rows = []
    for kind, title in (("dit", "DiT (`DiTField`)"), ("mha", "`nn.TransformerEncoderLayer`")):
        for B in ((32,) if quick else (32, 128)):
            rounds = 2 if quick else (7 if B == 32 else 5)
            rows += image_rows(kind, title, partial(transformer_problem, kind), B, rounds, 20 if quick else 150,
                               full=B == 32)
    n_dit = sum(p.numel() for p in transformer_problem("dit", 1)[0].parameters())
    n_mha = sum(p.numel() for p in transformer_problem("mha", 1)[0].parameters())
    lines += ["### Transformers (16² RGB as 64 tokens of width 128, 6 blocks, 4 heads), float32", "",
              f"DiT: flowvar's `DiTField` (patchify, qkv Linear + `scaled_dot_product_attention` + MLP, adaLN "
              f"time conditioning; {n_dit / 1e6:.2f}M parameters). `nn.TransformerEncoderLayer`: the same size built "
              f"from PyTorch's layer (`nn.MultiheadAttention` inside, batch first, pre-norm; time embedding added to "
              f"the tokens; {n_mha / 1e6:.2f}M parameters; `MHATransformerField` in this script).", "",
              table(["model", "B", "method", "time", "ratio to plain", "notes"], rows), ""]

    # monitor overhead
    rows = []
    monitor_ratio: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d, B in ([(2, 256), (2, 1024)] if quick else [(2, 256), (2, 1024), (2, 4096), (50, 1024)]):
            med = monitor_overhead(d, B, 5 if quick else 21, 10 if quick else 120, Path(tmp))
            monitor_ratio[(d, B)] = med["default"] / med["plain"]
            rows.append([f"d={d}", str(B), fmt_time(med["plain"]), fmt_ratio(med["monitor"] / med["plain"]),
                         fmt_ratio(med["default"] / med["plain"]), fmt_ratio(med["all-bins"] / med["plain"])])
            print(f"monitor d={d} B={B}: {med}", flush=True)
    lines += ["### Monitor overhead on a full training step (MLP, every step logged, CSV)", "",
              "A training step here = draw the batch (independent Gaussian coupling, σ = 0), forward, backward, "
              f"Adam — a user's own loop as in the README: `torch.optim.Adam(lr=1e-4)`, its other settings at their "
              f"defaults, `zero_grad` between "
              f"the forward and the backward pass; timed in blocks of {BLOCK} consecutive steps per variant, blocks "
              f"interleaved. Every step is "
              "logged (trace, normalised variance, loss, per-layer traces, CSV row). Columns: "
              "no t-profile (`t_bins=None`); the default (10 t-bins with per-bin loss and mean ‖g_i‖² on every "
              "log, conditional traces on every 10th log); conditional traces on every log (`profile_every=1`).",
              "", table(["model", "B", "plain step", "monitor, no t-profile", "monitor (defaults)",
                         "monitor, bin traces every step"], rows), ""]

    # memory
    rows = []
    mem_grid = [(256,), (1024,)] if quick else [(256,), (1024,), (4096,)]
    mem_methods = (["flowvar trace", "torch.func vmap"] if quick else
                   ["flowvar trace", "flowvar elementwise", "BackPACK BatchL2Grad", "BackPACK Variance",
                    "Opacus per-sample", "torch.func vmap"])
    P = sum(p.numel() for p in mlp_problem(2, 1)[0].parameters())
    memory: dict[tuple[str, int], float] = {}
    for (B,) in mem_grid:
        row = [str(B), f"{B * P * 4 / 2**20:.0f}"]
        for method in mem_methods:
            if method.startswith(("BackPACK", "Opacus")) and not has(method.split()[0].lower()):
                row.append("–")
                continue
            memory[(method, B)] = measure_memory(method, "mlp", 2, B)
            row.append(f"{memory[(method, B)]:.0f}")
        rows.append(row)
        print(f"memory B={B}: {row}", flush=True)
    lines += ["### Peak extra memory over a plain step (MLP d = 2, MiB)", "",
              f"Peak RSS of a fresh process after two calls of the method minus its peak after two plain steps "
              f"(P = {P} parameters; the second column is what B per-sample float32 gradients occupy).", "",
              table(["B", "B·P·4 bytes", *mem_methods], rows), ""]
    lines += targets(mlp_ratio, monitor_ratio, memory, P, image_ratio)
    lines.append(f"Total run time {time.perf_counter() - started:.0f} s.")
    write_section("gradvar", "\n".join(lines), args.no_write)


def targets(mlp_ratio: dict[tuple[int, int], dict[str, float]], monitor_ratio: dict[tuple[int, int], float],
            memory: dict[tuple[str, int], float], P: int,
            image_ratio: dict[tuple[str, str, int], dict[str, float]]) -> list[str]:
    """The issues' targets (issue 20's ratios; issue 4's comparisons and memory), each with the measured figures it
    rests on and a verdict."""
    def verdict(values: list[float], bound: float) -> str:
        if not values:
            return "n/a (not measured)"
        return "met" if max(values) <= bound else "**missed**"

    def mlp(method: str, min_B: int) -> tuple[list[float], str]:
        vals = {k: r[method] for k, r in mlp_ratio.items() if k[1] >= min_B and method in r}
        return list(vals.values()), ", ".join(f"d={d} B={B}: {fmt_ratio(v)}" for (d, B), v in sorted(vals.items()))

    def image(kind: str, method: str) -> tuple[list[float], str]:
        vals = {(label, B): r[method] for (k, label, B), r in image_ratio.items() if k == kind and method in r}
        return list(vals.values()), ", ".join(f"{label} B={B}: {fmt_ratio(v)}" for (label, B), v in vals.items())

    rows = []
    for what, (values, detail), bound in (
            ("MLP, trace, B ≥ 1024", mlp("flowvar trace", 1024), 1.10),
            ("MLP, element-wise, B ≥ 1024", mlp("flowvar elementwise", 1024), 1.40),
            ("UNet (16² and 32², B = 32 and 128), trace", image("UNet", "flowvar trace"), 1.30),
            ("UNet, element-wise", image("UNet", "flowvar elementwise"), 1.60),
            ("DiT (`DiTField`), trace", image("dit", "flowvar trace"), 1.30),
            ("`nn.TransformerEncoderLayer` transformer, trace", image("mha", "flowvar trace"), 1.30)):
        rows.append([f"{what} ≤ {bound:.2f}× plain forward+backward", detail or "not measured",
                     verdict(values, bound)])
    detail = ", ".join(f"d={d} B={B}: {fmt_ratio(v)}" for (d, B), v in sorted(monitor_ratio.items()) if B == 256)
    rows.append(["monitor at its defaults, every step, MLP B = 256 ≤ 1.15× a plain training step", detail or
                 "not measured", verdict([v for (d, B), v in monitor_ratio.items() if B == 256], 1.15)])
    for ours, theirs in (("flowvar trace", "BackPACK BatchL2Grad"), ("flowvar elementwise", "BackPACK Variance")):
        pairs = {k: (r[ours], r[theirs]) for k, r in mlp_ratio.items() if ours in r and theirs in r}
        detail = ", ".join(f"d={d} B={B}: {a:.2f}× vs {b:.2f}×" for (d, B), (a, b) in sorted(pairs.items()))
        rows.append([f"{ours} faster than {theirs} (MLP)", detail or "BackPACK not installed",
                     "n/a (not measured)" if not pairs else ("met" if all(a < b for a, b in pairs.values())
                                                            else "**missed**")])
    mem = {B: v for (m, B), v in memory.items() if m == "flowvar trace"}
    if mem:
        Bs = sorted(mem)
        detail = (", ".join(f"B={B}: {mem[B]:.0f} MiB (B·P·4 = {B * P * 4 / 2**20:.0f} MiB)" for B in Bs))
        ok = max(mem.values()) < 0.1 * Bs[-1] * P * 4 / 2**20
        rows.append(["flowvar peak extra memory independent of B·P (grows with B·activations only)", detail,
                     "met" if ok else "**missed**"])
    return ["### Targets (issue 20; the comparisons and memory of issue 4)", "",
            "Computed by this script from the figures above (ratios are of medians within one run; on a loaded "
            "shared machine a ratio moves by ±0.1–0.2 between runs). Where a target is missed, "
            "docs/gradient_variance.md says where the time goes.", "",
            table(["target", "measured", "verdict"], rows), ""]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
