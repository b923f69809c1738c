"""A tiny experiment registered from outside the package, for the sweep runner's tests (``--plugin``).

``y = scale · x² + 0.1 · ε`` with ε ~ N(0, 1) drawn from the run's seeded generator, so results depend on the
config and the seed and nothing else. ``fail_at`` makes the point with that ``x`` raise; ``block_at`` makes it
wait until ``block_file`` exists (to interrupt a sweep in a known state).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flowvar.experiments.base import RunContext, register


@dataclass
class ToyConfig:
    seed: int = 0
    x: float = 1.0
    scale: float = 1.0
    offsets: tuple[float, ...] = (0.0,)
    label: str = "a"
    fail_at: float | None = None
    block_at: float | None = None
    block_file: str | None = None


@register("toy_sweep", title="Toy experiment for sweep tests", config=ToyConfig, quick={"scale": 2.0},
          runtime_scales_with=("offsets",))
def run(config: ToyConfig, ctx: RunContext) -> None:
    if config.fail_at is not None and config.x == config.fail_at:
        raise RuntimeError(f"toy failure at x={config.x}")
    if config.block_at is not None and config.x == config.block_at and config.block_file:
        deadline = time.monotonic() + 120
        while not Path(config.block_file).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    noise = float(torch.randn((), generator=ctx.generator()))
    y = config.scale * config.x**2 + sum(config.offsets) + 0.1 * noise
    ctx.metric("stats", {"y": y, "x": config.x, "label": config.label})
    ctx.metric(f"by_x.x={config.x}", y)
    ctx.metric("curve", [y, 2 * y])
    ctx.claim("y_positive", "y > 0", {"y": y}, confirmed=y > 0, refuted=y < 0, rule="sign of y", kind="finding")
