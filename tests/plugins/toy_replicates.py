"""A tiny experiment with training replicates, for the sweep runner's tests (``--plugin``).

Each of its ``n_seeds`` replicates (seed ``seed + k``, :meth:`RunContext.replicate`, as fig6 and table2 train them)
draws ``y_k ~ N(x, 1)`` from its own stream and reports it under ``ys.seed<s>``; ``mean`` is their mean. Quick mode
trains 3 replicates. ``kill_at`` makes the point with that ``x`` kill its own process with SIGKILL (what the
kernel's out-of-memory killer or a ``kill -9`` does to a worker).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch

from flowvar.experiments.base import RunContext, register


@dataclass
class ReplicatesConfig:
    seed: int = 0
    n_seeds: int = 2
    x: float = 1.0
    kill_at: float | None = None


@register("toy_replicates", title="Toy experiment with replicates for sweep tests", config=ReplicatesConfig,
          quick={"n_seeds": 3})
def run(config: ReplicatesConfig, ctx: RunContext) -> None:
    if config.kill_at is not None and config.x == config.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    ys = {f"seed{config.seed + k}": config.x + float(torch.randn((), generator=ctx.replicate(k).generator("y")))
          for k in range(config.n_seeds)}
    ctx.metric("ys", ys)
    ctx.metric("mean", sum(ys.values()) / len(ys))
