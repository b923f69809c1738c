"""A tiny experiment with training replicates, for the sweep runner's tests (``--plugin``).

Each of its ``n_seeds`` replicates (seed ``seed + k``, :meth:`RunContext.replicate`, as fig6 and table2 train them)
draws ``y_k ~ N(x, 1)`` from its own stream and reports it under ``ys.seed<s>``; ``mean`` is their mean. Quick mode
trains 3 replicates. ``kill_at`` makes the point with that ``x`` kill its own process with ``kill_signal``
(SIGKILL: what the kernel's out-of-memory killer or a ``kill -9`` does to a worker; SIGTERM: a plain ``kill``).
With ``gate`` (a folder), the killer dies while another point runs beside it, whatever the timing: a point that
starts before the killer has died says so (``gate/beside``) and then waits to be ended with its pool (up to a
minute); the killer waits for that word, marks ``gate/dead`` and dies; points started after that run normally.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flowvar.experiments.base import RunContext, register


@dataclass
class ReplicatesConfig:
    seed: int = 0
    n_seeds: int = 2
    x: float = 1.0
    kill_at: float | None = None
    kill_signal: str = "SIGKILL"
    gate: str | None = None


def _wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@register("toy_replicates", title="Toy experiment with replicates for sweep tests", config=ReplicatesConfig,
          quick={"n_seeds": 3})
def run(config: ReplicatesConfig, ctx: RunContext) -> None:
    gate = Path(config.gate) if config.gate else None
    if config.kill_at is not None and config.x == config.kill_at:
        if gate is not None:
            _wait_for(gate / "beside")
            (gate / "dead").touch()
        os.kill(os.getpid(), getattr(signal, config.kill_signal))
    if gate is not None and not (gate / "dead").exists():
        (gate / "beside").touch()
        _wait_for(gate / "never")  # ended with the pool the killer breaks
    ys = {f"seed{config.seed + k}": config.x + float(torch.randn((), generator=ctx.replicate(k).generator("y")))
          for k in range(config.n_seeds)}
    ctx.metric("ys", ys)
    ctx.metric("mean", sum(ys.values()) / len(ys))
