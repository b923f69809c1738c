"""The gradient-variance monitor in a plain training loop with Meta's flow_matching library (two moons).

flow_matching's ``AffineProbPath`` with the ``CondOTScheduler`` (x_t = t x1 + (1 − t) x0, target
dx_t = x1 − x0, no noise: σ = 0) draws a path sample for a batch of noise x0 and data x1; the velocity is an MLP
behind flow_matching's ``ModelWrapper`` (called as ``velocity(x=x_t, t=t)``, the convention of its ODE solver).
The loop back-propagates the mean of the per-sample losses ℓ_i = ‖v_θ(x_t,i, t_i) − dx_t,i‖² and hands them to
flowvar's ``GradientVarianceMonitor`` after ``backward`` and before ``optimizer.step``; every ``--every`` steps
it prints the exact tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² of the per-sample gradients and tr Cov(g) / ‖E g‖².

    python examples/monitor_flow_matching.py                  # 1000 steps on 1000 points (~10 s on a CPU)
    python examples/monitor_flow_matching.py --log gradvar.csv --every 10
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from sklearn.datasets import make_moons
from torch import Tensor, nn

from flowvar.variance.monitor import GradientVarianceMonitor

try:
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.utils import ModelWrapper
except ModuleNotFoundError as missing:
    if (missing.name or "").partition(".")[0] != "flow_matching":
        raise  # flow_matching is there but one of its own dependencies is not: its message names which
    sys.exit("examples/monitor_flow_matching.py needs Meta's flow_matching library, which is not installed: "
             "pip install -c constraints.txt flow_matching (as `make setup` does), or pip install -e '.[audit]'")


class MLP(nn.Module):
    """v(x, t) = MLP([x, t]) for x of shape (B, 2) and t of shape (B,)."""

    def __init__(self, dim: int = 2, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], dim=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-train", type=int, default=1000, help="training points of the two moons")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=100, help="measure and print every this many steps")
    parser.add_argument("--t-bins", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", default=None, help="monitor log file (.csv, .jsonl or .json)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a model this small runs fastest on one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    points, _ = make_moons(args.n_train, noise=0.05, random_state=args.seed)
    data = torch.as_tensor(points, dtype=torch.float32)
    path = AffineProbPath(scheduler=CondOTScheduler())
    velocity = ModelWrapper(MLP(width=args.width))
    optimizer = torch.optim.Adam(velocity.parameters(), lr=args.lr)
    # CondOT is noise-free: sigma=0 lets the monitor read a collapse of loss and trace as memorisation
    monitor = GradientVarianceMonitor(velocity, every=args.every, t_bins=args.t_bins, profile_every=1,
                                      log_path=args.log, sigma=0.0)
    start = time.perf_counter()
    with monitor:
        for step in range(1, args.steps + 1):
            x1 = data[torch.randint(len(data), (args.batch_size,))]
            x0 = torch.randn_like(x1)
            t = torch.rand(x1.shape[0])
            sample = path.sample(x_0=x0, x_1=x1, t=t)
            losses = (velocity(x=sample.x_t, t=sample.t) - sample.dx_t).pow(2).sum(1)  # (B,) per-sample losses
            optimizer.zero_grad()
            losses.mean().backward()
            record = monitor.step(step, losses, sample.t)  # after backward, before the optimizer step
            optimizer.step()
            if record is not None:
                print(f"step {step:5d}  loss {record['loss']:.4g}  trace {record['trace']:.4g}  "
                      f"normalised {record['normalised']:.3g}", flush=True)
    last = monitor.history[-1]
    bins = ", ".join(f"{lo:.1f}-{hi:.1f}: {tr:.3g}" for lo, hi, tr in
                     zip(last["t_profile"]["edges"], last["t_profile"]["edges"][1:], last["t_profile"]["trace"]))
    print(f"tr Cov(g | t-bin) at step {last['step']}: {bins}")
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
    return 0 if all(math.isfinite(r["trace"]) for r in monitor.history) else 1


if __name__ == "__main__":
    sys.exit(main())
