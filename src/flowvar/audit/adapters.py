"""Calling conventions of third-party flow models, and the check that the chosen one fits the model.

flowvar's fields are called ``v(x, t)`` with x: (B, *shape), t: (B,), time running from the source (noise, t = 0)
to the data (t = 1), and return dx/dt. Other libraries differ in three independent ways, and :class:`Convention`
names one choice of each:

* **call** — how the network is invoked, with s the (possibly rescaled) time (B,):

  - ``"xt"``: ``model(x, s)`` (flowvar, most hand-written fields);
  - ``"tx"``: ``model(s, x)`` (torchcfm's ``UNetModelWrapper``, torchdyn-style fields);
  - ``"cat"``: ``model(torch.cat([x.flatten(1), s[:, None]], 1))`` reshaped to x's shape (torchcfm's ``MLP`` with
    ``time_varying=True``);
  - ``"diffusers"``: ``model(x, s).sample`` (diffusers' ``UNet2DModel``; a tuple output's first item is used);
  - ``"flow_matching"``: ``model(x=x, t=s)`` (Meta's ``flow_matching.utils.ModelWrapper``);

* **time** — ``"data_at_1"`` (flowvar, torchcfm, Meta flow_matching: x_t = (1 − t) noise + t data) or
  ``"data_at_0"`` (diffusers' flow-matching schedulers: x_τ = (1 − τ) data + τ noise, with τ = 1 − t). The network
  of a data-at-0 model predicts dx/dτ = noise − data, so the adapted field is v(x, t) = −f(x, 1 − t);
* **time_scale** — the network sees s = scale · τ (diffusers' timesteps run over 0..1000: scale 1000).

Two more properties are read off the network rather than chosen, and recorded in the convention for the report:

* **time_shape** — s is passed as (B,); a network that cannot be called so (``torch.cat([x, t], 1)`` needs a
  column) is called with s as (B, 1) under the same call, and the convention says ``t of shape (B, 1)``. Only
  after the (B,) call raised, so a network that takes both is never called two ways; a wrong call that happens to
  run with a column (``model(s, x)`` on a ``cat([x, t])`` network) is rejected by the fit check like any wrong
  call. A network that takes only one time for the whole batch (``float(t)``) is refused, naming the per-item
  wrapper it needs: the audit's probes give each item its own time;
* **output** — what the network returns: a tensor; diffusers' output object (its ``.sample``, under the
  ``diffusers`` call); a tuple or list (its first element: ``return_dict=False``, ``(velocity, aux)``); a dict
  holding exactly one tensor of the data's shape (that tensor). A dict with several such tensors is refused,
  naming its keys and the wrapper to write (:func:`read_output`).

A conditional network also takes each item's condition — a class label (B,) long, or a continuous condition
(B, *cond_shape) float such as a pooled text embedding (B, 512), token embeddings (B, L, D) or a low-resolution image;
:class:`LabelArg` says how (a keyword such as torchcfm's ``y=``, diffusers' ``class_labels=`` or
``encoder_hidden_states=``, a keyword holding a dict such as Meta flow_matching's ``extra={"label": y}``, or one more
positional argument). The argument is named by the user, never guessed into an audit: a wrong one fails to run, or
(for a model that ignores it) audits the unconditional field.

A wrong choice rarely raises an error: a reversed time or a missing ×1000 still returns a tensor of the right shape.
:func:`check_conventions` therefore measures, on the training data, how well each candidate's field explains the
straight-path targets, and whether a short integration moves noise toward the data; see docs/audit.md
"Calling conventions".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, DataError, ShapeError, printable

Call = Literal["xt", "tx", "cat", "diffusers", "flow_matching"]
TimeDirection = Literal["data_at_1", "data_at_0"]
CALLS: tuple[str, ...] = ("xt", "tx", "cat", "diffusers", "flow_matching")
TIMES: tuple[str, ...] = ("data_at_1", "data_at_0")
#: How the time reaches the network: one entry per item (B,) — the default — or a column (B, 1).
TIME_SHAPES: tuple[str, ...] = ("(B,)", "(B, 1)")
#: Each call's usual time direction and scale (what a plain ``--convention NAME`` means).
CALL_DEFAULTS: dict[str, tuple[str, float]] = {
    "xt": ("data_at_1", 1.0), "tx": ("data_at_1", 1.0), "cat": ("data_at_1", 1.0),
    "diffusers": ("data_at_0", 1000.0), "flow_matching": ("data_at_1", 1.0),
}

#: A convention fits when its field explains the straight-path target better than the zero field by this factor:
#: loss ratio q = E‖v(x_t, t) − (x1 − x0)‖² / E‖x1 − x0‖² below Q_FIT (docs/audit.md).
Q_FIT = 0.9
#: ... and a short Euler integration of fresh noise ends closer to the training data than it started:
#: median nearest-training-item distance after / before below MOVE_FIT.
MOVE_FIT = 0.9
#: Another fitting convention "looks right" instead of the requested one when its loss ratio is below this fraction
#: of the requested one's.
Q_MARGIN = 0.5
#: Probe sizes: the loss ratio uses PROBE_N (x0, x1, t) draws with t ~ U(PROBE_T_LO, 1 − PROBE_T_LO); the movement
#: check integrates MOVE_N noise samples with MOVE_STEPS Euler steps.
PROBE_N = 128
PROBE_T_LO = 0.05
MOVE_N = 64
MOVE_STEPS = 8


#: The label arguments tried when a model cannot be called without labels, to name the one that works in the error
#: (torchcfm's UNet: y; diffusers: class_labels; Meta flow_matching's examples: extra.label; plain model(x, t, y)).
COMMON_LABEL_ARGS: tuple[str, ...] = ("y", "class_labels", "label", "labels", "extra.label", "positional")
#: The same for a model conditioned on continuous vectors (diffusers' UNet2DConditionModel: encoder_hidden_states;
#: hand-written networks: cond, condition, context, c), tried before :data:`COMMON_LABEL_ARGS`.
COMMON_CONDITION_ARGS: tuple[str, ...] = ("encoder_hidden_states", "cond", "condition", "context", "c",
                                          *COMMON_LABEL_ARGS)


@dataclass(frozen=True)
class LabelArg:
    """How a conditional network takes its labels (B,) long or continuous conditions (B, *cond_shape) float, from
    ``--label-arg SPEC`` (alias ``--cond-arg``):

    * ``"positional"``: one more positional argument after the call's own (``model(x, s, y)``, ``model(s, x, y)``);
    * ``"NAME"``: the keyword argument NAME (``y`` for torchcfm's ``UNetModelWrapper``, ``class_labels`` for
      diffusers' ``UNet2DModel``, ``encoder_hidden_states`` for diffusers' ``UNet2DConditionModel``);
    * ``"NAME.KEY"``: the keyword NAME holding the dict {KEY: labels} (``extra.label`` for Meta flow_matching's
      ``model(x, t, extra={"label": y})``).
    """

    spec: str

    def __post_init__(self) -> None:
        parts = str(self.spec).split(".")
        if self.spec != "positional" and not (1 <= len(parts) <= 2 and all(p.isidentifier() for p in parts)):
            raise ConfigError(f"--label-arg must be a keyword name (y, class_labels), NAME.KEY for a dict keyword "
                              f"(extra.label) or positional, got {self.spec!r}")

    def apply(self, args: tuple[Any, ...], kwargs: dict[str, Any], labels: Tensor
              ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's positional and keyword arguments with ``labels`` added."""
        if self.spec == "positional":
            if kwargs:
                raise ConfigError("positional labels cannot follow a keyword call (flow_matching); name the keyword, "
                                  "e.g. --label-arg extra.label or --label-arg y")
            return (*args, labels), kwargs
        name, _, key = self.spec.partition(".")
        return args, {**kwargs, name: {key: labels} if key else labels}

    def __str__(self) -> str:
        return self.spec


