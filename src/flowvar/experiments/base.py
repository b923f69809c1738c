"""The experiment registry, typed configs from YAML files and ``--set`` overrides, and the run context.

An experiment is a function ``run(config, ctx)`` registered with :func:`register` together with its
config dataclass and the overrides that make ``--quick``. The function composes library pieces and reports
through ``ctx``: metrics, claims, figures, the paper's numbers, and every choice the paper leaves open.

Configs. The dataclass is the *schema* (field names and types); the values live in one YAML file per
experiment next to its module, ``flowvar/experiments/<name>.yaml``: every field at its full-mode (paper-scale)
value, a ``quick:`` section with the ``--quick`` overrides, and ``expected_runtime_s: {quick: .., full: ..}``
(wall-clock estimates on 2 CPU cores, used for ETAs; not a parameter). :func:`build_config` layers

    dataclass defaults → YAML values → YAML ``quick:`` (with --quick) → ``--config FILE`` (and its ``quick:``
    section with --quick) → ``--seed`` → ``--set key=value``

type-checking every value against the dataclass; an unknown key is a :class:`ConfigError` naming the file.
An experiment without a YAML file falls back to its dataclass defaults and the ``quick=`` dict given to
:func:`register`; ``flowvar config NAME --template`` prints the YAML file to add for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import re
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from flowvar.errors import ConfigError, FlowvarError, printable
from flowvar.results import (
    Claim,
    ClaimKind,
    Precondition,
    Result,
    Verdict,
    atomic_write_text,
    judge,
    staged_folder,
)


def discover() -> tuple[str, ...]:
    """Every module of this package except the infrastructure: one module per experiment, named like it.

    Names only; nothing is imported (a module that fails to import is still listed).
    """
    import pkgutil

    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
                        if not m.name.startswith("_") and m.name not in {"base"}))


CONFIG_DIR = Path(__file__).resolve().parent
"""Where the per-experiment YAML files live (next to the experiment modules)."""

META_KEYS = ("quick", "expected_runtime_s", "sweeps")
"""Top-level YAML keys that are not config fields: the quick section, the runtime estimates and the named sweeps
(``flowvar sweep --preset``, read by :mod:`flowvar.sweep`)."""


@dataclass(frozen=True)
class ExperimentSpec:
    """A registered experiment. ``defaults_file`` is its YAML file (it need not exist: see the module doc)."""

    name: str
    title: str
    config_cls: type
    run: Callable[[Any, RunContext], None]
    quick: dict[str, Any]
    paper: dict[str, Any]
    defaults_file: Path | None = None

    def field_names(self) -> list[str]:
        """The config keys, in declaration order."""
        return [f.name for f in dataclasses.fields(self.config_cls)]


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
        # The YAML file sits next to the module that registers the experiment (flowvar's own, or a plugin's).
        module_file = getattr(sys.modules.get(fn.__module__), "__file__", None)
        folder = Path(module_file).resolve().parent if module_file else CONFIG_DIR
        _REGISTRY[name] = ExperimentSpec(name, title, config, fn, dict(quick or {}), dict(paper or {}),
                                         folder / f"{name}.yaml")
        return fn

    return wrap


def _load_all() -> None:
    for module in discover():
        importlib.import_module(f"flowvar.experiments.{module}")


def experiments() -> dict[str, ExperimentSpec]:
    """All registered experiments by name (importing their modules on first use)."""
    _load_all()
    return dict(_REGISTRY)


def get_experiment(name: str) -> ExperimentSpec:
    """The experiment called ``name``: flowvar's own (importing only its module) or one a plugin registered."""
    names = discover()
    if name not in names:
        if name in _REGISTRY:  # registered by a plugin module (see load_plugin)
            return _REGISTRY[name]
        raise ConfigError(f"unknown experiment {name!r}; run `flowvar list` to see the {len(names)} experiments "
                          f"({', '.join(names)}), or load your own with --plugin")
    importlib.import_module(f"flowvar.experiments.{name}")
    return _REGISTRY[name]


