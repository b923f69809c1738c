"""The gradient-variance monitor in other training frameworks.

* :mod:`flowvar.integrations.lightning`: :class:`~flowvar.integrations.lightning.GradientVarianceCallback`, a
  Lightning callback (``pip install lightning``; the ``audit`` extra).

A plain PyTorch loop, torch's DistributedDataParallel and flowvar's own trainer need no integration:
:class:`flowvar.variance.monitor.GradientVarianceMonitor` works there directly (docs/gradient_variance.md,
"In your training loop"). Each integration is imported on its own, so ``import flowvar.integrations`` never
needs the framework.
"""

from __future__ import annotations

__all__: list[str] = []