class OutputError(DataError):
    """The network ran, but what it returned is not one velocity tensor flowvar can take unambiguously (a dict of
    several tensors of the data's shape, a diffusers output object under another call): the message names what
    came back and the wrapper that fixes it."""


@dataclass(frozen=True)
class Convention:
    """One calling convention: ``call`` (see the module doc), ``time`` direction and ``time_scale`` (> 0) — the
    user's choices (:attr:`choice`) — and two properties detected on the network by :func:`check_conventions`:
    ``time_shape`` (:data:`TIME_SHAPES`: the time as (B,) or as a (B, 1) column) and ``output`` (what the velocity
    was read from: ``"tensor"``, ``".sample"`` of diffusers' output object, ``"tuple[0]"`` or ``"dict[KEY]"``;
    :func:`read_output`)."""

    call: str = "xt"
    time: str = "data_at_1"
    time_scale: float = 1.0
    time_shape: str = "(B,)"
    output: str = "tensor"

    def __post_init__(self) -> None:
        if self.call not in CALLS:
            raise ConfigError(f"unknown calling convention {self.call!r}; choose one of {', '.join(CALLS)}")
        if self.time not in TIMES:
            raise ConfigError(f"unknown time direction {self.time!r}; choose data_at_1 (noise at t=0, data at t=1: "
                              f"flowvar, torchcfm, flow_matching) or data_at_0 (diffusers)")
        scale = self.time_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"time scale must be a finite number > 0 (1 for t in [0, 1], 1000 for diffusers' "
                              f"timesteps), got {scale!r}")
        if self.time_shape not in TIME_SHAPES:
            raise ConfigError(f"unknown time shape {self.time_shape!r}; choose one of {', '.join(TIME_SHAPES)}")
        if not isinstance(self.output, str) or not self.output:
            raise ConfigError(f"output must name what the velocity is read from (tensor, .sample, tuple[0], "
                              f"dict[KEY]), got {self.output!r}")

    @property
    def choice(self) -> tuple[str, str, float]:
        """(call, time, time_scale): what ``--convention``, ``--time`` and ``--time-scale`` choose (the time shape
        and the output are read off the network)."""
        return self.call, self.time, float(self.time_scale)

    @classmethod
    def of(cls, call: str, time: str | None = None, time_scale: float | None = None) -> Convention:
        """``call`` with its usual time direction and scale (:data:`CALL_DEFAULTS`) unless given."""
        if call not in CALL_DEFAULTS:
            raise ConfigError(f"unknown calling convention {call!r}; choose one of {', '.join(CALLS)}")
        t_default, s_default = CALL_DEFAULTS[call]
        return cls(call, time or t_default, float(time_scale) if time_scale is not None else s_default)

    def flags(self) -> str:
        """The command-line flags selecting this convention."""
        return f"--convention {self.call} --time {self.time} --time-scale {self.time_scale:g}"

    def __str__(self) -> str:
        column = ", t of shape (B, 1)" if self.time_shape != "(B,)" else ""
        read = "" if self.output in ("tensor", ".sample") else \
            ", tuple output: its first element" if self.output == "tuple[0]" else \
            f", dict output: its {self.output[5:-1]} entry" if self.output.startswith("dict[") else \
            f", output {self.output}"
        return f"{self.call} ({self.time}, time scale {self.time_scale:g}{column}{read})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptedField(nn.Module):
    """A third-party network seen as a flowvar field ``v(x, t)`` (x: (B, *shape), t: (B,) or scalar → (B, *shape)),
    or ``v(x, t, labels)`` for a conditional network (``label_arg`` set; labels: (B,) long class labels or
    (B, *cond_shape) float conditions, passed to the network as they are).

    v(x, t) = f(x, scale · t) for data-at-1 models and v(x, t) = −f(x, scale · (1 − t)) for data-at-0 models, f the
    network called by ``convention.call``. The network is the submodule ``model``, so parameter names, ``.to()``,
    ``train()``/``eval()`` and the gradient-variance engine (``torch.func.functional_call``) see through the adapter.
    :class:`Conditioned` binds a batch's labels / conditions, so that ODE solvers can call the field as ``v(x, t)``.
    """

    def __init__(self, model: nn.Module, convention: Convention, label_arg: LabelArg | None = None) -> None:
        super().__init__()
        self.model = model
        self.convention = convention
        self.label_arg = label_arg
        #: where the last call found the velocity in the network's output (:func:`read_output`), which
        #: :func:`score_convention` records in the convention
        self.output_read = convention.output

    def extra_repr(self) -> str:
        return f"convention={self.convention}" + (f", label_arg={self.label_arg}" if self.label_arg else "")

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        conv = self.convention
        if labels is None and self.label_arg is not None:
            raise ConfigError(f"this field is class-conditional or conditional (labels passed as {self.label_arg}): "
                              f"call it with labels (B,) or conditions (B, ...), or bind them with Conditioned")
        if labels is not None and self.label_arg is None:
            raise ConfigError("labels given to a field without label_arg: say how the network takes them "
                              "(AdaptedField(model, convention, LabelArg('y')))")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])
        tau = t if conv.time == "data_at_1" else 1.0 - t
        s = tau * conv.time_scale
        if conv.time_shape == "(B, 1)":
            s = s[:, None]
        device = model_device(self.model)
        if device is not None and device != x.device:  # data stay on the CPU; the network runs where it lives
            y = labels.to(device) if labels is not None else None
            out, self.output_read = _call(self.model, conv.call, x.to(device), s.to(device), y, self.label_arg)
            out = out.to(x.device)
        else:
            out, self.output_read = _call(self.model, conv.call, x, s, labels, self.label_arg)
        return out if conv.time == "data_at_1" else -out


