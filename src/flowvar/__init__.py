"""flowvar: flow matching, the closed-form Gaussian theory, gradient-variance diagnostics and memorisation
metrics, reproducing "Gradient Variance Reveals Failure Modes in Flow-Based Generative Models"
(Reu, Dromigny, Bronstein, Vargas; NeurIPS 2025, arXiv 2510.18118)."""

from flowvar._version import __version__

__all__ = ["__version__"]
