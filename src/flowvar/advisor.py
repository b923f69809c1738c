"""The σ advisor: which interpolant noise σ stops CFM from memorising its training pairs without hurting
generalisation (PAPER.md §2 Prop 2 / Remark 2, §3.4–3.5, §4 "GMM" and "Images").

Prop 2: on N fixed pairs with the deterministic interpolant (σ = 0) a zero-loss field exists and ODE integration
from a training source returns its own partner, whatever the pairing. Remark 2: noise x_t = (1−t)x0 + t x1 + σz
removes that solution; how much σ it takes depends on σ√D against the spacing of the training pairs, and too much σ
blurs the learnt distribution. The advisor measures both sides as functions of σ and applies a stated rule.

This module holds the library part; the experiment ``flowvar run sigma_tradeoff``
(:mod:`flowvar.experiments.sigma_tradeoff`) trains one model per σ and calls it, and :func:`advise_sigma` is the
function behind ``flowvar advise-sigma --data PATH``:

* :func:`recommend_sigma` — the pure rule on a per-σ table (unit-tested on synthetic tables);
  :func:`fallback_sigma` — the flagged fallback when no σ satisfies it; :func:`rule_text` — the rule in words;
* :func:`evaluate_outputs` — the per-σ memorisation and generalisation metrics of one trained model;
* :func:`resolve_data` — ``"gmm"`` / ``"digits"`` / ``"lfw"`` / a folder / a ``.npy`` file → dataset settings;
  :func:`load_split` — the training / held-out split of a file-backed data set;
* :class:`Advice` and :func:`advise_sigma` — run the study on a data set and return the recommendation.

Scores the rule uses, per σ (means over seeds):

* memorisation M(σ) = (a − 1/N) / (1 − 1/N), a = pairing accuracy of Euler outputs from the N training sources (the
  fraction whose nearest training target is their own partner). M = 0 at chance, 1 for perfect pairing.
* generalisation G(σ) = unbiased MMD² (RBF, one median-heuristic bandwidth of the held-out data shared by every σ)
  between outputs from fresh sources and held-out real data; lower is better, 0 in expectation for a perfect model.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowvar.data import IMAGE_EXTENSIONS, ImageSet, celeba_folder, list_image_files, load_array, load_images
from flowvar.errors import ConfigError, DataError
from flowvar.metrics import (
    as_matrix,
    mmd2,
    nearest_neighbours,
    nn_distance_ratio,
    pairing_accuracy,
    partner_distances,
)

DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The σ grid of the study (0 is the deterministic baseline; 0.05 is the paper's noisy setting)."""

BUNDLED: tuple[str, ...] = ("gmm", "digits", "lfw")
"""Data names :func:`resolve_data` accepts without a path."""

GEN_KEY = "generalisation"
MEM_KEY = "memorisation"

# --------------------------------------------------------------------------------------------- the rule


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gen_tolerance(best: float, gen_margin: float, gen_floor: float = 0.0) -> float:
    """The generalisation slack τ = max(gen_margin · max(G*, 0), gen_floor) above the best score G*.

    The relative part is the stated margin; the absolute floor is the estimator's noise level (a relative margin of
    a best value near 0 would otherwise shrink to nothing and rank σ by estimator noise).
    """
    return max(gen_margin * max(best, 0.0), gen_floor)


def rule_text(gen_margin: float, mem_margin: float, gen_floor: float = 0.0, *, gen_name: str = "G",
              mem_name: str = "M") -> str:
    """The rule of :func:`recommend_sigma` (and its fallback) in one paragraph, with the margins filled in."""
    return (f"Let G* = min over σ of the generalisation score {gen_name}(σ) (lower is better) and "
            f"τ = max({gen_margin:g} · max(G*, 0), {gen_floor:.3g}) (relative margin {gen_margin:g}, absolute noise "
            f"floor {gen_floor:.3g}). Among the σ with {gen_name}(σ) ≤ G* + τ, recommend the smallest σ whose "
            f"memorisation score {mem_name}(σ) = (pairing accuracy − 1/N)/(1 − 1/N) is ≤ {mem_margin:g} (within "
            f"{mem_margin:g} of chance on the 0 = chance … 1 = perfect-pairing scale). Rows with a non-finite score "
            f"are left out. If no σ qualifies there is no recommendation by the rule; the flagged fallback is the σ "
            f"with the smallest {mem_name} among those with {gen_name}(σ) ≤ G* + τ (ties: the smaller σ).")


