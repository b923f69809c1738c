"""What the sweep tests share: the toy sweep (``tests/plugins/toy_sweep.py``) and the options of a quiet sweep of it,
and the figures a sweep would draw, as matplotlib objects (:func:`drawn`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowvar.sweep import Options, PointOutcome, metric_figure
from flowvar.sweep import figures as figures_module

PLUGIN = str(Path(__file__).parent / "plugins" / "toy_sweep.py")


def toy(out: Path, grid: list[str], **kw: Any) -> Options:
    """Options of a quiet sweep of the toy experiment over ``grid`` into ``out`` (``kw``: further options)."""
    return Options("toy_sweep", grid=grid, out=out, plugins=[PLUGIN], quiet=True, **kw)


def drawn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, the_plan: Any, outcomes: list[PointOutcome]
          ) -> dict[str, Any]:
    """draw_figures with plot_metric replaced by a recorder of the matplotlib figures it would save, by file name,
    and its warnings under ``"warnings"``."""
    out: dict[str, Any] = {}

    def record(path: Path, title: str, axes: Any, table: Any, **kw: Any) -> Path:
        out[path.name] = metric_figure(title, axes, table, **kw)
        return path

    monkeypatch.setattr(figures_module, "plot_metric", record)
    out["warnings"] = figures_module.draw_figures(tmp_path / "figs", the_plan, outcomes)[1]
    return out
