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
:func:`flowvar.audit.fit.check_conventions` therefore measures, on the training data, how well each candidate's field
explains the straight-path targets, and whether a short integration moves noise toward the data; see docs/audit.md
"Calling conventions".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, DataError, ShapeError

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
    user's choices (:attr:`choice`) — and two properties detected on the network by
    :func:`flowvar.audit.fit.check_conventions`: ``time_shape`` (:data:`TIME_SHAPES`: the time as (B,) or as a (B, 1)
    column) and ``output`` (what the velocity was read from: ``"tensor"``, ``".sample"`` of diffusers' output
    object, ``"tuple[0]"`` or ``"dict[KEY]"``; :func:`read_output`)."""

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
            out, self.output_read = call_network_with_form(self.model, conv.call, x.to(device), s.to(device), y,
                                                           self.label_arg)
            out = out.to(x.device)
        else:
            out, self.output_read = call_network_with_form(self.model, conv.call, x, s, labels, self.label_arg)
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
    return call_network_with_form(model, call, x, s, labels, label_arg)[0]


def call_network_with_form(model: nn.Module, call: str, x: Tensor, s: Tensor, labels: Tensor | None,
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


__all__ = [
    "CALLS",
    "CALL_DEFAULTS",
    "COMMON_CONDITION_ARGS",
    "COMMON_LABEL_ARGS",
    "TIMES",
    "TIME_SHAPES",
    "AdaptedField",
    "Conditioned",
    "Convention",
    "LabelArg",
    "OutputError",
    "PackedLabels",
    "call_network",
    "call_network_with_form",
    "model_device",
    "model_dtype",
    "pack_labels",
    "read_output",
]
