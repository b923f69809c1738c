"""Gradient variance on a GPU: the engine's cost against a plain step, bf16 autocast, memory, the monitor, and OT.

What people train on a GPU, at B = 256 images of 32² (the MLP at the toy experiments' batch sizes):

* UNet: ``UNetField(32, base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_resolutions=(16,))``
  (35.7M parameters, the size of torchcfm's CIFAR-10 UNet);
* DiT-S/2: ``DiTField(32, channels=3, patch=2, width=384, depth=12, heads=6)`` (256 tokens, 32.5M parameters);
* the same transformer size built from ``nn.TransformerEncoderLayer`` (``MHATransformerField`` of gradvar.py,
  ``nn.MultiheadAttention`` inside; 21.6M parameters);
* the MLP of gradvar.py (d = 2) at B = 4096 and 65 536.

For each: a plain forward+backward of the mean CFM loss, flowvar's trace and element-wise variance (forward, backward
and ``compute()``), in float32 and under bf16 autocast (the forward under ``torch.autocast``, the backward outside,
as people train); wall time with the device synchronised around every call, median of interleaved rounds; the peak
GPU memory of each call above what the model and batch hold, and the engine's extra over the plain step. The engine's
trace is checked against a per-sample loop on 8 samples in float32 with TF32 off (exactness on this device).

Also: the monitor at its defaults logging every step of a full training step (draw, forward, backward, Adam; UNet,
bf16 autocast), and exact minibatch OT (``exact_ot_permutation``: the float64 cost on the device, the solve on the
CPU) inside a GPU OT-CFM step — its time against the step's for 32² images at B = 256 and for the 2-D toy at
B = 4096, beside torchcfm's ``OTPlanSampler('exact')`` where installed.

    python benchmarks/gradvar_gpu.py            # on a CUDA machine: writes its BENCHMARKS.md section (~3-5 min, H100)
    python benchmarks/gradvar_gpu.py --quick    # reduced grid; without a GPU a smoke run on the CPU, nothing written

On the lent GPU machines (no network): ``make gpu-wheels`` here first, then ``bash benchmarks/gpu_session.sh``
there (see that script).
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from _common import (
    fmt_paired,
    fmt_time,
    interleaved,
    machine_line,
    paired_ratio,
    parse_args,
    setup,
    table,
    write_section,
)
from gradvar import Batch, MHATransformerField, has, image_batch, make_loop, mlp_problem, sq_err
from gradvar_checks import Paired, bound_verdict
from torch import nn

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import StandardNormal
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.ot import exact_ot_permutation
from flowvar.variance.engine import GradNormEngine
from flowvar.variance.monitor import GradientVarianceMonitor

SECTION = "gradvar_gpu"
PRECISIONS = ("float32", "bf16 autocast")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16 autocast" else nullcontext()


@contextmanager
def exact_math() -> Iterator[None]:
    """TF32 off for the agreement check (it rounds float32 products to 10-bit mantissas, ~1e-3)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------------------------- problems


def image_models(quick: bool) -> dict[str, Callable[[], nn.Module]]:
    from flowvar.models.transformer import DiTField
    from flowvar.models.unet import UNetField

    if quick:  # the smoke run: the same families, tiny
        return {"UNet": lambda: UNetField(8, in_channels=3, base_channels=16, channel_mult=(1, 2)),
                "DiT": lambda: DiTField(8, channels=3, patch=2, width=32, depth=2, heads=2, zero_init=False),
                "`nn.TransformerEncoderLayer`": lambda: MHATransformerField(8, width=32, depth=2, heads=2)}
    return {"UNet": lambda: UNetField(32, in_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2),
                                      num_res_blocks=2, attention_resolutions=(16,), head_channels=64),
            "DiT-S/2": lambda: DiTField(32, channels=3, patch=2, width=384, depth=12, heads=6, zero_init=False),
            "`nn.TransformerEncoderLayer`": lambda: MHATransformerField(32, width=384, depth=12, heads=6)}


def to(batch: Batch, device: torch.device) -> Batch:
    return tuple(b.to(device) for b in batch)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- methods


