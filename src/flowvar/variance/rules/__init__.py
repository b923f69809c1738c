"""Per-layer rules of the one-pass engine: exact per-sample gradient statistics of a module's direct parameters
from the inputs and output gradients its hooks captured, plus the fallback for everything else.

After the backward pass each module's parameters go through the rule registered for its type in
:data:`RULES` (:func:`rule_for`: the module's type, else its nearest base type with a rule, provided the subclass
keeps that base's forward; a subclass that overrides it goes to the fallback):

* ``nn.Linear`` (:mod:`.linear`): g_i = Σ_s δ_is a_isᵀ; outer-product norms for 2-D inputs, the ghost norm
  or chunked materialisation for inputs with extra dims or several calls per forward pass;
* ``nn.Conv2d`` and ``nn.Conv1d`` (:mod:`.conv`): the same on input patches, per group;
* ``nn.GroupNorm``, ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.InstanceNorm1d/2d/3d`` (:mod:`.norm`):
  g_i(weight) = Σ_positions δ_i ⊙ x̂_i, g_i(bias) = Σ_positions δ_i;
* ``nn.Embedding`` and :class:`~flowvar.models.FourierTimeEmbedding` (:mod:`.embedding`);
* ``nn.MultiheadAttention`` with its ``out_proj`` (:mod:`.attention`): in- and out-projections as linear maps
  along the sequence, from the projections' own inputs and δ captured during the recorded forward; only a call
  whose projections were not all captured (``add_bias_kv``, a forward under a transform) recomputes the attention
  core, in one batched pass;
* anything else with parameters (a custom module, a parameter shared by several modules, a rule that
  declines a configuration via :meth:`Rule.unsupported`, a layer whose weight a parametrisation computes from
  other parameters, e.g. ``weight_norm``) goes to the **fallback** (:mod:`.fallback`):
  exact per-sample vector-Jacobian products of that module alone, recomputed from copies of its buffers as the
  recorded call began (never the model's own). The engine reports every parameter that went through it and why; no
  parameter is ever skipped (``compute()`` refuses a layer added after the engine was built).

Adding a layer type: write a :class:`Rule` subclass (a module of this package for flowvar's own types) and
add it to :data:`RULES` here, or call :func:`register_rule` from your own code.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.instancenorm import _InstanceNorm

from flowvar.errors import ConfigError
from flowvar.models.embeddings import FourierTimeEmbedding
from flowvar.variance.rules.attention import MultiheadAttentionRule
from flowvar.variance.rules.base import Rule, batched
from flowvar.variance.rules.conv import Conv1dRule, Conv2dRule
from flowvar.variance.rules.embedding import EmbeddingRule, FourierTimeRule
from flowvar.variance.rules.fallback import fallback_call, parametrization_children, reparametrized
from flowvar.variance.rules.linear import LinearRule, seq_linear
from flowvar.variance.rules.norm import GroupNormRule, InstanceNormRule, LayerNormRule, RMSNormRule

__all__ = [
    "RULES", "Conv1dRule", "Conv2dRule", "EmbeddingRule", "FourierTimeRule", "GroupNormRule", "InstanceNormRule",
    "LayerNormRule", "LinearRule", "MultiheadAttentionRule", "RMSNormRule", "Rule", "batched", "fallback_call",
    "parametrization_children", "register_rule", "reparametrized", "rule_for", "seq_linear",
]

#: The rule of each module type (subclasses that keep the type's forward use it too: :func:`rule_for`).
RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: LinearRule(), nn.Conv2d: Conv2dRule(), nn.GroupNorm: GroupNormRule(), nn.LayerNorm: LayerNormRule(),
    nn.Embedding: EmbeddingRule(), FourierTimeEmbedding: FourierTimeRule(),
    nn.MultiheadAttention: MultiheadAttentionRule(), nn.Conv1d: Conv1dRule(),
    # InstanceNorm1d/2d/3d (and their Lazy forms) inherit _InstanceNorm's forward
    _InstanceNorm: InstanceNormRule(),
}
if hasattr(nn, "RMSNorm"):
    RULES[nn.RMSNorm] = RMSNormRule()


def register_rule(module_type: type[nn.Module], rule: Rule) -> None:
    """Use ``rule`` for modules of this type, and of its subclasses that do not override its forward pass (a
    subclass that overrides ``forward`` may compute anything: it goes to the fallback unless registered itself)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConfigError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not isinstance(rule, Rule):
        raise ConfigError(f"rule must be a flowvar.variance.rules.Rule, got {type(rule).__name__}")
    RULES[module_type] = rule


#: The methods through which a layer's forward pass runs: a subclass that overrides one of them is not the layer.
_FORWARD_METHODS = ("forward", "_conv_forward")


def rule_for(module: nn.Module) -> tuple[Rule | None, str | None]:
    """(the rule for ``module``, None), or (None, why it goes to the fallback) when no rule handles it.

    The rule of the module's type, else of its nearest base type with a rule, provided the subclass inherits the
    base's forward pass unchanged (``NonDynamicallyQuantizableLinear`` is a Linear; torchcfm's ``GroupNorm32``,
    which casts to float32 inside ``forward``, is not a GroupNorm for the rule and goes to the exact fallback). A
    reparametrised layer (:func:`~.fallback.reparametrized`: ``weight_norm``, ``spectral_norm``, ``orthogonal``, old
    style or new) goes to the fallback, whose per-sample vjp runs through the parametrisation.
    """
    cls = type(module)
    computed = reparametrized(module)
    if computed is not None:  # the rule would differentiate the computed weight, not the parameters: the fallback's
        # vjp runs through the parametrisation
        return None, f"{cls.__name__} with {computed}"
    for base in cls.__mro__:
        rule = RULES.get(base)
        if rule is None:
            continue
        if base is not cls and any(getattr(cls, m, None) is not getattr(base, m, None) for m in _FORWARD_METHODS):
            return None, f"{cls.__name__} overrides {base.__name__}.forward (no fast rule for it)"
        why = rule.unsupported(module)
        if why is not None:
            return None, f"{cls.__name__} with {why}"
        return rule, None
    return None, f"no fast rule for {cls.__name__}"
