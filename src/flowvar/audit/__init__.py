"""``flowvar audit``: does a trained flow model memorise its training data? (docs/audit.md)

* :func:`audit` → :class:`AuditReport` — the notebook entry point;
* :mod:`flowvar.audit.adapters` — calling conventions of torchcfm, diffusers and Meta flow_matching models (and how a
  conditional one takes its class labels or continuous conditions); :mod:`flowvar.audit.fit` — the check, on the
  training data, that the chosen one fits the model; :mod:`flowvar.audit.conditioning` — the labels or conditions a
  conditional model is called with (``--labels``, ``--conditions`` or what the data carry);
* :mod:`flowvar.audit.loading` — a model from a factory and a checkpoint (or a whole-module file), data (and the class
  labels or continuous conditions they carry) from a folder, a ``.npy`` / ``.npz`` array or a bundled set;
* :mod:`flowvar.audit.sections` — the four tests; :mod:`flowvar.audit.rules` — their pure verdict rules.
"""

from flowvar.audit.adapters import AdaptedField, Convention, LabelArg
from flowvar.audit.core import AuditReport, audit
from flowvar.audit.fit import ConventionCheck, check_conventions
from flowvar.audit.loading import HeldOutOverlapWarning, LoadedModel, load_labelled, load_model, load_points

__all__ = ["AdaptedField", "AuditReport", "Convention", "ConventionCheck", "HeldOutOverlapWarning", "LabelArg",
           "LoadedModel", "audit", "check_conventions", "load_labelled", "load_model", "load_points"]