def load_plugin(target: str | Path) -> list[str]:
    """Import a module that registers extra experiments with :func:`register`; return the names it added.

    ``target`` is a ``.py`` file (imported under its stem, its folder put on ``sys.path`` so that worker
    processes can import it again) or a dotted module name. Importing the same target twice is a no-op.
    """
    before = set(_REGISTRY)
    text = str(target)
    try:
        if text.endswith(".py") or Path(text).is_file():
            path = Path(text).resolve()
            if not path.is_file():
                raise ConfigError(f"plugin file {text} does not exist")
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
            importlib.import_module(path.stem)
        else:
            importlib.import_module(text)
    except ConfigError:
        raise
    except ImportError as e:
        raise ConfigError(f"cannot import plugin {text}: {e}") from None
    except Exception as e:
        raise ConfigError(f"plugin {text} failed while importing: {type(e).__name__}: {e}".splitlines()[0]) from None
    return sorted(set(_REGISTRY) - before)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _parse_scalar(raw: str) -> Any:
    """A ``--set`` value as YAML (``1``, ``0.5``, ``true``, ``[1, 2]``, ``null``); unparsable text stays a string."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def coerce(key: str, raw: Any, tp: Any, *, source: str | None = None) -> Any:
    """Convert ``raw`` to the field type ``tp``, or raise ConfigError.

    ``raw`` is a string from ``--set`` (parsed as YAML first) or, when ``source`` names the file it came from,
    a value already parsed from a YAML file. Error messages start with ``source`` or ``--set key=raw``.
    """
    where = source if source is not None else f"--set {key}={printable(str(raw))}"
    value = _parse_scalar(raw) if isinstance(raw, str) and source is None else raw
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
                return coerce(key, value, arg, source=where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot parse {raw!r}")
    if origin in (list, tuple):
        if isinstance(value, str) and "," in value:
            value = [_parse_scalar(v) for v in value.split(",")]
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        items = [coerce(key, v, inner, source=where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} expects true or false")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
            raise ConfigError(f"{where}: {key} expects an integer, got {raw!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; Python's float() does not
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {key} expects a number, got {raw!r}")
        return float(value)
    if tp is str:
        return str(value)
    typing_literal = typing.Literal
    if origin is typing_literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} must be one of {list(args)}")
        return value
    raise ConfigError(f"{where}: cannot parse a value of type {_type_name(tp)}")


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``["key=value", ...]`` into a dict, rejecting malformed entries."""
    out: dict[str, str] = {}
    for item in pairs:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--set expects key=value, got {item!r} (for example --set steps=500)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@dataclass(frozen=True)
class ConfigValues:
    """The values one YAML mapping gives an experiment: top-level ``values`` and the ``quick`` section.

    ``expected_runtime_s`` maps ``"quick"``/``"full"`` to wall-clock estimates (seconds on 2 CPU cores).
    """

    source: str
    values: dict[str, Any]
    quick: dict[str, Any]
    expected_runtime_s: dict[str, float]


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed file is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


def parse_config_mapping(spec: ExperimentSpec, mapping: Any, source: str) -> ConfigValues:
    """Validate a YAML mapping against ``spec``'s dataclass and coerce every value to its field type.

    Allowed keys: the dataclass fields, ``quick`` (a mapping of fields) and ``expected_runtime_s``. Anything
    else is a :class:`ConfigError` naming ``source`` (the file) and the valid keys.
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys for {spec.name}, got "
                          f"{type(mapping).__name__}")
    hints = typing.get_type_hints(spec.config_cls)
    names = spec.field_names()

    def fields_of(section: dict, where: str) -> dict[str, Any]:
        out = {}
        for key, raw in section.items():
            if key not in names:
                raise ConfigError(f"{where}: unknown config key {key!r} for {spec.name}; valid keys: "
                                  f"{', '.join(names)}")
            out[key] = coerce(key, raw, hints[key], source=f"{where}: {key}: {raw!r}")
        return out

    top = {k: v for k, v in mapping.items() if k not in META_KEYS}
    values = fields_of(top, source)
    quick_section = mapping.get("quick") or {}
    if not isinstance(quick_section, dict):
        raise ConfigError(f"{source}: the quick section must be a mapping of config keys")
    quick = fields_of(quick_section, f"{source} (quick section)")
    runtime_raw = mapping.get("expected_runtime_s") or {}
    if not isinstance(runtime_raw, dict) or set(runtime_raw) - {"quick", "full"}:
        raise ConfigError(f"{source}: expected_runtime_s must be a mapping {{quick: seconds, full: seconds}}")
    runtime = {mode: coerce("expected_runtime_s", v, float, source=f"{source}: expected_runtime_s")
               for mode, v in runtime_raw.items()}
    return ConfigValues(source, values, quick, runtime)


def package_defaults(spec: ExperimentSpec) -> ConfigValues | None:
    """The values of ``spec``'s YAML file, or None when the experiment has none (dataclass fallback)."""
    path = spec.defaults_file
    if path is None or not Path(path).is_file():
        return None
    return parse_config_mapping(spec, read_yaml(path), str(path))


