"""Typed configs: the YAML values, ``--config``/``--seed``/``--set`` overrides, type coercion and validation.

An experiment is a function ``run(config, ctx)`` registered with :func:`register` together with its config
dataclass. The function composes library pieces and reports through ``ctx``: metrics, claims, figures, the paper's
numbers, and every choice the paper leaves open.

Configs. The dataclass is the *schema* (field names, types, validation; flowvar's own hold no value); the values
live only in one YAML file per experiment next to its module, ``flowvar/experiments/<name>.yaml``: every field at
its full-mode (paper-scale) value, a ``quick:`` section with the ``--quick`` overrides, and ``expected_runtime_s:
{quick: .., full: ..}`` (wall-clock estimates on 2 CPU cores, used for ETAs; not a parameter). :func:`build_config`
layers

    YAML values → YAML ``quick:`` (with --quick) → ``--config FILE`` (and its ``quick:`` section with --quick)
    → ``--seed`` → ``--set key=value``

type-checking every value against the dataclass; an unknown key is a :class:`ConfigError` naming the file.
Values, in YAML files and after ``--set``/``--grid`` alike, are read by YAML 1.2's core schema with decimal
integers (:class:`_ValueLoader`), not PyYAML's YAML 1.1: ``010`` is 10 (as ``--seed 010``), ``1:30``/``0x10``
are text an integer key refuses, ``on``/``yes`` are text a boolean key accepts, and a string key given on
``--set`` keeps its text as typed (``data_dir=on`` is the folder ``on``). In a YAML file, quote a path that
reads as a number (``data_dir: "0.50"``).
A plugin experiment without a YAML file falls back to its dataclass defaults and the ``quick=`` dict given to
:func:`register`; ``flowvar config NAME --template`` prints the YAML file to add for it.
"""


from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flowvar.errors import ConfigError, FlowvarError, printable
from flowvar.experiments.registry import META_KEYS, ExperimentSpec, discover

if typing.TYPE_CHECKING:  # the config layer stays importable without torch; gmm() imports it when called
    import torch

    from flowvar.distributions import GaussianMixture


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


class _ValueLoader(yaml.SafeLoader):
    """A safe YAML loader that reads plain scalars by YAML 1.2's core schema with decimal integers.

    PyYAML implements YAML 1.1, whose implicit types turn text into other values without a word: ``010`` is 8
    (octal), ``0123`` 83, ``1:30`` 90 (base 60), ``0b11`` 3, ``on``/``yes``/``off``/``no`` booleans (so a path
    ``--set data_dir=on`` became ``'True'``) and ``2024-01-01`` a date. Here, for ``--set``, ``--grid`` and YAML
    files alike:

    * integers are decimal digits ``[-+]?[0-9]+`` (``_`` between digits allowed, ``10_000``); a leading zero
      is read as decimal, ``010`` → 10, as ``--seed 010`` and ``--seeds 010`` read it; ``0x``/``0o``/``0b`` and
      ``1:30`` stay text, which an integer key refuses in one line;
    * floats are ``1.5``, ``.5``, ``1e-3`` (no dot needed, as in YAML 1.2), ``.inf``, ``-.inf``, ``.nan``;
    * booleans are ``true``/``false`` (any case); ``yes``/``no``/``on``/``off`` stay text, which a boolean key
      still accepts (:func:`coerce`) and a string key keeps as written;
    * null is ``null``, ``~`` or nothing; everything else (dates included) is text.
    """

    yaml_implicit_resolvers: typing.ClassVar[dict[Any, Any]] = {}  # YAML 1.1's table, replaced below

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))  # type: ignore[no-untyped-call]
        if not _DECIMAL_INT.fullmatch(text):  # an explicit !!int 0x10 or !!int 1:30
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a decimal integer",
                                                    node.start_mark)
        return int(text, 10)


