"""Vector fields v(x, t): every model, learned or closed-form, is an ``nn.Module`` with ``forward(x, t)``.

``x``: (B, *shape), floating point (an integer x is a ConfigError naming ``x.float()``), on the device of the
field's parameters or, for the closed-form and empirical fields, its buffers (another is a ConfigError naming
``model.to(...)`` and ``x.to(...)``); ``t``: (B,), (B, 1) or a scalar (anything else is a ConfigError or
ShapeError); returns a velocity of the same shape as ``x``, in this dtype:

* learned fields (:class:`MLPField`, :class:`FlatMLPField`, :class:`UNetField`, :class:`DiTField`): x's, which must
  be their parameters' (another is a ConfigError naming ``model.to(x.dtype)``); under ``torch.autocast``, the
  autocast dtype;
* :class:`EmpiricalField`, :class:`MemorisingField`: x's; computed in their ``dtype`` (float64 by default);
* :class:`CounterexampleField`, :class:`NoisyCounterexampleField`: torch's promotion of x's dtype and their ``dtype``
  (float64 by default, so float32 x gives float64);
* :class:`GaussianParametricField`: its parameters' (x is cast to them);
* :class:`ZeroPerturbedField`: torch's promotion of its base's output dtype and x's.

The closed forms keep their own precision on purpose: a float64 field's value is not rounded to a float32 x, and
:func:`flowvar.sampling.integrate` then steps in float64 (its docstring says so); pass x in the field's dtype to
compute in one precision.
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