class Conditioned(nn.Module):
    """A conditional :class:`AdaptedField` with one batch's labels (B,) or conditions (B, *cond_shape) bound:
    ``v(x, t)`` for x of B rows, as ODE solvers call it. Without labels (None) it is the field itself."""

    def __init__(self, field: AdaptedField, labels: Tensor | None) -> None:
        super().__init__()
        self.field = field
        self.labels = labels

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        if self.labels is None:
            return self.field(x, t)
        if self.labels.ndim == 0 or self.labels.shape[0] != x.shape[0]:
            raise ShapeError(f"{x.shape[0]} states but {tuple(self.labels.shape)} bound labels")
        return self.field(x, t, self.labels)


class PackedLabels(nn.Module):
    """A conditional field as flowvar's gradient-variance engine calls a field: ``v(x⁺, t)`` on packed states
    x⁺ = [x.flatten(1), c] (:func:`pack_labels`), returning [v(x, t, c).flatten(1), 0].

    * class labels (``condition_shape`` None): c is one coordinate holding the label, x⁺: (B, D + 1), unpacked as
      ``round().long()``;
    * continuous conditions of shape ``condition_shape`` (C = its number of entries): c is the flattened condition,
      x⁺: (B, D + C), unpacked by a reshape to (B, *condition_shape) in the state's dtype.

    Why: the engine differentiates ``model(x, t)`` one sample at a time (``torch.func.vmap``), so the condition must
    travel inside the sample. Its coordinates have target 0 and output 0, so each per-sample loss
    ℓ = ‖v − u‖² (a sum over coordinates) and its parameter gradient are exactly those of the conditional model on
    (x, t, c).
    """

    def __init__(self, field: AdaptedField, shape: tuple[int, ...],
                 condition_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.field = field
        self.shape = tuple(shape)
        self.condition_shape = tuple(condition_shape) if condition_shape is not None else None

    def forward(self, packed: Tensor, t: Tensor | float) -> Tensor:
        b = packed.shape[0]
        d = math.prod(self.shape)
        x = packed[:, :d].reshape(b, *self.shape)
        if self.condition_shape is None:
            cond = packed[:, d].round().long()
        else:
            cond = packed[:, d:].reshape(b, *self.condition_shape)
        v = self.field(x, t, cond)
        return torch.cat([v.reshape(b, -1), torch.zeros_like(packed[:, d:])], 1)


def pack_labels(x: Tensor, labels: Tensor) -> Tensor:
    """The state :class:`PackedLabels` takes, in x's dtype: [x.flatten(1), labels] (B, D + 1) for class labels
    (B,) long, or [x.flatten(1), conditions.flatten(1)] (B, D + C) for continuous conditions (B, *cond_shape).
    ConfigError when x's dtype cannot hold the values exactly (e.g. labels above 256 in bfloat16, float64
    conditions in a float32 state): the packed model would then see other conditions than the audit's."""
    if not labels.is_floating_point():
        column = labels.to(x.dtype)
        if not torch.equal(column.long(), labels.long()):
            raise ConfigError(f"class labels up to {int(labels.max())} are not exact in {x.dtype}; audit the model "
                              f"in float32 (or float64)")
        return torch.cat([x.reshape(x.shape[0], -1), column[:, None]], 1)
    cond = labels.reshape(labels.shape[0], -1)
    packed_cond = cond.to(x.dtype)
    if not torch.equal(packed_cond.to(cond.dtype), cond):
        raise ConfigError(f"conditions in {cond.dtype} are not exact in the states' {x.dtype}; cast them to the "
                          f"model's dtype first")
    return torch.cat([x.reshape(x.shape[0], -1), packed_cond], 1)


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (None for a model without tensors)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (float32 if none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def call_network(model: nn.Module, call: str, x: Tensor, s: Tensor, labels: Tensor | None = None,
                 label_arg: LabelArg | None = None) -> Tensor:
    """Invoke ``model`` on states ``x`` (B, *shape) at network times ``s`` ((B,), or the column (B, 1) of a
    ``time_shape="(B, 1)"`` convention) by ``call`` (with ``labels`` (B,) passed as ``label_arg`` says, for a
    class-conditional network); the velocity as a tensor of x's shape, read from the output by :func:`read_output`
    (:class:`ShapeError`-free: a wrong output raises :class:`DataError` naming what came back)."""
    return _call(model, call, x, s, labels, label_arg)[0]


def _call(model: nn.Module, call: str, x: Tensor, s: Tensor, labels: Tensor | None,
          label_arg: LabelArg | None) -> tuple[Tensor, str]:
    """:func:`call_network`, and where the velocity was found in the output (:attr:`Convention.output`)."""
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = {}
    if call == "xt":
        args = (x, s)
    elif call == "tx":
        args = (s, x)
    elif call == "cat":
        args = (torch.cat([x.reshape(x.shape[0], -1), s.reshape(-1, 1)], 1),)
    elif call == "diffusers":
        args = (x, s)
    else:
        args, kwargs = (), {"x": x, "t": s}
    if labels is not None and label_arg is not None:
        args, kwargs = label_arg.apply(args, kwargs, labels)
    out, form = read_output(model(*args, **kwargs), call, x)
    if call == "cat" and out.shape != x.shape and out.numel() == x.numel():
        out = out.reshape(x.shape)
    if out.shape != x.shape:
        where = {"tensor": "", ".sample": "'s .sample", "tuple[0]": "'s first element"}.get(form, f" entry {form[4:]}")
        raise DataError(f"the model's output{where} has shape {tuple(out.shape)} for input {tuple(x.shape)}")
    return out, form


def read_output(out: Any, call: str, x: Tensor) -> tuple[Tensor, str]:
    """The velocity in what a network returned for states ``x`` (B, *shape), and where it was found
    (:attr:`Convention.output`):

    * a tensor: itself (``"tensor"``);
    * diffusers' output object (a ``.sample`` tensor attribute): ``.sample`` (``".sample"``), under the
      ``diffusers`` call only — another call refuses it, so that a diffusers UNet is labelled as one;
    * a tuple or list starting with a tensor: its first element (``"tuple[0]"``: diffusers' ``return_dict=False``,
      a ``(velocity, aux)`` pair);
    * a dict (any mapping) holding exactly one tensor of x's shape (of x's number of entries for the ``cat``
      call): that tensor (``"dict['KEY']"``; other entries — a scalar loss, features of other shapes — cannot be
      the velocity).

    Raises :class:`OutputError` for a dict with none or several such tensors (naming its keys and the wrapper that
    returns the velocity) or a diffusers object under another call, :class:`DataError` for anything else."""
    if isinstance(out, Tensor):
        return out, "tensor"
    if isinstance(getattr(out, "sample", None), Tensor):
        if call != "diffusers":
            raise OutputError(f"the model returned {type(out).__name__} (diffusers' output: its .sample is read under "
                              f"--convention diffusers)")
        return out.sample, ".sample"
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0], "tuple[0]"
    if isinstance(out, Mapping):
        tensors = {k: v for k, v in out.items() if isinstance(v, Tensor)}
        fits = [k for k, v in tensors.items()
                if (v.numel() == x.numel() and v.shape[:1] == x.shape[:1] if call == "cat" else v.shape == x.shape)]
        if len(fits) == 1:
            return tensors[fits[0]], f"dict[{fits[0]!r}]"
        entries = ", ".join(f"{k!r} {tuple(v.shape)}" if isinstance(v, Tensor) else f"{k!r} ({type(v).__name__})"
                            for k, v in list(out.items())[:8]) + (", ..." if len(out) > 8 else "")
        which = (f"{len(fits)} tensors of the input's shape {tuple(x.shape)}, so which is the velocity is not clear"
                 if fits else f"no tensor of the input's shape {tuple(x.shape)}")
        key = repr(fits[0]) if fits else "'KEY'"
        raise OutputError(f"the model returned a {type(out).__name__} with {which} (entries: {entries or 'none'}): "
                          f"audit a module whose forward returns the velocity tensor, e.g. "
                          f"forward(self, x, t): return self.net(x, t)[{key}]")
    raise DataError(f"the model returned {type(out).__name__}, not a tensor")


# --------------------------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class CandidateScore:
    """How one convention did on the training data.

    ``runs``: the call succeeded with a finite output of the right shape (else ``error`` says what happened);
    ``loss_ratio``: q = E‖v(x_t, t) − (x1 − x0)‖² / E‖x1 − x0‖² on :data:`PROBE_N` fresh (noise, training item, t)
    draws (q < 1: the field explains part of the straight-path target; the zero field has q = 1, the reversed field of
    a fitted model q > 1); ``movement``: median distance of MOVE_STEPS-step Euler endpoints of fresh noise to their
    nearest training item over that of the noise itself (< 1: the integration moves noise toward the data); ``fits``:
    q < :data:`Q_FIT` and movement < :data:`MOVE_FIT` — on the fresh draws, or, when the training sources are known
    and the fresh draws do not fit, on the training pairs (``pairs_loss_ratio``, ``pairs_movement``: the same two
    numbers for (source_i, item_i) and the integrated sources; NaN when not measured). Why the second chance: a
    model that memorised its pairs explains fresh draws poorly (its field off the training lines is arbitrary) but
    its own pairs almost exactly, while a reversed field fails on both.
    """

    convention: Convention
    runs: bool
    loss_ratio: float = math.nan
    movement: float = math.nan
    fits: bool = False
    error: str = ""
    pairs_loss_ratio: float = math.nan
    pairs_movement: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"convention": self.convention.to_dict(), "runs": self.runs, "loss_ratio": self.loss_ratio,
                "movement": self.movement, "fits": self.fits, "error": self.error,
                "pairs_loss_ratio": self.pairs_loss_ratio, "pairs_movement": self.pairs_movement}