def _clean(table: Sequence[Mapping[str, Any]], gen_key: str, mem_key: str) -> tuple[list[Mapping[str, Any]], list[Any]]:
    """Rows sorted by σ with finite scores, and the σ of the rows left out. Raises ConfigError on a bad table."""
    if not isinstance(table, Sequence) or isinstance(table, str | bytes):
        raise ConfigError(f"the per-σ table must be a list of rows (mappings), got {type(table).__name__}")
    rows, dropped, seen = [], [], set()
    for k, row in enumerate(table):
        if not isinstance(row, Mapping) or "sigma" not in row or gen_key not in row or mem_key not in row:
            raise ConfigError(f"row {k} of the per-σ table must be a mapping with keys 'sigma', {gen_key!r} and "
                              f"{mem_key!r}, got {row!r}")
        sigma = row["sigma"]
        if not _finite(sigma) or sigma < 0:
            raise ConfigError(f"row {k} of the per-σ table has sigma={sigma!r}; σ must be a finite number >= 0")
        if sigma in seen:
            raise ConfigError(f"the per-σ table lists σ = {sigma} twice; average the rows of one σ first")
        seen.add(sigma)
        if _finite(row[gen_key]) and _finite(row[mem_key]):
            rows.append(row)
        else:
            dropped.append(sigma)
    rows.sort(key=lambda r: float(r["sigma"]))
    return rows, sorted(dropped)


def _check_margins(gen_margin: float, mem_margin: float, gen_floor: float) -> None:
    if not _finite(gen_margin) or gen_margin < 0:
        raise ConfigError(f"gen_margin must be a finite number >= 0 (a relative margin, e.g. 0.25), got {gen_margin!r}")
    if not _finite(mem_margin) or not 0 <= mem_margin < 1:
        raise ConfigError(f"mem_margin must be in [0, 1) (distance from chance on the 0 … 1 memorisation scale, e.g. "
                          f"0.05), got {mem_margin!r}")
    if not _finite(gen_floor) or gen_floor < 0:
        raise ConfigError(f"gen_floor must be a finite number >= 0, got {gen_floor!r}")


def _qualified(rows: list[Mapping[str, Any]], gen_key: str, gen_margin: float,
               gen_floor: float) -> tuple[list[Mapping[str, Any]], float, float]:
    best = min(float(r[gen_key]) for r in rows)
    tol = gen_tolerance(best, gen_margin, gen_floor)
    return [r for r in rows if float(r[gen_key]) <= best + tol], best, tol


def recommend_sigma(table: Sequence[Mapping[str, Any]], gen_margin: float, mem_margin: float, *,
                    gen_floor: float = 0.0, gen_key: str = GEN_KEY, mem_key: str = MEM_KEY
                    ) -> tuple[float | None, str]:
    """The advisor's rule on a per-σ table; returns (σ or None, the reason in words).

    ``table``: rows (any order) with ``"sigma"``, a generalisation score ``table[i][gen_key]`` (lower is better) and a
    memorisation score ``table[i][mem_key]`` (0 = chance, 1 = perfect pairing). With G* = min_σ G(σ) and
    τ = max(gen_margin · max(G*, 0), gen_floor), the σ that *generalise* are those with G(σ) ≤ G* + τ; the answer
    is the smallest of them with M(σ) ≤ ``mem_margin``. None when no σ qualifies (see :func:`fallback_sigma`) or no
    row has finite scores. Rows with a non-finite score are left out (and named in the reason).
    """
    _check_margins(gen_margin, mem_margin, gen_floor)
    rows, dropped = _clean(table, gen_key, mem_key)
    note = f" (left out for non-finite scores: σ = {', '.join(f'{s:g}' for s in dropped)})" if dropped else ""
    if not rows:
        return None, f"no σ has finite scores{note}; nothing to recommend"
    good, best, tol = _qualified(rows, gen_key, gen_margin, gen_floor)
    gen_list = ", ".join(f"{float(r['sigma']):g}" for r in good)
    for r in good:
        if float(r[mem_key]) <= mem_margin:
            sigma = float(r["sigma"])
            return sigma, (f"σ = {sigma:g} is the smallest σ with memorisation {float(r[mem_key]):.3g} ≤ "
                           f"{mem_margin:g} among the σ whose generalisation is within τ = {tol:.3g} of the best "
                           f"{best:.3g} (σ ∈ {{{gen_list}}}){note}")
    low = min(good, key=lambda r: float(r[mem_key]))
    last = rows[-1]
    hint = (f"; even the largest σ of the grid (σ = {float(last['sigma']):g}) has memorisation "
            f"{float(last[mem_key]):.3g} > {mem_margin:g}: memorisation may stop at a larger σ (extend sigmas) if "
            f"generalisation allows" if float(last[mem_key]) > mem_margin else "")
    return None, (f"no σ satisfies both margins: the σ whose generalisation is within τ = {tol:.3g} of the best "
                  f"{best:.3g} (σ ∈ {{{gen_list}}}) all have memorisation > {mem_margin:g} (lowest "
                  f"{float(low[mem_key]):.3g} at σ = {float(low['sigma']):g}){hint}{note}")


