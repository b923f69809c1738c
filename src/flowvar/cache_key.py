"""What identifies an experiment run for the result cache (:mod:`flowvar.cache`): its key.

Key. :func:`cache_key` hashes (SHA-256, canonical JSON) everything a result depends on:

* the experiment name and its *full effective config* (``dataclasses.asdict`` of the built config, exactly the
  ``config`` of ``result.json``, so a key can be recomputed from a finished result);
* the quick flag (a quick run and a full run with equal values are still different runs: ``Result.quick``);
* the code version, :func:`code_version` of the experiment: ``flowvar.__version__`` plus a SHA-256 digest of the
  ``*.py`` source files (relative path and bytes) of the installed flowvar package that the experiment can depend
  on: every library module, the experiment machinery and shared kits (``experiments/base.py``, ``registry.py``,
  ``config.py``, ``__init__.py``, ``_*.py``) and the experiment's own module (no experiment imports another, so no
  import parsing is needed). Editing any library module invalidates every entry (conservative: experiments compose
  many library modules); adding or editing *another* experiment does not. The front end (:data:`FRONT_END`: the CLI,
  the runner, reproduce, sweep, advise, the report, the audit, this cache and its housekeeping,
  :mod:`flowvar.cache_admin`) does not count: it launches experiments and renders reports but computes nothing an
  experiment reports. Nor do the YAML files: the values they hold are in
  the effective config. Sources are read once per process, so one run uses one code version;
* the torch version and the torch thread count of the run (the last digits of a training run depend on the
  reduction order, hence on the number of intra-op threads: measured on fig6 and lemma1_mlp), under torchrun with
  more than one rank the number of ranks (they sum gradients in another order; absent for one process, so
  single-process keys are what they were before it was keyed), and for a config
  whose ``device`` is ``auto`` or ``cuda`` the device it resolves to (CUDA or CPU);
* the installed versions of the other libraries that compute reported numbers (:data:`KEYED_LIBRARIES`: numpy,
  scipy's p-values and assignments, POT's couplings, torchdiffeq's solvers, the data loaders of scikit-learn,
  scikit-image and Pillow), ``None`` for one not installed: an upgrade of any of them is another key, as one of
  torch is. The third-party modules flowvar's computing code imports are either keyed or listed with the reason
  they are not (:data:`UNKEYED_IMPORTS`: matplotlib draws figures, no number; tests/test_cache_key_inputs.py checks
  that no import is in neither);
* for a plugin experiment, its module and the helpers it imports from its folder (:func:`_plugin_source`);
* the *contents* of the user data a config names by path (:func:`data_digests`: any config field named
  ``data_dir``, ``data_path`` or ``data_file``, or ending in ``_data_dir``/``_data_path``/``_data_file``; today
  ``data_dir`` of ``dataset=npy|folder|celeba``): a file's SHA-256, a folder's listing (relative name, size and
  modification time of every non-hidden file below it, hashed). A replaced, rescaled or extended data set is then
  another key — a recomputation, never the old numbers, and never a resumed work folder mixing the two data sets.
  Folders are judged by their listing, not their bytes: hashing the 202,599 CelebA JPEGs (1.4 GB) would cost
  seconds to minutes at every lookup, while a listing costs one ``stat`` per file; the price is that a file
  rewritten in place with the same size *and* the same nanosecond modification time (a tool restoring times) goes
  unseen, and a copied or touched folder is recomputed. Built-in data (gmm, digits, lfw) name no path and add
  nothing, so their keys are unchanged.

The key reads ``<experiment>-<16 hex digits>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowvar.distributed import env_world_size
from flowvar.results import to_jsonable

CACHE_FORMAT = 2
"""The format of a cache entry's manifest and key inputs: a change makes every earlier entry another key. 2: the key
inputs hold ``libraries`` (:func:`library_versions`), and an entry records its inputs (one without is not served)."""

KEYED_LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "ot": "pot", "torchdiffeq": "torchdiffeq",
                   "sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow"}
"""Import name → distribution of each third-party library (torch aside: keyed with its thread count) that flowvar's
computing code imports and that computes or loads reported numbers: numpy (everywhere), scipy (``stats.py``'s
p-values, which decide verdicts; ``ot/dense.py``'s assignment), POT (``ot/dense.py``, ``ot/sparse.py``: the
couplings), torchdiffeq (``sampling.py``: dopri5 and the fixed-grid solvers), scikit-learn (``data.py``: the digits
loader), scikit-image (``data.py``: the LFW loader) and Pillow (``data.py``: decoding users' image folders). Their
installed versions are key inputs (:func:`library_versions`)."""

UNKEYED_IMPORTS = {
    "torch": "keyed on its own, beside the thread count (key_inputs' torch and torch_threads)",
    "matplotlib": "draws the figures; computes no reported number",
    "cycler": "matplotlib's colour cycle (experiments/base.py's figure style)",
    "tqdm": "progress bars",
    "yaml": "parses the experiments' YAML files, whose values the key holds as the effective config",
    "lightning": "integrations/lightning.py adapts the library to users' Lightning loops; no experiment imports it",
}
"""Third-party modules imported by flowvar's computing code whose versions are not key inputs, with why."""

FRONT_END = ("cli.py", "__main__.py", "cache.py", "cache_key.py", "cache_admin.py", "runner.py", "logs.py",
             "reproduce.py", "sweep/", "advise.py", "report/", "audit/")
"""Files (``report/``: folders) that only launch experiments, render reports or audit users' models: not part of any
experiment's code version."""


def _is_front_end(rel: str) -> bool:
    return any(rel == f or (f.endswith("/") and rel.startswith(f)) for f in FRONT_END)


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def _sources() -> dict[str, bytes]:
    """Relative path → bytes of every ``*.py`` file of the flowvar package except :data:`FRONT_END`, read once
    per process."""
    package = _package_dir()
    return {p.relative_to(package).as_posix(): p.read_bytes() for p in sorted(package.rglob("*.py"))
            if "__pycache__" not in p.parts and not _is_front_end(p.relative_to(package).as_posix())}


def source_digest(experiment: str | None = None) -> str:
    """SHA-256 over the relative path and bytes of flowvar's ``*.py`` files, in sorted order.

    The front-end modules (:data:`FRONT_END`: the CLI, the runner, reproduce, sweep, the report, the audit, the
    cache and this module) never count. With ``experiment``, the files are the library (everything outside
    ``experiments/``), the experiment infrastructure and shared kits (``experiments/base.py``,
    ``experiments/__init__.py``, ``experiments/_*.py``) and the experiment's own module: no experiment imports another
    (tests/test_architecture.py), so editing or adding *another* experiment leaves its key unchanged with no
    import parsing. Without, every file.
    """
    sources = _sources()
    if experiment is None:
        files = set(sources)
    else:
        infra = {f for f in sources if f in ("experiments/__init__.py", "experiments/base.py",
                                             "experiments/registry.py", "experiments/config.py")
                 or f.startswith("experiments/_")}
        library = {f for f in sources if not f.startswith("experiments/")}
        own = {f"experiments/{experiment}.py"} & set(sources)
        files = library | infra | own
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode())
        digest.update(b"\0")
        digest.update(sources[rel])
        digest.update(b"\0")
    plugin = _plugin_source(experiment) if experiment is not None else None
    if plugin is not None:  # an experiment registered by a plugin module outside the package: its file counts
        digest.update(b"plugin\0" + plugin)
    return digest.hexdigest()


