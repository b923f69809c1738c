"""The experiment registry: which experiments exist (:func:`discover`: one module per experiment in this
package), how a module registers one (:func:`register`), how a plugin adds its own (:func:`load_plugin`)."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowvar.errors import ConfigError

if TYPE_CHECKING:
    from flowvar.experiments.base import RunContext


MACHINERY = frozenset({"base", "registry", "config"})
"""Modules of this package that are the machinery, not experiments (as are the ``_kit`` modules)."""


def discover() -> tuple[str, ...]:
    """Every module of this package except the infrastructure: one module per experiment, named like it.

    Names only; nothing is imported (a module that fails to import is still listed).
    """
    import pkgutil

    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
                        if not m.name.startswith("_") and m.name not in MACHINERY))


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
    assemble: Callable[[Any, Any, RunContext], None] | None = None
    """``assemble(config, parts, ctx)``: the full run's result from the metrics of runs that each computed part of
    its grid (:func:`assembles`; ``flowvar assemble``), or None where the experiment must run whole."""
    runtime_scales_with: tuple[str, ...] = ()
    """The list-valued config fields whose every entry is a run of its own (the grids: ``dims``, ``ns``, ``sigmas``,
    ...): a config holding a part of such a list costs that part of the whole run's time (a sweep's ETA). Lists that
    only change what is evaluated (solver grids) and vectors (a mean) are not listed: a part of them costs about the
    whole run; cumulative ones (training-length segments) are not listed either, and a sweep charges their parts by
    :func:`flowvar.sweep.estimates.segment_share` (an upper bound)."""
    ignores: Callable[[Any], Mapping[str, str]] | None = None
    """``ignores(config)``: the config fields a run with ``config`` never reads, each with why (:func:`ignoring`),
    so that a sweep refuses an axis whose values would compute the same result (``flowvar.sweep.grid.expand``);
    None: the experiment declares none."""

    def field_names(self) -> list[str]:
        """The config keys, in declaration order."""
        return [f.name for f in dataclasses.fields(self.config_cls)]


_REGISTRY: dict[str, ExperimentSpec] = {}


def register(name: str, *, title: str, config: type, quick: dict[str, Any] | None = None,
             paper: dict[str, Any] | None = None, runtime_scales_with: tuple[str, ...] = ()
             ) -> Callable[[Callable[[Any, RunContext], None]], Callable]:
    """Decorator registering ``run(config, ctx)`` as experiment ``name`` (``runtime_scales_with``: its grid fields,
    :attr:`ExperimentSpec.runtime_scales_with`)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"experiment {name}: config must be a dataclass")
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = set(quick or {}) - fields
    if unknown:
        raise TypeError(f"experiment {name}: quick overrides name unknown fields {sorted(unknown)}")
    if set(runtime_scales_with) - fields:
        raise TypeError(f"experiment {name}: runtime_scales_with names unknown fields "
                        f"{sorted(set(runtime_scales_with) - fields)}")

    def wrap(fn: Callable[[Any, RunContext], None]) -> Callable[[Any, RunContext], None]:
        _check_name_free(name, fn)
        # The YAML file sits next to the module that registers the experiment (flowvar's own, or a plugin's).
        module_file = getattr(sys.modules.get(fn.__module__), "__file__", None)
        folder = Path(module_file).resolve().parent if module_file else CONFIG_DIR
        _REGISTRY[name] = ExperimentSpec(name, title, config, fn, dict(quick or {}), dict(paper or {}),
                                         folder / f"{name}.yaml", runtime_scales_with=tuple(runtime_scales_with))
        return fn

    return wrap


def _module_source(module: str) -> str:
    """The resolved file of an imported module (its name when it has none): one file imported under two names (a
    plugin loaded by path and by dotted name, a worker re-importing it) is one source."""
    file = getattr(sys.modules.get(module), "__file__", None)
    return str(Path(file).resolve()) if file else module


def _check_name_free(name: str, fn: Callable[..., Any]) -> None:
    """ConfigError when ``name`` is flowvar's own experiment (or a former name of one) and ``fn`` is not in its
    module, or when another module already registered ``name``: registering would silently replace the other
    experiment, and its results and cache entries would be filed under a name that means something else.
    Registering again from the same file (a re-import, a reload) is allowed."""
    if fn.__module__ != f"flowvar.experiments.{canonical_name(name)}" and (name in discover() or name in ALIASES):
        raise ConfigError(f"{fn.__module__} registers an experiment named {name!r}, which is flowvar's own "
                          f"{canonical_name(name)}; give yours another name (e.g. {name}_mine)")
    existing = _REGISTRY.get(name)
    if existing is not None and _module_source(existing.run.__module__) != _module_source(fn.__module__):
        raise ConfigError(f"two modules register an experiment named {name!r}: "
                          f"{_module_source(existing.run.__module__)} and {_module_source(fn.__module__)}; rename "
                          f"one (a sweep or cache would file both under the one name)")