def fallback_sigma(table: Sequence[Mapping[str, Any]], gen_margin: float, *, gen_floor: float = 0.0,
                   gen_key: str = GEN_KEY, mem_key: str = MEM_KEY) -> tuple[float | None, str]:
    """The flagged fallback when :func:`recommend_sigma` finds nothing: among the σ whose generalisation is within
    τ of the best (as in the rule), the one with the smallest memorisation score (ties: the smaller σ).

    Returns (σ or None when no row has finite scores, the reason)."""
    _check_margins(gen_margin, 0.0, gen_floor)
    rows, _ = _clean(table, gen_key, mem_key)
    if not rows:
        return None, "no σ has finite scores; no fallback either"
    good, best, tol = _qualified(rows, gen_key, gen_margin, gen_floor)
    low = min(good, key=lambda r: (float(r[mem_key]), float(r["sigma"])))
    sigma = float(low["sigma"])
    return sigma, (f"FALLBACK (the rule found no σ): σ = {sigma:g} has the lowest memorisation "
                   f"{float(low[mem_key]):.3g} among the σ whose generalisation is within τ = {tol:.3g} of the best "
                   f"{best:.3g}")


# --------------------------------------------------------------------------------------------- per-σ evaluation


def memorisation_score(accuracy: float, n: int) -> float:
    """(a − 1/N) / (1 − 1/N): pairing accuracy ``accuracy`` on N pairs mapped to 0 = chance, 1 = perfect."""
    if n < 2:
        raise DataError(f"the memorisation score needs N >= 2 training pairs, got {n}")
    chance = 1.0 / n
    return (accuracy - chance) / (1.0 - chance)


@dataclass(frozen=True)
class Reference:
    """What every σ is measured against (built once per data set and seed).

    * ``x1_train``: (N, *shape) the training targets (row i the partner of training source i);
    * ``heldout``: (H, *shape) real data never trained on;
    * ``bandwidth``: the RBF bandwidth (median heuristic of ``heldout``) shared by every σ;
    * ``nn_train``, ``nn_heldout``: (m, *shape) equally large subsets (m = min(N, H)) of the training targets and of
      the held-out data, for the nearest-neighbour ratio (NN distances depend on the reference set's size);
    * ``copy_threshold``: the nearest/second-nearest distance ratio below which an output counts as a copy.
    """

    x1_train: Tensor
    heldout: Tensor
    bandwidth: float
    nn_train: Tensor
    nn_heldout: Tensor
    copy_threshold: float

    @classmethod
    def build(cls, x1_train: Tensor, heldout: Tensor, copy_threshold: float, generator: torch.Generator
              ) -> Reference:
        from flowvar.metrics import median_heuristic

        m = min(x1_train.shape[0], heldout.shape[0])
        tr = torch.randperm(x1_train.shape[0], generator=generator)[:m]
        ho = torch.randperm(heldout.shape[0], generator=generator)[:m]
        return cls(x1_train, heldout, median_heuristic(heldout), x1_train[tr], heldout[ho], copy_threshold)


