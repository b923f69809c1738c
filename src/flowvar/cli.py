"""The ``flowvar`` command line: ``flowvar run``, ``flowvar list``, ``flowvar --version``.

Errors the user can fix print one line ``flowvar: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flowvar import __version__
from flowvar.errors import FlowvarError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="flowvar: gradient-variance diagnostics and memorisation tests for flow matching.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowvar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """flowvar: does my flow model generalise, or memorise its training pairs?"""


@app.command("list")
def list_cmd() -> None:
    """List the experiments."""
    from flowvar.experiments import experiments

    specs = experiments()
    width = max(len(n) for n in specs)
    for name, spec in sorted(specs.items()):
        typer.echo(f"{name:<{width}}  {spec.title}")


@app.command("run")
def run_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see `flowvar list`).")],
    quick: Annotated[bool, typer.Option("--quick", help="Scaled-down settings (minutes on 2 CPU cores).")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Base random seed.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder; results go to OUT/EXPERIMENT/.")] = Path("runs"),
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: key=value.")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--quiet",
                                                  help="Progress bars (default: when stderr is a terminal).")] = None,
) -> None:
    """Run one experiment and write result.json, summary.md and figures."""
    from flowvar.experiments.base import parse_overrides, run_experiment

    if progress is None:
        progress = sys.stderr.isatty()
    result = run_experiment(experiment, out, quick=quick, seed=seed, overrides=parse_overrides(overrides or []),
                            progress=progress)
    typer.echo(f"{experiment}: {len(result.claims)} claims in {result.runtime_s:.1f} s -> {out / experiment}")
    for c in result.claims:
        typer.echo(f"  [{c.verdict:^12}] {c.id}")


@app.command("show")
def show_cmd(
    folder: Annotated[Path, typer.Argument(help="An --out folder of finished runs.")] = Path("runs"),
) -> None:
    """Print the verdict table of finished runs."""
    from flowvar.report import load_results, verdict_counts, verdict_table

    results = load_results(folder)
    typer.echo(verdict_table(results))
    counts = verdict_counts(results)
    typer.echo(f"\n{len(results)} experiments: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def main(argv: list[str] | None = None) -> int:
    """Entry point. Usage errors exit 2 (Typer); a :class:`FlowvarError` prints one line and exits 2."""
    try:
        app(args=argv, prog_name="flowvar")
    except FlowvarError as e:
        print(f"flowvar: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
