"""The toy sweep the sweep tests share: ``tests/plugins/toy_sweep.py`` and the options of a quiet sweep of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowvar.sweep import Options

PLUGIN = str(Path(__file__).parent / "plugins" / "toy_sweep.py")


def toy(out: Path, grid: list[str], **kw: Any) -> Options:
    """Options of a quiet sweep of the toy experiment over ``grid`` into ``out`` (``kw``: further options)."""
    return Options("toy_sweep", grid=grid, out=out, plugins=[PLUGIN], quiet=True, **kw)
