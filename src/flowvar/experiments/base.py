"""The experiment registry, typed configs with ``--set`` overrides, and the run context.

An experiment is a function ``run(config, ctx)`` registered with :func:`register` together with its
config dataclass (every parameter, with the full-mode default) and the overrides that make ``--quick``.
The function composes library pieces and reports through ``ctx``: metrics, claims, figures, the paper's
numbers, and every choice the paper leaves open.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import tempfile
import time
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from flowvar.errors import ConfigError, FlowvarError
from flowvar.results import Claim, Result, atomic_write_text, judge


def _discover() -> tuple[str, ...]:
    """Every module of this package except the infrastructure: one module per experiment, named like it."""
    import pkgutil

    import flowvar.experiments as package

    return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                        if not m.name.startswith("_") and m.name not in {"base"}))


@dataclass(frozen=True)
class ExperimentSpec:
    """A registered experiment."""

    name: str
    title: str
    config_cls: type
    run: Callable[[Any, RunContext], None]
    quick: dict[str, Any]
    paper: dict[str, Any]


_REGISTRY: dict[str, ExperimentSpec] = {}


def register(name: str, *, title: str, config: type, quick: dict[str, Any] | None = None,
             paper: dict[str, Any] | None = None) -> Callable[[Callable[[Any, RunContext], None]], Callable]:
    """Decorator registering ``run(config, ctx)`` as experiment ``name``."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"experiment {name}: config must be a dataclass")
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = set(quick or {}) - fields
    if unknown:
        raise TypeError(f"experiment {name}: quick overrides name unknown fields {sorted(unknown)}")

    def wrap(fn: Callable[[Any, RunContext], None]) -> Callable[[Any, RunContext], None]:
        _REGISTRY[name] = ExperimentSpec(name, title, config, fn, dict(quick or {}), dict(paper or {}))
        return fn

    return wrap


def _load_all() -> None:
    for module in _discover():
        importlib.import_module(f"flowvar.experiments.{module}")


def experiments() -> dict[str, ExperimentSpec]:
    """All registered experiments by name (importing their modules on first use)."""
    _load_all()
    return dict(_REGISTRY)


def get_experiment(name: str) -> ExperimentSpec:
    """The experiment called ``name`` (importing only its module)."""
    names = _discover()
    if name not in names:
        raise ConfigError(f"unknown experiment {name!r}; run `flowvar list` to see the {len(names)} experiments "
                          f"({', '.join(names)})")
    importlib.import_module(f"flowvar.experiments.{name}")
    return _REGISTRY[name]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, raw: Any, tp: Any) -> Any:
    """Convert ``raw`` (a string from ``--set`` or a YAML value) to the field type ``tp``, or raise ConfigError."""
    value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot parse {raw!r}")
    if origin in (list, tuple):
        if isinstance(value, str) and "," in value:
            value = [yaml.safe_load(v) for v in value.split(",")]
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        items = [coerce(key, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"--set {key}={raw}: {key} expects true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"--set {key}={raw}: {key} expects an integer, got {raw!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"--set {key}={raw}: {key} expects a number, got {raw!r}")
        return float(value)
    if tp is str:
        return str(value)
    typing_literal = typing.Literal
    if origin is typing_literal:
        if value not in args:
            raise ConfigError(f"--set {key}={raw}: {key} must be one of {list(args)}")
        return value
    raise ConfigError(f"--set {key}: cannot parse a value of type {_type_name(tp)}")


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``["key=value", ...]`` into a dict, rejecting malformed entries."""
    out: dict[str, str] = {}
    for item in pairs:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--set expects key=value, got {item!r} (for example --set steps=500)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_config(spec: ExperimentSpec, *, quick: bool = False, seed: int | None = None,
                 overrides: dict[str, Any] | None = None) -> Any:
    """Defaults, then quick overrides, then ``seed``, then user overrides (each type-checked)."""
    hints = typing.get_type_hints(spec.config_cls)
    names = [f.name for f in dataclasses.fields(spec.config_cls)]
    values: dict[str, Any] = {}
    if quick:
        values.update(spec.quick)
    if seed is not None:
        if "seed" not in names:
            raise ConfigError(f"experiment {spec.name} takes no seed")
        values["seed"] = seed
    for key, raw in (overrides or {}).items():
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} for {spec.name}; valid keys: {', '.join(names)}")
        values[key] = coerce(key, raw, hints[key])
    try:
        config = spec.config_cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config for {spec.name}: {e}") from None
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


@dataclass
class RunContext:
    """What an experiment reports into. Figures are written as PNG into ``out_dir`` (a staging folder)."""

    name: str
    out_dir: Path
    quick: bool
    seed: int
    progress: bool = False
    claims: list[Claim] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + offset``: one per independent stream."""
        return torch.Generator().manual_seed(self.seed + offset)

    def metric(self, key: str, value: Any) -> None:
        self.metrics[key] = value

    def claim(self, claim_id: str, statement: str, evidence: dict[str, Any], *, confirmed: bool, refuted: bool,
              rule: str) -> Claim:
        c = judge(claim_id, statement, evidence, confirmed=confirmed, refuted=refuted, rule=rule)
        self.claims.append(c)
        return c

    def choice(self, key: str, text: str) -> None:
        """Record a choice the paper leaves open and what we chose."""
        self.choices[key] = text

    def note(self, text: str) -> None:
        self.notes.append(text)

    def figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib figure as ``name.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path.name)
        return path


def run_experiment(name: str, out_dir: Path | str, *, quick: bool = False, seed: int | None = None,
                   overrides: dict[str, Any] | None = None, progress: bool = False) -> Result:
    """Run one experiment and write ``out_dir/name/{result.json, summary.md, *.png}``.

    Output is staged in a hidden sibling folder and moved into place only when complete, so an
    interrupted run never leaves a half-written result.
    """
    import matplotlib

    matplotlib.use("Agg")
    spec = get_experiment(name)
    config = build_config(spec, quick=quick, seed=seed, overrides=overrides)
    out_root = Path(out_dir)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_root))
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {out_root}: {e.strerror}; choose another --out") from None
    final = out_root / name
    try:
        ctx = RunContext(name=name, out_dir=stage, quick=quick, seed=int(getattr(config, "seed", 0)),
                         progress=progress, paper=dict(spec.paper))
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            spec.run(config, ctx)
        result = Result(experiment=name, title=spec.title, config=dataclasses.asdict(config), quick=quick,
                        claims=ctx.claims, metrics=ctx.metrics, paper=ctx.paper, choices=ctx.choices,
                        notes=ctx.notes, figures=ctx.figures, runtime_s=time.perf_counter() - start)
        atomic_write_text(stage / "result.json", json.dumps(result.to_dict(), indent=1))
        atomic_write_text(stage / "summary.md", result.summary_markdown())
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return result


__all__ = ["ExperimentSpec", "FlowvarError", "RunContext", "build_config", "coerce",
           "experiments", "get_experiment", "parse_overrides", "register", "run_experiment"]
