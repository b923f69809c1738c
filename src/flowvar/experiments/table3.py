"""Table 3: simulated 1-ReFlow — retraining on a first flow's own pairs; CFM(σ = 0) copies them.

PAPER.md §3.6, §4 "Images" (1-ReFlow), §5 item 11. For each of ``n_seeds`` seeds, on N real images:

1. Base model: a UNet trained with CFM(σ = 0) and the independent coupling (a fresh source x0 ~ N(0, I) and a
   training image drawn uniformly with replacement each step) for ``base_steps`` steps.
2. Simulated 1-ReFlow pairs: N fresh sources z_i and their base-model endpoints g_i = Φ_base(z_i) (Euler,
   ``euler_steps``, EMA weights) — :meth:`flowvar.couplings.ReflowCoupling.materialise`.
3. OT partners: the exact assignment between the N sources z and the N *real* training images (squared L2;
   the blockwise approximation above ``max_exact``); a variant pairs z with the N generated images instead.
4. For each σ in ``sigmas`` (same pairs, initialisation and batch stream): a UNet trained with CFM(σ) on the
   fixed pairs (z_i, g_i) for ``steps`` steps.
5. Outputs x̂_i: Euler from z_i. Per image, pixel L2 on the flattened [−1, 1] tensor: ‖x̂_i − g_i‖
   ("memorisation", L2 to the generated partner) and ‖x̂_i − x1_σ(i)‖ ("generalisation", L2 to the OT partner
   among the real images); mean ± sd over images pooled across seeds.

Verdicts (§5 item 11), on per-image paired differences between the two σ (same sources), pooled over seeds:
(a) σ = 0 gives a *much* smaller L2-to-generated than σ > 0: confirmed when every seed shows it, the pooled
t-ratio ≥ ``t_min`` and the ratio L2-gen(σ) / L2-gen(0) ≥ ``much_ratio`` (paper: 25.08 / 8.63 = 2.9); refuted
when σ = 0 is larger by the same t rule; inconclusive otherwise (also when smaller but by less than the ratio).
(b) σ = 0 gives a larger L2-to-OT than σ > 0: the same direction rule (paper: 43.35 vs 31.35).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from flowvar.couplings import FixedPairs, IndependentCoupling, ReflowCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError
from flowvar.experiments._imaging import (
    ImageExperimentConfig,
    build_unet,
    compute_settings,
    direction_verdict,
    ema_copy,
    grid_figure,
    integrate_images,
    loss_fit,
    paired_stats,
    prepare,
    summary,
    train_field,
)
from flowvar.experiments.base import RunContext, register
from flowvar.image_ot import ot_assignment
from flowvar.metrics import nearest_neighbours, nn_distance_ratio

PAPER_TABLE3: dict[str, dict[str, dict[str, list[float]]]] = {
    "N=5000": {"sigma=0.05": {"l2_to_ot": [31.35, 7.38], "l2_to_generated": [25.08, 8.59]},
               "sigma=0.0": {"l2_to_ot": [43.35, 14.21], "l2_to_generated": [8.63, 1.76]}},
}


@dataclass
class Table3Config(ImageExperimentConfig):
    """:class:`ImageExperimentConfig` plus ``n`` (training images = generated pairs), ``base_steps`` (the base
    model's training steps), ``eval_max`` (pairs evaluated per run), ``much_ratio`` (how much smaller "much
    smaller" is), and the OT settings ``ot_method``, ``max_exact``, ``ot_block_size``, ``ot_refine_rounds``."""

    n: int = 1797
    base_steps: int = 20_000
    eval_max: int = 2000
    much_ratio: float = 1.5
    ot_method: str = "auto"
    max_exact: int = 5000
    ot_block_size: int = 4096
    ot_refine_rounds: int = 2

    def validate(self) -> None:
        super().validate()
        if self.n < 2:
            raise ConfigError(f"n must be >= 2 images, got {self.n}")
        if self.base_steps < 1 or self.eval_max < 2:
            raise ConfigError("base_steps >= 1 and eval_max >= 2 are required")
        if self.much_ratio < 1:
            raise ConfigError(f"much_ratio must be >= 1, got {self.much_ratio}")
        if self.ot_method not in ("auto", "exact", "blockwise"):
            raise ConfigError(f"ot_method must be 'auto', 'exact' or 'blockwise', got {self.ot_method!r}")


QUICK = {"n": 256, "n_seeds": 1, "resolution": 8, "base_channels": 16, "channel_mult": (1, 2), "steps": 1000,
         "base_steps": 1000, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.99, "eval_max": 256}


@register("table3", title="Table 3: simulated 1-ReFlow — CFM(σ=0) copies the generated pairs, CFM(σ=0.05) less so",
          config=Table3Config, quick=QUICK,
          paper={"table3": PAPER_TABLE3,
                 "setting": "CelebA 64x64 RGB, N = 5K; mean ± std (most likely over images)",
                 "claims": "σ=0 gives a much smaller L2-to-generated (8.63 vs 25.08) and a larger L2-to-OT "
                           "(43.35 vs 31.35) than σ=0.05"})
def run(config: Table3Config, ctx: RunContext) -> None:
    images = prepare(config, config.n)  # data and UNet geometry errors before any OT or training
    with compute_settings(config, ctx) as device:
        _choices(ctx, config)
        x1 = images.images
        per: dict[str, list[Tensor]] = {}
        runs: list[dict[str, Any]] = []
        grid: dict[str, Tensor] = {}
        for s_idx in range(config.n_seeds):
            seed = config.seed + s_idx
            row, dists, outputs = _run_seed(ctx, config, images, x1, seed, s_idx, device)
            runs.append(row)
            for k, v in dists.items():
                per.setdefault(k, []).append(v)
            if s_idx == 0:
                grid = outputs
    _report(ctx, config, per, runs, grid)


def _choices(ctx: RunContext, config: Table3Config) -> None:
    ctx.choice("data", f"{config.dataset} at {config.resolution}x{config.resolution}, N = {config.n} (subset seed "
                       f"{config.data_seed})")
    ctx.choice("base model", f"CFM(σ=0), independent coupling (fresh noise, training image drawn with replacement), "
                             f"{config.base_steps} steps, same UNet and optimiser settings as the retrained models")
    ctx.choice("1-ReFlow pairs", f"N = {config.n} fresh sources per seed, endpoints by Euler {config.euler_steps} "
                                 f"steps with the base model's EMA weights")
    ctx.choice("OT partner", f"assignment between the N sources and the N real training images (method "
                             f"'{config.ot_method}', exact up to {config.max_exact}); variant: with the N generated "
                             f"images")
    ctx.choice("model", f"UNet base {config.base_channels}, mult {list(config.channel_mult)}, {config.num_res_blocks} "
                        f"res block(s), attention at {list(config.attention_resolutions)} px + middle, dropout "
                        f"{config.dropout}")
    ctx.choice("training", f"Adam lr {config.lr}, warmup {config.warmup_steps}, clip {config.grad_clip}, batch "
                           f"{config.batch_size}, {config.steps} steps per retrained model, EMA {config.ema_decay}; "
                           f"CFM(σ) with constant noise and target x1 − x0")
    ctx.choice("evaluation", f"Euler {config.euler_steps} steps from the ReFlow sources (up to {config.eval_max}), EMA "
                             f"weights; per-image L2; mean ± std over images pooled across {config.n_seeds} seed(s)")
    ctx.choice("verdict rule", f"paired per image between the two σ, pooled over seeds: every seed in the direction "
                               f"and t ≥ {config.t_min}; 'much smaller' also needs a ratio ≥ {config.much_ratio}")


def _run_seed(ctx: RunContext, config: Table3Config, images: Any, x1: Tensor, seed: int, s_idx: int,
              device: torch.device) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
    n = x1.shape[0]
    gen = ctx.generator(10_000 * s_idx + 7)
    source = StandardNormal(tuple(x1.shape[1:]))
    torch.manual_seed(seed)
    base = build_unet(config, images).to(device)
    base_config = _replace_steps(config, config.base_steps)
    base_res = train_field(base, 0.0, IndependentCoupling(source, images.distribution()), base_config, seed,
                           f"table3_base_seed{seed}", ctx.progress)
    base_eval = ema_copy(base, base_res)
    reflow = ReflowCoupling(base_eval, source, solve=lambda z: integrate_images(base_eval, z, config, device))
    pairs: FixedPairs = reflow.materialise(n, gen, chunk=max(n, 1))
    z, generated = pairs.x0, pairs.x1
    assignment = ot_assignment(z, x1, method=config.ot_method, max_exact=config.max_exact,  # type: ignore[arg-type]
                               block_size=config.ot_block_size, refine_rounds=config.ot_refine_rounds, seed=seed)
    ot_real = x1[assignment.permutation]
    assignment_gen = ot_assignment(z, generated, method=config.ot_method,  # type: ignore[arg-type]
                                   max_exact=config.max_exact, block_size=config.ot_block_size,
                                   refine_rounds=config.ot_refine_rounds, seed=seed)
    ot_gen = generated[assignment_gen.permutation]
    copies = nn_distance_ratio(generated, x1)
    m = min(n, config.eval_max)
    eval_idx = torch.randperm(n, generator=gen)[:m].sort().values if m < n else torch.arange(n)
    zero_field = float((generated - z).flatten(1).double().pow(2).sum(1).mean())
    # the zero field's loss under the independent coupling: E‖x1 − x0‖² = E‖x1‖² + D for x0 ~ N(0, I)
    independent_zero_field = float(x1.flatten(1).double().pow(2).sum(1).mean()) + x1[0].numel()
    row: dict[str, Any] = {
        "seed": seed,
        "base_model": {**loss_fit(base_res, independent_zero_field), "generated_copy_fraction": copies.fraction_below,
                       "generated_median_nn_distance_to_training": float(copies.nn1_distance.median()),
                       "training_median_nn_distance": _median_nn(x1)},
        "ot": {"method": assignment.method, "mean_cost_real": assignment.cost,
               "mean_cost_generated": assignment_gen.cost, "reflow_pairs_mean_cost": zero_field}}
    dists: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {"source z": z[eval_idx][:config.grid_columns]}
    for sigma in config.sigmas:
        torch.manual_seed(seed + 1)
        model = build_unet(config, images).to(device)
        res = train_field(model, sigma, pairs, config, seed, f"table3_seed{seed}_sigma{sigma}", ctx.progress)
        out = integrate_images(ema_copy(model, res), z[eval_idx], config, device)
        for name, partner in (("generated", generated), ("ot", ot_real), ("ot_generated", ot_gen)):
            dists[f"sigma={sigma}.{name}"] = (out - partner[eval_idx]).flatten(1).double().norm(dim=1)
        row[f"sigma={sigma}"] = {"l2_to_generated": float(dists[f"sigma={sigma}.generated"].mean()),
                                 "l2_to_ot": float(dists[f"sigma={sigma}.ot"].mean()),
                                 "l2_to_ot_among_generated": float(dists[f"sigma={sigma}.ot_generated"].mean()),
                                 **loss_fit(res, zero_field)}
        outputs[f"CFM(σ={sigma}) output"] = out[:config.grid_columns]
    dists["reference"] = (generated - ot_real)[eval_idx].flatten(1).double().norm(dim=1)
    outputs["generated partner\n(training target)"] = generated[eval_idx][:config.grid_columns]
    outputs["OT partner (real)"] = ot_real[eval_idx][:config.grid_columns]
    return row, dists, outputs


def _replace_steps(config: Table3Config, steps: int) -> Table3Config:
    return replace(config, steps=steps)


def _median_nn(x1: Tensor, max_queries: int = 2000) -> float:
    """Median distance from a training image to its nearest *other* training image (the copy-detection scale)."""
    flat = x1.flatten(1).double()
    dist, _ = nearest_neighbours(flat[:max_queries], flat, k=2)
    return float(dist[:, 1].median())


def _report(ctx: RunContext, config: Table3Config, per: dict[str, list[Tensor]], runs: list[dict[str, Any]],
            grid: dict[str, Tensor]) -> None:
    s0, s1 = config.sigmas
    table = {f"sigma={s}": {"l2_to_ot": summary(per[f"sigma={s}.ot"]),
                            "l2_to_generated": summary(per[f"sigma={s}.generated"]),
                            "l2_to_ot_among_generated": summary(per[f"sigma={s}.ot_generated"])}
             for s in config.sigmas}
    table["reference_generated_vs_ot_partner"] = summary(per["reference"])
    ctx.metric("table3", table)
    ctx.metric("runs", runs)
    paper = PAPER_TABLE3["N=5000"]
    ctx.metric("comparison_with_paper", {
        f"N={config.n} (paper N=5000), CFM(σ={s})": {
            "l2_to_ot_ours": [table[f"sigma={s}"]["l2_to_ot"]["mean"], table[f"sigma={s}"]["l2_to_ot"]["std"]],
            "l2_to_ot_paper": paper.get(f"sigma={s}", {}).get("l2_to_ot", "n/a"),
            "l2_to_generated_ours": [table[f"sigma={s}"]["l2_to_generated"]["mean"],
                                     table[f"sigma={s}"]["l2_to_generated"]["std"]],
            "l2_to_generated_paper": paper.get(f"sigma={s}", {}).get("l2_to_generated", "n/a")}
        for s in config.sigmas})

    memo = paired_stats(per[f"sigma={s1}.generated"], per[f"sigma={s0}.generated"])
    confirmed, refuted = direction_verdict(memo, config.t_min)
    g0, g1 = table[f"sigma={s0}"]["l2_to_generated"]["mean"], table[f"sigma={s1}"]["l2_to_generated"]["mean"]
    ratio = g1 / g0 if g0 > 0 else math.inf
    ctx.claim("table3.sigma0_copies_generated_pairs",
              f"On 1-ReFlow pairs, CFM(σ=0) lands much closer to the generated partner than CFM(σ={s1}).",
              {f"l2_to_generated_sigma{s0}": g0, f"l2_to_generated_sigma{s1}": g1, "ratio": ratio, "paired": memo,
               "reference_generated_vs_ot_partner": table["reference_generated_vs_ot_partner"]["mean"],
               "train_loss_relative_to_zero_field": {
                   f"sigma={s}": float(np.mean([r[f"sigma={s}"]["loss_last_relative_to_zero_field"] for r in runs]))
                   for s in config.sigmas},
               "paper": {"sigma=0.0": paper["sigma=0.0"]["l2_to_generated"],
                         "sigma=0.05": paper["sigma=0.05"]["l2_to_generated"], "ratio": 25.08 / 8.63}},
              confirmed=confirmed and ratio >= config.much_ratio, refuted=refuted,
              kind="reproduction",
              rule=f"per-image d = L2-gen(σ={s1}) − L2-gen(σ=0) pooled over seeds: confirmed if every seed's mean "
                   f"d > 0, t ≥ {config.t_min} and L2-gen(σ={s1}) / L2-gen(σ=0) ≥ {config.much_ratio}; refuted if "
                   f"every seed's mean d < 0 and t ≤ −{config.t_min}; else inconclusive")
    gen = paired_stats(per[f"sigma={s0}.ot"], per[f"sigma={s1}.ot"])
    confirmed, refuted = direction_verdict(gen, config.t_min)
    ctx.claim("table3.sigma0_farther_from_ot",
              f"On 1-ReFlow pairs, CFM(σ=0) lands farther from the OT partner (real images) than CFM(σ={s1}).",
              {f"l2_to_ot_sigma{s0}": table[f"sigma={s0}"]["l2_to_ot"]["mean"],
               f"l2_to_ot_sigma{s1}": table[f"sigma={s1}"]["l2_to_ot"]["mean"], "paired": gen,
               "variant_ot_among_generated": {f"sigma={s}": table[f"sigma={s}"]["l2_to_ot_among_generated"]["mean"]
                                              for s in config.sigmas},
               "paper": {"sigma=0.0": paper["sigma=0.0"]["l2_to_ot"], "sigma=0.05": paper["sigma=0.05"]["l2_to_ot"]}},
              confirmed=confirmed, refuted=refuted,
              kind="reproduction",
              rule=f"per-image d = L2-OT(σ=0) − L2-OT(σ={s1}) pooled over seeds: confirmed if every seed's mean d > 0 "
                   f"and t ≥ {config.t_min}; refuted if every seed's mean d < 0 and t ≤ −{config.t_min}; else "
                   f"inconclusive")
    grid_figure(ctx, "table3_grid", list(grid.items()),
                f"Table 3, N={config.n}, seed {config.seed}: retrained models from the 1-ReFlow sources")
    _bar_figure(ctx, config, table)


def _bar_figure(ctx: RunContext, config: Table3Config, table: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs = np.arange(len(config.sigmas))
    for j, (metric, label) in enumerate((("l2_to_ot", "L2 to OT partner (real)"),
                                         ("l2_to_generated", "L2 to generated partner"))):
        means = [table[f"sigma={s}"][metric]["mean"] for s in config.sigmas]
        stds = [table[f"sigma={s}"][metric]["std"] for s in config.sigmas]
        ax.bar(xs + (j - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, label=label, alpha=0.75)
    ax.axhline(table["reference_generated_vs_ot_partner"]["mean"], color="grey", ls=":", lw=1,
               label="‖generated − OT partner‖")
    ax.set_xticks(xs, [f"CFM(σ={s})" for s in config.sigmas])
    ax.set_ylabel("per-image pixel L2 (mean ± std over images)")
    ax.legend(fontsize=7)
    ax.set_title(f"Table 3 ({config.dataset} {config.resolution}px, N={config.n}, {config.n_seeds} seed(s))",
                 fontsize=9)
    fig.tight_layout()
    ctx.figure("table3_l2", fig)
