"""Bringing a user's model and data into the audit: a factory plus a state_dict, a pickled module, a TorchScript or
``torch.export`` file; a folder of images, a ``.npy`` / ``.npz`` array or a bundled set, with class labels where
the data carry them (digits; a folder of one subfolder per class; an ``.npz`` file's ``labels`` / ``y`` array), and
continuous conditions (an ``.npz`` file's ``conditions`` array, or ``--conditions``).

Every failure is one :class:`~flowvar.errors.FlowvarError` line naming the input and the fix, raised before anything
is written.
"""

from __future__ import annotations

import importlib
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowvar.audit.checkpoints import read_checkpoint, working_folder_importable
from flowvar.audit.spelling import python_spelled
from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, printable
from flowvar.metrics import as_matrix, nearest_neighbours

#: Keys under which checkpoints commonly keep the weights, tried in this order when the file is not a plain
#: state_dict (EMA weights first: they are what samples are usually drawn with).
STATE_KEYS: tuple[str, ...] = ("ema_model", "ema", "state_dict", "model_state_dict", "model", "net_model", "net")


#: How the model line ends for ``--model`` without ``--checkpoint``: the factory's module is audited as built, and a
#: convention that does not fit then asks about the factory's weights, not a checkpoint's (:func:`flowvar.audit.audit`).
OWN_WEIGHTS = "with its own weights (no --checkpoint)"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to audit: ``module`` (in eval mode), ``source`` (how it was built, for the report: with a
    checkpoint of several sets of weights it names the one used, :func:`weights_text`) and ``state_key`` (the
    checkpoint entry its weights came from, ``ENTRY/PREFIX`` for a wrapper's attribute, None for a plain state_dict or
    a whole-module file)."""

    module: nn.Module
    source: str
    state_key: str | None = None


def is_ema(key: str) -> bool:
    """Whether a checkpoint entry or attribute path (``state_dict/ema_model``, ``ema``, ``model_ema``) names an EMA
    copy of the weights: one of its components is ``ema`` or begins with ``ema_`` or ends with ``_ema``."""
    return any(re.fullmatch(r"ema|ema_.*|.*_ema", part, re.IGNORECASE) for part in re.split(r"[/.]", key))


def weights_text(used: str, others: list[str]) -> str:
    """How the report names the weights a checkpoint gave, ``used``, among the ``others`` it also holds (those the
    audit passed over, [] when the user chose): ``[state_dict/ema_model: the EMA weights; the file also holds
    state_dict/model (--state-key state_dict/model)]`` — so which of a training checkpoint's sets of weights was
    audited is never hidden."""
    what = ": the EMA weights" if is_ema(used) else ""
    also = f"; the file also holds {', '.join(others)} (--state-key {others[0]})" if others else ""
    return f"[{used}{what}{also}]"


def import_factory(spec: str) -> Any:
    """``"package.module:attribute"`` → the attribute (a callable building the model, or a module instance). The
    module is looked for on ``sys.path`` and in the current working directory (:func:`working_folder_importable`)."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--model must be 'package.module:factory' (e.g. my_pkg.nets:build_model), got {spec!r}")
    try:
        with working_folder_importable():
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} for --model {spec}: {printable(str(error))}; is it on "
                          f"PYTHONPATH (run from the folder that holds it)?") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name} has no attribute {attr!r} (--model {spec})")
        obj = getattr(obj, part)
    return obj


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def pick_state_dict(obj: Any, path: Path, key: str | None = None) -> tuple[Mapping[str, Tensor], str | None]:
    """The state_dict inside a loaded checkpoint ``obj``: the object itself when it maps names to tensors, else the
    entry ``key`` (or the first of :data:`STATE_KEYS` that holds one). Strips a ``module.`` prefix left by
    DataParallel/DDP and the ``_orig_mod.`` prefix of ``torch.compile``."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise DataError(f"checkpoint {path} has no entry {key!r} (it holds {have})")
        state, used = obj[key], key
    elif _is_state_dict(obj):
        state, used = obj, None
    else:
        used = next((k for k in STATE_KEYS if isinstance(obj, Mapping) and _is_state_dict(obj.get(k))), None)
        if used is None:
            have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise DataError(f"checkpoint {path} holds no state_dict (looked for a mapping of tensors, or one under "
                            f"{', '.join(STATE_KEYS)}; it holds {have}); pass --state-key NAME")
        state = obj[used]
    if not _is_state_dict(state):
        raise DataError(f"checkpoint {path} entry {used!r} is not a state_dict (a mapping of names to tensors)")
    return _unwrapped(state), used


def _unwrapped(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without the marks of the wrappers it was saved through: ``torch.optim.swa_utils.AveragedModel``
    (an EMA copy: its ``n_averaged`` counter beside ``module.``-prefixed weights), DataParallel/DDP (``module.``)
    and ``torch.compile`` (``_orig_mod.``)."""
    out = dict(state)
    if "n_averaged" in out and len(out) > 1 and all(k.startswith("module.") for k in out if k != "n_averaged"):
        del out["n_averaged"]
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def submodule_state(state: Mapping[str, Tensor], expected: set[str]) -> tuple[dict[str, Tensor], str] | None:
    """The part of ``state`` under one attribute prefix whose keys are exactly ``expected`` (the built model's),
    and that prefix; None when ``state`` already matches or no prefix does.

    Why: a training wrapper's state_dict names the network by its attribute — a Lightning checkpoint's
    ``state_dict`` holds ``model.net.0.weight`` for ``self.model``, often beside ``ema_model.…`` or ``ema.module.…``
    for an EMA copy. EMA prefixes are tried first (:data:`STATE_KEYS` order, as for checkpoint entries), then the
    others in sorted order."""
    if set(state) == expected:
        return None
    found = matching_prefixes(state, expected)
    return (found[0][1], found[0][0]) if found else None