def _plugin_source(experiment: str) -> bytes | None:
    """The source of a plugin experiment (one not registered by a flowvar module): the bytes of the module that
    registered it and of the helpers it imports from its own folder (:func:`_local_imports`: ``import helper`` or
    ``from helpers.sub import f`` beside ``myexp.py``, and theirs in turn), each with its path relative to that
    folder, in sorted order; None for flowvar's own.

    Read from the source, not from ``sys.modules``: every process (a sweep's workers, a later session) then finds
    the same files whatever else it has imported. A plugin installed as a package (under ``sys.prefix``) counts its
    own module only: installed code is versioned."""
    import sys

    from flowvar.experiments.registry import registered

    spec = registered(experiment)
    if spec is None:
        return None
    module = sys.modules.get(spec.run.__module__)
    path = getattr(module, "__file__", None)
    if path is None or Path(path).resolve().is_relative_to(_package_dir()):
        return None
    main = Path(path).resolve()
    installed = any(main.is_relative_to(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    files = {main} if installed else _local_imports(main, main.parent)
    out = bytearray()
    for file in sorted(files):
        with contextlib.suppress(OSError):  # a helper deleted since: the key changes, as it should
            out += file.relative_to(main.parent).as_posix().encode() + b"\0" + file.read_bytes() + b"\0"
    return bytes(out)


def _local_imports(main: Path, root: Path) -> set[Path]:
    """``main`` and the ``.py`` files below ``root`` it imports, directly or through one another: every ``import``
    statement anywhere in a file (inside functions too), absolute names looked up as ``root/a/b.py`` or
    ``root/a/b/__init__.py``, relative ones from the importing file's folder. Names that are not files there
    (torch, flowvar, the standard library) are left alone."""
    import ast

    found: set[Path] = set()
    todo = [main]
    while todo:
        file = todo.pop()
        if file in found:
            continue
        found.add(file)
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                base, names = root, [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = root if node.level == 0 else file.parent
                for _ in range(max(0, node.level - 1)):  # from ..x import y: one folder up per extra dot
                    base = base.parent
                module = node.module or ""
                names = [module] * bool(module) + [f"{module}.{a.name}".lstrip(".") for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
                    resolved = candidate.resolve() if candidate.is_file() else None
                    if resolved is not None and resolved.is_relative_to(root) and resolved not in found:
                        todo.append(resolved)
    return found


def code_version(experiment: str | None = None) -> str:
    """``<flowvar version>+<first 12 hex digits of source_digest(experiment)>``, e.g. ``0.1.0+3fa2c91b07de``."""
    from flowvar._version import __version__

    return f"{__version__}+{source_digest(experiment)[:12]}"


def config_dict(config: Any) -> dict[str, Any]:
    """A config (dataclass instance or mapping) as the plain JSON dict that ``result.json`` stores."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return to_jsonable(dataclasses.asdict(config))
    if isinstance(config, Mapping):
        return to_jsonable(dict(config))
    raise TypeError(f"config must be a dataclass instance or a mapping, got {type(config).__name__}")


def is_data_path_field(name: str) -> bool:
    """Whether a config field holds the path of user data whose contents the cache key covers (:func:`data_digests`):
    ``data_dir``, ``data_path``, ``data_file``, or a name ending in ``_data_dir``, ``_data_path``, ``_data_file``.
    Output folders (``checkpoint_dir``) are not data."""
    return name in ("data_dir", "data_path", "data_file") or name.endswith(("_data_dir", "_data_path", "_data_file"))


_FILE_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}
"""SHA-256 of data files already read by this process, by (path, device, inode, size, mtime_ns): a sweep keys many
points on one file."""


def data_digest(path: str | os.PathLike[str]) -> str:
    """What the cache key knows of the data at ``path`` (``~`` expanded, relative to the working directory):

    * a file: ``sha256:<hex>`` of its bytes (read in 1 MiB blocks; remembered for this process while its size,
      inode and modification time are unchanged);
    * a folder: ``listing-sha256:<hex>`` of the sorted (relative name, size, mtime_ns) of every file below it,
      hidden files and folders (``.DS_Store``, ``.git``) left out as the loaders leave them out; see the module
      docstring for why a listing and not the bytes;
    * ``missing`` (the run then fails with the loader's error, so nothing is stored under it).
    """
    target = Path(path).expanduser()
    try:
        info = target.stat()
    except OSError:
        return "missing"
    if target.is_dir():
        listing = []
        for folder, subfolders, files in os.walk(target):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                file = Path(folder, name)
                with contextlib.suppress(OSError):
                    stat = file.stat()
                    listing.append([file.relative_to(target).as_posix(), stat.st_size, stat.st_mtime_ns])
        listing.sort()
        return "listing-sha256:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    memo = (str(target.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        try:
            _FILE_DIGESTS[memo] = "sha256:" + file_digest(target)
        except OSError:
            return "missing"
    return _FILE_DIGESTS[memo]


def data_digests(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{field: data_digest(value)}`` for every data-path field of a config dict (:func:`is_data_path_field`;
    nested sections as ``section.field``) whose value is set."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(data_digests(value, f"{prefix}{key}."))
        elif is_data_path_field(str(key)) and isinstance(value, str | os.PathLike) and str(value):
            out[f"{prefix}{key}"] = data_digest(value)
    return out


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """``{distribution: installed version}`` of every :data:`KEYED_LIBRARIES` library, ``None`` for one that is not
    installed (an optional loader's: a run that needs it fails, one that does not is keyed on its absence). Read once
    per process, like the sources: one run sees one installation."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for distribution in sorted(set(KEYED_LIBRARIES.values())):
        try:
            versions[distribution] = md.version(distribution)
        except md.PackageNotFoundError:
            versions[distribution] = None
    return versions


def key_inputs(name: str, config: Any, quick: bool, threads: int | None = None) -> dict[str, Any]:
    """Everything :func:`cache_key` hashes, as a JSON-ready dict (stored in each entry's manifest).

    ``threads`` is the torch intra-op thread count the run uses (default: this process's current one): the last
    digits of a training run depend on it (reduction order), so results computed with different counts are kept
    apart. ``libraries``: :func:`library_versions`, the versions of the other libraries that compute reported
    numbers. ``world_size`` (only under torchrun with more than one rank): the number of ranks, which changes the
    gradients' reduction order as the thread count does. ``data`` (only when the config names user data by path):
    :func:`data_digests`, the contents of that data, so a changed file or folder is another key; the path itself
    enters the key made absolute, so one file named relatively or absolutely is one key (the config stored in
    ``result.json`` keeps the path as written).
    """
    import torch

    plain = config_dict(config)
    inputs = {"format": CACHE_FORMAT, "experiment": name, "quick": bool(quick), "config": _absolute_data_paths(plain),
              "code_version": code_version(name), "torch": torch.__version__,
              "torch_threads": int(threads if threads is not None else torch.get_num_threads()),
              "libraries": dict(library_versions())}
    world_size = env_world_size()
    if world_size > 1:
        # ranks sum gradients in another order than one process does, so the last digits differ as with the thread
        # count; keyed only under torchrun, so every single-process key stays what it was
        inputs["world_size"] = world_size
    if plain.get("device") in ("auto", "cuda"):
        # the device such a config resolves to (experiments/_imaging.resolve_device): a GPU run and a CPU run of one
        # torch build differ in their last digits, and a cache may move between machines
        inputs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    data = data_digests(plain)
    if data:
        inputs["data"] = data
    return inputs


def _absolute_data_paths(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each data-path field (:func:`is_data_path_field`) made absolute (``~`` expanded, resolved
    against the working directory), so ``data.npy``, ``./data.npy`` and ``/home/me/data.npy`` name one key."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out[key] = _absolute_data_paths(value)
        elif is_data_path_field(str(key)) and isinstance(value, str | os.PathLike) and str(value):
            out[key] = str(Path(value).expanduser().resolve())
        else:
            out[key] = value
    return out


def _masked_data_paths(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each data-path field's value replaced by whether it is set: what of a path
    :func:`result_mismatch` compares (see there)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out[key] = _masked_data_paths(value)
        elif is_data_path_field(str(key)):
            out[key] = bool(value)
        else:
            out[key] = value
    return out


def result_mismatch(experiment: object, quick: object, config: object, inputs: Mapping[str, Any]) -> str | None:
    """How a result (its ``result.json``'s ``experiment``, ``quick`` and ``config``) differs from the key inputs
    ``inputs`` it is stored under (:func:`key_inputs`), or None when it is their result.

    Compared: the experiment, the quick flag, and every config value as canonical JSON (so ``NaN`` equals ``NaN``
    and ``1e-3`` equals ``0.001``). A data-path field is compared on being set or not: ``result.json`` keeps the
    path as typed, relative to the working directory of its run, while the key holds it made absolute in the
    process that looks it up, so equal spellings cannot be told from the two; the data's contents are in the key
    (``data``). The answer names the first differing field, e.g. ``config n_samples: 7 in result.json, 20000 in
    the key's inputs``."""
    if experiment != inputs.get("experiment"):
        return f"experiment: {experiment!r} in result.json, {inputs.get('experiment')!r} in the key's inputs"
    if quick is not inputs.get("quick"):
        return f"quick: {quick!r} in result.json, {inputs.get('quick')!r} in the key's inputs"
    recorded = inputs.get("config")
    if not isinstance(config, Mapping) or not isinstance(recorded, Mapping):
        return "config: not a mapping in result.json or in the key's inputs"
    ours, theirs = _masked_data_paths(config), _masked_data_paths(recorded)
    for field in sorted(set(ours) | set(theirs)):
        a, b = (json.dumps(side.get(field, "<absent>"), sort_keys=True) for side in (ours, theirs))
        if a != b:
            return f"config {field}: {a} in result.json, {b} in the key's inputs"
    return None


def cache_key(name: str, config: Any, quick: bool, threads: int | None = None) -> str:
    """The cache key of running experiment ``name`` with ``config`` (dataclass or dict) in quick or full mode,
    with ``threads`` torch threads (default: the current count; see :func:`key_inputs`)."""
    return _key_of(name, key_inputs(name, config, quick, threads))


def _key_of(name: str, inputs: Mapping[str, Any]) -> str:
    """``<name>-<first 16 hex digits of the SHA-256 of the canonical JSON of inputs>``: the key of those inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return f"{name}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def key_of_inputs(inputs: Mapping[str, Any]) -> str:
    """The key a record of key inputs (:func:`key_inputs`, as read from JSON) hashes to."""
    return _key_of(str(inputs.get("experiment")), inputs)


def is_record_of(inputs: object, key: str) -> bool:
    """Whether ``inputs`` (a manifest's or work folder's recorded key inputs, as read from JSON) are those of ``key``:
    a mapping that hashes to it (:func:`_key_of`). A record that does not was edited, or belongs to another key."""
    return isinstance(inputs, Mapping) and key_of_inputs(inputs) == key


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["CACHE_FORMAT", "FRONT_END", "KEYED_LIBRARIES", "UNKEYED_IMPORTS", "cache_key", "code_version",
           "config_dict", "data_digest", "data_digests", "file_digest", "is_data_path_field", "is_record_of",
           "key_inputs", "key_of_inputs", "library_versions", "result_mismatch", "source_digest"]
