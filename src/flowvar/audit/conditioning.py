"""What a conditional model is called with: the class labels or continuous conditions of the training and held-out
items (docs/audit.md "Conditional models"), and the convention check that names the flag a model lacks.

* :func:`resolve_conditioning` → :class:`Conditioning` — ``--labels`` / ``--conditions`` when given (not both), else
  what ``--data`` carries (an ``.npz`` file's ``conditions``, or its class labels); the held-out ones likewise;
* :func:`check_conventions_with_labels` — :func:`flowvar.audit.fit.check_conventions`, and when the model cannot be
  called at all, whether labels or conditions are what it lacks (or refuses): the error names ``--label-arg``,
  ``--labels`` or ``--conditions``; :func:`labels_that_run` finds the argument under which it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from flowvar.audit.adapters import COMMON_CONDITION_ARGS, COMMON_LABEL_ARGS, Convention, LabelArg
from flowvar.audit.fit import CHECKPOINT_QUESTION, ConventionCheck, check_conventions
from flowvar.audit.loading import carried_conditions, load_conditions, load_labels
from flowvar.errors import ConfigError, DataError, FlowvarError, ShapeError

#: Where class labels can come from, for the errors that ask for them.
LABEL_SOURCES = ("--labels FILE.npy, or data that carry them: digits, a folder of one subfolder per class, an .npz "
                 "file with a 'labels' array")


#: Where continuous conditions can come from, for the errors that ask for them.
CONDITION_SOURCES = "--conditions FILE.npy (or an .npz --data file with a 'conditions' array)"


def labels_that_run(model: nn.Module, train: Tensor, labels: Tensor | None) -> str | None:
    """The first of :data:`COMMON_LABEL_ARGS` (:data:`COMMON_CONDITION_ARGS` for continuous conditions) under which
    ``model`` runs on a few training items with labels (the data's, or class 0 when the data carry none), under any
    call and time direction; None if none does."""
    from flowvar.audit.adapters import CALL_DEFAULTS, call_network, model_device

    device = model_device(model) or train.device
    x = train[:4].to(device)
    y = (labels[:4] if labels is not None else torch.zeros(x.shape[0], dtype=torch.long)).to(device)
    s = torch.full((x.shape[0],), 0.5, dtype=x.dtype, device=device)
    for spec in COMMON_CONDITION_ARGS if y.is_floating_point() else COMMON_LABEL_ARGS:
        for call in CALL_DEFAULTS:
            try:
                with torch.no_grad():
                    out = call_network(model, call, x, s, y, LabelArg(spec))
            except Exception:  # a foreign network under a wrong call: try the next
                continue
            if bool(torch.isfinite(out).all()):
                return spec
    return None


def check_conventions_with_labels(model: nn.Module, train: Tensor, requested: Convention | None,
                                  gen: torch.Generator, labels: Tensor | None, label_arg: LabelArg | None,
                                  labels_from: str, sources: Tensor | None = None,
                                  time_scales: tuple[float, ...] = (1.0, 1000.0),
                                  trained: str = CHECKPOINT_QUESTION) -> ConventionCheck:
    """:func:`check_conventions`, and when the model cannot be called at all, whether class labels (or continuous
    conditions: ``labels`` float) are what it lacks (or what it refuses): the error then names the flag that fixes
    it. ``trained``: what a convention that does not fit asks about the weights (:func:`check_conventions`)."""
    what = "conditions" if labels is not None and labels.is_floating_point() else "class labels"
    try:
        return check_conventions(model, train, requested, gen, time_scales, labels=labels, label_arg=label_arg,
                                 sources=sources, trained=trained)
    except FlowvarError as error:
        text = str(error)
        if "cannot be called" not in text:
            raise
        if label_arg is None:
            spec = labels_that_run(model, train, labels)
            if spec is None:
                raise
            if labels is None:
                raise DataError(f"the model cannot be called without class labels (it runs with --label-arg {spec}), "
                                f"but --data carries none: pass {LABEL_SOURCES}") from None
            raise DataError(f"the model cannot be called without {what}; it runs with the {what} "
                            f"{labels_from}: pass --label-arg {spec}") from None
        try:
            check_conventions(model, train, requested, gen, time_scales)
        except FlowvarError:
            raise error from None
        raise DataError(f"{text.rstrip('.')}; the model runs without {what}: drop --label-arg {label_arg} (is it "
                        f"{'conditional' if what == 'conditions' else 'class-conditional'}?)") from None


@dataclass(frozen=True)
class Conditioning:
    """What a conditional model is called with (:func:`resolve_conditioning`): ``values`` — class labels (N,) long
    or continuous conditions (N, *cond_shape) float of the training items (None: none found); ``continuous`` — which
    of the two; ``source`` — where they came from ("given by --labels", "carried by --data", ...); ``heldout`` — the
    held-out items' labels / conditions (None when not given); ``carried_labels`` — class labels the data carry
    (reported when conditions are used instead)."""

    values: Tensor | None
    continuous: bool
    source: str
    heldout: Tensor | None
    carried_labels: Tensor | None = None

    def labels_text(self, used: bool) -> str:
        """The report's ``config.labels``: where the class labels came from and how many classes (or "none")."""
        labels = self.carried_labels if self.continuous else self.values
        if labels is None:
            return "none"
        source = "carried by --data" if self.continuous else self.source
        note = " (not used: the model takes the conditions)" if self.continuous and used else \
            "" if used else " (not used: no --label-arg)"
        return f"{source}, {int(torch.unique(labels).numel())} classes{note}"

    def conditions_text(self, used: bool) -> str:
        """The report's ``config.conditions``: where the continuous conditions came from and their shape."""
        if not self.continuous or self.values is None:
            return "none"
        held = f"; held-out {tuple(self.heldout.shape)}" if self.heldout is not None else ""
        return f"{self.source}, shape {tuple(self.values.shape)}{held}" + ("" if used else " (not used: no "
                                                                                        "--label-arg)")


def resolve_conditioning(la: LabelArg | None, data: Tensor | str | Path, n: int, carried: Tensor | None,
                         labels: Tensor | str | Path | None, heldout_labels: Tensor | str | Path | None,
                         conditions: Tensor | str | Path | None, heldout_conditions: Tensor | str | Path | None,
                         heldout: Tensor | str | Path | None, held: Tensor | None, held_carried: Tensor | None
                         ) -> Conditioning:
    """Resolve the class labels or continuous conditions of the training and held-out items (docs/audit.md
    "Conditional models"): ``--conditions`` or ``--labels`` when given (not both), else what ``--data`` carries
    (an ``.npz`` file's ``conditions``, or its class labels); the held-out ones likewise. One-line ConfigError /
    DataError / ShapeError for every mismatch."""
    given_labels = labels is not None or heldout_labels is not None
    given_conditions = conditions is not None or heldout_conditions is not None
    if given_labels and given_conditions:
        raise ConfigError("give class ids with --labels or continuous conditions with --conditions, not both: the "
                          "model takes one of them through --label-arg")
    if la is None and given_labels:
        raise ConfigError("--labels are passed to the model only with --label-arg NAME (how it takes them: y, "
                          "class_labels, extra.label, positional); give --label-arg, or drop --labels for an "
                          "unconditional model")
    if la is None and given_conditions:
        raise ConfigError("--conditions are passed to the model only with --label-arg NAME (alias --cond-arg: how it "
                          "takes them, e.g. encoder_hidden_states, cond, extra.cond, positional); give --label-arg, or "
                          "drop --conditions for an unconditional model")
    if heldout_conditions is not None and held is None:
        raise ConfigError("--heldout-conditions are the conditions of --heldout items; pass --heldout too")
    try:
        data_conditions = carried_conditions("--data", data, n)
    except FlowvarError:
        if la is not None:
            raise
        data_conditions = None  # an unconditional audit does not need them: unusable ones do not stop it
    if conditions is not None:
        values, continuous, source = load_conditions("--conditions", conditions, n), True, "given by --conditions"
    elif labels is not None:
        values, continuous, source = load_labels("--labels", labels, n), False, "given by --labels"
    elif data_conditions is not None:
        if carried is not None and la is not None:
            raise ConfigError("--data carries both class labels and continuous conditions; say which the model takes: "
                              "save them separately and pass --labels FILE.npy or --conditions FILE.npy")
        values, continuous, source = data_conditions, True, "carried by --data"
    else:
        values, continuous, source = carried, False, "carried by --data" if carried is not None else ""
    if la is not None and values is None:
        raise ConfigError(f"--label-arg {la} passes class labels to the model, but --data carries none: pass "
                          f"{LABEL_SOURCES} (or continuous conditions: {CONDITION_SOURCES})")
    if continuous and heldout_labels is not None:
        raise ConfigError("--heldout-labels are class ids, but the model is conditioned on continuous conditions: "
                          "pass --heldout-conditions")
    if not continuous and heldout_conditions is not None:
        raise ConfigError("--heldout-conditions given, but the training items are conditioned on class labels: pass "
                          "--conditions for the training items too (or --heldout-labels)")
    held_values = None
    if held is not None and not continuous:
        held_values = load_labels("--heldout-labels", heldout_labels, held.shape[0]) if heldout_labels is not None \
            else held_carried
    elif held is not None:
        assert heldout is not None and values is not None
        held_values = (load_conditions("--heldout-conditions", heldout_conditions, held.shape[0])
                       if heldout_conditions is not None else carried_conditions("--heldout", heldout, held.shape[0]))
        if held_values is not None and held_values.shape[1:] != values.shape[1:]:
            raise ShapeError(f"held-out conditions have shape {tuple(held_values.shape[1:])} per item but the "
                             f"training conditions {tuple(values.shape[1:])}; give conditions of the same kind")
    return Conditioning(values, continuous, source, held_values, carried if continuous else None)


__all__ = ["CONDITION_SOURCES", "LABEL_SOURCES", "Conditioning", "check_conventions_with_labels", "labels_that_run",
           "resolve_conditioning"]
