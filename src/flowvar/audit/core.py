"""``flowvar.audit.audit(model, data, ...) -> AuditReport``: does a trained flow model memorise its training data?

The audit (docs/audit.md):

0. checks the calling convention on the training data (:func:`flowvar.audit.fit.check_conventions`);
1. pair recovery — when the training sources are given (``pairs``);
2. copying of training data by fresh samples;
3. the generalisation gap — when held-out data are given;
4. the gradient signal at the trained weights (loss and gradient variance, training vs fresh pairs, per t-bin);
5. the verdict (:func:`flowvar.audit.rules.overall_verdict`): memorising / generalising / mixed / cannot tell.

Nothing is written until :meth:`AuditReport.write`, which fills a staged folder (``result.json``, ``summary.md``,
``audit.html``, the figures) and installs it only when complete.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import html
import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from flowvar.audit import rules
from flowvar.audit.adapters import AdaptedField, Convention, LabelArg, model_dtype
from flowvar.audit.conditioning import check_conventions_with_labels, resolve_conditioning
from flowvar.audit.fit import CHECKPOINT_QUESTION, FACTORY_QUESTION, ConventionCheck
from flowvar.audit.loading import OWN_WEIGHTS, HeldOutOverlapWarning, LoadedModel, in_training_data, load_labelled
from flowvar.audit.sections import (
    ROW_ORDER_RULE,
    Section,
    alignment_in_doubt,
    alignment_question,
    copying,
    endpoints,
    generalisation_gap,
    gradient_signal,
    order_in_doubt,
    pair_order_check,
    pair_recovery,
    real_copy_baseline,
)
from flowvar.audit.spelling import python_spelled
from flowvar.audit.streams import AUDIT, audit_generators, audit_seeds
from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int, check_sigma
from flowvar.files import atomic_write_bytes, atomic_write_text, check_writable_folder, staged_folder
from flowvar.results import Claim, Result, format_value, judge, judgement_text
from flowvar.sampling import valid_methods

READING = {"confirmed": "memorising", "refuted": "generalising", "inconclusive": "inconclusive",
           "untestable": "not testable"}
TEST_NAMES = {"audit.pair_recovery": "pair recovery", "audit.copying": "copying",
              "audit.generalisation_gap": "generalisation gap", "audit.gradient_signal": "gradient signal"}


def untestable_why(claim: Claim) -> str:
    """For an untestable claim, the failed precondition, what was measured and its remedy, as " (… ; to make it
    testable: …)" for the console and summary.md line; "" for a testable one (its text says the numbers)."""
    pre = claim.precondition
    if claim.verdict != "untestable" or not pre:
        return ""
    measured = ", ".join(f"{k} = {format_value(v)}" for k, v in (pre.get("measured") or {}).items()
                         if not isinstance(v, dict))
    remedy = f"; to make it testable: {pre['remedy']}" if pre.get("remedy") else ""
    return f" (precondition not met: {pre['statement']}" + (f" [{measured}]" if measured else "") + f"{remedy})"