@dataclass(frozen=True)
class ConventionCheck:
    """The outcome of :func:`check_conventions`: the ``chosen`` convention (the requested one when it fits, else the
    best fitting one when nothing was requested), the ``requested`` one (None: auto), every candidate's score, and
    ``best`` (the fitting candidate of lowest loss ratio, or None)."""

    chosen: Convention
    requested: Convention | None
    best: Convention | None
    candidates: tuple[CandidateScore, ...]

    def score(self, convention: Convention) -> CandidateScore | None:
        """The score of the candidate making ``convention``'s choice of call, time and time scale (whatever time
        shape and output were detected)."""
        return next((c for c in self.candidates if c.convention.choice == convention.choice), None)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "requested": self.requested.to_dict() if self.requested else None,
                "best": self.best.to_dict() if self.best else None,
                "candidates": [c.to_dict() for c in self.candidates],
                "thresholds": {"q_fit": Q_FIT, "move_fit": MOVE_FIT, "q_margin": Q_MARGIN}}


def candidate_conventions(requested: Convention | None, time_scales: Sequence[float] = (1.0, 1000.0)
                          ) -> list[Convention]:
    """Every call × time direction × scale to try, the requested convention first (then in :data:`CALLS` order)."""
    scales = list(dict.fromkeys([*([requested.time_scale] if requested else []), *map(float, time_scales)]))
    out = [requested] if requested is not None else []
    for call in CALLS:
        for time in TIMES:
            for scale in scales:
                c = Convention(call, time, scale)
                if all(c.choice != o.choice for o in out):
                    out.append(c)
    return out