def make_step(model: nn.Module, batch: Batch, precision: str, engine: GradNormEngine | None,
              device: torch.device) -> Callable[[], float]:
    """One forward+backward (and, with ``engine``, ``compute()``), device-synchronised; returns the trace or NaN."""
    def run() -> float:
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            losses = sq_err(model, batch)
        losses.float().mean().backward()
        trace = math.nan
        if engine is not None:
            trace = engine.compute(reduction="mean", losses=losses.float()).trace
        sync(device)
        return trace
    return run


def peak_extra(fn: Callable[[], object], device: torch.device) -> float:
    """Peak GPU memory (bytes) of one call above what was allocated before it (NaN on the CPU)."""
    if device.type != "cuda":
        return math.nan
    fn()  # allocator warm
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


def agreement(model: nn.Module, batch: Batch, device: torch.device) -> float:
    """Relative difference of the engine's trace and a per-sample loop's on the first 8 samples (float32)."""
    small: Batch = tuple(b[:8] for b in batch)  # type: ignore[assignment]
    with exact_math():
        loop = make_loop(copy.deepcopy(model), small)().trace
        ours = copy.deepcopy(model)
        engine = GradNormEngine(ours)
        ours_trace = make_step(ours, small, "float32", engine, device)()
    return abs(ours_trace - loop) / max(abs(loop), 1e-30)


def grid_rows(name: str, model: nn.Module, batch: Batch, device: torch.device, rounds: int, budget_s: float
              ) -> tuple[list[list[str]], dict[str, Paired]]:
    """The table rows of one model (both precisions, plain / trace / element-wise) and, per "precision/method", the
    paired per-round ratio to plain with its 95% interval (:func:`_common.paired_ratio`), which the targets judge."""
    rows: list[list[str]] = []
    ratios: dict[str, Paired] = {}
    B = batch[0].shape[0]
    for precision in PRECISIONS:
        methods: dict[str, Callable[[], float]] = {"plain": make_step(model, batch, precision, None, device)}
        for label, elementwise in (("flowvar trace", False), ("flowvar elementwise", True)):
            copy_ = copy.deepcopy(model)
            methods[label] = make_step(copy_, batch, precision, GradNormEngine(copy_, elementwise=elementwise),
                                       device)
        samples: dict[str, list[float]] = {}
        med = interleaved(methods, rounds, warmup=2, budget_s=budget_s, samples=samples)
        memory = {k: peak_extra(fn, device) for k, fn in methods.items()}
        for label, seconds in med.items():
            extra = memory[label] - memory["plain"] if label != "plain" else math.nan
            if label != "plain":
                ratios[f"{precision}/{label}"] = paired_ratio(samples[label], samples["plain"])
            rows.append([name, str(B), precision, label, fmt_time(seconds),
                         fmt_paired(ratios[f"{precision}/{label}"]) if label != "plain" else "1.00×",
                         _mib(memory[label]), _mib(extra) if label != "plain" else ""])
    return rows, ratios


def _mib(x: float) -> str:
    return "–" if x != x else f"{x / 2**20:.0f} MiB"


def monitor_step(device: torch.device, quick: bool, rounds: int, budget_s: float) -> list[list[str]]:
    """A full UNet training step (draw, bf16-autocast forward, backward, Adam) without and with the monitor at its
    defaults logging every step to CSV, in blocks of 5 steps."""
    px, B = (8, 8) if quick else (32, 256)
    shape = (3, px, px)
    coupling = IndependentCoupling(StandardNormal(shape), StandardNormal(shape))
    loss = CFMLoss(Interpolant(sigma=0.0))
    torch.manual_seed(0)
    base = image_models(quick)["UNet"]().to(device)
    tmp = Path(tempfile.mkdtemp())

    def trainer(kind: str) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(1)
        monitor = GradientVarianceMonitor(model, log_path=tmp / f"{kind}.csv", warn=False) if kind != "plain" else None
        step = [0]

        def block() -> None:
            for _ in range(5):
                path = loss.draw(coupling, B, gen)
                xt, t, target = path.xt.to(device), path.t.to(device), path.target.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    out = model(xt, t)
                losses = (out.float() - target).pow(2).flatten(1).sum(1)
                opt.zero_grad(set_to_none=True)
                losses.mean().backward()
                if monitor is not None:
                    monitor.step(step[0], losses, t)
                opt.step()
                step[0] += 1
            sync(device)
        return block

    samples: dict[str, list[float]] = {}
    med = interleaved({k: trainer(k) for k in ("plain", "monitor")}, rounds, warmup=1, budget_s=budget_s,
                      samples=samples)
    return [[f"UNet {px}²", str(B), fmt_time(med["plain"] / 5), fmt_time(med["monitor"] / 5),
             fmt_paired(paired_ratio(samples["monitor"], samples["plain"]))]]