def nn_train_over_heldout(x: Tensor, train: Tensor, heldout: Tensor) -> float:
    """median_i d(x_i, train) / median_i d(x_i, heldout), d = distance to the nearest row; ``train`` and ``heldout``
    (m, *shape) of equal size. ≈ 1 when the outputs are as close to unseen data as to the training data, → 0 when
    they copy training points."""
    xm = as_matrix("outputs", x)
    d_tr = nearest_neighbours(xm, as_matrix("train", train), 1)[0][:, 0]
    d_ho = nearest_neighbours(xm, as_matrix("heldout", heldout), 1)[0][:, 0]
    den = float(d_ho.median())
    return float(d_tr.median()) / den if den > 0 else math.nan


def evaluate_outputs(x_train_out: Tensor, x_fresh_out: Tensor, ref: Reference) -> dict[str, float]:
    """The per-σ metrics of one trained model (flat, sweep-friendly keys).

    ``x_train_out``: (N, *shape) Euler outputs from the N training sources (row i from source i);
    ``x_fresh_out``: (n, *shape) outputs from fresh sources. Memorisation: ``pairing_accuracy`` (nearest training
    target is the own partner), ``memorisation`` (:func:`memorisation_score`), ``l2_partner.mean`` / ``.median``
    (‖x̂_i − x1_i‖), ``fresh_copy_fraction`` (share of fresh outputs with NN1/NN2 distance ratio to the training
    targets < ``copy_threshold``), ``fresh_nn_ratio.median``, ``nn_train_over_heldout`` (:func:`nn_train_over_heldout`
    of the fresh outputs). Generalisation: ``gen_mmd2.unbiased`` (= ``generalisation``, the rule's score) and
    ``gen_mmd2.biased`` between the fresh outputs and the held-out data at ``ref.bandwidth``. Raises DataError if an
    output is non-finite (a diverged model).
    """
    n = ref.x1_train.shape[0]
    acc = pairing_accuracy(x_train_out, ref.x1_train).accuracy
    dist = partner_distances(x_train_out, {"partner": ref.x1_train})["partner"]
    ratio = nn_distance_ratio(x_fresh_out, ref.x1_train, ref.copy_threshold)
    out = {"pairing_accuracy": acc, MEM_KEY: memorisation_score(acc, n), "l2_partner.mean": dist.mean,
           "l2_partner.median": dist.median, "fresh_copy_fraction": ratio.fraction_below,
           "fresh_nn_ratio.median": float(ratio.ratio.median()),
           "nn_train_over_heldout": nn_train_over_heldout(x_fresh_out, ref.nn_train, ref.nn_heldout)}
    for est in ("unbiased", "biased"):
        out[f"gen_mmd2.{est}"] = mmd2(x_fresh_out, ref.heldout, bandwidth=ref.bandwidth, estimator=est).mmd2
    out[GEN_KEY] = out["gen_mmd2.unbiased"]
    return out


def null_generalisation(pairs: Sequence[tuple[Tensor, Tensor]], bandwidth: float) -> dict[str, Any]:
    """The generalisation score of real data against real data: unbiased MMD² of each (a, b) pair of independent real
    samples at ``bandwidth``; returns the values, their RMS (≈ the estimator's sd, since the mean is 0 under the null)
    and ``floor`` = 2 × RMS, the rule's absolute noise floor."""
    values = [mmd2(a, b, bandwidth=bandwidth, estimator="unbiased").mmd2 for a, b in pairs]
    rms = float(np.sqrt(np.mean(np.square(values)))) if values else 0.0
    return {"values": values, "rms": rms, "floor": 2.0 * rms}


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSpec:
    """Where a study's data come from: ``dataset`` (gmm | digits | lfw | celeba | folder | npy) and ``data_dir``
    (the folder or the .npy file; None for the bundled sets)."""

    dataset: str
    data_dir: str | None