def is_multi_experiment(mapping: Any) -> bool:
    """Whether a ``--config`` mapping is keyed by experiment name (``{fig4: {...}, prop1: {...}}``)."""
    names = set(discover())
    return (isinstance(mapping, dict) and bool(mapping)
            and all(k in names and isinstance(v, dict | None) for k, v in mapping.items()))


def user_config(spec: ExperimentSpec, path: Path | str) -> ConfigValues | None:
    """The part of a ``--config FILE`` that applies to ``spec``.

    The file is either flat (the format of the package YAML files: keys, ``quick:``) or keyed by experiment
    name; in the second form an experiment the file does not mention gets None.
    """
    mapping = read_yaml(path)
    if is_multi_experiment(mapping):
        if spec.name not in mapping:
            return None
        return parse_config_mapping(spec, mapping[spec.name], f"{path} ({spec.name} section)")
    return parse_config_mapping(spec, mapping, str(path))


def expected_runtime(spec: ExperimentSpec, quick: bool) -> float | None:
    """The YAML file's wall-clock estimate for this mode (seconds on 2 CPU cores), or None."""
    defaults = package_defaults(spec)
    if defaults is None:
        return None
    return defaults.expected_runtime_s.get("quick" if quick else "full")


# The schema's generic value rules, by field name (an experiment's ``validate()`` adds the cross-field ones). Every
# number must be finite; a list whose default is non-empty must stay non-empty; and:
COUNT_FIELDS = re.compile(r"^(n|ns|dims|widths|n_.*|.*_samples|steps|.*_steps|train_steps|repeats|.*_repeats|rounds|"
                          r"stages|batch_size|width|depth|resolution|.*_pairs|eval_.*|base_channels|channel_mult|"
                          r"num_res_blocks|.*_sources|.*_points|grid_columns|max_.*|.*_max|min_heldout|"
                          r"gap_check_n|ot_block_size)$")
"""Counts: integers ≥ 1 each (``euler_steps=[0]`` or ``n_samples=0`` cannot run)."""
NON_NEGATIVE_FIELDS = re.compile(r"^(seed|.*_seed|.*sigma.*|checkpoint_every|warmup_steps|threads|dropout|"
                                 r"weight_decay|ot_refine_rounds|log_every|.*_tol_deg)$")
"""Numbers ≥ 0 (σ, seeds, and the counts where 0 means "none" or "automatic")."""
POSITIVE_FIELDS = re.compile(r"^(lr|.*_lr|rtol|atol|mu|cov_diag|.*_std|.*_scale|.*_factor|.*_ratio|.*margin|"
                             r"min_.*effect.*|min_effect|.*_threshold|.*_accuracy|.*_fraction|.*_rel_error|zero_loss|"
                             r"window_s_min|grad_clip|angle_deg)$")