def _median_nn(x: Tensor, ref: Tensor) -> float:
    from flowvar.metrics import as_matrix, nearest_neighbours

    return float(nearest_neighbours(as_matrix("points", x), as_matrix("training data", ref), 1)[0][:, 0].median())


def score_convention(model: nn.Module, convention: Convention, x1: Tensor, x0: Tensor, t: Tensor,
                     move_x0: Tensor, train: Tensor, seen: list[tuple[Tensor, CandidateScore]] | None = None,
                     labels: tuple[Tensor, Tensor] | None = None, label_arg: LabelArg | None = None,
                     pairs: PairProbe | None = None) -> CandidateScore:
    """Score one convention (see :class:`CandidateScore`). ``x1``, ``x0``: (P, *shape) training items and noise,
    ``t``: (P,); ``move_x0``: (M, *shape) noise to integrate; ``train``: the training items (for the movement);
    ``labels``: for a class-conditional model (``label_arg``), the labels (P,) of ``x1`` and (M,) of ``move_x0``;
    ``pairs``: the training pairs' probe, tried when the fresh draws do not fit.

    The integration runs only for a candidate whose loss ratio passes (the others cannot fit), and not again for a
    candidate whose probe output equals that of one in ``seen`` (two calls that reach the same network the same way,
    e.g. ``model(t, x)`` and ``model(x=x, t=t)`` on a ``forward(t, x)``): its score is reused. Appends to ``seen``.

    A call that raises with the time as (B,) is tried once more with the time as a (B, 1) column (not for ``cat``,
    which builds its own column); the score's convention records the time shape that ran and where the velocity
    was read from the output (:attr:`Convention.time_shape`, :attr:`Convention.output`).
    """
    field = AdaptedField(model, convention, label_arg)
    probe_labels, move_labels = labels if labels is not None else (None, None)
    try:
        v, q = _loss_ratio(field, x0, x1, t, probe_labels)
    except Exception as error:  # any failure of a foreign network under a wrong call is "does not run"
        if convention.time_shape != "(B,)" or convention.call == "cat":
            return CandidateScore(convention, False, error=_short(error))
        field = AdaptedField(model, replace(convention, time_shape="(B, 1)"), label_arg)
        try:
            v, q = _loss_ratio(field, x0, x1, t, probe_labels)
        except Exception:  # the column fails too: the (B,) call's error is the one to report
            return CandidateScore(convention, False, error=_short(error))
    convention = replace(field.convention, output=field.output_read)
    if not math.isfinite(q):
        return CandidateScore(convention, False, error="the model returned NaN/Inf")
    for earlier_v, earlier in seen or []:
        if torch.equal(v, earlier_v):
            return replace(earlier, convention=convention)
    score = CandidateScore(convention, True, q)
    if q < Q_FIT:
        movement, error = _movement(field, move_x0, train, move_labels)
        score = CandidateScore(convention, True, q, movement, q < Q_FIT and movement < MOVE_FIT, error)
    if not score.fits and pairs is not None:
        try:
            q_pairs = _loss_ratio(field, pairs.x0, pairs.x1, t, pairs.labels)[1]
        except Exception:  # ran on fresh draws, so this is not expected; then the pairs do not rescue the fit
            q_pairs = math.nan
        move_pairs = _movement(field, pairs.move_x0, train, pairs.move_labels)[0] if q_pairs < Q_FIT else math.nan
        score = replace(score, pairs_loss_ratio=q_pairs, pairs_movement=move_pairs,
                        fits=q_pairs < Q_FIT and move_pairs < MOVE_FIT)
    if seen is not None:
        seen.append((v, score))
    return score