def resolve_data(data: str | Path, dataset: str | None = None) -> DataSpec:
    """Infer the dataset kind from ``data``: the names ``"gmm"``, ``"digits"``, ``"lfw"``; an existing folder →
    ``"folder"`` (``"celeba"`` when ``dataset="celeba"``); an existing ``.npy`` file → ``"npy"``.

    Raises DataError (one line naming the path and the fix) for a missing path, an unsupported file type or an empty
    folder, ConfigError for an unknown ``dataset``.
    """
    text = str(data).strip()
    if dataset is not None and dataset not in ("gmm", "digits", "lfw", "celeba", "folder", "npy"):
        raise ConfigError(f"dataset must be one of gmm, digits, lfw, celeba, folder, npy, got {dataset!r}")
    if text.lower() in BUNDLED and not Path(text).exists():
        return DataSpec(text.lower(), None)
    if not text:
        raise DataError("no data given; pass a folder of images, a .npy file, or one of gmm, digits, lfw")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a folder of images, a .npy file (numpy.save), or "
                        f"one of the bundled names gmm, digits, lfw")
    if path.is_dir():
        if dataset == "celeba":
            celeba_folder(path)
            return DataSpec("celeba", str(path))
        if not list_image_files(path):
            raise DataError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); pass a folder of "
                            f"images or a .npy array")
        return DataSpec("folder", str(path))
    if path.suffix.lower() != ".npy":
        raise DataError(f"unsupported data file {path} ({path.suffix or 'no extension'}); save arrays with "
                        f"numpy.save as .npy ((N, d) vectors or (N, [C,] H, W) images) or pass a folder of images")
    return DataSpec("npy", str(path))


def count_items(dataset: str, data_dir: str | None) -> int:
    """How many items a file-backed source holds, without decoding them (digits 1797, lfw 100)."""
    if dataset == "digits":
        return 1797
    if dataset == "lfw":
        from flowvar.data import LFW_FACES

        return LFW_FACES
    if data_dir is None:
        raise ConfigError(f"dataset={dataset!r} needs data_dir (the folder or the .npy file)")
    if dataset == "folder":
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"image folder {folder} does not exist (or is not a folder); set data_dir to a folder "
                            f"of images")
        return len(list_image_files(folder))
    if dataset == "celeba":
        return len(list(celeba_folder(data_dir).glob("*.jpg")))
    file = Path(data_dir).expanduser()
    if not file.is_file():
        raise DataError(f"array file {file} does not exist; set data_dir to a .npy file (numpy.save)")
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{file} is not a readable .npy array ({error}); save it with numpy.save") from None
    if arr.ndim not in (2, 3, 4):
        raise DataError(f"{file} holds an array of shape {arr.shape}; expected (N, d) vectors or (N, H, W) / "
                        f"(N, C, H, W) images")
    return int(arr.shape[0])


def npy_is_vectors(data_dir: str) -> bool:
    """Whether a ``.npy`` file holds (N, d) vectors (read from its header)."""
    return np.load(Path(data_dir).expanduser(), mmap_mode="r", allow_pickle=False).ndim == 2


def load_split(dataset: str, data_dir: str | None, n_train: int, n_heldout: int, *, resolution: int,
               channels: int | None, seed: int, min_heldout: int) -> tuple[ImageSet, Tensor, Tensor]:
    """Load ``n_train`` + up to ``n_heldout`` items of a file-backed source and split them.

    Returns (the loaded set, the training items (n_train, *shape), the held-out items (h, *shape)) with
    ``min_heldout`` <= h <= ``n_heldout``; which items go where is a permutation seeded with ``seed``.
    (N, d) ``.npy`` arrays stay vectors; images are (N, C, R, R) in [−1, 1]. Raises DataError naming the count and
    the fix when the source holds fewer than ``n_train + min_heldout`` items.
    """
    available = count_items(dataset, data_dir)
    if available < n_train + min_heldout:
        fit = available - min_heldout
        fix = (f"lower n_train to at most {fit} (--set n_train={fit}) or provide more data" if fit >= 4 else
               f"provide at least {4 + min_heldout} items (or lower min_heldout, at least 8)")
        raise DataError(f"{data_dir or dataset} holds {available} item(s), but the advisor needs n_train={n_train} "
                        f"training items plus at least {min_heldout} held out; {fix}")
    want = min(available, n_train + n_heldout)
    if dataset == "npy" and data_dir is not None and npy_is_vectors(data_dir):
        items = load_array(data_dir, n=want, seed=seed)
    else:
        items = load_images(dataset, n=want, resolution=resolution, seed=seed, data_dir=data_dir, channels=channels)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed + 1))
    x = items.images
    return items, x[order[:n_train]].contiguous(), x[order[n_train:]].contiguous()


# --------------------------------------------------------------------------------------------- the advice


