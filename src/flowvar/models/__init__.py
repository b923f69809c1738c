"""Vector fields v(x, t): every model, learned or closed-form, is an ``nn.Module`` with ``forward(x, t)``.

``x``: (B, *shape); ``t``: (B,) or a scalar; returns a velocity of the same shape as ``x``.
"""

from flowvar.models.base import VectorField, time_column
from flowvar.models.closed_form import CounterexampleField, NoisyCounterexampleField
from flowvar.models.embeddings import FourierTimeEmbedding
from flowvar.models.empirical import EmpiricalField, MemorisingField
from flowvar.models.mlp import FlatMLPField, MLPField
from flowvar.models.parametric import GaussianParametricField
from flowvar.models.perturbed import ZeroPerturbedField
from flowvar.models.transformer import DiTField
from flowvar.models.unet import SinusoidalTimeEmbedding, UNetField, sinusoidal_embedding

__all__ = [
    "CounterexampleField", "DiTField", "EmpiricalField", "FlatMLPField", "FourierTimeEmbedding",
    "GaussianParametricField", "MLPField", "MemorisingField", "NoisyCounterexampleField", "SinusoidalTimeEmbedding",
    "UNetField", "VectorField", "ZeroPerturbedField", "sinusoidal_embedding", "time_column",
]