@dataclass(frozen=True)
class PairProbe:
    """The training pairs as a second probe of :func:`score_convention`: sources ``x0`` and items ``x1`` (P, *shape)
    at the fresh probe's times, the first ``move_x0`` (M, *shape) sources to integrate, and the labels (P,), (M,)
    of a class-conditional model (else None)."""

    x0: Tensor
    x1: Tensor
    move_x0: Tensor
    labels: Tensor | None = None
    move_labels: Tensor | None = None


def _loss_ratio(field: AdaptedField, x0: Tensor, x1: Tensor, t: Tensor, labels: Tensor | None
                ) -> tuple[Tensor, float]:
    """(v(x_t, t), q = Σ‖v − u‖² / Σ‖u‖²) on the straight path x_t = (1 − t) x0 + t x1, u = x1 − x0 (NaN q when v is
    not finite)."""
    tb = t.reshape(-1, *([1] * (x0.ndim - 1)))
    with torch.no_grad():
        v = Conditioned(field, labels)((1 - tb) * x0 + tb * x1, t)
    if not bool(torch.isfinite(v).all()):
        return v, math.nan
    u = x1 - x0
    return v, float((v - u).pow(2).sum() / u.pow(2).sum())


def _movement(field: AdaptedField, move_x0: Tensor, train: Tensor, labels: Tensor | None) -> tuple[float, str]:
    """(median nearest-training-item distance of the MOVE_STEPS-step Euler endpoints of ``move_x0`` over that of
    ``move_x0`` itself, error text); a failed integration counts as not moving toward the data (inf)."""
    from flowvar.sampling import integrate

    try:
        end = integrate(Conditioned(field, labels), move_x0, method="euler", steps=MOVE_STEPS).x1
        before = _median_nn(move_x0, train)
        return (_median_nn(end, train) / before if before > 0 else math.nan), ""
    except Exception as error:  # a diverging integration under a wrong convention
        return math.inf, f"integration failed: {_short(error)}"