@dataclass
class AuditReport:
    """What :func:`audit` returns.

    ``verdict``: memorising | generalising | mixed | cannot tell; ``verdict_scope``: what the verdict stands on when
    that is an assumption the audit cannot check (:func:`flowvar.audit.rules.verdict_scope`: a "generalising" from the
    pair tests alone, which take --pairs as the model's training pairs), printed beside the word, else "";
    ``reasons``: one line per test with its reading and number; ``drivers``: {"memorising": [tests],
    "generalising": [tests]}; ``convention``: the convention check;
    ``sections``: the tests (:class:`~flowvar.audit.sections.Section`); ``result``: the same as a
    :class:`~flowvar.results.Result` (claims, metrics, notes) — what ``result.json`` holds.
    """

    verdict: str
    reasons: list[str]
    drivers: dict[str, list[str]]
    convention: ConventionCheck
    sections: list[Section]
    result: Result
    figures: dict[str, bytes] = field(default_factory=dict)
    verdict_scope: str = ""

    @property
    def verdict_line(self) -> str:
        """The verdict as printed: the word and its scope (:func:`flowvar.audit.rules.verdict_text`)."""
        return rules.verdict_text(self.verdict, self.verdict_scope)

    def to_dict(self) -> dict[str, Any]:
        return self.result.to_dict()

    def summary(self) -> str:
        """A few lines for the terminal: the verdict, the model audited (with a checkpoint of several sets of
        weights, the one used: :func:`flowvar.audit.loading.weights_text`), the convention used, each test's
        reading."""
        config = self.result.config
        lines = [f"verdict: {self.verdict_line}", f"model: {config.get('model', '?')}"]
        order = config.get("data_row_order")
        if order and config.get("pairs") != "not given":  # the order --pairs had to follow, said where it matters
            lines.append(f"data: {order['n_files']} files, rows {order['rule']}: {', '.join(order['first'])}, … "
                         f"{order['last']} (sha256 {order['sha256'][:12]}…; --pairs row i is the source of file i)")
        lines.append(f"convention: {self.convention.chosen}")
        lines += [f"  {r}" for r in self.reasons]
        return "\n".join(lines)

    def markdown(self) -> str:
        """``summary.md``: the verdict and its reasons, then the claims table of :meth:`Result.summary_markdown`."""
        scope = f" ({self.verdict_scope})" if self.verdict_scope else ""
        head = [f"# Audit verdict: **{self.verdict}**{scope}", ""] + [f"- {r}" for r in self.reasons] + [""]
        # the model in full here: the config table below cuts long values (the weights used would be lost)
        head += [f"Model: {self.result.config.get('model', '?')}", "",
                 f"Calling convention: `{self.convention.chosen}`", ""]
        for s in self.sections:
            head += [f"## {s.title}", "", s.text, ""] + [f"![{n}]({n})" for n in s.figures] + [""]
        return "\n".join(head) + "\n" + self.result.summary_markdown()

    def html(self) -> str:
        """``audit.html``: one self-contained page (figures embedded as base64 PNG)."""
        esc = html.escape
        colour = {"memorising": "#b00020", "generalising": "#1b7f3b", "mixed": "#b26a00",
                  "cannot tell": "#555"}[self.verdict]
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>flowvar audit</title><style>",
                 "body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.4}"
                 "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:90%}"
                 ".v{font-size:150%;font-weight:bold}img{max-width:100%}code{background:#f4f4f4}",
                 "</style></head><body>", "<h1>flowvar audit</h1>",
                 f"<p class='v'>Verdict: <span style='color:{colour}'>{esc(self.verdict)}</span>"
                 + (f" <small>({esc(self.verdict_scope)})</small>" if self.verdict_scope else "") + "</p><ul>"]
        parts += [f"<li>{esc(r)}</li>" for r in self.reasons]
        parts += ["</ul>", f"<p>Model: {esc(str(self.result.config.get('model', '')))}<br>Calling convention: "
                           f"<code>{esc(str(self.convention.chosen))}</code></p>",
                  "<h2>Tests</h2><table><tr><th>test</th><th>reading</th><th>rule</th></tr>"]
        for c in self.result.claims:
            parts.append(f"<tr><td><code>{esc(c.id)}</code></td><td><b>{esc(READING.get(c.verdict, c.verdict))}</b>"
                         f"</td><td>{esc(judgement_text(c))}</td></tr>")
        parts.append("</table>")
        for s in self.sections:
            parts += [f"<h2>{esc(s.title)}</h2>", f"<p>{esc(s.text)}</p>"]
            for name, data in s.figures.items():
                parts.append(f"<p><img alt='{esc(name)}' src='data:image/png;base64,"
                             f"{base64.b64encode(data).decode('ascii')}'></p>")
        parts += ["<h2>Calling convention check</h2><table><tr><th>convention</th><th>runs</th><th>loss ratio</th>"
                  "<th>movement</th><th>fits</th><th>error</th></tr>"]
        for cand in self.convention.candidates:
            parts.append(f"<tr><td>{esc(str(cand.convention))}</td><td>{cand.runs}</td><td>{cand.loss_ratio:.3g}</td>"
                         f"<td>{cand.movement:.3g}</td><td>{cand.fits}</td><td>{esc(cand.error)}</td></tr>")
        parts += ["</table>", "<h2>Settings</h2><pre>", esc(json.dumps(self.result.config, indent=1, default=str)),
                  "</pre></body></html>"]
        return "\n".join(parts)

    def write(self, out: str | Path) -> Path:
        """Write ``result.json``, ``summary.md``, ``audit.html`` and the PNGs to ``out`` (staged: a folder appears only
        complete, replacing any earlier audit there; any other folder is refused, :func:`check_audit_folder`).
        Returns the folder."""
        out = Path(out)
        check_audit_folder(out)
        with staged_folder(out) as stage:
            for name, data in self.figures.items():
                atomic_write_bytes(stage.path / name, data)
            atomic_write_text(stage.path / "result.json", json.dumps(self.to_dict(), indent=1))
            atomic_write_text(stage.path / "summary.md", self.markdown())
            atomic_write_text(stage.path / "audit.html", self.html())
        return out


