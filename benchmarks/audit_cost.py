"""The cost of `flowvar audit` on a digits UNet, against the model's own training step.

A `UNetField` (8×8 grey digits, 16 base channels, channel_mult 1, 2) is trained for a few hundred CFM(σ = 0) steps
on N fixed (noise, digit) pairs, then audited with every test on (pair recovery on a fine and a coarse Euler grid,
copying, the generalisation gap against held-out digits, the gradient signal at the trained weights). Reported:

* one training step (forward + backward + Adam, batch B): the mean over the whole :func:`flowvar.train.train` call,
  its wall time / steps, set-up included (one timed call, not a median over rounds);
* the whole audit: wall time (one call), and in units of that mean training step;
* peak resident memory of the process after training and after the audit (VmHWM; the CPU has no per-phase
  allocator counter). The difference of the two peaks is a lower bound on the audit's own working memory X, not an
  upper one: the audit starts from a resident set R no larger than the training peak P_t, and its peak is
  P_a = R + X, so X = P_a − R ≥ P_a − P_t (:func:`peak_sentence`).

    python benchmarks/audit_cost.py [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import fmt_time, machine_line, parse_args, peak_rss_mb, setup, table, write_section

from flowvar.audit import audit
from flowvar.couplings import FixedPairs
from flowvar.data import load_digits
from flowvar.loss import CFMLoss
from flowvar.models import UNetField
from flowvar.train import TrainConfig, train


def peak_sentence(after_training: float, after_audit: float) -> str:
    """The section's memory sentence from the two VmHWM peaks (MiB). Their difference is what the audit added to the
    process's peak, and a lower bound on the audit's own working memory (module docstring: it may have reused pages
    the training freed); 0 when the audit stayed under the training peak, which then bounds nothing."""
    rise = max(0.0, after_audit - after_training)
    return (f"Peak resident memory (VmHWM) after training: {after_training:.0f} MiB; after the audit: "
            f"{after_audit:.0f} MiB. The audit raised the process's peak by {rise:.0f} MiB, a lower bound on its own "
            f"working memory (it started from a resident set no larger than the training peak).")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], clock=False)
    setup(args.threads, "wall")
    n, heldout_n, steps, batch = (64, 64, 60, 32) if args.quick else (256, 256, 400, 64)
    samples, grid = (64, 20) if args.quick else (256, 100)
    images = load_digits(n + heldout_n, resolution=8, seed=0, channels=1).images.to(torch.float32)
    train_x1, heldout = images[:n], images[n:]
    gen = torch.Generator().manual_seed(0)
    train_x0 = torch.randn(train_x1.shape, generator=gen)
    torch.manual_seed(0)
    model = UNetField(8, 1, base_channels=16, channel_mult=(1, 2), mid_attention=False)
    params = sum(p.numel() for p in model.parameters())

    t0 = time.perf_counter()
    train(model, CFMLoss(), FixedPairs(train_x0, train_x1), TrainConfig(steps=steps, batch_size=batch, lr=2e-3, seed=0))
    train_wall = time.perf_counter() - t0
    step_s = train_wall / steps  # a mean over the one train() call, its set-up included (not a median)
    rss_after_training = peak_rss_mb()

    t0 = time.perf_counter()
    report = audit(model, train_x1, pairs=train_x0, heldout=heldout, sigma=0.0, convention="xt", samples=samples,
                   steps=grid, coarse_steps=10, grad_samples=32, t_bins=4, seed=0)
    audit_wall = time.perf_counter() - t0
    rss_after_audit = peak_rss_mb()

    rows = [[f"training step (B = {batch}, forward + backward + Adam; mean over the {steps}-step `train()` call)",
             fmt_time(step_s), "1"],
            ["the whole audit (4 tests, convention check)", fmt_time(audit_wall), f"{audit_wall / step_s:.0f}"]]
    print(rows)
    print(f"verdict: {report.verdict}; peak RSS after training {rss_after_training:.0f} MiB, after the audit "
          f"{rss_after_audit:.0f} MiB")
    quick = " --quick" if args.quick else ""
    body = "\n\n".join([
        "## `flowvar audit` on a digits UNet",
        f"Command: `python benchmarks/audit_cost.py{quick} --threads {args.threads}`. Wall-clock time of one run "
        f"(no interleaved rounds, no median): the training step is the `train()` call's wall time / {steps} steps, "
        f"its set-up included; the audit is one call.",
        machine_line(args.threads),
        f"A `UNetField` (8×8 grey digits, base 16 channels, channel_mult (1, 2); {params:,} parameters) trained "
        f"{steps} CFM(σ = 0) steps on {n} fixed (noise, digit) pairs ({fmt_time(train_wall)} in all), then audited "
        f"with every test: {samples} fresh samples and {n} training sources integrated on a {grid}-step and a "
        f"10-step Euler grid, copying and the generalisation gap against {heldout_n} held-out digits, the gradient "
        f"signal on 32 pairs per set at σ = 0 in 4 t-bins. Verdict of the audit: {report.verdict}.",
        table(["what", "time", "in training steps"], rows),
        peak_sentence(rss_after_training, rss_after_audit),
    ])
    write_section("audit_cost", body, args.no_write)


if __name__ == "__main__":
    main()
