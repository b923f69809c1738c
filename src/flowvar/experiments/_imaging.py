"""Shared pieces of the image experiments (Tables 2 and 3; PAPER.md §3.5, §3.6, §4 "Images").

* :class:`ImageExperimentConfig` — the fields both tables share (data, UNet, training, sampler, device);
* :func:`prepare` — validate the config, the data and the UNet geometry *before* any OT or training, so that a
  wrong ``data_dir``, an ``n`` larger than the data set or a resolution the UNet cannot take fails at once with
  the message of :mod:`flowvar.data` / :mod:`flowvar.models.unet` (problem and fix), a size the readable files cannot
  meet in the experiment's config key; which images are loaded and what a result records of them (checking the
  source, channels, seeded and nested subsets, metric ``data``) is :mod:`flowvar.experiments._image_data`;
* :func:`compute_settings` — device (``auto`` → CUDA when available) and CPU threads for the run;
* :func:`train_field`, :func:`ema_copy`, :func:`integrate_images` — UNet training through the shared trainer
  (EMA, warmup, clipping, checkpoints, data-parallel under torchrun) and Euler sampling from given sources;
* :func:`loss_floor`, :func:`evaluated_loss`, :func:`fitted_precondition` — did the evaluated network fit its pairs:
  the loss of the weights whose outputs are measured (the EMA weights when EMA is on: :func:`ema_copy`) in excess of
  the loss floor L*(σ) of the exact CFM(σ) minimiser (which no training can remove), against the zero field's loss;
  the raw weights' final training loss is recorded beside it, never judged (the EMA, without bias correction, can
  still hold a large share of the initialisation when the raw weights have fitted);
* :func:`seed_means`, :func:`closer_over_seeds`, :func:`memorised_in_every_seed` — the verdicts' statistics: the
  training seed is the unit of replication, so per-image distances are summarised per seed (their mean) and compared
  over seeds with :func:`flowvar.stats.paired_over_seeds`, never pooled across seeds;
* :func:`grid_figure` — a labelled image grid (rows: source, outputs, partners).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from flowvar import distributed
from flowvar.couplings import Coupling, FixedPairs
from flowvar.data import ImageSet, to_uint8
from flowvar.errors import ConfigError, DataError
from flowvar.experiments._exact_minimiser import coupling_loss_draws, exact_minimiser_loss
from flowvar.experiments._image_data import load_subset
from flowvar.experiments.base import THREADS_ENV, RunContext, default_threads
from flowvar.files import check_writable_folder
from flowvar.metrics import line_spacing
from flowvar.models.unet import UNetField
from flowvar.results import Precondition
from flowvar.sampling import integrate_chunked
from flowvar.stats import SeedComparison, paired_over_seeds
from flowvar.train import TrainResult, train_cfm


@dataclass
class ImageExperimentConfig:
    """Fields shared by the image experiments (full-scale values: the offline stand-in at CPU-feasible size).

    Data: ``dataset`` one of digits | lfw | celeba | folder | npy, ``data_dir`` (celeba/folder/npy),
    ``resolution`` (px), ``channels`` (None: the source's own — a folder's first readable image's mode, grey 1 and
    colour 3 (:func:`~flowvar.experiments._image_data.source_channels`); digits and lfw 1, celeba 3, an array its C),
    ``data_seed`` (which images are chosen).
    UNet: ``base_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_resolutions``, ``dropout``.
    Training (Adam, per run): ``steps``, ``batch_size`` (global batch), ``lr``, ``warmup_steps``, ``grad_clip``,
    ``ema_decay`` (None: evaluate the raw weights), ``checkpoint_dir`` (None: the run's cache work folder when it
    runs through the cache, else no checkpoints; a folder: one sub-folder per training run there), resumed when
    present; ``checkpoint_every`` (0: ten checkpoints per full-scale training, only the last in quick mode).
    Sampling: ``euler_steps``, ``eval_batch`` (sources integrated at once). Verdicts: ``alpha`` (one-sided level of
    the paired comparisons over seeds).
    Compute: ``device`` auto | cpu | cuda, ``threads`` (0: the chosen count — ``--threads``, which the command line
    and the runner's workers pass on as $FLOWVAR_THREADS, or $FLOWVAR_THREADS itself —, else 1 for images <= 16 px
    on CPU — small convolutions run fastest single-threaded on a loaded machine — else torch's default).
    """

    seed: int
    n_seeds: int
    dataset: str
    data_dir: str | None
    resolution: int
    channels: int | None
    data_seed: int
    sigmas: tuple[float, ...]
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    grad_clip: float | None
    ema_decay: float | None
    checkpoint_dir: str | None
    checkpoint_every: int
    euler_steps: int
    eval_batch: int
    grid_columns: int
    alpha: float
    device: str
    threads: int

    def validate(self) -> None:
        if self.n_seeds < 1:
            raise ConfigError(f"n_seeds must be >= 1, got {self.n_seeds}")
        if len(self.sigmas) != 2 or self.sigmas[0] != 0.0 or not self.sigmas[1] > 0:
            raise ConfigError(f"sigmas must be (0, σ) with σ > 0, the paper's two columns CFM(σ=0) and CFM(σ); got "
                              f"{list(self.sigmas)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: automatic), got {self.threads}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"alpha must lie in (0, 0.5) (the one-sided level of the paired comparisons over seeds, "
                              f"e.g. 0.05), got {self.alpha}")
        for name in ("euler_steps", "eval_batch", "grid_columns", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_dir:
            check_checkpoint_dir(self.checkpoint_dir)


# --------------------------------------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU; ``"cuda"`` without a GPU is
    a :class:`ConfigError`."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible to PyTorch; use --set device=cpu (or auto), or "
                          "install a CUDA build of torch on a GPU machine")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", distributed.world().local_rank)
    return torch.device("cpu")


def resolve_threads(threads: int, resolution: int, device: torch.device) -> int:
    """The CPU thread count: ``threads`` if > 0, else $FLOWVAR_THREADS (where ``--threads`` and the runner put a
    chosen count), else 1 for CPU runs at <= 16 px, else torch's current setting."""
    if threads > 0:
        return threads
    if os.environ.get(THREADS_ENV):  # parsed and bounded in one place
        return default_threads()
    if device.type == "cpu" and resolution <= 16:
        return 1
    return torch.get_num_threads()


@contextlib.contextmanager
def compute_settings(config: ImageExperimentConfig, ctx: RunContext) -> Iterator[torch.device]:
    """Join the torchrun process group (if launched so), pick the device and thread count, record them in
    ``ctx`` (metric ``device``, a note, and ``ctx.device`` where the context has that field), and restore the
    previous thread count afterwards."""
    world = distributed.init_from_env()
    device = resolve_device(config.device)
    before = torch.get_num_threads()
    threads = resolve_threads(config.threads, config.resolution, device)
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    ctx.metric("device", str(device))
    ctx.metric("compute", {"device": str(device), "device_name": name, "threads": threads,
                           "world_size": world.size})
    if hasattr(ctx, "device"):
        ctx.device = f"{device} ({name})" if device.type == "cuda" else "cpu"  # type: ignore[attr-defined]
    ctx.note(f"Ran on {device} ({name}) with {threads} CPU thread(s) and {world.size} process(es).")
    try:
        yield device
    finally:
        torch.set_num_threads(before)


def check_checkpoint_dir(checkpoint_dir: str) -> None:
    """ConfigError unless ``checkpoint_dir`` is a writable folder or can be created as one (its nearest existing
    ancestor is a writable folder). Nothing is created here: validation has no side effects; the trainer creates
    the folder at its first checkpoint, which this check lets fail no more at the end of the first training."""
    path = Path(checkpoint_dir).expanduser()
    problem = check_writable_folder(path)
    if problem and problem.is_file:
        raise ConfigError(f"checkpoint_dir {path} cannot be a folder: {problem}; choose another checkpoint_dir")
    if problem:
        raise ConfigError(f"cannot write to checkpoint_dir {path}: {problem}; make it writable or choose another "
                          f"checkpoint_dir")


def prepare(config: ImageExperimentConfig, largest_n: int, size_key: str) -> ImageSet:
    """Load the ``largest_n`` images and build the UNet once, so that data and geometry errors surface before
    any OT or training. Returns the loaded set (:func:`~flowvar.experiments._image_data.load_subset`);
    :func:`~flowvar.experiments._image_data.nested_subset` takes smaller sizes from it. ``size_key``: the config key
    that asked for ``largest_n`` (table2's ``ns``, table3's ``n``), named when too few files are readable."""
    images = load_subset(config, largest_n, size_key)
    build_unet(config, images)
    return images


def build_unet(config: ImageExperimentConfig, images: ImageSet) -> UNetField:
    """The UNet for ``images`` ((N, C, R, R)); a resolution it cannot take raises the UNet's ConfigError."""
    return UNetField(images.resolution, images.channels, base_channels=config.base_channels,
                     channel_mult=config.channel_mult, num_res_blocks=config.num_res_blocks,
                     attention_resolutions=config.attention_resolutions, dropout=config.dropout)


# --------------------------------------------------------------------------------------------- training


def train_field(model: nn.Module, sigma: float, coupling: Coupling, config: ImageExperimentConfig, seed: int,
                run_name: str, ctx: RunContext) -> TrainResult:
    """Train ``model`` (already on its device) with CFM(σ) (constant noise, target x1 − x0) on ``coupling``.

    Checkpoints go to ``config.checkpoint_dir/run_name`` when a checkpoint folder is configured, else to the run's
    :meth:`~flowvar.experiments.base.RunContext.checkpoint_dir` (its cache work folder, when it has one); either way
    an interrupted run resumes from them. ``config.checkpoint_every`` (0: the run's default cadence) sets how often.
    """
    if config.checkpoint_dir:
        directory: Path | None = Path(config.checkpoint_dir) / run_name
    else:
        directory = ctx.checkpoint_dir(run_name)
    every = config.checkpoint_every or ctx.checkpoint_every(config.steps)
    return train_cfm(model, coupling, sigma, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                     seed=seed, progress=ctx.progress, checkpoint_dir=directory, warmup_steps=config.warmup_steps,
                     grad_clip=config.grad_clip, ema_decay=config.ema_decay,
                     checkpoint_every=every if directory else 0)


def ema_copy(model: nn.Module, result: TrainResult) -> nn.Module:
    """A copy of ``model`` in eval mode holding the EMA weights (the raw weights when EMA is off)."""
    out = copy.deepcopy(model)
    if result.ema_state is not None:
        out.load_state_dict(result.ema_state)
    return out.eval()


def integrate_images(model: nn.Module, x0: Tensor, config: ImageExperimentConfig, device: torch.device) -> Tensor:
    """Euler (``euler_steps``) from each source row of ``x0`` (N, C, R, R) → endpoints on the CPU, float32.

    Sources are moved to ``device`` in chunks of ``eval_batch``; under torchrun each rank integrates its share
    of the rows and all ranks receive the full result.
    """
    def solve(x: Tensor) -> Tensor:
        return integrate_chunked(model, x, "euler", config.euler_steps, rows=config.eval_batch, device=device)

    return distributed.map_sharded(solve, x0).detach().cpu().float()


def loss_fit(result: TrainResult, reference: float) -> dict[str, float]:
    """The training-loss summary: mean of the first and the last 5% of steps, and the last 5% relative to
    ``reference`` (the loss of the zero field, E‖x1 − x0‖², on the training pairs)."""
    k = max(1, len(result.losses) // 20)
    first, last = float(np.mean(result.losses[:k])), float(np.mean(result.losses[-k:]))
    return {"loss_first_5pct": first, "loss_last_5pct": last, "loss_last_relative_to_zero_field": last / reference,
            "runtime_s": result.runtime_s}


# --------------------------------------------------------------------------------------------- statistics


def seed_means(values: Sequence[Tensor]) -> list[float]:
    """One summary per training seed: the mean of that seed's per-image values (``values``: one tensor per seed)."""
    return [float(v.double().mean()) for v in values]


def closer_over_seeds(far: Sequence[float], near: Sequence[float], reference: float, *, min_effect: float,
                      alpha: float, labels: tuple[str, str]) -> SeedComparison:
    """The rule of every "lands closer to X than to Y" claim of the image experiments.

    ``far``, ``near``: per-seed mean distances (:func:`seed_means`) whose difference far − near the claim says is
    positive; ``reference``: the absolute scale, the distance between the two candidate answers (by the triangle
    inequality |far − near| ≤ reference image by image); ``min_effect``: the fraction of it the difference must
    reach. :func:`flowvar.stats.paired_over_seeds` with ``min_effect × reference``: confirmed / refuted /
    inconclusive (always inconclusive with one seed).
    """
    return paired_over_seeds(far, near, min_effect=min_effect * reference, scale=reference,
                             scale_name="the distance between the two candidate partners", alpha=alpha, labels=labels)


def memorised_in_every_seed(far: Sequence[float], near: Sequence[float], reference: Sequence[float],
                            min_effect: float) -> tuple[bool, list[float]]:
    """A precondition measured per seed, without a test: in every seed, far − near ≥ ``min_effect`` × that seed's
    reference distance. Returns (holds, the per-seed margins relative to the reference)."""
    rel = [(f - n) / r if r > 0 else math.nan for f, n, r in zip(far, near, reference, strict=True)]
    return bool(rel) and all(math.isfinite(x) and x >= min_effect for x in rel), rel


FIT_LEVEL = 0.1
"""The image experiments' "the network fitted its pairs" level: training removed ≥ 1 − FIT_LEVEL (90 %) of the loss
it can remove — the zero field's loss E‖x1 − x0‖² on the same training pairs less the loss floor L*(σ)
(:func:`loss_floor`): in units of the zero field's loss, r − f ≤ FIT_LEVEL × (1 − f) for the loss r of the evaluated
weights (:func:`evaluated_loss`: the EMA weights when EMA is on) and the floor f (:func:`fitted_precondition`). The
zero field (output = source, no transport) scores r = 1 and never passes; the published quick and digits runs' raw
weights lie at 0.004–0.094 (floors 0). Below it an output's distances describe a trained network; above it they may
describe no transport."""

FLOOR_SAMPLES = 4096
"""Path draws of the Monte-Carlo loss floor L*(σ) per seed (:func:`loss_floor`): its standard error is recorded and
taken off the floor (:data:`FLOOR_SE_MARGIN`) before the fit rule uses it."""

FLOOR_ROWS = 512
"""Path draws per chunk of :func:`loss_floor` (a constant, so its numbers do not depend on the run's ``eval_batch``)."""

FLOOR_SE_MARGIN = 2.0
"""The fit rule subtracts max(0, floor − FLOOR_SE_MARGIN × its standard error), a lower bound of L*(σ): a Monte-Carlo
floor that came out high would otherwise let an unfitted network pass."""

EVALUATED_SAMPLES = 4096
"""Path draws of :func:`evaluated_loss` per trained network (as many as the floor's)."""

EVALUATED_ROWS = 256
"""Path draws per chunk of :func:`evaluated_loss` (a constant, so its numbers do not depend on ``eval_batch``; small,
as each chunk is one UNet forward pass)."""


FIT_RULE_TEXT = (f"training removed ≥ {1 - FIT_LEVEL:.0%} of the loss it can remove in every seed: the loss r of the "
                 f"evaluated weights (the EMA weights whose outputs are measured, on the training pairs) and the "
                 f"exact CFM(σ) minimiser's loss floor f (0 at σ = 0; at σ > 0 its Monte-Carlo value less "
                 f"{FLOOR_SE_MARGIN:g} standard errors), both relative to the zero field's loss on the same pairs, "
                 f"with r − f ≤ {FIT_LEVEL:g} × (1 − f)")
"""The fit rule of :func:`fitted_precondition` in words, for the rule texts of the claims that require it."""


NO_TRANSPORT = "its outputs may describe no transport at all"
"""The fit precondition's last clause: what an unfitted network's outputs may show (each table adds its own
control to it)."""

EVALUATED = "evaluated_loss_relative_to_zero_field"
"""The row key of the evaluated weights' loss relative to the zero field (:func:`evaluated_loss`), the number the fit
rule judges; ``loss_last_relative_to_zero_field`` (:func:`loss_fit`) is the raw weights' training loss beside it."""


def loss_floor(x0: Tensor, x1: Tensor, sigma: float, zero_field: float, generator: torch.Generator,
               device: torch.device | str | None = None, samples: int = FLOOR_SAMPLES) -> dict[str, float]:
    """The loss floor L*(σ) of CFM(σ) on the training pairs (``x0``, ``x1``) (N, C, R, R), relative to the zero
    field's loss ``zero_field`` = E‖x1 − x0‖²: ``{"exact_loss_floor_relative_to_zero_field": L*/zero_field,
    "exact_loss_floor_se_relative_to_zero_field": se/zero_field}``, beside ``loss_last_relative_to_zero_field``
    (:func:`loss_fit`) in a run's row. L*(σ) is the exact minimiser's loss (:func:`~flowvar.experiments.
    _exact_minimiser.exact_minimiser_loss`, ``samples`` draws in chunks of :data:`FLOOR_ROWS` from ``generator``, a
    stream of its own); 0 exactly at σ = 0 (the memorising field), nothing drawn."""
    if sigma == 0:
        return {"exact_loss_floor_relative_to_zero_field": 0.0, "exact_loss_floor_se_relative_to_zero_field": 0.0}
    floor, se = exact_minimiser_loss(x0, x1, sigma, samples, generator, rows=FLOOR_ROWS, device=device)
    return {"exact_loss_floor_relative_to_zero_field": floor / zero_field,
            "exact_loss_floor_se_relative_to_zero_field": se / zero_field}


def evaluated_loss(model: nn.Module, coupling: Coupling | tuple[Tensor, Tensor], sigma: float, zero_field: float,
                   generator: torch.Generator, device: torch.device | str | None = None, *, ema: bool,
                   samples: int = EVALUATED_SAMPLES) -> dict[str, Any]:
    """The CFM(σ) loss of ``model`` — the network whose outputs the experiment measures (:func:`ema_copy`) — on its
    training coupling, relative to the zero field's loss ``zero_field``:

        L(v) = E‖(x1 − x0) − v(x_t, t)‖²,  x_t = (1 − t) x0 + t x1 + σ z,  t ~ U(0, 1)

    (:func:`~flowvar.experiments._exact_minimiser.coupling_loss_draws`), the quantity whose minibatch estimate
    is the training loss, over ``samples`` path draws in chunks of :data:`EVALUATED_ROWS` from ``generator`` (a
    stream of its own, on the CPU, so no other number moves). ``coupling``: a :class:`~flowvar.couplings.Coupling`
    or the fixed pairs (x0, x1) (N, C, R, R). ``ema``: whether ``model`` holds EMA weights (recorded).

    Returns ``{EVALUATED: mean / zero_field, "evaluated_loss_se_relative_to_zero_field": se / zero_field,
    "evaluated_weights": "ema" | "raw"}``. Why: the EMA has no bias correction, so after k steps (ema_decay)^k of
    its weight is still the initialisation, and while training moves it lags the raw weights; the raw weights'
    training loss says nothing about it."""
    pairs = FixedPairs(*coupling) if isinstance(coupling, tuple) else coupling
    values = coupling_loss_draws(model, pairs, sigma, samples, generator, rows=EVALUATED_ROWS, device=device).double()
    se = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else 0.0
    return {EVALUATED: float(values.mean()) / zero_field, "evaluated_loss_se_relative_to_zero_field": se / zero_field,
            "evaluated_weights": "ema" if ema else "raw"}


def fitted_precondition(loss_ratios: Sequence[float], *, sigma: float, pairs: str,
                        floor_ratios: Sequence[float] | None = None, floor_se_ratios: Sequence[float] | None = None,
                        control: str = NO_TRANSPORT, fit_level: float = FIT_LEVEL,
                        raw_loss_ratios: Sequence[float] | None = None, loss_note: str | None = None) -> Precondition:
    """CFM(``sigma``) fitted its training ``pairs`` (words: "shuffled OT pairs at N=64"): training removed ≥ 1 −
    ``fit_level`` of the loss it can remove, in every seed s (:data:`FIT_RULE_TEXT`):

        r_s − u_s ≤ fit_level × (1 − u_s),   u_s = max(0, f_s − FLOOR_SE_MARGIN × se_s),

    with r_s the loss of the *evaluated* weights relative to the zero field (``loss_ratios``: :func:`evaluated_loss`,
    read by :func:`evaluated_loss_ratios`; NaN where it is unknown, which fails) and f_s ± se_s the floor L*(σ)
    relative to the zero field (``floor_ratios``, ``floor_se_ratios``: :func:`loss_floor`). ``raw_loss_ratios``: the
    raw weights' final training loss (:func:`loss_fit`), recorded beside it, not judged; ``loss_note``: where r_s came
    from. The floor is what no training removes: at σ > 0 it is positive where the noise tubes of different pairs
    overlap, so a perfectly trained network there must not fail; the zero field (r = 1) fails whatever the floor.
    The inequality is r_s ≤ fit_level + (1 − fit_level) u_s, increasing in u_s: a lower floor (the standard-error
    margin, or 0) only makes it harder to meet.

    At σ = 0 the floor is 0 exactly. A stored result without floors (``floor_ratios`` None at σ > 0) uses 0 and says
    so: the conservative direction. ``control``: what an unfitted network's outputs may show instead, in the
    experiment's terms (the statement's last clause). Measured per seed, no test: it must hold in each replicate; a
    NaN (diverged or unmeasured) seed fails it."""
    values = [float(v) for v in loss_ratios]
    if sigma == 0:
        floors, ses = [0.0] * len(values), [0.0] * len(values)
        note = "σ = 0: the loss floor is 0 exactly (the memorising field), nothing drawn"
    elif floor_ratios is None:
        floors, ses = [0.0] * len(values), [0.0] * len(values)
        note = ("the loss floor L*(σ) was not recorded (a result from before it was measured): 0 used, which can "
                "only make this precondition harder to meet")
    else:
        floors = [float(v) for v in floor_ratios]
        ses = [float(v) for v in floor_se_ratios] if floor_se_ratios is not None else [0.0] * len(floors)
        note = (f"the loss floor L*(σ) of the exact CFM(σ) minimiser on the same pairs, {FLOOR_SAMPLES} path draws "
                f"per seed; the rule uses max(0, floor − {FLOOR_SE_MARGIN:g} × its standard error)")
    if len(floors) != len(values) or len(ses) != len(values):
        raise DataError(f"one floor and one standard error per seed: {len(values)} loss ratio(s), {len(floors)} "
                         f"floor(s), {len(ses)} standard error(s)")
    used = [max(0.0, f - FLOOR_SE_MARGIN * e) for f, e in zip(floors, ses, strict=True)]
    excess = [v - u for v, u in zip(values, used, strict=True)]
    allowed = [fit_level * (1.0 - u) for u in used]
    holds = bool(values) and all(math.isfinite(e) and e <= a for e, a in zip(excess, allowed, strict=True))
    unmeasured = any(math.isnan(v) for v in values) and loss_note is not None and "not recorded" in loss_note
    return Precondition(
        f"CFM(σ={sigma:g}) fitted its {pairs}: in every seed training removed ≥ {1 - fit_level:.0%} of the loss it "
        f"can remove, judged on the evaluated weights (whose outputs are measured) (their loss − the exact "
        f"CFM(σ={sigma:g}) minimiser's loss floor ≤ {fit_level:g} × (the zero field's loss on the same pairs − that "
        f"floor)); otherwise {control}",
        holds, {"sigma": sigma, "evaluated_loss_relative_to_zero_field_per_seed": values,
                "raw_training_loss_last_relative_to_zero_field_per_seed":
                    None if raw_loss_ratios is None else [float(v) for v in raw_loss_ratios],
                "loss_note": loss_note or "the evaluated weights' loss as given",
                "exact_loss_floor_relative_to_zero_field_per_seed": floors,
                "exact_loss_floor_se_relative_to_zero_field_per_seed": ses,
                "floor_used_per_seed": used, "excess_over_floor_per_seed": excess,
                "allowed_excess_per_seed": allowed, "floor_note": note, "fit_level": fit_level},
        f"rerun: this result predates the evaluated weights' loss, so whether CFM(σ={sigma:g}) fitted is unknown"
        if unmeasured else f"train longer (steps) until CFM(σ={sigma:g}) fits its pairs (with EMA: until the EMA "
                           f"weights do — more steps, or a smaller ema_decay)")


def loss_ratios(runs: Sequence[Mapping[str, Any]], sigma: float) -> list[float]:
    """Per seed: CFM(``sigma``)'s raw weights' final training loss relative to the zero field's (:func:`loss_fit`'s
    ``loss_last_relative_to_zero_field``), read off a run's per-seed rows ``runs[s]["sigma=<σ>"]``: evidence only."""
    return [float(r[f"sigma={sigma}"]["loss_last_relative_to_zero_field"]) for r in runs]


def evaluated_loss_ratios(runs: Sequence[Mapping[str, Any]], sigma: float,
                          ema_decay: float | None) -> tuple[list[float], str]:
    """Per seed: the evaluated weights' loss relative to the zero field (:func:`evaluated_loss`), the number the fit
    rule judges, and where it came from. A stored row set without it in every seed: with EMA off (``ema_decay``
    None) the evaluated weights are the raw ones and their final training loss stands in; with EMA on it is unknown
    — NaN, which fails the fit rule (the raw weights' fit says nothing about the EMA's)."""
    rows = [r[f"sigma={sigma}"] for r in runs]
    if rows and all(EVALUATED in r for r in rows):
        weights = sorted({str(r.get("evaluated_weights", "?")) for r in rows})
        return ([float(r[EVALUATED]) for r in rows],
                f"measured: the CFM(σ) loss of the evaluated ({'/'.join(weights)}) weights on the training pairs, "
                f"{EVALUATED_SAMPLES} path draws per seed")
    if ema_decay is None:
        return loss_ratios(runs, sigma), ("EMA off: the evaluated weights are the raw weights, judged on their final "
                                          "training loss (mean of the last 5 % of steps)")
    return [math.nan] * len(rows), (f"not recorded: this result predates the evaluated (EMA, decay {ema_decay:g}) "
                                    f"weights' loss, and the raw weights' training loss says nothing about them")


def fitted_in_runs(runs: Sequence[Mapping[str, Any]], *, sigma: float, pairs: str, ema_decay: float | None,
                   control: str = NO_TRANSPORT) -> Precondition:
    """:func:`fitted_precondition` read off a run's per-seed rows (``runs[s]["sigma=<σ>"]``: :func:`loss_fit`,
    :func:`evaluated_loss` and :func:`loss_floor`, each where measured): the evaluated weights' loss
    (:func:`evaluated_loss_ratios`, ``ema_decay`` the run's), the raw weights' beside it; a row set without the floor
    in every seed is judged with floor 0."""
    rows = [r[f"sigma={sigma}"] for r in runs]
    floors = ses = None
    if rows and all("exact_loss_floor_relative_to_zero_field" in r for r in rows):
        floors = [r["exact_loss_floor_relative_to_zero_field"] for r in rows]
        ses = [r.get("exact_loss_floor_se_relative_to_zero_field", 0.0) for r in rows]
    judged, note = evaluated_loss_ratios(runs, sigma, ema_decay)
    return fitted_precondition(judged, sigma=sigma, pairs=pairs, floor_ratios=floors, floor_se_ratios=ses,
                               control=control, raw_loss_ratios=loss_ratios(runs, sigma), loss_note=note)


def summary(values: Sequence[Tensor]) -> dict[str, Any]:
    """Description, not a test: mean ± sd over images pooled across seeds (the paper's "±"), the per-seed means and
    their sd (the verdicts use the per-seed means)."""
    pooled = torch.cat([v.double().reshape(-1) for v in values])
    means = seed_means(values)
    return {"mean": float(pooled.mean()), "std": float(pooled.std(correction=1)) if pooled.numel() > 1 else 0.0,
            "n": int(pooled.numel()), "seed_means": means,
            "seed_means_std": float(np.std(means, ddof=1)) if len(means) > 1 else math.nan}


# --------------------------------------------------------------------------------------------- figures


def grid_figure(ctx: RunContext, name: str, rows: Sequence[tuple[str, Tensor]], title: str) -> Path:
    """Save a labelled grid: one row per (label, images (k, C, R, R) in [−1, 1]) — values outside are clipped,
    so Gaussian sources show as saturated noise. Returns the PNG path (listed in ``ctx.figures``)."""
    k = max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.1 * k + 1.6, 1.15 * len(rows) + 0.5), squeeze=False)
    for i, (label, images) in enumerate(rows):
        arr = to_uint8(images)
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < arr.shape[0]:
                img = arr[j]
                ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255,
                          interpolation="nearest")
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return ctx.figure(name, fig)


