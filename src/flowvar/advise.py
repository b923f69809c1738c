"""``flowvar advise-sigma``: run the σ study on a data set and return the advisor's recommendation.

The driver behind the CLI command (and its Python equivalent): :func:`advise_sigma` resolves the data
(:func:`flowvar.data.resolve_data`), runs the ``sigma_tradeoff`` experiment (:mod:`flowvar.experiments.sigma_tradeoff`:
one CFM(σ) model per σ, memorisation and generalisation scores from :func:`flowvar.metrics.evaluate_outputs`, the
rule of :mod:`flowvar.advisor`) and returns an :class:`Advice`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowvar.advisor import finite_number
from flowvar.data import resolve_data
from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.metrics import GEN_KEY, MEM_KEY


@dataclass
class Advice:
    """What :func:`advise_sigma` returns (and ``flowvar advise-sigma`` prints).

    * ``recommended_sigma``: the σ to use — by the rule, or by the flagged fallback when ``fallback`` is True (a σ
      that lowers memorisation by ≥ ``reduce_margin`` within the generalisation margin; printed as a fallback, never
      as "recommended"); None when no σ had finite scores or no σ qualifies for either;
    * ``rule_satisfied``: a σ met both margins; ``fallback``: the σ comes from
      :func:`flowvar.advisor.fallback_sigma`;
    * ``reason``: why this σ (numbers included); ``rule``: the rule in words
      (:func:`flowvar.advisor.rule_text`);
    * ``table``: one flat dict per σ (``sigma``, ``memorisation``, ``generalisation``, ``pairing_accuracy``,
      ``gen_mmd2.unbiased``, ``gen_mmd2.biased``, ``fresh_copy_fraction``, ``l2_partner.mean``, …: means over seeds);
    * ``margins``: ``gen_margin`` (relative), ``mem_margin``, ``gen_floor`` (noise floor), ``gen_best`` (G*),
      ``gen_tolerance`` (τ), ``chance`` (1/N);
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
                   diverged=[n for n in notes if n.startswith("σ = ") and " diverged (" in n])

    @property
    def all_diverged(self) -> bool:
        """Whether no σ has finite scores (every training diverged, or its outputs were non-finite): there is no
        answer, and ``flowvar advise-sigma`` exits with status 1."""
        return not any(finite_number(row.get(GEN_KEY)) and finite_number(row.get(MEM_KEY)) for row in self.table)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["result_dir"] = str(self.result_dir) if self.result_dir is not None else None
        return out

    def summary(self) -> str:
        """A few lines for a terminal: the answer, the reason, the table, the rule."""
        if self.recommended_sigma is None:
            head = "no σ can be recommended"
        elif self.fallback:  # not a recommendation: no σ met both margins; this one only cuts memorisation most
            head = (f"no σ met both margins; fallback σ = {self.recommended_sigma:g} (lowers memorisation within the "
                    f"generalisation margin, see the reason; not a recommendation by the rule)")
        else:
            head = f"recommended σ = {self.recommended_sigma:g}"
        lines = [head, f"data: {self.data}", f"reason: {self.reason}", "",
                 f"{'sigma':>7}  {'pairing acc':>11}  {'memorisation':>12}  {'gen MMD² (unb.)':>15}  "
                 f"{'copy frac.':>10}"]
        for row in self.table:
            lines.append(f"{_fmt(row['sigma'], 'g'):>7}  {_fmt(row['pairing_accuracy'], '.3f'):>11}  "
                         f"{_fmt(row[MEM_KEY], '.3f'):>12}  {_fmt(row[GEN_KEY], '.3g'):>15}  "
                         f"{_fmt(row['fresh_copy_fraction'], '.3f'):>10}")
        m = self.margins
        lines += ["", f"margins: generalisation within τ = {_fmt(m['gen_tolerance'], '.3g')} of the best "
                      f"{_fmt(m['gen_best'], '.3g')} (relative {_fmt(m['gen_margin'], 'g')}, noise floor "
                      f"{_fmt(m['gen_floor'], '.3g')}); memorisation ≤ {_fmt(m['mem_margin'], 'g')} (chance = "
                      f"{_fmt(m['chance'], '.3g')} pairing accuracy)", f"rule: {self.rule}"]
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
                 progress: bool = False, **knobs: Any) -> Advice:
    """Recommend an interpolant noise σ for a data set: the library call behind ``flowvar advise-sigma --data PATH``.

    Runs the ``sigma_tradeoff`` experiment (one CFM(σ) model per σ on N fixed random (Gaussian source, data target)
    pairs, same initialisation and batch stream across σ; see :mod:`flowvar.experiments.sigma_tradeoff`) and
    applies :func:`flowvar.advisor.recommend_sigma`.

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
        progress: show training progress bars.
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
        raise ConfigError(f"unknown option(s) {unknown} for advise-sigma; valid keys: {', '.join(sorted(names))}")
    for reserved in ("dataset", "data_dir", "seed", "sigmas"):
        if reserved in knobs:
            raise ConfigError(f"pass {reserved} as its own argument (data=, dataset=, seed=, sigmas=), not as a knob")
    overrides: dict[str, Any] = {"dataset": resolved.dataset, "data_dir": resolved.data_dir, **knobs}
    if sigmas is not None:
        overrides["sigmas"] = list(sigmas)
    config = build_config(spec, quick=quick, seed=seed, overrides=overrides)

    def advice_of(result: Any, result_dir: Path | None) -> Advice:
        return Advice.from_metrics(result.metrics, result_dir, {c.id: c.verdict for c in result.claims},
                                   result.notes)

    if out is None:
        with tempfile.TemporaryDirectory(prefix="flowvar-advise-") as tmp:
            return advice_of(run_experiment("sigma_tradeoff", tmp, quick=quick, config=config, progress=progress),
                             None)
    return advice_of(run_experiment("sigma_tradeoff", out, quick=quick, config=config, progress=progress),
                     Path(out) / "sigma_tradeoff")


__all__ = ["Advice", "advise_sigma"]