def ot_in_step(device: torch.device, quick: bool, rounds: int) -> list[list[str]]:
    """Exact OT on the step's batch (cost on the device, solve on the CPU, permutation back) against the GPU step."""
    px = 8 if quick else 32
    return [_ot_case(f"{px}² images (d = {3 * px * px})", (3, px, px), 32 if quick else 256, device, quick, rounds),
            _ot_case("2-D toy", (2,), 256 if quick else 4096, device, quick, rounds)]


def _ot_case(label: str, shape: tuple[int, ...], B: int, device: torch.device, quick: bool, rounds: int
             ) -> list[str]:
    gen = torch.Generator().manual_seed(B)
    x0 = torch.randn(B, *shape, generator=gen).to(device)
    x1 = (torch.randn(B, *shape, generator=gen) * 0.5 + 1.0).to(device)
    if len(shape) == 3:  # the UNet of the engine table, at its image size
        model = image_models(quick)["UNet"]().to(device)
        batch: Batch = (x0, torch.rand(B, device=device), x1 - x0)
        precision = "bf16 autocast"
    else:
        model, batch = mlp_problem(2, B)
        model, batch, precision = model.to(device), to(batch, device), "float32"
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    plain = make_step(model, batch, precision, None, device)

    def step() -> None:
        plain()
        opt.step()
        sync(device)

    def ours() -> None:
        exact_ot_permutation(x0, x1)
        sync(device)

    methods: dict[str, Callable[[], None]] = {"step": step, "ot": ours}
    if has("torchcfm"):
        from torchcfm.optimal_transport import OTPlanSampler

        sampler = OTPlanSampler(method="exact")

        def theirs() -> None:
            sampler.sample_plan(x0, x1)
            sync(device)
        methods["torchcfm"] = theirs
    med = interleaved(methods, rounds, warmup=1)
    theirs_cell = (f"{fmt_time(med['torchcfm'])} ({med['torchcfm'] / (med['torchcfm'] + med['step']):.0%})"
                   if "torchcfm" in med else "not installed")
    return [label, str(B), fmt_time(med["step"]), fmt_time(med["ot"]), f"{med['ot'] / (med['ot'] + med['step']):.0%}",
            theirs_cell]


#: (model family prefix, method, target ratio) of issue 20
TARGETS = (("UNet", "flowvar trace", 1.30), ("UNet", "flowvar elementwise", 1.60), ("DiT", "flowvar trace", 1.30),
           ("`nn.TransformerEncoderLayer`", "flowvar trace", 1.30), ("MLP", "flowvar trace", 1.10),
           ("MLP", "flowvar elementwise", 1.40))


def targets(ratios: dict[str, dict[str, Paired]]) -> str:
    """One row per target: the paired ratios (median per-round ratio, 95% sign-test interval) of every model of the
    family in both precisions, judged as gradvar.py judges the CPU targets (:func:`gradvar_checks.bound_verdict`:
    met / met at the bound / inconclusive at the bound / missed)."""
    rows = []
    for family, method, limit in TARGETS:
        got = {f"{model}, {precision}": r[f"{precision}/{method}"] for model, r in ratios.items()
               if model.startswith(family) for precision in PRECISIONS if f"{precision}/{method}" in r}
        if got:
            measured = ", ".join(f"{k}: {fmt_paired(v)}" for k, v in got.items())
            rows.append([f"{family}: {method} ≤ {limit:.2f}× plain", measured, bound_verdict(got, limit)])
    return table(["target", "measured", "verdict"], rows)