def median_line_spacing(x0: Tensor, x1: Tensor, max_queries: int = 2000) -> float:
    """The median spacing of the training lines x0_i → x1_i (:func:`flowvar.metrics.line_spacing`: each line's
    nearest simultaneous approach of another, over the first ``max_queries`` lines against all N), images flattened:
    what σ is measured against (the exact CFM(σ) minimiser starts losing pairs at σ / spacing ≈ 0.37–0.49,
    :data:`flowvar.advisor.SIGMA_OVER_SPACING_ONSET`). ``x0``, ``x1``: (N, C, H, W)."""
    return float(line_spacing(x0.flatten(1), x1.flatten(1), max_queries=max_queries).median())


def line_spacing_evidence(runs: Sequence[Mapping[str, Any]], sigma: float) -> dict[str, Any]:
    """Per seed (``runs``: rows with ``median_line_spacing``), the training lines' median spacing and ``sigma`` over
    it, as claim evidence; None for a row stored before the spacing was recorded."""
    spacing = [r.get("median_line_spacing") for r in runs]
    return {"median_line_spacing_per_seed": spacing,
            "sigma_over_line_spacing_per_seed": [sigma / v if isinstance(v, float) and v > 0 else None
                                                 for v in spacing]}


__all__ = [
    "EVALUATED",
    "EVALUATED_ROWS",
    "EVALUATED_SAMPLES",
    "FIT_LEVEL",
    "FIT_RULE_TEXT",
    "FLOOR_ROWS",
    "FLOOR_SAMPLES",
    "FLOOR_SE_MARGIN",
    "NO_TRANSPORT",
    "THREADS_ENV",
    "ImageExperimentConfig",
    "build_unet",
    "check_checkpoint_dir",
    "closer_over_seeds",
    "compute_settings",
    "ema_copy",
    "evaluated_loss",
    "evaluated_loss_ratios",
    "fitted_in_runs",
    "fitted_precondition",
    "grid_figure",
    "integrate_images",
    "line_spacing_evidence",
    "loss_fit",
    "loss_floor",
    "loss_ratios",
    "median_line_spacing",
    "memorised_in_every_seed",
    "prepare",
    "resolve_device",
    "resolve_threads",
    "seed_means",
    "summary",
    "train_field",
]