"""Numbers > 0 (rates, tolerances, scales, thresholds)."""
MAX_COUNT = 10**8
"""The largest value any count may take: beyond it a run cannot finish on any machine flowvar targets (a config
asking for more is refused up front rather than failing hours later or exhausting memory)."""


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def check_schema(spec: ExperimentSpec, config: Any) -> None:
    """The generic value rules of every experiment's schema (see :data:`COUNT_FIELDS` and its neighbours); a
    violation is a one-line :class:`ConfigError` naming the key, the value and what it must be."""
    for f in dataclasses.fields(config):
        key, value = f.name, getattr(config, f.name)
        numbers = _numbers(value)
        where = f"{spec.name}: {key}"
        if any(not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{where} must be finite, got {_yaml_inline(value)}")
        default = field_default(f)
        if isinstance(value, list | tuple) and not value and isinstance(default, list | tuple) and default:
            raise ConfigError(f"{where} must not be empty (default {_yaml_inline(default)})")
        if NON_NEGATIVE_FIELDS.match(key):  # before the counts: warmup_steps = 0 means no warmup
            if any(v < 0 for v in numbers):
                raise ConfigError(f"{where} must be >= 0, got {_yaml_inline(value)}")
        elif COUNT_FIELDS.match(key):
            bad = [v for v in numbers if v < 1 or v > MAX_COUNT]
            if bad:
                raise ConfigError(f"{where} must hold counts from 1 to {MAX_COUNT:.0e}, got {_yaml_inline(value)}")
        elif POSITIVE_FIELDS.match(key) and any(v <= 0 for v in numbers):
            raise ConfigError(f"{where} must be > 0, got {_yaml_inline(value)}")
        if key == "alpha" and numbers and not 0 < numbers[0] < 0.5:
            raise ConfigError(f"{where} must lie in (0, 0.5) (a significance level), got {value}")


def build_config(spec: ExperimentSpec, *, quick: bool = False, seed: int | None = None,
                 overrides: dict[str, Any] | None = None, config_file: Path | str | None = None) -> Any:
    """Dataclass defaults → YAML values → quick section → ``config_file`` → ``seed`` → ``overrides``.

    Every value is type-checked against the dataclass; see the module doc for the layering.
    """
    hints = typing.get_type_hints(spec.config_cls)
    names = spec.field_names()
    values: dict[str, Any] = {}
    defaults = package_defaults(spec)
    if defaults is not None:
        values.update(defaults.values)
        if quick:
            values.update(defaults.quick)
    elif quick:
        values.update(spec.quick)
    if config_file is not None:
        user = user_config(spec, config_file)
        if user is not None:
            values.update(user.values)
            if quick:
                values.update(user.quick)
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
    validate_config(spec, config)
    return config


MAX_DAYS_DEFAULT = 30.0
"""Runs estimated (:func:`estimated_runtime`) to take longer than this many days on 2 CPU cores are refused up
front; ``$FLOWVAR_MAX_DAYS`` raises or lowers the bound."""


def _work_size(key: str, value: Any) -> float | None:
    """How much work a config value asks for: the total of a count field (``n_samples=1e4``, ``ns=[64, 256]``),
    the length of any other list (σ values, angles); None for the rest."""
    numbers = _numbers(value)
    if COUNT_FIELDS.match(key) and numbers:
        return float(sum(numbers))
    if isinstance(value, list | tuple) and value:
        return float(len(value))
    return None


def estimated_runtime(spec: ExperimentSpec, config: Any) -> float | None:
    """A rough wall-clock estimate (seconds, 2 CPU cores) of running ``config``: the YAML file's full-mode estimate
    times ∏_k size_k(config) / size_k(full defaults) over the count fields and lists (:func:`_work_size`), i.e.
    linear in every count. None without a YAML estimate. It is coarse by design (widths and depths cost more than
    linearly): it exists to refuse sizes that cannot finish, not to schedule."""
    defaults = package_defaults(spec)
    if defaults is None or "full" not in defaults.expected_runtime_s:
        return None
    full = {f.name: field_default(f) for f in dataclasses.fields(config)} | dict(defaults.values)
    ratio = 1.0
    for f in dataclasses.fields(config):
        now, ref = _work_size(f.name, getattr(config, f.name)), _work_size(f.name, full.get(f.name))
        if now is not None and ref is not None and ref > 0:
            ratio *= now / ref
    return float(defaults.expected_runtime_s["full"]) * ratio


def max_runtime_s() -> float:
    """The bound of :func:`check_size` in seconds: ``$FLOWVAR_MAX_DAYS`` days, else :data:`MAX_DAYS_DEFAULT`."""
    raw = os.environ.get("FLOWVAR_MAX_DAYS")
    if raw is None:
        return MAX_DAYS_DEFAULT * 86400.0
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not (math.isfinite(days) and days > 0):
        raise ConfigError(f"FLOWVAR_MAX_DAYS must be a positive number of days, got {raw!r}")
    return days * 86400.0


def check_size(spec: ExperimentSpec, config: Any) -> None:
    """Refuse, with the estimate, a config that would run longer than :func:`max_runtime_s` on 2 CPU cores."""
    estimate = estimated_runtime(spec, config)
    bound = max_runtime_s()
    if estimate is not None and estimate > bound:
        raise ConfigError(f"{spec.name}: this config would take ~{estimate / 86400:.3g} days on 2 CPU cores (the "
                          f"full-mode estimate scaled linearly by its sizes), over the {bound / 86400:.3g}-day bound; "
                          f"shrink the sizes, or raise the bound with FLOWVAR_MAX_DAYS=...")


def validate_config(spec: ExperimentSpec, config: Any) -> None:
    """The schema's generic rules (:func:`check_schema`), then the experiment's own ``validate()`` (cross-field
    checks), then the size bound (:func:`check_size`). Anything else escaping ``validate()`` (a bug, not bad input)
    is reported as a :class:`ConfigError` naming the experiment, so a bad value never reaches the user as a
    traceback."""
    check_schema(spec, config)
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except FlowvarError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError, RuntimeError) as e:
            raise ConfigError(f"invalid config for {spec.name}: {type(e).__name__}: {e}".splitlines()[0]) from None
    check_size(spec, config)