def progress(rows: list[list[str]]) -> None:
    """Rows as they are measured (a device call cut off by its time limit still returns them in its log)."""
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], clock=False)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        sys.exit("gradvar_gpu.py measures a CUDA GPU and none is visible to PyTorch; `--quick` smoke-runs it on the "
                 "CPU (nothing written)")
    setup(args.threads, "wall")  # a GPU's work is not the process's CPU time
    device = torch.device("cuda" if cuda else "cpu")
    quick = args.quick
    started = time.perf_counter()
    rounds, budget = (3, 20.0) if quick else (10, 20.0)
    name = torch.cuda.get_device_name(device) if cuda else "no GPU: a smoke run on the CPU"
    lines = ["## Gradient variance on a GPU", "",
             f"Command: `python benchmarks/gradvar_gpu.py{' --quick' if quick else ''}`.", "",
             f"Device: {name}; CUDA {torch.version.cuda}; TF32 for float32 matmuls "
             f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (PyTorch's default), for convolutions "
             f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}. " + machine_line(args.threads), "",
             "Wall time with the device synchronised after every call; times are medians of interleaved rounds, "
             "ratios the median of the per-round ratios to plain with its 95% sign-test interval (from 6 rounds; "
             "the targets are judged on it, as gradvar.py's). Memory: the "
             "peak GPU memory of one call above what was allocated before it (model, batch, optimiser state); "
             "`extra` = that minus the plain step's.", ""]
    rows: list[list[str]] = []
    checks: list[str] = []
    all_ratios: dict[str, dict[str, float]] = {}
    px, B = (8, 8) if quick else (32, 256)
    for label, build in image_models(quick).items():
        torch.manual_seed(0)
        model = build().to(device)
        batch = to(image_batch(3, px, B, 0), device)
        r, ratios = grid_rows(label, model, batch, device, rounds, budget)
        progress(r)
        rows += r
        all_ratios[label] = ratios
        checks.append(f"{label}: {agreement(model, batch, device):.1e}")
        del model
        if cuda:
            torch.cuda.empty_cache()
    for mlp_B in ((512,) if quick else (4096, 65536)):
        model, batch = mlp_problem(2, mlp_B)
        model, batch = model.to(device), to(batch, device)
        r, ratios = grid_rows("MLP d=2", model, batch, device, rounds, budget)
        progress(r)
        rows += r
        all_ratios[f"MLP B={mlp_B}"] = ratios
        checks.append(f"MLP B={mlp_B}: {agreement(model, batch, device):.1e}")
    lines += [f"### Engine cost ({px}² RGB images; MLP d = 2)", "",
              table(["model", "B", "precision", "method", "time", "ratio to plain", "peak memory", "extra"], rows),
              "", "Agreement of the engine's trace with a per-sample loop (8 samples, float32, TF32 off; relative): "
              + ", ".join(checks) + ".", ""]
    lines += ["Issue 20's targets (set on the CPU) on this device:", "", targets(all_ratios), ""]
    monitor_rows = monitor_step(device, quick, rounds, budget)
    progress(monitor_rows)
    lines += ["### The monitor on a full training step (bf16 autocast, Adam, every step logged to CSV, defaults)", "",
              table(["model", "B", "plain step", "with the monitor", "ratio"], monitor_rows), ""]
    lines += ["### Exact minibatch OT inside a GPU OT-CFM step", "",
              "`step`: one training step on the device (forward, backward, Adam; the UNet above under bf16 autocast, "
              "the MLP in float32); `exact OT`: `exact_ot_permutation` on the step's batch (the float64 cost matrix is "
              "formed on the device, the solver runs on the CPU, the permutation comes back); "
              "`share` = OT / (OT + step).", "",
              table(["batch", "B", "step", "exact OT (flowvar)", "share", "torchcfm OTPlanSampler('exact') (share)"],
                    ot_in_step(device, quick, 3 if quick else 5)), ""]
    lines.append(f"Total run time {time.perf_counter() - started:.0f} s.")
    write_section(SECTION, "\n".join(lines), no_write=args.no_write or not cuda)


if __name__ == "__main__":
    main()