_DECIMAL_INT = re.compile(r"[-+]?[0-9]+(?:_[0-9]+)*")
_ValueLoader.add_constructor("tag:yaml.org,2002:int", _ValueLoader.construct_yaml_int)
for _tag, _pattern, _first in [
    ("tag:yaml.org,2002:bool", r"(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", _DECIMAL_INT.pattern + "$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
    ("tag:yaml.org,2002:null", r"(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"<<$", "<"),
]:
    _ValueLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def parse_scalar(raw: str) -> Any:
    """A ``--set``/``--grid`` value as YAML (``1``, ``0.5``, ``true``, ``[1, 2]``, ``null``) read by
    :class:`_ValueLoader` (decimal integers, no YAML 1.1 octal/base-60/yes-no); unparsable text stays a string."""
    try:
        return yaml.load(raw, Loader=_ValueLoader)  # a SafeLoader subclass: no Python objects
    except yaml.YAMLError:
        return raw


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
"""The words a boolean key accepts (any case): YAML 1.2's true/false and, typed as a boolean, YAML 1.1's others."""


def coerce(key: str, raw: Any, tp: Any, *, source: str | None = None, typed: bool | None = None) -> Any:
    """Convert ``raw`` to the field type ``tp``, or raise ConfigError.

    ``raw`` is a string from ``--set`` (parsed by :func:`parse_scalar` first) or, when ``source`` names the file it
    came from, a value already parsed from a YAML file. ``typed=True`` marks text typed on another command-line
    option (``--grid``, with its own ``source``), read as ``--set`` reads its text. Error messages start with
    ``source`` or ``--set key=raw``. A string-typed key given as text keeps it as written (``data_dir=0.50`` stays
    ``'0.50'``).
    """
    where = source if source is not None else f"--set {key}={printable(str(raw))}"
    from_text = isinstance(raw, str) and (source is None if typed is None else typed)
    value = parse_scalar(raw) if from_text else raw
    return _coerce(key, raw, value, raw.strip() if from_text else None, tp, where)


def _coerce(key: str, raw: Any, value: Any, text: str | None, tp: Any, where: str) -> Any:
    """:func:`coerce` on a parsed ``value``; ``text`` is the text it was parsed from (None for a YAML file value)."""
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
                return _coerce(key, raw, value, text, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot parse {raw!r}")
    if origin in (list, tuple):
        if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
            # YAML could not read it (an unclosed bracket): splitting it on commas would blame an item like '[0'
            # on --grid, 0,0.1 would be two points, not one list: only the bracketed form is the fix there
            form = (f'[0, 0.1] (on --grid, quoted: --grid "{key}=[0,0.1]"; 0,0.1 would be two points)'
                    if where.startswith("--grid") else "[0, 0.1] or 0,0.1")
            raise ConfigError(f"{where}: {key} is not a valid list (check its brackets); write it as {form}")
        if isinstance(value, str) and "," in value:
            pieces = [v.strip() for v in value.split(",")]
            value, texts = [parse_scalar(v) for v in pieces], list(pieces)
        elif isinstance(value, list | tuple):
            texts = [None] * len(value)
        else:
            value, texts = [value], [text]
        inner = args[0] if args else Any
        items = [_coerce(key, raw, v, t, inner, where) for v, t in zip(value, texts, strict=True)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} expects true or false")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
            hint = ("; write it in decimal digits (0x/0o/0b and 1:30 are not read)"
                    if isinstance(value, str) and re.fullmatch(r"[-+]?0[xXoObB][0-9a-fA-F_]+|[-+]?[0-9]+(:[0-9]+)+",
                                                               value.strip()) else "")
            raise ConfigError(f"{where}: {key} expects an integer, got {raw!r}{hint}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # 'nan', 'inf', '1_000.5': Python's float() reads them, the YAML resolver not
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {key} expects a number, got {raw!r}")
        return float(value)
    if tp is str:
        if isinstance(value, str):  # YAML's text (a quoted '"on"' unquoted)
            return value
        if text is not None and not isinstance(value, list | dict):  # 0.50, 010, true: the text as typed
            return text
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
        if k.strip() in out and out[k.strip()] != v.strip():  # one would silently win
            raise ConfigError(f"--set gives {k.strip()} twice ({out[k.strip()]} and {v.strip()}); pass it once")
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


class _UniqueKeyLoader(_ValueLoader):
    """A safe YAML loader that refuses a mapping naming one key twice (PyYAML keeps the last one silently: a config
    file with ``steps: 10`` and, further down, ``steps: 20`` would run 20 steps with no word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed file is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: it is not UTF-8 text; pass a YAML file (e.g. one written "
                          f"by `flowvar config NAME > my.yaml`)") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no Python objects; 1.2 scalars
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
    if isinstance(mapping, dict):
        names = set(discover())
        sections = [k for k, v in mapping.items() if k in names and isinstance(v, dict | None)]
        if sections:  # keyed by experiment, but some keys are not one (a misspelt name)
            others = [str(k) for k in mapping if k not in names]
            raise ConfigError(f"config file {path} is keyed by experiment ({', '.join(sections)}) but "
                              f"{', '.join(repr(k) for k in others)} is not an experiment; the experiments are "
                              f"{', '.join(sorted(names))}")
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
                                 r"weight_decay|ot_refine_rounds|log_every|.*_tol_deg|gen_margin|mem_margin)$")
"""Numbers ≥ 0 (σ, seeds, the counts where 0 means "none" or "automatic", and the σ advisor's margins, where 0 asks
for the best generalisation / chance memorisation exactly); checked before :data:`POSITIVE_FIELDS`, whose
``.*margin`` keeps every other margin > 0."""
SEED_FIELDS = re.compile(r"^(seed|.*_seed)$")
"""Seeds: integers in [0, :data:`MAX_SEED`)."""
POSITIVE_FIELDS = re.compile(r"^(lr|.*_lr|rtol|atol|mu|cov_diag|.*_std|.*_scale|.*_factor|.*_ratio|.*margin|"
                             r"min_.*effect.*|min_effect|.*_threshold|.*_accuracy|.*_fraction|.*_rel_error|zero_loss|"
                             r"window_s_min|grad_clip|angle_deg)$")
"""Numbers > 0 (rates, tolerances, scales, thresholds)."""
MAX_SIGMA = 1e3
"""The largest interpolant noise σ any experiment accepts: far beyond the paper's (≤ 1), short of float64 overflow in
the noise and loss terms (σ² · d · counts)."""
MAX_COUNT = 10**8
"""The largest value any count may take: beyond it a run cannot finish on any machine flowvar targets (a config
asking for more is refused up front rather than failing hours later or exhausting memory)."""
MAX_SEED = 2**62
"""Seeds (``seed``, ``*_seed``) lie below 2**62, so every replicate seed ``seed + k`` (k < n_seeds ≤ MAX_COUNT) stays
a 63-bit seed that :func:`flowvar.seeding.derive_seed` and ``manual_seed`` accept."""


# ------------------------------------------------------------------------------------------- shared schemas
# Fields several experiments share are declared once, in a dataclass their configs inherit (the values stay in each
# experiment's YAML file). Also: ImageExperimentConfig (experiments/_imaging.py: table2, table3, sigma_tradeoff) and
# GaussianVarianceConfig (experiments/_gaussian_variance.py: fig4, fig5), next to the kits that read them.


@dataclass
class GMMTargetConfig:
    """The target of Table 1 (PAPER.md §4), shared by prop2, table1, memorisation_phase and sigma_tradeoff: a
    Gaussian mixture of ``n_components`` components with std ``component_std`` whose means are drawn from
    N(0, ``mean_scale``² I) with ``gmm_seed``. ``gmm_seed`` says *which mixture*: it goes to
    :meth:`flowvar.distributions.GaussianMixture.random` as it is, so equal values give the same mixture in every
    experiment. Validated by :func:`check_schema`'s rules for these names: a count ≥ 1, two numbers > 0 and a seed.
    """

    n_components: int
    mean_scale: float
    component_std: float
    gmm_seed: int

    def gmm(self, dim: int, dtype: torch.dtype | None = None) -> GaussianMixture:
        """The mixture in ``dim`` dimensions (means of shape (n_components, dim); float32 unless ``dtype``)."""
        import torch

        from flowvar.distributions import GaussianMixture

        return GaussianMixture.random(dim, self.n_components, self.mean_scale, self.component_std, self.gmm_seed,
                                      dtype=torch.float32 if dtype is None else dtype)


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def check_schema(spec: ExperimentSpec, config: Any) -> None:
    """The generic value rules of every experiment's schema (see :data:`COUNT_FIELDS` and its neighbours); a
    violation is a one-line :class:`ConfigError` naming the key, the value and what it must be."""
    defaults = package_defaults(spec)
    reference = dict(defaults.values) if defaults is not None else {}  # the full-mode values: the YAML's
    for f in dataclasses.fields(config):
        key, value = f.name, getattr(config, f.name)
        numbers = _numbers(value)
        where = f"{spec.name}: {key}"
        if any(not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{where} must be finite, got {_yaml_inline(value)}")
        default = reference.get(key, field_default(f))
        if isinstance(value, list | tuple) and not value and isinstance(default, list | tuple) and default:
            raise ConfigError(f"{where} must not be empty (default {_yaml_inline(default)})")
        if NON_NEGATIVE_FIELDS.match(key):  # before the counts: warmup_steps = 0 means no warmup
            if any(v < 0 for v in numbers):
                raise ConfigError(f"{where} must be >= 0, got {_yaml_inline(value)}")
            if SEED_FIELDS.match(key) and any(v >= MAX_SEED for v in numbers):
                raise ConfigError(f"{where} must be below 2**62 (so that every replicate seed stays 63-bit), got "
                                  f"{_yaml_inline(value)}")
        elif COUNT_FIELDS.match(key):
            bad = [v for v in numbers if v < 1 or v > MAX_COUNT]
            if bad:
                raise ConfigError(f"{where} must hold counts from 1 to {MAX_COUNT:.0e}, got {_yaml_inline(value)}")
        elif POSITIVE_FIELDS.match(key) and any(v <= 0 for v in numbers):
            raise ConfigError(f"{where} must be > 0, got {_yaml_inline(value)}")
        if "sigma" in key and any(v > MAX_SIGMA for v in numbers):
            raise ConfigError(f"{where} must be at most {MAX_SIGMA:g} (the paper's σ is at most 1; larger values "
                              f"overflow the interpolant's noise), got {_yaml_inline(value)}")
        if key == "alpha" and numbers and not 0 < numbers[0] < 0.5:
            raise ConfigError(f"{where} must lie in (0, 0.5) (a significance level), got {value}")


def build_config(spec: ExperimentSpec, *, quick: bool = False, seed: int | None = None,
                 overrides: dict[str, Any] | None = None, config_file: Path | str | None = None) -> Any:
    """YAML values (flowvar's experiments: the only place their values live; a plugin without a YAML file: its
    dataclass defaults and ``register(quick=)``) → quick section → ``config_file`` → ``seed`` → ``overrides``.

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
    missing = [f.name for f in dataclasses.fields(spec.config_cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        where = spec.defaults_file.name if spec.defaults_file is not None else f"{spec.name}.yaml"
        raise ConfigError(f"experiment {spec.name} has no value for {', '.join(missing)}: the values live in its YAML "
                          f"file {where} (next to its module); add them there or with --config/--set")
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
    """Refuse, with the estimate, a config that would run longer than :func:`max_runtime_s` on 2 CPU cores.

    Not applied to a run that will use a GPU (a ``device`` field of ``"cuda"``, or ``"auto"`` where CUDA is
    available): the estimate is of 2 CPU cores, and a paper-scale image run that is 10⁴ such days is a day or
    two of GPUs."""
    if getattr(config, "device", "cpu") in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return
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
    """The YAML file for ``spec``: its YAML file's values when it has one (flowvar's experiments), else (a plugin)
    generated from its dataclass defaults and the ``quick=`` dict of :func:`register`.

    ``flowvar config NAME --template`` prints it; a field without a default is written as ``null`` and must be
    filled in.
    """
    lines = [f"# {spec.name}: {spec.title}",
             "# Every parameter at full (paper) scale; `quick:` overrides them for --quick. The dataclass",
             f"# {spec.config_cls.__name__} in flowvar/experiments/{spec.name}.py is the schema (names and types); "
             "this file holds the values.",
             f"# `flowvar config {spec.name} [--quick]` prints the effective config after --config, --seed and --set."]
    defaults = package_defaults(spec)  # flowvar's experiments: the values of their YAML file
    full = dict(defaults.values) if defaults is not None else {}
    quick = dict(defaults.quick) if defaults is not None else dict(spec.quick)
    for f in dataclasses.fields(spec.config_cls):
        value = full.get(f.name, field_default(f))
        value = None if value is dataclasses.MISSING else value
        lines.append(f"{f.name}: {_yaml_inline(value)}")
    lines.append("quick:" if quick else "quick: {}")
    lines += [f"  {k}: {_yaml_inline(v)}" for k, v in quick.items()]
    if expected_runtime_s:
        lines.append("# wall-clock estimates in seconds on 2 CPU cores (not a parameter): ETAs and docs/reproduce.md")
        lines.append(f"expected_runtime_s: {_yaml_inline(dict(expected_runtime_s))}")
    return "\n".join(lines) + "\n"


def config_yaml(config: Any) -> str:
    """An effective config as a flat YAML mapping (a valid ``--config FILE``)."""
    return yaml.safe_dump(_yaml_value(dataclasses.asdict(config)), default_flow_style=None, sort_keys=False,
                          width=1000, allow_unicode=True)


__all__ = [
    "COUNT_FIELDS",
    "MAX_COUNT",
    "MAX_DAYS_DEFAULT",
    "MAX_SEED",
    "MAX_SIGMA",
    "NON_NEGATIVE_FIELDS",
    "POSITIVE_FIELDS",
    "SEED_FIELDS",
    "ConfigValues",
    "GMMTargetConfig",
    "build_config",
    "check_schema",
    "check_size",
    "coerce",
    "config_yaml",
    "defaults_yaml",
    "estimated_runtime",
    "expected_runtime",
    "field_default",
    "is_multi_experiment",
    "max_runtime_s",
    "package_defaults",
    "parse_config_mapping",
    "parse_overrides",
    "parse_scalar",
    "read_yaml",
    "user_config",
    "validate_config",
]
