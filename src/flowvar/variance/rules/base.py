"""The interface of a per-layer rule: exact per-sample statistics of one module type's direct parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from flowvar.errors import ShapeError
from flowvar.variance.records import CallRecord, Collector, PerSample, RuleContext

__all__ = ["Rule", "batched"]


class Rule(ABC):
    """Exact per-sample statistics of a module type's direct parameters from its captured calls.

    ``accumulate(module, calls, collectors, ctx)``: ``collectors`` holds one :class:`Collector` per wanted
    local parameter name; the rule must set every sample's squared norm exactly once (summing over calls
    first) and fill the sums the collectors ask for. δ is raw ∂L/∂output (the scale is applied later).
    """

    name: str = "rule"
    #: whether :meth:`accumulate` feeds the engine's check of Σ_i g_i (``Collector.sum_target`` / ``add_probe``, or
    #: ``add_per_sample``, which does it). Rules that do not (e.g. written before the check existed) get ``grad_sum``
    #: filled instead whenever the engine checks, which they must fill when it is not None.
    fills_check: bool = False
    #: whether the engine opens the rule's capture around each recorded forward of the module
    #: (:func:`~flowvar.variance.rules.attention.capture_projections`; :attr:`CallRecord.captured` then holds it)
    captures: bool = False

    def unsupported(self, module: nn.Module) -> str | None:
        """Why this rule cannot handle ``module`` (it then goes to the fallback), or None."""
        return None

    def children(self, module: nn.Module) -> tuple[str, ...]:
        """Names of child modules whose parameters this rule measures too, because ``module``'s forward uses them
        directly instead of calling the child (``nn.MultiheadAttention`` and its ``out_proj``). Their collectors
        are passed under local names ``"child.param"``."""
        return ()

    def ownable(self, module: nn.Module, x: Tensor) -> bool:
        """Whether the engine should compute this call's parameter gradients itself from the per-sample gradients
        (:mod:`flowvar.variance.owned`): only where this rule materialises them anyway; ``x`` is the call's input.
        Rules that say True implement :meth:`per_sample_grads`."""
        return False

    def per_sample_grads(self, module: nn.Module, x: Tensor, delta: Tensor, start: int, stop: int,
                         names: set[str]) -> dict[str, PerSample]:
        """Per-sample gradients (stop − start, *param.shape) of the parameters ``names`` for samples [start, stop)
        of a call with input ``x`` and output gradient ``delta`` (raw δ), for :meth:`ownable` calls."""
        raise NotImplementedError(f"{type(self).__name__} does not materialise per-sample gradients")

    @abstractmethod
    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        """Fill ``collectors``; return a label for the report (e.g. ``"linear"``, ``"conv2d-ghost"``)."""


def batched(x: Tensor, B: int, what: str) -> Tensor:
    """``x`` itself, after checking that it carries the batch of B samples in its first dimension (``what``
    names it in the error)."""
    if x.ndim == 0 or x.shape[0] != B:
        raise ShapeError(f"{what} has shape {tuple(x.shape)} but the batch has {B} samples; per-sample gradients "
                         f"need every module input to carry the batch in its first dimension")
    return x
