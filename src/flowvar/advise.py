"""``flowvar advise-sigma``: run the σ study on a data set and return the advisor's recommendation.

The driver behind the CLI command (and its Python equivalent): :func:`advise_sigma` resolves the data
(:func:`flowvar.data.resolve_data`), runs the ``sigma_tradeoff`` experiment (:mod:`flowvar.experiments.sigma_tradeoff`:
one CFM(σ) model per σ, memorisation and generalisation scores from :func:`flowvar.metrics.evaluate_outputs`, the
rule of :mod:`flowvar.advisor`) and returns an :class:`Advice`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowvar.advisor import fallback_headline, finite_number, recommended_headline, undecided_headline
from flowvar.data import resolve_data
from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.sigma_tradeoff import GMM_FIELDS
from flowvar.metrics import GEN_KEY, MEM_KEY

GMM_ONLY_KEYS: tuple[str, ...] = GMM_FIELDS
"""Knobs of the synthetic GMM target only (the study's :data:`~flowvar.experiments.sigma_tradeoff.GMM_FIELDS`): with
data from a file or folder they would be silently ignored."""

PROGRESS_LOGGER = "flowvar.experiments.sigma_tradeoff"
"""The logger on which the σ study reports each finished training
(:func:`flowvar.experiments.sigma_tradeoff.training_line`), printed by :func:`advise_sigma` when its bars are off."""

OWN_ARGUMENT_KEYS: tuple[str, ...] = ("dataset", "data_dir", "seed", "sigmas")
"""Config keys :func:`advise_sigma` takes as its own arguments (``--data``, ``--dataset``, ``--seed``, ``--sigmas``),
refused as knobs (``--set``)."""


@dataclass
class Advice:
    """What :func:`advise_sigma` returns (and ``flowvar advise-sigma`` prints).

    * ``recommended_sigma``: the σ to use — the σ recommended by the rule (``outcome`` "recommended"), or the
      flagged fallback when ``fallback`` is True (outcome "none": a σ whose memorisation drop below σ = 0 is
      confirmed over seeds and whose generalisation is within τ of σ = 0's; printed as a fallback, never as
      "recommended"); None otherwise;
    * ``outcome``: "recommended" | "undecided" (no σ passes both margins with confidence but some σ is not excluded:
      add seeds; ``candidates`` names them, ``seeds_needed`` estimates the seeds) | "none" (every σ fails a margin
      with confidence; ``trade_off`` names the smallest σ that cuts memorisation and its generalisation cost) |
      "untestable" (σ = 0 did not memorise its pairs: no answer, the reason says whether to train longer or use
      fewer pairs) | "no_data" (no σ has finite scores) — :func:`flowvar.advisor.advise_over_seeds`;
    * ``headline``: the answer in one line (what happened); ``setting``: what it holds for (N fixed pairs, model,
      training length, seeds); ``data_note``: a note when the data hold far more items than the N trained on;
    * ``rule_satisfied``: outcome is "recommended"; ``fallback``: ``recommended_sigma`` is the flagged fallback;
    * ``reason``: why (numbers included); ``rule``: the rule in words (:func:`flowvar.advisor.seed_rule_text`);
    * ``table``: one flat dict per σ (``sigma``, ``memorisation``, ``generalisation``, ``pairing_accuracy``,
      ``gen_mmd2.unbiased``, ``gen_mmd2.biased``, ``fresh_copy_fraction``, ``l2_partner.mean``, …: means over seeds);
    * ``margins``: ``gen_margin`` (relative), ``mem_margin``, ``gen_floor`` (noise floor), ``gen_reference`` (mean
      G(0)), ``gen_tolerance`` (τ), ``chance`` (1/N), ``alpha``, ``reduce_margin``;
    * ``judgements``: per σ, M with its bounds, G(σ) − G(0) with its bounds, and the verdict (passes / fails /
      undecided);
    * ``noise_checks``: per σ > 0 (keyed ``f"{σ:g}"``), the exact CFM(σ) minimiser check as the advisor read it
      (:meth:`flowvar.results.Precondition.to_dict`: ``holds`` — the minimiser loses ≥ reduce_margin of M, the noise
      can act at that σ — and ``measured["seed_mean"]``, the M it loses); None when no check was recorded (a result
      from before the checks);
    * ``data``: a description of the data; ``result_dir``: the folder holding result.json and the figures (None when
      ``out`` was None: the run went to a temporary folder that is gone);
    * ``diverged``: the run's notes on trainings that diverged (σ, seed and the training error), which
      :meth:`summary` prints, since without ``out`` the result.json holding them is gone.
    """

    recommended_sigma: float | None
    rule_satisfied: bool
    fallback: bool
    reason: str
    rule: str
    table: list[dict[str, Any]]
    margins: dict[str, float]
    data: str
    result_dir: Path | None = None
    claims: dict[str, str] = field(default_factory=dict)
    diverged: list[str] = field(default_factory=list)
    outcome: str = ""
    candidates: list[float] = field(default_factory=list)
    seeds_needed: int | None = None
    trade_off: dict[str, Any] | None = None
    judgements: list[dict[str, Any]] = field(default_factory=list)
    headline: str = ""
    setting: str = ""
    data_note: str | None = None
    noise_checks: dict[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.outcome:  # built by hand or from a result.json of the former point rule
            self.outcome = ("recommended" if self.rule_satisfied else "none" if self.recommended_sigma is not None
                            or any(finite_number(r.get(GEN_KEY)) for r in self.table) else "no_data")

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], result_dir: Path | None = None,
                     claims: Mapping[str, str] | None = None, notes: Sequence[str] = ()) -> Advice:
        """Rebuild from a ``sigma_tradeoff`` result's ``metrics`` (``result.json``) and ``notes`` (those on diverged
        trainings are kept)."""
        adv = metrics["advice"]
        return cls(recommended_sigma=metrics["recommended_sigma"], rule_satisfied=bool(adv["rule_satisfied"]),
                   fallback=bool(adv["fallback"]), reason=adv["reason"], rule=adv["rule"],
                   table=list(metrics["per_sigma"]), margins=dict(adv["margins"]), data=adv["data"],
                   result_dir=result_dir, claims=dict(claims or {}),
                   diverged=[n for n in notes if n.startswith("σ = ") and " diverged (" in n],
                   outcome=adv.get("outcome", ""), candidates=list(adv.get("candidates", [])),
                   seeds_needed=adv.get("seeds_needed"), trade_off=adv.get("trade_off"),
                   judgements=list(adv.get("judgements", [])), headline=adv.get("headline", ""),
                   setting=adv.get("setting", ""), data_note=adv.get("data_note"),
                   noise_checks=adv.get("noise_checks"))

    @property
    def all_diverged(self) -> bool:
        """Whether no σ has finite scores (every training diverged, or its outputs were non-finite): there is no
        answer, and ``flowvar advise-sigma`` exits with status 1."""
        return not any(finite_number(row.get(GEN_KEY)) and finite_number(row.get(MEM_KEY)) for row in self.table)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["result_dir"] = str(self.result_dir) if self.result_dir is not None else None
        return out

    def noise_check_text(self, sigma: float) -> str:
        """σ's exact-minimiser check in words, for its per-σ line: "exact minimiser: can act (loses 0.31 ≥ 0.1 of
        M)", "exact minimiser: keeps the pairs (loses 0.00529 < 0.1 of M)", or "exact minimiser: not checked" (no
        check recorded for σ). The check and its threshold are the advisor's
        (:func:`flowvar.experiments.sigma_tradeoff.noise_can_act_precondition`); this only reads them."""
        check = (self.noise_checks or {}).get(f"{sigma:g}")
        if not isinstance(check, Mapping) or "holds" not in check:
            return "exact minimiser: not checked"
        measured = check.get("measured") or {}
        lost, need = measured.get("seed_mean"), measured.get("min_effect", self.margins.get("reduce_margin"))
        numbers = (f" (loses {_fmt(lost, '.3g')} {'≥' if check['holds'] else '<'} {_fmt(need, 'g')} of M)"
                   if finite_number(lost) and finite_number(need) else "")
        return f"exact minimiser: {'can act' if check['holds'] else 'keeps the pairs'}{numbers}"

    def summary(self) -> str:
        """A few lines for a terminal: the answer and the setting it holds for, the reason, the claims' verdicts, the
        table, the rule."""
        if self.headline:  # the advisor's own line (results from before it was recorded: built below)
            head = self.headline
        elif self.outcome == "recommended" and self.recommended_sigma is not None:
            head = recommended_headline(self.recommended_sigma)
        elif self.outcome == "undecided":
            head = undecided_headline(self.candidates, self.seeds_needed)
        elif self.fallback and self.recommended_sigma is not None:
            head = fallback_headline(self.recommended_sigma)
        elif self.outcome == "none":
            head = ("no σ satisfies both margins (every σ fails one with confidence) and no σ cuts memorisation "
                    "within the generalisation margin; the reason names the trade-off")
        else:
            head = "no σ can be recommended"
        if self.setting:
            head += f" — for {self.setting}"
        lines = [head, f"data: {self.data}"]
        if self.data_note:
            lines.append(f"note: {self.data_note}")
        lines.append(f"reason: {self.reason}")
        if self.claims:
            lines.append("claims: " + "; ".join(f"{cid.split('.', 1)[-1]}: {verdict}"
                                                for cid, verdict in self.claims.items()))
        lines += ["",
                 f"{'sigma':>7}  {'pairing acc':>11}  {'memorisation':>12}  {'gen MMD² (unb.)':>15}  "
                 f"{'copy frac.':>10}"]
        for row in self.table:
            lines.append(f"{_fmt(row['sigma'], 'g'):>7}  {_fmt(row['pairing_accuracy'], '.3f'):>11}  "
                         f"{_fmt(row[MEM_KEY], '.3f'):>12}  {_fmt(row[GEN_KEY], '.3g'):>15}  "
                         f"{_fmt(row['fresh_copy_fraction'], '.3f'):>10}")
        m = self.margins
        reference = m.get("gen_reference", m.get("gen_best"))  # gen_best: a result.json of the former point rule
        lines += ["", f"margins: generalisation G(σ) − G(0) < τ = {_fmt(m['gen_tolerance'], '.3g')} (mean G(0) = "
                      f"{_fmt(reference, '.3g')}, relative {_fmt(m['gen_margin'], 'g')}, noise floor "
                      f"{_fmt(m['gen_floor'], '.3g')}); memorisation ≤ {_fmt(m['mem_margin'], 'g')} (chance = "
                      f"{_fmt(m['chance'], '.3g')} pairing accuracy)"]
        if self.judgements:
            lines += ["per σ against σ = 0 over seeds (one-sided bounds):"]
            for j in self.judgements:
                gen = ("reference" if j["sigma"] == 0 else
                       f"G − G(0) = {_fmt(j['gen_difference'], '+.3g')} [{_fmt(j['gen_lower'], '+.3g')}, "
                       f"{_fmt(j['gen_upper'], '+.3g')}] {j['gen_side']}")
                check = "" if j["sigma"] == 0 else f"; {self.noise_check_text(j['sigma'])}"
                lines.append(f"  σ = {_fmt(j['sigma'], 'g')}: M = {_fmt(j['mem_mean'], '.3g')} "
                             f"[{_fmt(j['mem_lower'], '.3g')}, {_fmt(j['mem_upper'], '.3g')}] {j['mem_side']}; {gen} "
                             f"→ {j['verdict']}{check}")
        lines.append(f"rule: {self.rule}")
        if self.diverged:
            lines += ["", f"diverged ({len(self.diverged)} training(s)):"] + [f"  {n}" for n in self.diverged]
        if self.all_diverged:
            lines += ["", "every σ diverged, so there is no advice: when your data are far from the scale of the "
                          "N(0, I) source (values far beyond ±10, or a spread far from 1), standardise them first "
                          "(x - x.mean(0)) / x.std(0) and rerun (σ is then in units of the data's std); otherwise "
                          "lower the learning rate (--set lr=...)"]
        if self.result_dir is not None:
            lines.append(f"result: {self.result_dir / 'result.json'} (figures beside it)")
        return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    """A number formatted with ``spec``; anything else (NaN stored as "nan" in result.json, None) as text."""
    return format(value, spec) if finite_number(value) else str(value)


def advise_sigma(data: str | Path, *, sigmas: Sequence[float] | None = None, quick: bool = False,
                 out: Path | str | None = None, seed: int = 0, dataset: str | None = None,
                 progress: bool = False, cache: Path | str | None = None, **knobs: Any) -> Advice:
    """Recommend an interpolant noise σ for a data set: the library call behind ``flowvar advise-sigma --data PATH``.

    Runs the ``sigma_tradeoff`` experiment (one CFM(σ) model per σ on N fixed random (Gaussian source, data target)
    pairs, the same initialisation and batch seed across σ; see :mod:`flowvar.experiments.sigma_tradeoff`) and
    applies :func:`flowvar.advisor.advise_over_seeds` (each σ against σ = 0 over the training seeds).

    Args:
        data: ``"gmm"``, ``"digits"``, ``"lfw"``, a folder of images, or a ``.npy`` file ((N, d) vectors → MLP;
            (N, H, W) / (N, C, H, W) images → UNet), see :func:`flowvar.data.resolve_data`.
        sigmas: the σ grid (must contain 0); None → the experiment's YAML value
            (:data:`flowvar.advisor.DEFAULT_SIGMAS`).
        quick: the ``--quick`` settings (minutes on a CPU) instead of the full ones.
        out: folder for the run (``out/sigma_tradeoff/{result.json, summary.md, *.png}``); None → a temporary
            folder that is deleted (only the returned :class:`Advice` remains).
        seed: base random seed.
        dataset: force the kind (``"celeba"`` for a CelebA folder; otherwise inferred from ``data``).
        progress: show training progress bars; False → one plain line per finished training on stderr instead
            (``[ 5/21] σ = 0.05, seed 1: trained and scored in 12.3 s``, :func:`plain_progress`), as ``flowvar
            reproduce``/``sweep`` print one per experiment/point when quiet, so a piped or CI run is not silent for
            minutes.
        cache: a result cache folder (:class:`flowvar.cache.Cache`, shared with ``flowvar run/reproduce --cache``):
            the trainings checkpoint into it, so an interrupted run resumes where it stopped when called again with
            the same arguments, and a finished one is reused (its key covers the data file's contents); None → each
            call trains from scratch and an interrupt keeps nothing.
        **knobs: any other ``sigma_tradeoff`` config key as a Python value, e.g. ``n_train=500``, ``steps=5000``,
            ``gen_margin=0.25``, ``mem_margin=0.05``, ``resolution=16``, ``model="mlp"`` (``flowvar config
            sigma_tradeoff`` lists them). The CLI passes its ``--set key=value`` strings here unchanged (strings are
            parsed as YAML, like ``flowvar run --set``).

    Returns:
        :class:`Advice` (recommended σ, rule text, per-σ table, margins); ``Advice.summary()`` for a terminal.

    Raises:
        DataError: a missing path, an unsupported file, too few samples, unreadable data.
        ConfigError: an unknown knob or an invalid value (the message names the key and the fix).

    CLI wiring (``flowvar advise-sigma --data PATH [--quick] [--out DIR] [--seed S] [--sigmas 0,0.05,0.1]
    [--set key=value ...]``)::

        advice = advise_sigma(data, sigmas=sigmas, quick=quick, out=out, seed=seed, **parse_overrides(sets))
        typer.echo(advice.summary())
    """
    spec = get_experiment("sigma_tradeoff")
    resolved = resolve_data(data, dataset)
    names = set(spec.field_names())
    unknown = sorted(set(knobs) - names)
    if unknown:
        # the keys a knob may set: not those given as arguments, nor the GMM's own with data from a file or folder
        settable = names - set(OWN_ARGUMENT_KEYS) - (set(GMM_ONLY_KEYS) if resolved.dataset != "gmm" else set())
        raise ConfigError(f"unknown option(s) {unknown} for advise-sigma; valid keys: {', '.join(sorted(settable))} "
                          f"(the data, seed and σ grid are arguments: --data, --seed, --sigmas)")
    for reserved in OWN_ARGUMENT_KEYS:
        if reserved in knobs:
            raise ConfigError(f"pass {reserved} as its own argument (data=, dataset=, seed=, sigmas=), not as a knob")
    gmm_only = sorted(set(knobs) & set(GMM_ONLY_KEYS))
    if gmm_only and resolved.dataset != "gmm":
        raise ConfigError(f"{', '.join(gmm_only)} only shape{'s' if len(gmm_only) == 1 else ''} the synthetic GMM "
                          f"(--data gmm); with data from a file or folder ({resolved.dataset}) "
                          f"{'it is' if len(gmm_only) == 1 else 'they are'} ignored — drop "
                          f"{' '.join(f'--set {k}=…' for k in gmm_only)}")
    overrides: dict[str, Any] = {"dataset": resolved.dataset, "data_dir": resolved.data_dir, **knobs}
    if sigmas is not None:
        overrides["sigmas"] = list(sigmas)
    config = build_config(spec, quick=quick, seed=seed, overrides=overrides)

    def advice_of(result: Any, result_dir: Path | None) -> Advice:
        return Advice.from_metrics(result.metrics, result_dir, {c.id: c.verdict for c in result.claims},
                                   result.notes)

    previous = Path(out) / "sigma_tradeoff" / "result.json" if out is not None else None
    if previous is not None and previous.is_file():  # said before the run, so it can still be interrupted
        warnings.warn(f"{previous.parent} already holds a result; this run replaces it (pass another --out to keep "
                      f"both)", stacklevel=2)

    def run(folder: Path | str) -> Any:
        if cache is None:
            return run_experiment("sigma_tradeoff", folder, quick=quick, config=config, progress=progress)
        from flowvar.cache import Cache, run_cached

        # the same config, rebuilt by run_cached from the same inputs (its cache key is of that config)
        return run_cached("sigma_tradeoff", folder, Cache(cache), quick=quick, seed=seed, overrides=overrides,
                          progress=progress).result

    with contextlib.nullcontext() if progress else plain_progress():
        if out is None:
            with tempfile.TemporaryDirectory(prefix="flowvar-advise-") as tmp:
                return advice_of(run(tmp), None)
        return advice_of(run(out), Path(out) / "sigma_tradeoff")


@contextlib.contextmanager
def plain_progress(stream: Any = None) -> Iterator[None]:
    """For the block, print the σ study's per-training lines (INFO on :data:`PROGRESS_LOGGER`) to ``stream``
    (default: ``sys.stderr`` as it is now), one plain line each, without a timestamp; the logger's level is lowered
    to INFO for the block if it is higher, and restored after. Under torchrun only rank 0 prints (every rank trains
    the same σ; the process group starts inside the run, so the rank is read per line). The lines still reach the
    ``flowvar`` loggers' other handlers (a reproduce.log)."""
    from flowvar.distributed import is_main_process
    from flowvar.logs import attached_handler

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda _record: is_main_process())
    with attached_handler(handler, PROGRESS_LOGGER):
        yield


__all__ = ["GMM_ONLY_KEYS", "OWN_ARGUMENT_KEYS", "PROGRESS_LOGGER", "Advice", "advise_sigma", "plain_progress"]