def assembles(name: str) -> Callable[[Callable[[Any, Any, RunContext], None]], Callable]:
    """Decorator registering ``assemble(config, parts, ctx)`` for the already registered experiment ``name``: it
    writes into ``ctx`` what ``run(config, ctx)`` would, from ``parts``, the ``metrics`` of results whose configs
    split the grid of ``config`` (a sweep's points; :mod:`flowvar.sweep.assemble` checks that every other field
    agrees)."""
    def wrap(fn: Callable[[Any, Any, RunContext], None]) -> Callable[[Any, Any, RunContext], None]:
        if name not in _REGISTRY:
            raise TypeError(f"assembles({name!r}): register the experiment first")
        _REGISTRY[name] = dataclasses.replace(_REGISTRY[name], assemble=fn)
        return fn
    return wrap


def ignoring(name: str) -> Callable[[Callable[[Any], Mapping[str, str]]], Callable[[Any], Mapping[str, str]]]:
    """Decorator registering ``ignores(config) -> {field: why}`` for the already registered experiment ``name``: the
    fields its run does not read for this ``config`` (sigma_tradeoff's image sizes on GMM vectors), or reads only
    for a figure or a label that no metric or verdict depends on (fig6's ``primary_steps``), each with a
    phrase that completes "<experiment> does not read <field> ..." and names how to make it read (``"with
    dataset=gmm (it sizes images: set dataset=digits ... to sweep it)"``). A sweep over such a field would compute
    the same result at each of its values and draw it as "no effect", which nothing tested: ``flowvar sweep``
    refuses it in one line (:func:`flowvar.sweep.grid.expand`). Declare only what the run's code shows: a field
    left out is taken as read."""
    def wrap(fn: Callable[[Any], Mapping[str, str]]) -> Callable[[Any], Mapping[str, str]]:
        if name not in _REGISTRY:
            raise TypeError(f"ignoring({name!r}): register the experiment first")
        _REGISTRY[name] = dataclasses.replace(_REGISTRY[name], ignores=fn)
        return fn
    return wrap


def _load_all() -> None:
    for module in discover():
        importlib.import_module(f"flowvar.experiments.{module}")


def experiments() -> dict[str, ExperimentSpec]:
    """All registered experiments by name (importing their modules on first use)."""
    _load_all()
    return dict(_REGISTRY)


ALIASES = {"memorization_phase": "memorisation_phase"}
"""Former names that still select an experiment (identifiers use one spelling, British: "memorisation")."""


def canonical_name(name: str) -> str:
    """``name``, or the experiment a former name (:data:`ALIASES`) stands for."""
    return ALIASES.get(name, name)


PLUGIN_COMMANDS: tuple[str, ...] = ("list", "run", "config", "sweep", "assemble", "cache list", "cache prune")
"""The commands that take ``--plugin FILE`` (``flowvar reproduce`` runs the paper's experiments only): what an unknown
experiment's message names (tests/test_registry_plugins.py checks it against the CLI)."""


def get_experiment(name: str) -> ExperimentSpec:
    """The experiment called ``name`` (or a former name of it, :data:`ALIASES`): flowvar's own (importing only its
    module) or one a plugin registered."""
    name = canonical_name(name)
    names = discover()
    if name not in names:
        if name in _REGISTRY:  # registered by a plugin module (see load_plugin)
            return _REGISTRY[name]
        raise ConfigError(f"unknown experiment {name!r}; run `flowvar list` to see the {len(names)} experiments "
                          f"({', '.join(names)}); your own experiments are loaded with --plugin FILE, which "
                          f"{', '.join(f'`flowvar {c}`' for c in PLUGIN_COMMANDS)} take")
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


def registered(name: str) -> ExperimentSpec | None:
    """The spec registered under ``name`` so far (flowvar's or a plugin's), without importing anything."""
    return _REGISTRY.get(name)


__all__ = ["ALIASES", "CONFIG_DIR", "MACHINERY", "META_KEYS", "PLUGIN_COMMANDS", "ExperimentSpec", "assembles",
           "canonical_name", "discover", "experiments", "get_experiment", "ignoring", "load_plugin", "register",
           "registered"]