@dataclass
class Advice:
    """What :func:`advise_sigma` returns (and ``flowvar advise-sigma`` prints).

    * ``recommended_sigma``: the σ to use — by the rule, or by the flagged fallback when ``fallback`` is True; None
      only when no σ had finite scores;
    * ``rule_satisfied``: a σ met both margins; ``fallback``: the σ comes from :func:`fallback_sigma`;
    * ``reason``: why this σ (numbers included); ``rule``: the rule in words (:func:`rule_text`);
    * ``table``: one flat dict per σ (``sigma``, ``memorisation``, ``generalisation``, ``pairing_accuracy``,
      ``gen_mmd2.unbiased``, ``gen_mmd2.biased``, ``fresh_copy_fraction``, ``l2_partner.mean``, …: means over seeds);
    * ``margins``: ``gen_margin`` (relative), ``mem_margin``, ``gen_floor`` (noise floor), ``gen_best`` (G*),
      ``gen_tolerance`` (τ), ``chance`` (1/N);
    * ``data``: a description of the data; ``result_dir``: the folder holding result.json and the figures (None when
      ``out`` was None: the run went to a temporary folder that is gone).
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

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], result_dir: Path | None = None,
                     claims: Mapping[str, str] | None = None) -> Advice:
        """Rebuild from a ``sigma_tradeoff`` result's ``metrics`` (``result.json``)."""
        adv = metrics["advice"]
        return cls(recommended_sigma=metrics["recommended_sigma"], rule_satisfied=bool(adv["rule_satisfied"]),
                   fallback=bool(adv["fallback"]), reason=adv["reason"], rule=adv["rule"],
                   table=list(metrics["per_sigma"]), margins=dict(adv["margins"]), data=adv["data"],
                   result_dir=result_dir, claims=dict(claims or {}))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["result_dir"] = str(self.result_dir) if self.result_dir is not None else None
        return out

    def summary(self) -> str:
        """A few lines for a terminal: the answer, the reason, the table, the rule."""
        if self.recommended_sigma is None:
            head = "no σ can be recommended"
        else:
            head = f"recommended σ = {self.recommended_sigma:g}" + (" (FALLBACK: no σ met both margins)"
                                                                    if self.fallback else "")
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
        if self.result_dir is not None:
            lines.append(f"result: {self.result_dir / 'result.json'} (figures beside it)")
        return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    """A number formatted with ``spec``; anything else (NaN stored as "nan" in result.json, None) as text."""
    return format(value, spec) if _finite(value) else str(value)


def advise_sigma(data: str | Path, *, sigmas: Sequence[float] | None = None, quick: bool = False,
                 out: Path | str | None = None, seed: int = 0, dataset: str | None = None,
                 progress: bool = False, **knobs: Any) -> Advice:
    """Recommend an interpolant noise σ for a data set: the library call behind ``flowvar advise-sigma --data PATH``.

    Runs the ``sigma_tradeoff`` experiment (one CFM(σ) model per σ on N fixed random (Gaussian source, data target)
    pairs, same initialisation and batch stream across σ; see :mod:`flowvar.experiments.sigma_tradeoff`) and
    applies :func:`recommend_sigma`.

    Args:
        data: ``"gmm"``, ``"digits"``, ``"lfw"``, a folder of images, or a ``.npy`` file ((N, d) vectors → MLP;
            (N, H, W) / (N, C, H, W) images → UNet), see :func:`resolve_data`.
        sigmas: the σ grid (must contain 0); None → the experiment's YAML value (:data:`DEFAULT_SIGMAS`).
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
    from flowvar.experiments.base import build_config, get_experiment, run_experiment

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

    def claims_of(result: Any) -> dict[str, str]:
        return {c.id: c.verdict for c in result.claims}

    if out is None:
        with tempfile.TemporaryDirectory(prefix="flowvar-advise-") as tmp:
            result = run_experiment("sigma_tradeoff", tmp, quick=quick, config=config, progress=progress)
            return Advice.from_metrics(result.metrics, None, claims_of(result))
    result = run_experiment("sigma_tradeoff", out, quick=quick, config=config, progress=progress)
    return Advice.from_metrics(result.metrics, Path(out) / "sigma_tradeoff", claims_of(result))


__all__ = ["DEFAULT_SIGMAS", "Advice", "DataSpec", "Reference", "advise_sigma", "count_items", "evaluate_outputs",
           "fallback_sigma", "gen_tolerance", "load_split", "memorisation_score", "nn_train_over_heldout",
           "null_generalisation", "recommend_sigma", "resolve_data", "rule_text"]