def _uncallable_cause(model: nn.Module, x: Tensor, t: Tensor, labels: Tensor | None,
                      label_arg: LabelArg | None) -> str | None:
    """Why no candidate ran, when the reason is the network's interface rather than the data: its output cannot be
    read (:class:`OutputError` under some call, with the time as (B,) or (B, 1)), or a call that raises with the
    time as (B,) and as (B, 1) runs with one time for the whole batch (a scalar t; the probe ``x`` (P, *shape) at
    ``t``[0]). None when neither: the data's shape or channels are the likely cause. Runs only on the way to an
    error."""
    scalar = None
    for call in CALLS:
        raised = True
        for s in (t,) if call == "cat" else (t, t[:, None]):
            try:
                with torch.no_grad():
                    _call(model, call, x, s, labels, label_arg)
            except OutputError as error:
                return str(error)
            except Exception:  # this call does not reach the network so: try the next
                continue
            raised = False  # it runs (its output was rejected for another reason, e.g. NaN)
            break
        if raised and scalar is None and call != "cat":
            try:
                with torch.no_grad():
                    out = _call(model, call, x, t[0], labels, label_arg)[0]
            except Exception:
                continue
            if bool(torch.isfinite(out).all()):
                scalar = call
    if scalar is None:
        return None
    one = {"tx": "self.net(t[i], x[i:i + 1])", "flow_matching": "self.net(x=x[i:i + 1], t=t[i])"}.get(
        scalar, "self.net(x[i:i + 1], t[i])")
    return (f"the model cannot be called with one time per item (t of shape (B,) or (B, 1)); it runs only with "
            f"one time for the whole batch (a scalar t, called as {scalar}), but the audit gives each item its own "
            f"time: audit a module that calls it one item at a time, e.g. forward(self, x, t): return "
            f"torch.cat([{one} for i in range(x.shape[0])])")