def matching_prefixes(state: Mapping[str, Tensor], expected: set[str]) -> list[tuple[str, dict[str, Tensor]]]:
    """Every attribute prefix of ``state`` whose part's keys are exactly ``expected``, with that part: EMA prefixes
    first (:data:`STATE_KEYS` order), then the others in sorted order (:func:`submodule_state` takes the first)."""
    rank = {key: i for i, key in enumerate(STATE_KEYS)}
    found = []
    for head in sorted(_prefixes(state), key=lambda h: (rank.get(h, len(STATE_KEYS)), h)):
        sub = _unwrapped({k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")})
        if set(sub) == expected:
            found.append((head, sub))
    return found


def wrapped_network(state: Mapping[str, Tensor], expected: set[str], *, whole: bool = True) -> str | None:
    """The attribute path P of the built model whose weights ``state`` is exactly — every key of the model is P + "."
    + a key of ``state`` — or None (``state`` matches the model itself, or no such P). ``whole=False``: P when the
    keys P + "." + key of ``state`` are among the model's, the model holding more (for the error that says so).

    Why: a factory often wraps the network the user trained (Meta flow_matching's ``ModelWrapper`` holds it as
    ``model``), while the user saved the network's own ``state_dict()`` (``net.0.weight`` for ``model.net.0.weight``):
    the weights are the whole model's, under P. The wrapper must hold nothing else, so no weight stays unloaded."""
    if not state or set(state) == expected:
        return None
    first = next(iter(state))
    for key in expected:
        if key.endswith("." + first):
            head = key[:-len(first) - 1]
            inside = {f"{head}.{k}" for k in state}
            if inside == expected or (not whole and inside < expected):
                return head
    return None


def _split_state_key(obj: Any, key: str | None) -> tuple[str | None, str | None]:
    """``--state-key`` as (checkpoint entry, attribute prefix): an entry of the checkpoint as it is
    (``ema_model``), ``ENTRY/PREFIX`` for a wrapper's attribute inside an entry (``state_dict/model`` of a Lightning
    checkpoint), or a prefix of a plain state_dict (``model``)."""
    if key is None or (isinstance(obj, Mapping) and key in obj):
        return key, None
    if "/" in key:
        entry, prefix = key.split("/", 1)
        return entry or None, prefix
    if _is_state_dict(obj) and any(str(k).startswith(key + ".") for k in obj):
        return None, key
    return key, None  # pick_state_dict names the entries there are


def _prefixes(state: Mapping[str, Tensor]) -> list[str]:
    """The first components of ``state``'s dotted keys, sorted (``model.net.0.weight`` → ``model``): the
    attributes a wrapper's state_dict may hold the network under."""
    return sorted({k.split(".", 1)[0] for k in state if "." in k})


@python_spelled({"model": "factory"})
def load_model(factory: str | None, checkpoint: str | Path | None, state_key: str | None = None) -> LoadedModel:
    """Build the model to audit.

    * ``factory`` + ``checkpoint``: ``factory()`` (``"module:callable"``; a module instance is used as is) then
      ``load_state_dict(strict=True)`` with the checkpoint's weights (:func:`pick_state_dict`);
    * ``factory`` alone: the factory's module as built (e.g. a closed-form field, or one that loads its own weights);
    * ``checkpoint`` alone: a TorchScript file (``torch.jit.save``), a ``torch.export`` program (``.pt2``), or a
      whole pickled module (``torch.save(model)``; unpickling runs code from the file: only audit files you trust).
    """
    if factory is None and checkpoint is None:
        raise ConfigError("give --model package.module:factory (with --checkpoint weights), or --checkpoint holding a "
                          "whole model (TorchScript, torch.export or a pickled module)")
    path = Path(checkpoint).expanduser() if checkpoint is not None else None
    if path is not None and path.is_dir():  # e.g. a diffusers save_pretrained folder
        weights = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"))
        hint = (f"pass the weights file inside it (it holds {', '.join(weights[:4])})" if weights else
                "pass the weights file itself")
        raise DataError(f"checkpoint {path} is a folder; {hint}, or a --model factory that loads the folder itself "
                        f"(e.g. calling UNet2DModel.from_pretrained)")
    if path is not None and not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    if factory is not None:
        built = import_factory(factory)
        if not isinstance(built, nn.Module):
            if not callable(built):
                raise ConfigError(f"--model {factory} is neither a callable nor an nn.Module")
            try:
                with working_folder_importable():  # a factory may import its network's module when called
                    built = built()
            except Exception as error:  # the user's factory: report its failure in one line
                raise ConfigError(f"--model {factory}() failed: {type(error).__name__}: "
                                  f"{printable(str(error))[:200]}") from None
        if not isinstance(built, nn.Module):
            raise ConfigError(f"--model {factory}() returned {type(built).__name__}, not a torch.nn.Module")
        if path is None:
            return LoadedModel(built.eval(), f"{factory}() {OWN_WEIGHTS}")
        obj = read_checkpoint(path, weights_only=True)
        entry, prefix = _split_state_key(obj, state_key)
        state, used = pick_state_dict(obj, path, entry)
        expected = set(built.state_dict())
        # the other sets of this model's weights the file holds, when the audit chose among them (the report names
        # them): other entries, then (below) other attributes of the entry used
        others = [str(k) for k in obj if k != used and _is_state_dict(obj.get(k))
                  and (set(_unwrapped(obj[k])) == expected or matching_prefixes(obj[k], expected))] \
            if state_key is None and isinstance(obj, Mapping) and used is not None else []
        if prefix is not None:  # the user's ENTRY/PREFIX
            state = _unwrapped({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
            if not state:
                raise DataError(f"checkpoint {path} has no weights under {state_key!r} (its state_dict's attributes: "
                                f"{', '.join(_prefixes(pick_state_dict(obj, path, entry)[0])[:8]) or 'none'})")
            used = f"{used}/{prefix}" if used else prefix
        elif set(state) != expected and (found := matching_prefixes(state, expected)):
            # the network under its attribute in a wrapper's state_dict (Lightning: model., ema_model.)
            (head, state), rest = found[0], found[1:]
            others = [f"{used}/{h}" if used else h for h, _ in rest] + others
            used = f"{used}/{head}" if used else head
        inner = wrapped_network(state, expected)
        if inner is not None:  # the inner network's own weights, the factory's wrapper around it holding nothing else
            state = {f"{inner}.{k}": v for k, v in state.items()}
        try:
            built.load_state_dict(state, strict=True)
        except RuntimeError as error:
            lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()][1:]
            detail = "; ".join(lines)[:300] or printable(str(error))[:300]
            heads = _prefixes(state)
            part = wrapped_network(state, expected, whole=False)
            hint = (f" (its keys are the model's submodule {part!r}'s, but the model also holds "
                    f"{', '.join(sorted(k for k in expected if not k.startswith(part + '.'))[:4])}: save the whole "
                    f"model's state_dict, or build the network alone with --model)" if part is not None else
                    f" (its weights sit under {', '.join(h + '.' for h in heads[:6])}: is the model one of those "
                    f"attributes, built by another factory?)" if 1 < len(heads) <= 6 or
                    (len(heads) == 1 and not any(k.startswith(heads[0] + ".") for k in built.state_dict())) else "")
            raise DataError(f"checkpoint {path} does not match the model built by {factory}: {detail}{hint}") from None
        src = (f"{factory}() with weights from {path}" + (f" {weights_text(used, others)}" if used else "")
               + (f" loaded into its submodule {inner!r}" if inner is not None else ""))
        return LoadedModel(built.eval(), src, used)
    assert path is not None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            try:
                return LoadedModel(torch.jit.load(str(path), map_location="cpu").eval(), f"TorchScript {path}")
            except Exception as error:
                raise DataError(f"{path} looks like TorchScript but torch.jit.load failed: {_first(error)}") from None
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            try:
                program = torch.export.load(str(path))
            except Exception as error:
                raise DataError(f"{path} looks like a torch.export program but torch.export.load failed: "
                                f"{_first(error)}") from None
            return LoadedModel(program.module(), f"torch.export program {path}")
    obj = read_checkpoint(path, weights_only=False)
    if not isinstance(obj, nn.Module):
        raise DataError(f"checkpoint {path} holds {'a state_dict' if isinstance(obj, Mapping) else type(obj).__name__},"
                        f" not a whole model; pass --model package.module:factory to build the model it belongs to")
    return LoadedModel(obj.eval(), f"pickled module {path}")


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return printable(text.splitlines()[0])[:200] if text else type(error).__name__


# --------------------------------------------------------------------------------------------- data


def in_memory(what: str, value: object, *, integers: bool) -> object:
    """An audit input given in memory, as the loaders take it: a numpy array becomes a tensor (as given, like a
    tensor); a str or Path stays a path or name; anything else (a list, a DataFrame) is one ConfigError naming the
    accepted forms. ``integers``: whether integers are a valid value here (labels); elsewhere an integer array or
    tensor holds pixels whose scale memory does not carry (torchvision's MNIST ``.data`` and ``PILToTensor`` give
    uint8 tensors), so it is refused with the two ways to give it, a tensor as an array is."""
    import numpy as np

    def no_integers(kind: str, dtype: object) -> None:
        if not integers:
            raise ConfigError(f"{what} is an integer {kind} ({dtype}): its pixel scale is unknown in memory; convert "
                              f"it to floats on the model's scale (e.g. x / 127.5 − 1 for 0..255 pixels), or save it "
                              f"with numpy.save and pass the path (with --value-range / value_range for non-8-bit "
                              f"images)")

    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            no_integers("array", value.dtype)
        if value.dtype.kind not in "iubf":
            raise ConfigError(f"{what} must be a numeric array, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Tensor):
        if value.is_complex():
            raise ConfigError(f"{what} must be a real tensor, got dtype {value.dtype}")
        if not value.is_floating_point():
            no_integers("tensor", value.dtype)
        return value
    if isinstance(value, str | Path):
        return value
    raise ConfigError(f"{what} must be a tensor, a numpy array or a path (file, folder or bundled name), got "
                      f"{type(value).__name__}")


def load_points(what: str, data: str | Path | Tensor, *, resolution: int | None = None,
                channels: int | None = None, value_range: tuple[float, float] | None = None) -> tuple[Tensor, str]:
    """An audit input as a float32 tensor (N, *shape) and a description (:func:`load_labelled` without the labels).
    """
    x, _, desc = load_labelled(what, data, resolution=resolution, channels=channels, value_range=value_range)
    return x, desc


def class_folders(folder: Path) -> list[Path]:
    """The class subfolders (with images at any depth; by name) of a folder laid out as torchvision's ``ImageFolder``
    when it holds no image file of its own, else []; DataError when it holds both (flowvar.data.mixed_folder_error)."""
    from flowvar.data import image_subfolders, list_image_files, mixed_folder_error

    fix = ("to read its sub-folders as classes (one label each), move its own {own} out of it; to read only its own "
           "{own}, move them into a folder of their own and pass that")
    if folder.is_dir() and (mixed := mixed_folder_error(folder, own := list_image_files(folder), fix)):
        raise mixed
    return [] if not folder.is_dir() or own else [folder / name for name, _ in image_subfolders(folder)]


#: The bundled data sets the audit reads by name (flowvar.data.NAMED_DATA less the synthetic gmm, which no model
#: was trained on).
AUDIT_DATA_NAMES: tuple[str, ...] = ("digits", "lfw")


def load_labelled(what: str, data: str | Path | Tensor, *, resolution: int | None = None,
                  channels: int | None = None, value_range: tuple[float, float] | None = None,
                  row_files: list[str] | None = None, unreadable_files: list[str] | None = None
                  ) -> tuple[Tensor, Tensor | None, str]:
    """An audit input as a float32 tensor (N, *shape), the class labels (N,) long it carries (None when it carries
    none), and a description.

    ``data``: a tensor (no labels); a ``.npy`` file ((N, d) vectors or (N, [C,] H, W) images,
    :func:`flowvar.data.load_array`) or an ``.npz`` file holding such an array and its ``labels`` (or ``y``); a
    folder of images (:func:`flowvar.data.load_images`, every file in sorted order, centre-cropped and resized to
    ``resolution`` — default the first image's size, with a warning when others differ:
    :func:`flowvar.data.default_geometry`), or a folder of one subfolder of images per class (label k = the k-th
    subfolder in sorted order, as torchvision's ``ImageFolder`` numbers them); or a bundled name
    (``digits``, labelled by digit; ``lfw``). ``value_range=(lo, hi)``: the pixel scale of an array file's images,
    mapped to [−1, 1] (16-bit or other integer images, which are refused without it); image files and bundled sets
    have a known scale, so it is refused with them. ``row_files``: for a folder, filled with each row's file path
    relative to it, in row order (:func:`flowvar.data.row_order_key`: folder by folder, then file name; what --pairs
    must follow). ``unreadable_files``: for a folder, filled with the files skipped as unreadable (relative to it),
    which have no row — the likely reason when another input's rows do not line up with these.
    """
    from flowvar.data import (
        NAMED_DATA,
        default_geometry,
        float_pixel_scale,
        load_array,
        load_folder,
        load_images,
        resolve_data,
    )

    def no_value_range(kind: str) -> None:
        if value_range is not None:
            raise ConfigError(f"{what}: --value-range scales the images of a .npy/.npz array; {kind} have a known "
                              f"pixel scale (drop --value-range)")

    data = in_memory(what, data, integers=False)  # type: ignore[assignment]
    if isinstance(data, Tensor):
        no_value_range("tensors (used as given)")
        x = data.detach().to("cpu", torch.float32)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ShapeError(f"{what} must have shape (N, *shape) with N >= 1, got {tuple(x.shape)}")
        check_finite(what, x)
        lo, hi = (float(x.min()), float(x.max())) if x.ndim in (3, 4) else (-1.0, 1.0)
        scale = float_pixel_scale(lo, hi)
        if scale == "0..255":
            warnings.warn(f"{what} holds float images with values in [{lo:g}, {hi:g}], used as given; "
                          f"flowvar's images are in [−1, 1]: if these are 0..255 pixels and the model was trained on "
                          f"another scale, convert them to it (e.g. x / 127.5 − 1)", stacklevel=3)
        elif scale == "0..1":  # torchvision ToTensor's scale, as load_array warns for a file of it
            warnings.warn(f"{what} holds float images with values in [{lo:g}, {hi:g}], used as given; flowvar's "
                          f"images are in [−1, 1]: if the model was trained on [−1, 1] images (most flow models, "
                          f"after Normalize(0.5, 0.5)), pass x * 2 − 1; if on [0, 1], nothing to do", stacklevel=3)
        return x.contiguous(), None, f"tensor {tuple(x.shape)}"
    text = str(data).strip()
    path = Path(text).expanduser()
    accepted = (f"pass a folder of images (or of one subfolder per class), a .npy or .npz file (numpy.save / "
                f"numpy.savez), or one of the bundled names {', '.join(AUDIT_DATA_NAMES)}")
    # before resolve_data, whose message offers every bundled name, gmm included, which the audit refuses
    if not text:
        raise DataError(f"{what}: no data given; {accepted}")
    if text.lower() not in NAMED_DATA and not path.exists():
        raise DataError(f"{what} path {path} does not exist; {accepted}")
    if path.suffix.lower() == ".npz" and path.is_file():  # only the audit reads labelled arrays: not resolve_data's
        loaded = load_array(path, resolution=resolution, channels=channels, value_range=value_range)
        return loaded.images.to(torch.float32).contiguous(), loaded.labels, loaded.source
    classes = class_folders(path)
    if classes:
        no_value_range("image files")
        resolution, channels = default_geometry(path, resolution, channels, recursive=True)
        loaded = load_folder(path, resolution=resolution, channels=channels, recursive=True)
        assert loaded.files is not None
        if row_files is not None:
            row_files.extend(loaded.files)
        if unreadable_files is not None:
            unreadable_files.extend(loaded.unreadable)
        index = {c.name: k for k, c in enumerate(classes)}
        labels = torch.tensor([index[Path(f).parts[0]] for f in loaded.files], dtype=torch.long)
        names = ", ".join(f"{k}={c.name}" for k, c in enumerate(classes[:12])) + (", ..." if len(classes) > 12 else "")
        return (loaded.images.to(torch.float32).contiguous(), labels,
                f"{loaded.source}; {len(classes)} classes by subfolder ({names})")
    spec = resolve_data(data)
    if spec.dataset == "gmm":
        raise ConfigError(f"{what}: 'gmm' is an experiment's synthetic set, not data a model was trained on; pass a "
                          f"folder, a .npy file, or {' or '.join(AUDIT_DATA_NAMES)}")
    if spec.dataset == "npy":
        assert spec.data_dir is not None
        images = load_array(spec.data_dir, resolution=resolution, channels=channels, value_range=value_range)
    else:
        no_value_range("image files" if spec.dataset == "folder" else f"the bundled {spec.dataset} images")
        if spec.dataset == "folder":
            assert spec.data_dir is not None
            resolution, channels = default_geometry(Path(spec.data_dir).expanduser(), resolution, channels)
        native = {"digits": 8, "lfw": 25}.get(spec.dataset, 32)
        images = load_images(spec.dataset, resolution=resolution or native, data_dir=spec.data_dir, channels=channels)
    if row_files is not None and images.files is not None:
        row_files.extend(images.files)
    if unreadable_files is not None:
        unreadable_files.extend(images.unreadable)
    return images.images.to(torch.float32).contiguous(), images.labels, images.source


def load_labels(what: str, labels: str | Path | Tensor, n: int) -> Tensor:
    """Class labels given on their own (``--labels``): a tensor or a ``.npy`` file of n integers >= 0, row i the
    label of data item i; (n,) long (:func:`flowvar.data.check_labels`)."""
    import numpy as np

    from flowvar.data import check_labels

    labels = in_memory(what, labels, integers=True)  # type: ignore[assignment]
    if isinstance(labels, Tensor):
        return check_labels(what, labels, n)
    file = Path(labels).expanduser()
    if not file.is_file():
        raise DataError(f"{what} file {file} does not exist; pass a .npy file of one integer class label per item")
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{what} {file} is not a readable .npy array ({printable(str(error))[:200]}); save the labels "
                        f"with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what} {file} must be a .npy array of integer labels, not an archive")
    return check_labels(f"{what} {file}", arr, n)


#: The key of an ``.npz`` data file's continuous conditions (one row per data item), and of a ``--conditions`` .npz.
NPZ_CONDITION_KEY = "conditions"


def check_conditions(what: str, conditions: object, n: int) -> Tensor:
    """Continuous conditions as a float32 tensor (n, *cond_shape): a floating-point array with one row per data
    item (any trailing shape: a pooled embedding (n, 512), token embeddings (n, L, D), a low-resolution image
    (n, C, h, w), one number per item (n,)), every value finite. One-line DataError / ShapeError naming ``what``
    otherwise; an integer array is refused (class ids go to ``--labels``)."""
    import numpy as np

    arr = conditions.detach().cpu().numpy() if isinstance(conditions, Tensor) else np.asarray(conditions)
    if arr.dtype.kind in "iub":
        raise DataError(f"{what} holds integers ({arr.dtype}): class ids go to --labels; continuous conditions "
                        f"(embeddings, attribute vectors) must be floating point (save them as float32)")
    if arr.dtype.kind != "f":
        raise DataError(f"{what} must be a floating-point array of conditions, got {arr.dtype}")
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ShapeError(f"{what} has shape {arr.shape}; give one condition per data item: first dimension {n}")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf: refused just below
        out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).reshape(n, -1).any(1).sum()) if n else 0
        raise DataError(f"{what} holds NaN or infinite values (in {bad} of its {n} rows, as float32); give finite "
                        f"conditions")
    return out


def load_conditions(what: str, conditions: str | Path | Tensor, n: int) -> Tensor:
    """Continuous conditions given on their own (``--conditions``): a tensor, a ``.npy`` file, or an ``.npz`` file
    holding them under ``conditions`` (or as its only array); row i the condition of data item i. (n, *cond_shape)
    float32 (:func:`check_conditions`)."""
    import numpy as np

    conditions = in_memory(what, conditions, integers=True)  # type: ignore[assignment]
    if isinstance(conditions, Tensor):
        return check_conditions(what, conditions, n)
    file = Path(conditions).expanduser()
    if not file.is_file():
        raise DataError(f"{what} file {file} does not exist; pass a .npy file of one condition row per item")
    try:
        arr = np.load(file, allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            with arr:
                keys = list(arr.files)
                key = NPZ_CONDITION_KEY if NPZ_CONDITION_KEY in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise DataError(f"{what} {file} holds the arrays {keys or 'none'}; name the conditions "
                                    f"'{NPZ_CONDITION_KEY}' (or save them alone with numpy.save)")
                arr = arr[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{what} {file} is not a readable .npy/.npz array ({printable(str(error))[:200]}); save the "
                        f"conditions with numpy.save") from None
    return check_conditions(f"{what} {file}", arr, n)


def carried_conditions(what: str, data: str | Path | Tensor, n: int) -> Tensor | None:
    """The continuous conditions an ``.npz`` data file carries under ``conditions`` ((n, *cond_shape) float32,
    :func:`check_conditions`), or None (any other input, or an ``.npz`` without them)."""
    import numpy as np

    if isinstance(data, Tensor):
        return None
    path = Path(str(data)).expanduser()
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if NPZ_CONDITION_KEY not in npz.files:
                return None
            arr = npz[NPZ_CONDITION_KEY]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{what} {path} is not a readable .npz file ({printable(str(error))[:200]})") from None
    return check_conditions(f"{what} {path} '{NPZ_CONDITION_KEY}'", arr, n)


class HeldOutOverlapWarning(UserWarning):
    """Some --heldout items are also training items; the audit leaves them out of the held-out set."""


#: A held-out item this close to a training item, relative to the median distance between training items and their
#: nearest other one, is taken for that item (a copy, a re-saved or re-quantised one): 1 % of the typical spacing is
#: far below where independent real items fall, and far above float16 rounding.
OVERLAP_SPACING = 0.01


def in_training_data(held: Tensor, train: Tensor) -> Tensor:
    """(H,) bool: held-out items at most :data:`OVERLAP_SPACING` × the training data's median nearest-neighbour
    spacing from a training item (exact copies, and copies rounded or re-saved), found in blocks."""
    tr = as_matrix("--data", train)
    d, _ = nearest_neighbours(as_matrix("--heldout", held), tr, 1)
    spacing = nearest_neighbours(tr, tr, 2)[0][:, 1]  # the first neighbour is the item itself
    spacing = spacing[spacing > 0]  # repeated training items are not the spacing of the data
    scale = float(spacing.median()) if spacing.numel() else float(tr.pow(2).sum(1).mean().sqrt())
    return d[:, 0] <= OVERLAP_SPACING * max(scale, 1e-12)


__all__ = [
    "AUDIT_DATA_NAMES", "NPZ_CONDITION_KEY", "OVERLAP_SPACING", "OWN_WEIGHTS", "STATE_KEYS",
    "HeldOutOverlapWarning", "LoadedModel", "carried_conditions", "check_conditions", "class_folders",
    "import_factory", "in_memory", "in_training_data", "is_ema", "load_conditions", "load_labelled", "load_labels",
    "load_model", "load_points", "matching_prefixes", "pick_state_dict", "submodule_state", "weights_text",
    "wrapped_network"
]