def check_audit_folder(out: str | Path) -> None:
    """Refuse an ``--out`` the audit would damage, before any work: an existing file, the current folder or one of
    its parents, or a folder holding anything but an earlier audit (the audit replaces its folder as a whole). A
    one-line :class:`DataError` naming the folder and the fix."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the audit's report (a new or empty one)")
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise DataError(f"--out {out} is the current folder (or holds it): the audit replaces its folder as a "
                        f"whole; give a new folder, e.g. --out audit")
    if out.is_dir() and any(out.iterdir()):
        earlier = out / "result.json"
        try:
            is_audit = json.loads(earlier.read_text(encoding="utf-8")).get("experiment") == "audit"
        except (OSError, ValueError, AttributeError):
            is_audit = False
        if not is_audit:
            names = sorted(p.name for p in out.iterdir())
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise DataError(f"--out {out} already holds other files ({shown}); the audit replaces its folder as a "
                            f"whole, so give a new or empty folder (an earlier audit's folder is replaced)")
    # the audit replaces its folder as a whole: the folder holding it must be (creatable and) writable
    problem = check_writable_folder(resolved.parent)
    if problem:
        raise DataError(f"cannot write the audit into {out}: {problem}; choose another --out")


def _as_points(what: str, data: Tensor | str | Path | None, resolution: int | None, channels: int | None,
               value_range: tuple[float, float] | None = None) -> tuple[Tensor | None, Tensor | None, str]:
    if data is None:
        return None, None, "not given"
    return load_labelled(what, data, resolution=resolution, channels=channels, value_range=value_range)


_F = TypeVar("_F")


def _leaves_model_as_found(fn: _F) -> _F:
    """Decorate :func:`audit`: the caller's model comes back in the train/eval mode of each of its modules and on
    the device it had. The audit runs it in eval mode on ``device`` (both set in place by ``nn.Module``), and a
    model audited in the middle of training must not leave with its dropout off or on another device. A
    :class:`LoadedModel` is unwrapped here, before that snapshot, so its module comes back as found too."""
    @functools.wraps(fn)  # type: ignore[arg-type]
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(model, LoadedModel):  # load_model's result: its module, and its source unless one is given
            if not kwargs.get("model_source"):  # (the source tells a factory's own weights from a checkpoint's)
                kwargs["model_source"] = model.source
            model = model.module
        if not isinstance(model, nn.Module):
            return fn(model, *args, **kwargs)  # type: ignore[operator]
        modes = [(m, m.training) for m in model.modules()]
        # each tensor's device: a model spread over several devices (a pipeline) goes back the way it came
        homes = [(m, kind, name, t.device) for m in model.modules()
                 for kind, tensors in (("param", m._parameters), ("buffer", m._buffers))
                 for name, t in tensors.items() if t is not None]
        try:
            return fn(model, *args, **kwargs)  # type: ignore[operator]
        finally:
            for m, training in modes:  # the flag itself: a torch.export program refuses train()
                m.training = training
            if len({home for *_, home in homes}) == 1:  # the usual case: one call, as the caller's own .to() would be
                if any(t.device != homes[0][3] for t in (*model.parameters(), *model.buffers())):
                    model.to(homes[0][3])
            else:
                with torch.no_grad():
                    for m, kind, name, home in homes:
                        t = (m._parameters if kind == "param" else m._buffers).get(name)
                        if t is not None and t.device != home:
                            if kind == "param":
                                t.data = t.data.to(home)  # the Parameter object stays: optimisers keep it
                            else:
                                m._buffers[name] = t.to(home)
    return wrapper  # type: ignore[return-value]


@_leaves_model_as_found
@python_spelled({"cond-arg": "label_arg"})
def audit(model: nn.Module | LoadedModel, data: Tensor | str | Path, *, pairs: Tensor | str | Path | None = None,
          heldout: Tensor | str | Path | None = None, sigma: float = 0.0, convention: str | None = None,
          time: str | None = None, time_scale: float | None = None, samples: int = 500, steps: int = 100,
          coarse_steps: int = 10, method: str = "euler", grad_samples: int = 64, t_bins: int = 5, seed: int = 0,
          device: str = "auto", resolution: int | None = None, channels: int | None = None,
          value_range: tuple[float, float] | None = None, model_source: str = "", label_arg: str | None = None,
          labels: Tensor | str | Path | None = None,
          heldout_labels: Tensor | str | Path | None = None, conditions: Tensor | str | Path | None = None,
          heldout_conditions: Tensor | str | Path | None = None) -> AuditReport:
    """Audit a trained flow model for memorisation.

    Args:
        model: the network (any calling convention of :mod:`flowvar.audit.adapters`); audited in eval mode on
            ``device``, and handed back in the modes and on the device it came in. A
            :class:`~flowvar.audit.loading.LoadedModel` (what :func:`~flowvar.audit.loading.load_model` returns) is
            audited as its ``module``, with its ``source`` as ``model_source`` when none is given.
        data: the training targets, (N, *shape) tensor or a path/name for :func:`flowvar.audit.loading.load_points`.
        pairs: the training sources, row i paired with ``data`` row i (same shape); enables pair recovery and the
            gradient signature.
        heldout: data of the same distribution never trained on; enables the generalisation gap and the copy baseline.
        sigma: the interpolant noise σ the model was trained with (the gradient section also evaluates σ = 0).
        convention, time, time_scale: the calling convention (None: detect; see :class:`Convention`).
        samples: fresh samples to generate; steps / coarse_steps: the fine and coarse ODE grids of ``method``.
        grad_samples, t_bins: draws per t-bin and number of bins of the gradient section.
        seed: an int in [0, 2**63) seeding every random draw of the audit, one generator per part seeded with
            ``derive_seed(seed, "audit", part)`` (:mod:`flowvar.audit.streams`; never torch's seed-``seed`` stream,
            which a script's training data may come from); device: "auto" (CUDA when available), "cpu", "cuda", ...
        resolution, channels: for image folders (default: the first image's size and mode).
        value_range: (lo, hi), the pixel scale of ``data``'s and ``heldout``'s array-file images, mapped to [−1, 1]
            (16-bit or other integer images need it; :func:`flowvar.data.load_array`).
        model_source: how the model was built (recorded in the report).
        label_arg: how a conditional model takes its labels or conditions (:class:`~flowvar.audit.adapters.LabelArg`:
            ``"y"``, ``"class_labels"``, ``"encoder_hidden_states"``, ``"extra.label"``, ``"positional"``); None for
            an unconditional model.
        labels: the class labels (N,) of ``data`` (a tensor or a ``.npy`` file), when ``data`` does not carry them
            (digits, a folder of class subfolders and an ``.npz`` file with ``labels`` do); used with ``label_arg``.
        heldout_labels: the same for ``heldout`` (only the gradient test's held-out pairs use them).
        conditions: continuous conditions (N, *cond_shape) float of ``data`` (a tensor, a ``.npy`` file, or an
            ``.npz`` file's ``conditions``; an ``.npz`` ``data`` file may carry them), e.g. text embeddings; used
            with ``label_arg``, instead of ``labels``.
        heldout_conditions: the same for ``heldout``: the fresh samples of the copy and gap tests are then generated
            under held-out conditions, and the gradient test adds held-out pairs (docs/audit.md).

    Raises a :class:`~flowvar.errors.FlowvarError` (one line) for bad inputs, a convention that does not fit, or a
    model returning NaN. Writes nothing (see :meth:`AuditReport.write`).
    """
    start = time_now()
    streams = audit_seeds(seed)  # checks the seed before any work
    sigma = check_sigma(sigma)
    samples = check_positive_int("samples", samples)
    steps, coarse_steps = check_positive_int("steps", steps), check_positive_int("coarse_steps", coarse_steps)
    grad_samples, t_bins = check_positive_int("grad_samples", grad_samples), check_positive_int("t_bins", t_bins)
    if grad_samples < 2:
        raise ConfigError("grad_samples must be at least 2 (a variance needs two draws)")
    if method not in valid_methods():
        raise ConfigError(f"unknown ODE method {method!r}; choose one of {valid_methods()}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (or what flowvar.audit.load_model returns), got "
                          f"{type(model).__name__}")
    requested = Convention.of(convention, time, time_scale) if convention is not None else None
    if requested is None and time is not None:
        raise ConfigError("--time (time=) refines a --convention (convention=); pass it too, or neither to detect the "
                          "convention (--time-scale alone adds its scale to the detection's candidates)")
    # --time-scale alone: one more candidate scale for the detection, checked as a convention's scale is
    scales = (1.0, 1000.0) if requested is not None or time_scale is None else \
        (1.0, 1000.0, float(Convention("xt", "data_at_1", time_scale).time_scale))
    try:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"unknown device {device!r} ({error}); pass auto, cpu, cuda or cuda:N") from None
    if dev.type == "meta":
        raise ConfigError("the meta device holds no data, so nothing can be measured on it; pass auto, cpu or cuda")
    try:
        model = model.to(dev)
    except Exception as error:
        raise ConfigError(f"cannot move the model to device {dev}: {error}") from None
    with contextlib.suppress(NotImplementedError, RuntimeError):  # a torch.export program refuses .eval(): its
        model = model.eval()  # mode was fixed when it was exported
    dtype = model_dtype(model)

    row_files: list[str] = []  # a folder's files in row order: what --pairs must follow
    unreadable: list[str] = []  # a folder's files skipped as unreadable: rows --pairs may still hold
    train, carried, data_desc = load_labelled("--data", data, resolution=resolution, channels=channels,
                                              value_range=value_range, row_files=row_files, unreadable_files=unreadable)
    shape = tuple(train.shape[1:])
    x0_pairs, _, pairs_desc = _as_points("--pairs", pairs, resolution=None, channels=None)
    # --heldout is read in --data's geometry, its channels too: from its own first file, a colour folder whose first
    # file is grey was refused as "not the same kind" without naming --channels
    held, held_carried, held_desc = _as_points("--heldout", heldout, resolution=resolution or _side(shape),
                                               channels=channels or _channels(shape), value_range=value_range)
    la = LabelArg(label_arg) if label_arg is not None else None
    cc = resolve_conditioning(la, data, train.shape[0], carried, labels, heldout_labels, conditions,
                              heldout_conditions, heldout, held, held_carried)
    y, labels_from, held_y = cc.values, cc.source, cc.heldout
    if x0_pairs is not None and x0_pairs.shape != train.shape:
        from flowvar.data import unreadable_rows_note  # as loading does: flowvar.data (PIL) only when data are read

        raise ShapeError(f"--pairs has shape {tuple(x0_pairs.shape)} but --data has {tuple(train.shape)}; row i of "
                         f"--pairs is the source paired with data row i, so the shapes must match"
                         f"{unreadable_rows_note('--data', x0_pairs.shape[0], train.shape[0], unreadable, '--pairs')}")
    if held is not None and tuple(held.shape[1:]) != shape:
        raise ShapeError(f"--heldout items have shape {tuple(held.shape[1:])} but --data items {shape}; pass held-out "
                         f"data of the same kind")
    if train.shape[0] < 2:
        raise ShapeError(f"--data holds {train.shape[0]} item; the audit needs at least 2")
    overlap = 0
    if held is not None:
        keep = ~in_training_data(held, train)
        overlap = int((~keep).sum())
        if overlap == held.shape[0]:
            raise DataError(f"every one of the {overlap} --heldout items is also a --data item: held-out data must be "
                            f"items the model never trained on (was the training set passed twice?)")
        if overlap:  # a held-out item the model trained on would read as a real near-duplicate: leave it out
            warnings.warn(f"{overlap} of the {held.shape[0]} --heldout items are also --data items; they are left "
                          f"out of the held-out set (held-out data must be items the model never trained on)",
                          HeldOutOverlapWarning, stacklevel=2)
            held = held[keep]
            held_y = held_y[keep] if held_y is not None else None
    # the data-only measurements (nearest neighbours, copy shares, ρ, MMD) keep the data's own precision; the model
    # is called in its dtype (a bf16 model would otherwise round the real data its samples are compared with)
    train_exact, held_exact = train, held
    train = train.to(dtype)
    x0_pairs = x0_pairs.to(dtype) if x0_pairs is not None else None
    held = held.to(dtype) if held is not None else None
    if cc.continuous:  # conditions in the model's dtype: what it is called with, and exact in packed states
        y = y.to(dtype) if y is not None else None
        held_y = held_y.to(dtype) if held_y is not None else None

    # one stream per part, derived from the seed by name (flowvar.audit.streams): never torch's seed-k stream, which
    # users make their training data from, and a part that changes its draw count leaves the others' draws alone
    gens = audit_generators(seed)
    cond = y if la is not None else None  # the labels the model is called with (None: unconditional)
    trained = FACTORY_QUESTION if model_source.endswith(OWN_WEIGHTS) else CHECKPOINT_QUESTION
    check = check_conventions_with_labels(model, train, requested, gens["conventions"], y, la, labels_from,
                                           x0_pairs, scales, trained)
    field_ = AdaptedField(model, check.chosen, la)

    sections: list[Section] = []
    # how often real data count as copies of a training item: the copy test's baseline and pair recovery's reference
    # for endpoints that land on other training items (a nearest-neighbour search over the data, measured once)
    real = real_copy_baseline(train_exact, held_exact)
    order_check = None
    if x0_pairs is not None:
        pairs_section = pair_recovery(field_, x0_pairs, train_exact, method=method, steps=steps,
                                      coarse_steps=coarse_steps, labels=cond, generator=gens["pairs"],
                                      heldout=held_exact, real=real)
        # a class-folder --data has two natural row orders: pairs aligned with the other one read as generalising
        order_check = pair_order_check(field_, x0_pairs, train_exact, row_files, pairs_section.claim.evidence[
            "fine"]["accuracy_own"], method=method, steps=steps, labels=cond) if row_files else None
        if order_check is not None and order_check["suspect"]:
            warnings.warn(f"--pairs look ordered by file name across --data's subfolders: read so, "
                          f"{order_check['own_partner_name_order']:.0%} of the sources end nearest their own partner, "
                          f"against {order_check['own_partner_loader_order']:.0%} in --data's row order (relative "
                          f"path: subfolder first, then file name); pair recovery and the gradient test are not "
                          f"testable until --pairs are reordered to --data's row order", stacklevel=2)
            pairs_section = order_in_doubt(pairs_section, order_check)
        sections.append(pairs_section)
    gen = gens["samples"]
    noise = torch.randn((samples, *shape), generator=gen, dtype=dtype)
    # fresh samples of a conditional model: each under the label of a random training item (the training classes'
    # frequencies); drawn after the noise, so an unconditional audit's draws are unchanged. Continuous conditions
    # with held-out ones given: under the condition of a random held-out item instead (docs/audit.md: a condition
    # may determine its item, so reproducing training items under their own conditions is no evidence of copying)
    under = ""
    fresh_labels = None
    if cond is not None and cc.continuous and held_y is not None:
        fresh_labels = held_y[torch.randint(0, held_y.shape[0], (samples,), generator=gen)]
        under = "held-out conditions"
    elif cond is not None:
        fresh_labels = cond[torch.randint(0, train.shape[0], (samples,), generator=gen)]
        under = "training conditions" if cc.continuous else ""
    generated = endpoints(field_, noise, method, steps, fresh_labels)
    sections.append(copying(generated, train_exact, held_exact, conditioned_on=under, real=real))
    sections.append(generalisation_gap(generated, train_exact, held_exact, gens["gap"], conditioned_on=under))
    grad = gradient_signal(field_, train, x0_pairs, held, sigma=sigma, n_per_bin=grad_samples, n_bins=t_bins,
                           generator=gens["gradient"], labels=cond, heldout_labels=held_y if cond is not None else None)
    order_suspect = bool(order_check and order_check["suspect"])
    # endpoints of the training sources landing on other training items beyond real data: the pairs given are not
    # the ones trained (or the model copies), so λ on them says nothing about the model's own pairs
    question = alignment_question(pairs_section.claim.evidence) if x0_pairs is not None and not order_suspect else ""
    sections.append(order_in_doubt(grad, order_check) if order_suspect else
                    alignment_in_doubt(grad, pairs_section.claim.evidence) if question else grad)

    verdicts = {TEST_NAMES[s.claim.id]: s.claim.verdict for s in sections}
    overall, mem, genr = rules.overall_verdict(verdicts)
    scope = rules.verdict_scope(verdicts)  # said on the verdict line: an assumption the audit cannot check
    reasons = [f"{TEST_NAMES[s.claim.id]}: {READING[s.claim.verdict]}{untestable_why(s.claim)} — {s.text}"
               for s in sections]
    verdict_lines = rules.verdict_notes(verdicts, pairs_given=x0_pairs is not None)  # conflicts and caveats
    if question:  # it says why the pairs family is undecided, and what that leaves open
        verdict_lines = [question] + [n for n in verdict_lines if n != rules.PAIRS_UNDECIDED_CAVEAT]
    sources = source_check(train_exact, x0_pairs, check.chosen) if x0_pairs is not None else None
    if sources is not None and sources["swapped_suspect"]:
        verdict_lines.append(sources["note"])
    if check.note:  # the requested convention was audited while another fits better
        verdict_lines.append(check.note)
    reasons += verdict_lines
    claims = [s.claim for s in sections]
    claims.append(judge("audit.memorises", "The model memorises its training data (all tests combined)",
                        {"verdict": overall, "scope": scope, "tests": verdicts, "memorising": mem,
                         "generalising": genr, "notes": verdict_lines},
                        kind="finding",
                        verdict="confirmed" if overall == "memorising" else "refuted" if overall == "generalising"
                        else "inconclusive",
                        rule="families: pairs (pair recovery, gradient signal), samples (copying, generalisation "
                             "gap), the first of each direct (counts memorised items) and deciding its family when it "
                             "reads memorising; memorising if a family reads memorising, else mixed if a family's "
                             "averaging test reads memorising against its direct test's generalising, else "
                             "generalising if one reads generalising, else cannot tell (confirmed = memorising, "
                             "refuted = generalising; mixed and cannot tell are inconclusive)"))
    metrics: dict[str, Any] = {"verdict": overall, "verdict_scope": scope, "verdict_memorising_tests": mem,
                               "verdict_generalising_tests": genr, "convention": check.to_dict()}
    for s in sections:
        metrics.update(s.metrics)
    if sources is not None:
        metrics["source_check"] = {k: v for k, v in sources.items() if k != "note"}
    config = {"model": model_source or type(model).__name__, "data": data_desc, "pairs": pairs_desc,
              "data_row_order": row_order_record(row_files) if row_files else None,
              "heldout": held_desc, "heldout_overlap_removed": overlap, "n_train": train.shape[0],
              "shape": list(shape), "sigma": sigma,
              "convention": check.chosen.to_dict(), "convention_requested": requested is not None,
              "label_arg": str(la) if la is not None else None,
              "labels": cc.labels_text(la is not None), "conditions": cc.conditions_text(la is not None),
              "samples": samples, "method": method, "steps": steps, "coarse_steps": coarse_steps,
              "grad_samples": grad_samples, "t_bins": t_bins, "seed": seed,
              "seed_streams": streams, "device": str(dev),
              "thresholds": thresholds()}
    notes = ["Readings: confirmed = memorising, refuted = generalising (each claim says 'the model memorises').",
             "Thresholds and their reasoning: docs/audit.md.",
             f"Random draws: each part of the audit has its own torch.Generator, seeded with derive_seed(seed, "
             f"{AUDIT!r}, part) (flowvar.seeding; config.seed_streams), not torch's seed-{seed} stream."]
    if held is None:
        notes.append("No held-out data: the copy baseline is each training item against the others (leave one out) "
                     "and the generalisation gap is not measured.")
    if overlap:
        notes.append(f"{overlap} --heldout items were also --data items and were left out of the held-out set.")
    result = Result(experiment="audit", title="Memorisation audit of a trained flow model", config=config,
                    quick=False, claims=claims, metrics=metrics, notes=notes, runtime_s=time_now() - start,
                    device=str(dev))
    result.figures = [n for s in sections for n in s.figures]
    figures = {n: d for s in sections for n, d in s.figures.items()}
    return AuditReport(overall, reasons, {"memorising": mem, "generalising": genr}, check, sections, result, figures,
                       scope)


#: Entries per float64 chunk in :func:`moments` (32 MiB): the copy it makes is this, never the whole data set.
MOMENT_CHUNK = 1 << 22


def moments(x: Tensor, chunk: int = MOMENT_CHUNK) -> tuple[float, float, int]:
    """(mean, variance, count) of all n entries of ``x`` (N, *shape), in float64: mean = Σ x / n, variance =
    Σ (x − mean)² / n (population, two passes so that a large mean does not cancel the variance's digits). Summed
    over chunks of ``chunk`` entries converted to float64 one at a time on ``x``'s device (on the CPU where the
    device has no float64, MPS), never a float64 copy of the whole training set. n = 0: (nan, nan, 0)."""
    flat = x.detach().reshape(-1)
    n = flat.numel()
    if n == 0:
        return math.nan, math.nan, 0
    dev = torch.device("cpu") if flat.device.type == "mps" else flat.device

    def pieces() -> Iterator[Tensor]:
        for start in range(0, n, chunk):
            yield flat[start:start + chunk].to(device=dev, dtype=torch.float64)

    total = torch.zeros((), dtype=torch.float64, device=dev)
    for piece in pieces():
        total += piece.sum()
    mean = total / n
    squares = torch.zeros((), dtype=torch.float64, device=dev)
    for piece in pieces():
        squares += (piece - mean).square().sum()
    return float(mean), float(squares / n), n


def source_check(train: Tensor, sources: Tensor, convention: Convention) -> dict[str, Any]:
    """Were --data and --pairs swapped? Each set's entry mean and variance against standard normal noise
    (:func:`flowvar.audit.rules.looks_like_noise`), and the rule :func:`flowvar.audit.rules.swapped_files_suspect` on
    the chosen ``convention``: noise given as --data and the data as --pairs make a data-at-1 model fit as data-at-0
    (a time-reversed model), and the audit would say nothing. ``note``: the question the report asks when the rule
    holds (else "")."""
    d_mean, d_var, d_n = moments(train)
    p_mean, p_var, p_n = moments(sources)
    data_noise, pairs_noise = rules.looks_like_noise(d_mean, d_var, d_n), rules.looks_like_noise(p_mean, p_var, p_n)
    suspect = rules.swapped_files_suspect(data_noise, pairs_noise, convention.time, convention.call)
    note = (f"sources: were --data and --pairs swapped? The training sources (--pairs) do not look like N(0, I) "
            f"noise (entry mean {p_mean:.3g}, variance {p_var:.3g}) while the training data (--data) do (mean "
            f"{d_mean:.3g}, variance {d_var:.3g}), and the convention found, {convention}, puts the data at t = 0, "
            f"which outside diffusers-style models usually means a time-reversed reading. --data takes the items the "
            f"model generates, --pairs the noise each was paired with; if they were swapped, audit again with the "
            f"files the other way round") if suspect else ""
    return {"data_mean": d_mean, "data_variance": d_var, "pairs_mean": p_mean, "pairs_variance": p_var,
            "data_noise_like": data_noise, "pairs_noise_like": pairs_noise, "swapped_suspect": suspect,
            "rule": f"noise-like: |mean| ≤ {rules.SOURCE_MEAN_TOL} + {rules.SOURCE_Z}/√n and |variance − 1| ≤ "
                    f"{rules.SOURCE_VAR_TOL} + {rules.SOURCE_Z}·√(2/n) over the n entries; asked when the data are "
                    f"noise-like, the sources are not, and the convention is data_at_0 under a call other than "
                    f"diffusers", "note": note}


def row_order_record(files: list[str]) -> dict[str, Any]:
    """What result.json keeps of a folder's row order (kept small): the rule, the count, the first three relative
    paths and the last, and the SHA-256 of all of them joined by newlines (to compare with the order of --pairs)."""
    digest = hashlib.sha256("\n".join(files).encode("utf-8")).hexdigest()
    return {"rule": ROW_ORDER_RULE, "n_files": len(files), "first": files[:3], "last": files[-1], "sha256": digest}


def time_now() -> float:
    return time.perf_counter()


def _side(shape: tuple[int, ...]) -> int | None:
    return shape[-1] if len(shape) == 3 else None


def _channels(shape: tuple[int, ...]) -> int | None:
    """C of image items (C, H, W) when the loaders can convert to it (1 or 3), else None (vectors; other C)."""
    return shape[0] if len(shape) == 3 and shape[0] in (1, 3) else None


def thresholds() -> dict[str, float]:
    """Every threshold of the audit's rules and convention check, by name (recorded in result.json)."""
    from flowvar.audit import fit

    out = {n.lower(): float(getattr(rules, n)) for n in rules.__all__
           if n.isupper() and isinstance(getattr(rules, n), int | float)}
    out.update({"convention_q_fit": fit.Q_FIT, "convention_move_fit": fit.MOVE_FIT,
                "convention_q_margin": fit.Q_MARGIN, "convention_close_ratio": fit.CLOSE_RATIO})
    return out


__all__ = ["READING", "TEST_NAMES", "AuditReport", "audit", "check_audit_folder", "thresholds", "time_now"]
