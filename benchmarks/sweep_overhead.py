"""The sweep runner's own cost per point, excluding the experiment: target under 1 s locally.

A sweep of K points of the toy experiment in ``tests/plugins/toy_sweep.py`` (each run takes about a
millisecond, so the wall time is nearly all runner: building and keying the config, running it through
``run_experiment`` — staging folder, result.json, summary.md —, storing it in the cache, installing it into
``OUT/points``, progress, the tables and the figures). For each backend:

* overhead per point = (sweep wall time − Σ the experiment's own runtime_s) / K, wall clock;
* a second run of the same sweep (every point a cache hit): wall time / K;
* ``local, --jobs 2`` includes starting two spawned workers (each imports torch and flowvar); ``ray`` includes
  starting a local Ray instance; both are fixed costs spread over the K points.

    python benchmarks/sweep_overhead.py [--quick]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import ROOT, fmt_time, machine_line, parse_args, setup, table, write_section

from flowvar.sweep import Options, sweep

PLUGIN = str(ROOT / "tests" / "plugins" / "toy_sweep.py")


def measure(k: int, jobs: int, backend: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sw"
        opts = Options("toy_sweep", grid=["x=" + ",".join(str(i) for i in range(k))], out=out, plugins=[PLUGIN],
                       jobs=jobs, backend=backend, quiet=True, metrics=["stats.y"])
        t0 = time.perf_counter()
        first = sweep(opts)
        wall = time.perf_counter() - t0
        assert first.count("computed") == k, "every point must be computed on the first run"
        inside = sum(p["runtime_s"] for p in json.loads((out / "sweep.json").read_text())["points"])
        t0 = time.perf_counter()
        second = sweep(opts)
        hits = time.perf_counter() - t0
        assert second.count("cached") == k
    return {"wall": wall, "per_point": (wall - inside) / k, "hit_per_point": hits / k}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], clock=False)
    setup(args.threads, "wall")
    k = 8 if args.quick else 100  # the smoke run checks the code path; per-point figures need the full 100
    configs = [("local", 1), ("local", 2)]
    if args.quick:  # Ray's start-up alone is ~15 s of the CI's time; tests/test_sweep.py runs its backend already
        print("--quick: the Ray backend is not timed")
    else:
        try:
            import ray  # noqa: F401

            configs.append(("ray", 2))
        except ImportError:
            print("ray not installed: skipping the Ray backend")
    rows = []
    for backend, jobs in configs:
        m = measure(k, jobs, backend)
        verdict = "yes" if m["per_point"] < 1.0 else "NO"
        rows.append([backend, str(jobs), str(k), fmt_time(m["wall"]), fmt_time(m["per_point"]),
                     fmt_time(m["hit_per_point"]), verdict])
        print(rows[-1])
    quick = " --quick" if args.quick else ""
    body = "\n\n".join([
        "## Sweep runner overhead per point",
        f"Command: `python benchmarks/sweep_overhead.py{quick} --threads {args.threads}`. Wall-clock time.",
        machine_line(args.threads),
        f"A sweep of {k} points of the toy experiment (tests/plugins/toy_sweep.py, ~1 ms of work each): overhead "
        "per point = (sweep wall time − the experiments' own runtime) / points, including each backend's start-up "
        "(spawned workers importing torch; a local Ray instance). Target: under 1 s per point locally.",
        table(["backend", "jobs", "points", "sweep wall", "overhead / point", "cache hit / point", "< 1 s"], rows),
    ])
    write_section("sweep_overhead", body, args.no_write)


if __name__ == "__main__":
    main()
