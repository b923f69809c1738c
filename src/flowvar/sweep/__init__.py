"""``flowvar sweep``: an experiment over the cartesian grid of its config keys, cached, aggregated and plotted.

A sweep is ``EXPERIMENT`` plus axes ``--grid key=v1,v2,...`` (and ``--seeds``, shorthand for an axis over
``seed``). :func:`plan` builds and validates the config of every grid point before anything runs: the
experiment's YAML defaults (full or ``--quick``), ``--config``, ``--set`` and then the point's values, each
type-checked against the config dataclass. Every point is then looked up in the result cache
(:mod:`flowvar.cache`, the same keys as ``flowvar reproduce`` and ``flowvar run --cache``: experiment, full
config, mode, code version, torch version and thread count). Hits are not recomputed; misses run on a backend:

* ``local``: in this process (``jobs=1``) or in ``jobs`` spawned worker processes;
* ``ray``: one Ray task per point, on the cluster at ``ray_address`` (``ray.init(address=...)``) or on a
  local Ray instance with ``jobs`` CPUs. The cache folder must be visible to every node (a shared file system).

So an interrupted sweep continues where it stopped, and an extended grid (more values, more seeds) runs only
the new points. A point that fails is recorded with its error (and the traceback in ``OUT/sweep.log``); the
others finish. Output, in ``OUT``:

* ``points/<key>/``: each point's result folder (``result.json``, ``summary.md``, figures); a finished sweep
  removes an earlier grid's folders there (:func:`~flowvar.sweep.folder.prune_points`: they stay in the cache), and
  a folder holding another sweep (another experiment, other axes) is refused
  (:func:`~flowvar.sweep.folder.refuse_other_sweep`);
* ``sweep.json``: the grid, the options, and per point its values, status, cache key, runtime, verdicts and
  every scalar metric flattened to dotted names (``a.b.c``); ``sweep.csv``: the same, one row per point;
* ``figures/``: for every ``--metric`` (a flattened name, optionally with ``*`` wildcards and ``{config_key}``
  placeholders filled from each point's config, e.g. ``table2.N={ns[0]}.sigma={sigmas[1]}.l2_to_ot.mean``) a
  line plot (one swept key) or heatmap (two; more: one panel per value of the rest) of its mean over seeds, with
  the standard deviation over seeds as error bars or annotations; and for every claim a verdict map
  (confirmed +1, inconclusive 0, refuted −1, averaged over seeds): where the paper's claim holds. Every point
  of the grid appears in each figure; one with no verdict or value (untestable, failed, claim absent, ...) as a
  mark saying why.

A ``--metric`` or ``--verdict`` naming nothing the experiment reports is refused before anything is computed or
written (checked against the cached points of the grid, else the first computed point, before it is installed).

Presets. An experiment's YAML file may define named sweeps (``sweeps: {NAME: {description, grid, set, metrics,
quick: {grid, set}}}``), run with ``--preset NAME``; ``--grid``/``--set`` given on the command line override
the preset's axes and values. ``table2`` and ``table3`` define their σ and N sweeps this way.

The package: :mod:`~flowvar.sweep.grid` (axes, presets, points), :mod:`~flowvar.sweep.run` (options, plan,
running), :mod:`~flowvar.sweep.estimates` (runtime estimates: the ETA and ``--dry-run``),
:mod:`~flowvar.sweep.folder` (one sweep per ``--out``, its grid's points only),
:mod:`~flowvar.sweep.tables` (aggregation, ``sweep.json``/``sweep.csv``) and :mod:`~flowvar.sweep.figures` (plots
and verdict maps).
"""

from flowvar.sweep.figures import draw_figures, metric_figure, numeric_positions, plot_metric
from flowvar.sweep.grid import (
    Axis,
    Point,
    Preset,
    expand,
    make_axis,
    parse_axis,
    parse_seeds,
    preset_axes,
    presets,
    split_values,
)
from flowvar.sweep.run import Options, Plan, Summary, command_line, dry_run, interrupted_message, plan, sweep
from flowvar.sweep.tables import (
    STATUSES,
    PointOutcome,
    cell_gaps,
    cell_shortfalls,
    cell_table,
    check_outputs,
    close_metric_names,
    flatten,
    load_sweep,
    metric_gap,
    resolve_metric,
    resolve_verdict,
    sweep_table,
    unknown_metrics,
    verdict_gap,
    write_tables,
)

__all__ = ["STATUSES", "Axis", "Options", "Plan", "Point", "PointOutcome", "Preset", "Summary", "cell_gaps",
           "cell_shortfalls", "cell_table", "check_outputs", "close_metric_names", "command_line", "draw_figures",
           "dry_run", "expand", "flatten", "interrupted_message", "load_sweep", "make_axis", "metric_figure",
           "metric_gap", "numeric_positions", "parse_axis", "parse_seeds", "plan", "plot_metric", "preset_axes",
           "presets", "resolve_metric", "resolve_verdict", "split_values", "sweep", "sweep_table", "unknown_metrics",
           "verdict_gap", "write_tables"]