def _yaml_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_yaml_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _yaml_value(v) for k, v in value.items()}
    return value


def _yaml_inline(value: Any) -> str:
    """One value in YAML flow style on one line (``[1.0, 2.0]``, ``constant``, ``1.0e-07``, ``null``)."""
    text = yaml.safe_dump(_yaml_value(value), default_flow_style=True, width=10_000, allow_unicode=True,
                          sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (calling its ``default_factory``), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def defaults_yaml(spec: ExperimentSpec, expected_runtime_s: dict[str, float] | None = None) -> str:
    """The YAML file for ``spec`` generated from its dataclass defaults and the ``quick=`` dict of :func:`register`.

    ``flowvar config NAME --template`` prints it; a field without a default is written as ``null`` and must be
    filled in.
    """
    lines = [f"# {spec.name}: {spec.title}",
             "# Every parameter at full (paper) scale; `quick:` overrides them for --quick. The dataclass",
             f"# {spec.config_cls.__name__} in flowvar/experiments/{spec.name}.py is the schema (names and types); "
             "this file holds the values.",
             f"# `flowvar config {spec.name} [--quick]` prints the effective config after --config, --seed and --set."]
    for f in dataclasses.fields(spec.config_cls):
        value = field_default(f)
        value = None if value is dataclasses.MISSING else value
        lines.append(f"{f.name}: {_yaml_inline(value)}")
    lines.append("quick:" if spec.quick else "quick: {}")
    lines += [f"  {k}: {_yaml_inline(v)}" for k, v in spec.quick.items()]
    if expected_runtime_s:
        lines.append("# wall-clock estimates in seconds on 2 CPU cores (not a parameter): ETAs and docs/reproduce.md")
        lines.append(f"expected_runtime_s: {_yaml_inline(dict(expected_runtime_s))}")
    return "\n".join(lines) + "\n"


def config_yaml(config: Any) -> str:
    """An effective config as a flat YAML mapping (a valid ``--config FILE``)."""
    return yaml.safe_dump(_yaml_value(dataclasses.asdict(config)), default_flow_style=None, sort_keys=False,
                          width=1000, allow_unicode=True)


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
    device: str = "cpu"

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + offset``: one per independent stream."""
        return torch.Generator().manual_seed(self.seed + offset)

    def metric(self, key: str, value: Any) -> None:
        self.metrics[key] = value

    def claim(self, claim_id: str, statement: str, evidence: dict[str, Any], *, kind: ClaimKind, rule: str,
              verdict: Verdict | None = None, confirmed: bool | None = None, refuted: bool | None = None,
              precondition: Precondition | None = None, min_effect: str = "", replicates: str = "") -> Claim:
        """Record a claim; see :func:`flowvar.results.judge`. Prefer ``verdict=`` from a pure, unit-tested rule
        function of ``evidence`` over inline ``confirmed=``/``refuted=`` booleans."""
        c = judge(claim_id, statement, evidence, rule=rule, kind=kind, verdict=verdict, confirmed=confirmed,
                  refuted=refuted, precondition=precondition, min_effect=min_effect, replicates=replicates)
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


OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
"""The Okabe–Ito palette: distinguishable under the common colour-vision deficiencies; every figure's colour cycle."""


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Matplotlib settings for every experiment's figures: the colour-blind-safe :data:`OKABE_ITO` cycle, a
    readable font size and tight saving (restored afterwards)."""
    import matplotlib
    from cycler import cycler

    with matplotlib.rc_context({"axes.prop_cycle": cycler(color=list(OKABE_ITO)), "font.size": 10,
                                "savefig.bbox": "tight", "axes.grid": False}):
        yield


def run_experiment(name: str, out_dir: Path | str, *, quick: bool = False, seed: int | None = None,
                   overrides: dict[str, Any] | None = None, progress: bool = False,
                   config_file: Path | str | None = None, config: Any | None = None) -> Result:
    """Run one experiment and write ``out_dir/name/{result.json, summary.md, *.png}``.

    The config is built by :func:`build_config` from ``quick``, ``config_file``, ``seed`` and ``overrides``,
    unless a ready ``config`` (an instance of the experiment's dataclass) is given. Output is staged in a hidden
    sibling folder and moved into place only when complete, so an interrupted run never leaves a half-written
    result. Under ``torchrun`` only rank 0 writes; an experiment records its device in ``ctx.device``.
    """
    import matplotlib

    matplotlib.use("Agg")
    spec = get_experiment(name)
    if config is None:
        config = build_config(spec, quick=quick, seed=seed, overrides=overrides, config_file=config_file)
    elif not isinstance(config, spec.config_cls):
        raise TypeError(f"experiment {name}: config must be a {spec.config_cls.__name__}, got {type(config).__name__}")
    from flowvar.distributed import is_main_process

    with staged_folder(Path(out_dir) / name) as stage:
        ctx = RunContext(name=name, out_dir=stage.path, quick=quick, seed=int(getattr(config, "seed", 0)),
                         progress=progress, paper=dict(spec.paper))
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]), figure_style():
            torch.manual_seed(ctx.seed)
            spec.run(config, ctx)
        result = Result(experiment=name, title=spec.title, config=dataclasses.asdict(config), quick=quick,
                        claims=ctx.claims, metrics=ctx.metrics, paper=ctx.paper, choices=ctx.choices,
                        notes=ctx.notes, figures=ctx.figures, runtime_s=time.perf_counter() - start,
                        device=ctx.device)
        # under torchrun every rank computes the same result; rank 0 writes it
        stage.keep = is_main_process()
        if stage.keep:
            atomic_write_text(stage.path / "result.json", json.dumps(result.to_dict(), indent=1))
            from flowvar.report.markdown import result_markdown  # the report's renderer: one way to tell a result

            atomic_write_text(stage.path / "summary.md", result_markdown(result))
    return result


__all__ = [
    "CONFIG_DIR",
    "ConfigValues",
    "ExperimentSpec",
    "FlowvarError",
    "RunContext",
    "build_config",
    "check_schema",
    "coerce",
    "config_yaml",
    "defaults_yaml",
    "discover",
    "expected_runtime",
    "experiments",
    "field_default",
    "get_experiment",
    "load_plugin",
    "package_defaults",
    "parse_config_mapping",
    "parse_overrides",
    "read_yaml",
    "register",
    "run_experiment",
    "user_config",
    "validate_config",
]
