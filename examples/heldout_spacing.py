"""Where do real images, the mean image and Gaussian noise lie against the training spacing? (the evidence behind
table3's ``BASE_SPACING_FACTOR`` = 2; docs/experiments/table3.md, "The base flow made images".)

table3 judges whether its base flow made images by one ratio per seed (``table3._run_seed``'s ``base_model`` row,
judged by :func:`~flowvar.experiments.table3.base_made_images_precondition`):

    ratio = median_i ‖g_i − NN_train(g_i)‖ / t,   t = median_j min_{k ≠ j} ‖x_j − x_k‖,

g_i the generated images (``nn_distance_ratio(generated, x1).nn1_distance.median()``), x the N training images
(``median_nn_distance(x1, max_queries=2000)``: the training spacing), both on the flattened [−1, 1] tensors. This
script puts in place of g, with the same two calls on the same training images (table3's loader,
:func:`~flowvar.experiments._image_data.load_subset` of its config):

* ``heldout``: the real digits the run did not load (the other 1797 − N), what a base model that makes images like
  the data should score;
* ``mean_image``: the mean of the N training images (one image: its distance to the nearest training image);
* ``noise``: N draws z ~ N(0, I) of the images' shape, what a base model that does not move returns; beside it √D,
  that distance's lower bound (‖z − x‖² ≈ D + ‖x‖²), the precondition's no-movement bound.

Settings: the bundled digits as the docs quote them — 8 px, N = 256 (table3's quick config) and 16 px, N = 898 (its
full config with ``n=898``, half the 1797, so that half is held out) — for data seeds 0, 1, 2 (each a different
seeded training subset; the noise from the "heldout_spacing_noise" stream of the data seed). Seconds on one thread::

    python examples/heldout_spacing.py                      # writes results/checks/heldout_spacing.json
    python examples/heldout_spacing.py --out /tmp/check.json

Deterministic: the subsets are the loader's seeded draws and the noise a named stream; distances are float64.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flowvar.data import load_digits
from flowvar.experiments._image_data import load_subset
from flowvar.experiments.config import build_config
from flowvar.experiments.registry import get_experiment
from flowvar.experiments.table3 import BASE_SPACING_FACTOR, Table3Config
from flowvar.metrics import median_nn_distance, nn_distance_ratio
from flowvar.results import versions
from flowvar.seeding import generator

DEFAULT_OUT = Path("results/checks/heldout_spacing.json")
SETTINGS: tuple[tuple[int, int, bool], ...] = ((8, 256, True), (16, 898, False))
"""(resolution, N, table3's quick config?): the two settings docs/experiments/table3.md quotes."""
DATA_SEEDS = (0, 1, 2)
TRAINING_QUERIES = 2000
"""``max_queries`` of table3's training spacing (``table3._run_seed``); above every N here, so every image queries."""


def setting_config(resolution: int, n: int, quick: bool, data_seed: int) -> Table3Config:
    """table3's own config (quick or full YAML) on the bundled digits at ``resolution`` with ``n`` images and
    ``data_seed``: its loader settings, validated as ``flowvar run table3 --set …`` is."""
    overrides = {"dataset": "digits", "resolution": str(resolution), "n": str(n), "data_seed": str(data_seed),
                 "device": "cpu"}
    config = build_config(get_experiment("table3"), quick=quick, overrides=overrides)
    assert isinstance(config, Table3Config)
    return config


def measure(resolution: int, n: int, quick: bool, data_seed: int) -> dict[str, Any]:
    """One setting and data seed: the training spacing t and each stand-in's median nearest-training distance, and
    their ratios to t (module docstring)."""
    config = setting_config(resolution, n, quick, data_seed)
    train = load_subset(config, n)  # table3's x1: the N images its run trains on
    x1 = train.images
    every = load_digits(n=None, resolution=resolution, channels=config.channels)
    rest = torch.ones(len(every), dtype=torch.bool)
    rest[train.indices] = False
    heldout = every.images[rest]
    spacing = median_nn_distance(x1, max_queries=TRAINING_QUERIES)
    noise = torch.randn(x1.shape, generator=generator(data_seed, "heldout_spacing_noise"))
    dimension = int(x1[0].numel())
    distances = {
        "heldout": float(nn_distance_ratio(heldout, x1).nn1_distance.median()),
        "mean_image": float(nn_distance_ratio(x1.mean(0, keepdim=True), x1).nn1_distance[0]),
        "noise": float(nn_distance_ratio(noise, x1).nn1_distance.median()),
        "sqrt_D": math.sqrt(dimension),
    }
    return {"resolution": resolution, "n": n, "config": "quick" if quick else "full", "data_seed": data_seed,
            "dimension": dimension, "n_heldout": int(heldout.shape[0]), "training_spacing": spacing,
            "median_nn_distance_to_training": distances,
            "ratio_to_training_spacing": {k: v / spacing for k, v in distances.items()}}


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per setting ("8px_N256"), the [least, greatest] ratio of each stand-in over the data seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        key = f"{row['resolution']}px_N{row['n']}"
        for what, ratio in row["ratio_to_training_spacing"].items():
            low, high = out.setdefault(key, {}).get(what, [ratio, ratio])
            out[key][what] = [min(low, ratio), max(high, ratio)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JSON file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for resolution, n, quick in SETTINGS:
        for seed in DATA_SEEDS:
            row = measure(resolution, n, quick, seed)
            rows.append(row)
            r = row["ratio_to_training_spacing"]
            print(f"{resolution} px, N = {n}, data seed {seed}: spacing {row['training_spacing']:.3f}; held-out "
                  f"{r['heldout']:.3f} ×, mean image {r['mean_image']:.3f} ×, noise {r['noise']:.3f} ×, √D "
                  f"{r['sqrt_D']:.3f} ×", flush=True)
    out = {"check": "table3's base-model ratio (median distance to the nearest training image / the training "
                    "images' median nearest-neighbour distance) for held-out real digits, the mean training image "
                    "and unmoved Gaussian sources: where images and noise lie against BASE_SPACING_FACTOR",
           "command": "python examples/heldout_spacing.py", "base_spacing_factor": BASE_SPACING_FACTOR,
           "definition": {"training_spacing": "median_nn_distance(x1, max_queries=2000), x1 = load_subset(table3 "
                                              "config, N): the N training images (table3._run_seed)",
                          "distance": "median of nn_distance_ratio(y, x1).nn1_distance (the mean image: its own "
                                      "nn1 distance), as table3 records generated_median_nn_distance_to_training",
                          "heldout": "the 1797 − N digits not loaded (same resolution and channels)",
                          "noise": "N draws of N(0, I) of the images' shape, stream 'heldout_spacing_noise' of the "
                                   "data seed", "sqrt_D": "√D, the no-movement bound"},
           "per_seed": rows, "range_over_seeds": summarise(rows), "threads": torch.get_num_threads(),
           "device": "cpu", "versions": versions(), "runtime_s": round(time.perf_counter() - start, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {out['runtime_s']:.1f} s", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
