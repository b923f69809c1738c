"""The gradient-variance monitor in a plain torchcfm training loop (sklearn digits, torchcfm's MLP).

torchcfm's ``ConditionalFlowMatcher`` draws (t, x_t, u_t) for a batch of noise x0 and digits x1; the loop
back-propagates the mean of the per-sample losses ℓ_i = ‖v_θ(x_t,i, t_i) − u_t,i‖² and hands those losses to
flowvar's ``GradientVarianceMonitor`` right after ``backward`` (before ``optimizer.step``). Every ``--every``
steps it prints the exact trace of the per-sample gradient covariance, tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖², from
the step's own backward pass, and the normalised variance tr Cov(g) / ‖E g‖².

    python examples/monitor_torchcfm.py                       # 500 steps on 256 digits, σ = 0 (~10 s on a CPU)
    python examples/monitor_torchcfm.py --sigma 0.1 --log gradvar.csv --plot gradvar.png

Give the monitor the losses you back-propagate, with the same reduction over a sample's coordinates: torchcfm's
README loss ``torch.mean((vt - ut) ** 2)`` is the mean of ``((vt - ut) ** 2).mean(1)``, so pass those (with
``coordinate_reduction="mean"``), not ``.sum(1)``, which logs every statistic D² × too small; under gradient
accumulation over k micro-batches (``(loss / k).backward()``) pass ``loss_scale=1 / k``. The monitor's
``LossScaleWarning`` catches such a mismatch from the output gradient, except where one mistake's constant is
another convention's (D = 2, torchcfm's 2-D tutorials): declaring ``coordinate_reduction``, as here, closes that gap.

The monitor also watches for the memorisation signature of arXiv 2510.18118 (loss and trace collapsing
together under σ = 0) and warns once it persists; a fresh noise x0 every step, as here, does not produce it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from flowvar.variance.monitor import GradientVarianceMonitor

try:
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
    from torchcfm.models.models import MLP
except ModuleNotFoundError as missing:
    if (missing.name or "").partition(".")[0] != "torchcfm":
        raise  # torchcfm is there but one of its own dependencies is not: its message names which
    # --no-deps: torchcfm's declared dependencies pull ~80 packages (the Makefile); the two modules used here import
    # only torch, numpy and POT, which flowvar already requires
    sys.exit("examples/monitor_torchcfm.py needs torchcfm, which is not installed: "
             "pip install -c constraints.txt --no-deps torchcfm (as `make setup` does), "
             "or with a full torch pip install -e '.[audit]'")


def digits(n: int, seed: int) -> torch.Tensor:
    """(n, 64) sklearn digits (8×8, values 0..16) scaled to [−1, 1], a seeded random subset."""
    images = load_digits().images.reshape(-1, 64).astype(np.float32) / 8.0 - 1.0
    pick = np.random.default_rng(seed).permutation(len(images))[:n]
    return torch.from_numpy(images[pick])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=256, help="training images (of 1797)")
    parser.add_argument("--width", type=int, default=128, help="hidden width of torchcfm's MLP")
    parser.add_argument("--sigma", type=float, default=0.0, help="ConditionalFlowMatcher's σ")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=25, help="measure and print every this many steps")
    parser.add_argument("--t-bins", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", default=None, help="monitor log file (.csv, .jsonl or .json)")
    parser.add_argument("--plot", default=None, help="PNG of the logged curves")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a model this small runs fastest on one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    data = digits(args.n_train, args.seed)
    flow = ConditionalFlowMatcher(sigma=args.sigma)
    model = MLP(dim=64, w=args.width, time_varying=True)  # v(x, t) = MLP([x, t])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    monitor = GradientVarianceMonitor(model, every=args.every, t_bins=args.t_bins, profile_every=1,
                                      log_path=args.log, sigma=args.sigma)
    start = time.perf_counter()
    with monitor:
        for step in range(1, args.steps + 1):
            x1 = data[torch.randint(len(data), (args.batch_size,))]
            x0 = torch.randn_like(x1)
            t, xt, ut = flow.sample_location_and_conditional_flow(x0, x1)
            vt = model(torch.cat([xt, t[:, None]], dim=1))
            losses = (vt - ut).pow(2).sum(1)  # (B,) per-sample losses, summed over the 64 coordinates
            optimizer.zero_grad()
            losses.mean().backward()  # exactly the mean of the losses given to the monitor
            # after backward, before the optimizer step
            record = monitor.step(step, losses, t, coordinate_reduction="sum")
            optimizer.step()
            if record is not None:
                print(f"step {step:5d}  loss {record['loss']:.4g}  trace {record['trace']:.4g}  "
                      f"normalised {record['normalised']:.3g}", flush=True)
    last = monitor.history[-1]
    bins = ", ".join(f"{lo:.1f}-{hi:.1f}: {tr:.3g}" for lo, hi, tr in
                     zip(last["t_profile"]["edges"], last["t_profile"]["edges"][1:], last["t_profile"]["trace"]))
    print(f"tr Cov(g | t-bin) at step {last['step']}: {bins}")
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
    if args.plot:
        print(f"plot: {monitor.plot(args.plot)}")
    return 0 if all(math.isfinite(r["trace"]) for r in monitor.history) else 1


if __name__ == "__main__":
    sys.exit(main())
