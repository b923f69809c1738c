"""Shared pieces of the monitor's tests: a conv net whose convolutions the engine owns, a callback that interrupts
training, and a reader of the monitor's log files (imported by the test modules of this folder; pytest puts the
folder on ``sys.path``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class OwnedConvNet(nn.Module):
    """A small conv net on (B, 3, 16, 16), time as a fourth input channel: its convolutions on 16×16 maps are owned
    by the engine (it computes their gradients from the per-sample ones it materialises)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 16, 3, padding=1)
        self.norm = nn.GroupNorm(4, 16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        tt = t[:, None, None, None].expand(-1, 1, *x.shape[2:])
        h = torch.relu(self.norm(self.c1(torch.cat([x, tt], 1))))
        return self.c3(torch.relu(self.c2(h)))


class StopAt:
    """A training callback that interrupts training at a step (as a crash would), after the checkpoint before it."""

    def __init__(self, step: int) -> None:
        self.stop = step

    def on_step(self, step: int, model: nn.Module, path: object, loss_value: float) -> None:
        if step == self.stop:
            raise KeyboardInterrupt


def log_rows(path: Path) -> list[Any]:
    """The records of a monitor log file as written: CSV rows (dicts of strings), JSON lines, or a JSON file's
    ``records``."""
    text = path.read_text()
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in text.splitlines()]
    return json.loads(text)["records"]