def _short(error: BaseException) -> str:
    text = printable(str(error).strip().splitlines()[0] if str(error).strip() else "")
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_conventions(model: nn.Module, train: Tensor, requested: Convention | None, generator: torch.Generator,
                      time_scales: Sequence[float] = (1.0, 1000.0), labels: Tensor | None = None,
                      label_arg: LabelArg | None = None, sources: Tensor | None = None) -> ConventionCheck:
    """Decide which calling convention to audit ``model`` under, from its behaviour on the training data.

    ``train``: (N, *shape) training items in the model's dtype and device; ``requested``: the user's convention, or
    None to pick the best fitting one; ``labels``: (N,) the items' class labels, passed as ``label_arg`` says to a
    class-conditional model (the probe's noise is integrated under the labels of random training items);
    ``sources``: (N, *shape) the training sources paired with ``train`` (``--pairs``), a second probe for a candidate
    the fresh draws reject (:class:`CandidateScore`). Every candidate of :func:`candidate_conventions` is scored
    (:func:`score_convention`). Raises :class:`DataError` (one
    line naming the convention that looks right, or what went wrong) when the requested convention does not fit, when
    another one fits much better (loss ratio below :data:`Q_MARGIN` × the requested one's), or when none fits.
    """
    n = min(PROBE_N, train.shape[0])
    device, dtype = train.device, train.dtype
    idx = torch.randint(0, train.shape[0], (PROBE_N,), generator=generator)
    x1 = train[idx.to(device)]
    x0 = torch.randn(x1.shape, generator=generator, dtype=dtype).to(device)
    t = (PROBE_T_LO + (1 - 2 * PROBE_T_LO) * torch.rand(PROBE_N, generator=generator, dtype=dtype)).to(device)
    move_x0 = torch.randn((min(MOVE_N, max(n, 2)), *train.shape[1:]), generator=generator, dtype=dtype).to(device)
    probe_labels = None
    if labels is not None and label_arg is not None:  # drawn after everything else: unconditional draws unchanged
        move_labels = labels[torch.randint(0, train.shape[0], (move_x0.shape[0],), generator=generator)]
        probe_labels = (labels[idx].to(device), move_labels.to(device))
    pairs = None
    if sources is not None:  # no draws: the fresh probe's rows and times, the first sources to integrate
        m = move_x0.shape[0]
        pairs = PairProbe(sources[idx.to(device)], x1, sources[:m].to(device),
                          probe_labels[0] if probe_labels is not None else None,
                          labels[:m].to(device) if probe_labels is not None and labels is not None else None)
    seen: list[tuple[Tensor, CandidateScore]] = []
    scores = tuple(score_convention(model, c, x1, x0, t, move_x0, train, seen, probe_labels, label_arg, pairs)
                   for c in candidate_conventions(requested, time_scales))
    fitting = sorted((s for s in scores if s.fits), key=lambda s: s.loss_ratio)
    best = fitting[0].convention if fitting else None
    if requested is not None:
        own = scores[0]
        if not own.runs:
            cause = None if best else \
                _uncallable_cause(model, x1, t, probe_labels[0] if probe_labels is not None else None, label_arg)
            if cause is not None:  # the network's interface, not the convention: name it and its wrapper
                raise DataError(cause)
            hint = f"; {best} fits: pass {best.flags()}" if best else ""
            raise DataError(f"the model cannot be called as {requested}: {own.error}{hint}")
        if not own.fits:
            hint = (f"; {best} fits (loss ratio {fitting[0].loss_ratio:.3g}, movement {fitting[0].movement:.3g}): pass "
                    f"{best.flags()}" if best else "; no other convention fits either (is the checkpoint trained?)")
            raise DataError(f"convention {requested} does not fit this model on the training data (loss ratio "
                            f"{own.loss_ratio:.3g}, needs < {Q_FIT}; noise movement toward the data "
                            f"{own.movement:.3g}, needs < {MOVE_FIT}){hint}")
        if best is not None and best.choice != requested.choice and \
                fitting[0].loss_ratio < Q_MARGIN * own.loss_ratio:
            raise DataError(f"convention {own.convention} fits this model poorly (loss ratio {own.loss_ratio:.3g}) "
                            f"while {best} fits much better ({fitting[0].loss_ratio:.3g}); pass {best.flags()}")
        return ConventionCheck(own.convention, requested, best, scores)
    if best is None:
        ran = [s for s in scores if s.runs]
        if not ran:
            cause = _uncallable_cause(model, x1, t, probe_labels[0] if probe_labels is not None else None, label_arg)
            if cause is not None:
                raise DataError(cause)
            errors = "; ".join(dict.fromkeys(s.error for s in scores))
            raise DataError(f"the model cannot be called on the training data under any convention ({errors}); check "
                            f"the data's shape and channels against the model")
        top = min(ran, key=lambda s: s.loss_ratio)
        raise DataError(f"no calling convention fits this model on the training data (best: {top.convention} with "
                        f"loss ratio {top.loss_ratio:.3g}, needs < {Q_FIT}"
                        + (f"; noise movement toward the data {top.movement:.3g}, needs < {MOVE_FIT}"
                           if not math.isnan(top.movement) else "") + "); is the checkpoint trained on this data?"
                        + ("" if sources is not None else " A model trained on fixed pairs may fit on its own: pass "
                                                          "--pairs"))
    return ConventionCheck(best, None, best, scores)


__all__ = [
    "CALLS",
    "CALL_DEFAULTS",
    "COMMON_CONDITION_ARGS",
    "COMMON_LABEL_ARGS",
    "MOVE_FIT",
    "MOVE_N",
    "MOVE_STEPS",
    "PROBE_N",
    "PROBE_T_LO",
    "Q_FIT",
    "Q_MARGIN",
    "TIMES",
    "TIME_SHAPES",
    "AdaptedField",
    "CandidateScore",
    "Conditioned",
    "Convention",
    "ConventionCheck",
    "LabelArg",
    "OutputError",
    "PackedLabels",
    "PairProbe",
    "call_network",
    "candidate_conventions",
    "check_conventions",
    "model_device",
    "model_dtype",
    "pack_labels",
    "read_output",
    "score_convention",
]
