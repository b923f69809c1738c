"""Audit your own trained flow model for memorisation (docs/audit.md's worked example, runnable as is).

A plain PyTorch velocity network v(x, t) is trained by conditional flow matching at σ = 0 on 16 *fixed* (noise,
data) pairs — the setting in which Prop 2 says the minimiser memorises its training lines — and its weights are
saved with ``torch.save(model.state_dict(), ...)``, as a training script would. A fresh network then loads them and
``flowvar.audit.audit`` is asked whether it memorises: given the training pairs, pair recovery integrates each
training source and finds its own partner (memorising), while fresh samples land between the training items (the
copy test reads generalising: this model memorises its pairs, it does not copy).

    python examples/audit_own_model.py                     # 14 s of CPU time on one torch thread (--threads)
    python examples/audit_own_model.py --out audit/        # also writes result.json, summary.md, audit.html

The same audit from the command line, with the network in a module of its own (here: this file, so run it from
examples/) and the weights and arrays saved by ``--save-arrays DIR``::

    python audit_own_model.py --save-arrays DIR
    flowvar audit --model audit_own_model:build --checkpoint DIR/weights.pt --data DIR/x1.npy \\
                  --pairs DIR/x0.npy --heldout DIR/held.npy --samples 200 --grad-samples 32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flowvar.audit import audit

D, N_PAIRS = 8, 16


class VelocityMLP(nn.Module):
    """v(x, t): x (B, D), t (B,) in [0, 1] (data at t = 1) → (B, D); the call flowvar names ``xt``."""

    def __init__(self, d: int = D, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, d))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], 1))


def build() -> VelocityMLP:
    """The factory ``flowvar audit --model audit_own_model:build`` calls (weights come from --checkpoint)."""
    return VelocityMLP()


def train_on_fixed_pairs(model: nn.Module, x0: Tensor, x1: Tensor, steps: int, seed: int) -> float:
    """CFM at σ = 0 on the fixed pairs (x0_i, x1_i): x_t = (1 − t) x0 + t x1, target u = x1 − x0, loss
    E‖v(x_t, t) − u‖² over batches of 64 pairs drawn with replacement. Returns the last batch's loss."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        i = torch.randint(0, x0.shape[0], (64,), generator=gen)
        t = torch.rand(64, generator=gen)
        xt = (1 - t[:, None]) * x0[i] + t[:, None] * x1[i]
        loss = (model(xt, t) - (x1[i] - x0[i])).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps (Adam, batch 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the audit's report folder here")
    parser.add_argument("--save-arrays", type=Path, default=None, metavar="DIR",
                        help="save weights.pt, x1.npy, x0.npy and held.npy here (for the `flowvar audit` command)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: a model this small runs fastest on one; on a busy 2-core "
                             "machine torch's default of one per core took 7x the CPU time and wall time)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)  # the network's initialisation
    gen = torch.Generator().manual_seed(args.seed)
    x0 = torch.randn(N_PAIRS, D, generator=gen)  # the training sources (noise), one per data item
    x1 = 2.0 + 0.5 * torch.randn(N_PAIRS, D, generator=gen)  # the training data
    held = 2.0 + 0.5 * torch.randn(64, D, generator=gen)  # data of the same distribution, never trained on

    start = time.perf_counter()
    model = VelocityMLP()
    loss = train_on_fixed_pairs(model, x0, x1, args.steps, args.seed)
    print(f"trained {args.steps} steps on {N_PAIRS} fixed pairs at σ = 0 in {time.perf_counter() - start:.1f} s on "
          f"{torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() > 1 else ''} "
          f"(last batch loss {loss:.2e})")
    folder = args.save_arrays or Path(".")
    weights = folder / "weights.pt"
    if args.save_arrays is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("x1", x1), ("x0", x0), ("held", held)):
            np.save(folder / f"{name}.npy", array.numpy())
        torch.save(model.state_dict(), weights)
        print(f"saved {weights} and x1.npy, x0.npy, held.npy in {folder}")

    # what an audit of a saved model does: a fresh network, the saved weights loaded into it
    state = model.state_dict() if args.save_arrays is None else torch.load(weights, weights_only=True)
    audited = build()
    audited.load_state_dict(state)
    start = time.perf_counter()
    report = audit(audited, x1, pairs=x0, heldout=held, samples=200, grad_samples=32, seed=args.seed,
                   model_source="VelocityMLP (examples/audit_own_model.py)")
    print(report.summary())
    print(f"audited in {time.perf_counter() - start:.1f} s")
    if args.out is not None:
        print(f"report: {report.write(args.out) / 'audit.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
