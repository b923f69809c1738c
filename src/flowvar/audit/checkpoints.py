"""Reading a ``--checkpoint`` file with ``torch.load``: a state_dict, a training checkpoint or a whole pickled module,
with the user's working folder importable while unpickling, and one line naming the cause and the fix for each way it
fails (not a torch.save file, a TorchScript file beside --model, Python objects beside the weights, a class that
cannot be imported or no longer exists).
"""

from __future__ import annotations

import codecs
import os
import pickletools
import re
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from flowvar.errors import DataError, printable


@contextmanager
def working_folder_importable() -> Iterator[None]:
    """The current working directory first on ``sys.path`` for the duration, unless it is there already (as ``''``
    or by name); ``sys.path`` as it was afterwards.

    Why: ``python -m flowvar.cli`` puts the working directory first on ``sys.path``, but the ``flowvar`` console
    script does not, so ``flowvar audit --model my_nets:build`` run beside ``my_nets.py`` could not import it. Only
    the user's model is imported under it — the factory's module (and what it or the factory imports) and a pickled
    module's classes — so the caller's import path is left as it was (the Python API runs in the user's process).
    First, as under ``python -m``: a module of the user's beside the command wins over an installed one of that name.
    """
    cwd = os.getcwd()
    present = any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path)
    if not present:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if not present and cwd in sys.path:
            sys.path.remove(cwd)



def _is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive: a zip whose members include the scripted code (``<name>/code/…``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


#: The first bytes of a pickle of protocol 2 or later (the PROTO opcode): how torch.save's pre-1.6 format begins.
PICKLE_PROTO = b"\x80"
#: The first bytes of a zip archive (a local file header): how torch.save's format begins, also when the file was cut
#: short (a truncated archive, whose central directory at the end is missing, is no zip to zipfile.is_zipfile).
ZIP_MAGIC = b"PK\x03\x04"


def _not_torch_save(path: Path) -> str | None:
    """What ``path`` is when it cannot be a torch.save file — neither a zip archive (torch.save since 1.6) nor a
    pickle of protocol ≥ 2 (the older format) — in a few words ("empty", "a NumPy .npy array", "text"); None when it
    may be one (or cannot be read: torch's error says why)."""
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError:
        return None
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path) or head.startswith((PICKLE_PROTO, ZIP_MAGIC)):  # a cut zip still begins with PK
        return None
    if head.startswith(b"\x93NUMPY"):
        return "it is a NumPy .npy array; arrays go to --data, --pairs or --heldout"
    try:  # incremental: a character cut at the end of the 512 bytes is not a decoding error
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return f"it begins with the bytes {head[:8]!r}"
    return f"it is text, beginning {printable(text[:40])!r}"


def _lightning_shaped(path: Path) -> bool:
    """Whether ``path`` pickles 'state_dict' and 'hyper_parameters' (a Lightning checkpoint), read from opcodes."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = archive.read(next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"))
        strings = {arg for _, arg, _ in pickletools.genops(pickled) if isinstance(arg, str)}
    except Exception:  # no archive, no pickle in it, or a damaged one: not recognised, the generic advice stands
        return False
    return "state_dict" in strings and bool({"hyper_parameters", "pytorch-lightning_version"} & strings)


def read_checkpoint(path: Path, weights_only: bool) -> Any:
    """``torch.load`` of ``path`` on the CPU (``weights_only``: tensors and containers only, else a whole pickled
    module, its classes imported with the working folder on ``sys.path``); every failure one
    :class:`~flowvar.errors.DataError` line saying what the file is and what to pass instead."""
    if weights_only and path.is_file() and _is_torchscript(path):  # before torch.load, which warns and dispatches
        raise DataError(f"checkpoint {path} is a TorchScript file, a whole model: pass it as --checkpoint without "
                        f"--model")
    try:
        if weights_only:
            return torch.load(path, map_location="cpu", weights_only=True)
        with working_folder_importable():  # unpickling imports the module that defines the model's classes
            return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist") from None
    except ModuleNotFoundError as error:  # only unpickling imports modules (weights_only refuses to)
        raise DataError(f"checkpoint {path} pickles a model whose classes are defined in {error.name!r}, which cannot "
                        f"be imported ({printable(str(error))[:200]}): the module defining the model class must be "
                        f"importable when the file is read — run from the folder that holds it, or put that folder "
                        f"on PYTHONPATH (or install the package it belongs to)") from None
    except AttributeError as error:  # unpickling found the class's module but not the class
        missing = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(error))
        if missing is None:
            raise DataError(f"checkpoint {path} cannot be unpickled ({printable(str(error))[:200]})") from None
        name, module = missing.groups()
        if module == "__main__" or module.endswith(".__main__"):  # pickled by a script: not importable from here
            raise DataError(f"checkpoint {path} pickles the model's class {name!r}, defined in the script that "
                            f"saved it (module __main__), which cannot be imported when the file is read: move "
                            f"{name} into a module, save its weights (torch.save(model.state_dict(), PATH)) and pass "
                            f"--model module:factory with that --checkpoint, or call flowvar.audit.audit(model, ...) "
                            f"from Python where the model is built") from None
        raise DataError(f"checkpoint {path} pickles the model's class {name!r} of module {module!r}, which has no "
                        f"{name} now (renamed or moved since the file was saved?): restore that class, or save the "
                        f"weights (torch.save(model.state_dict(), PATH)) and pass --model module:factory") from None
    except Exception as error:  # torch raises many types for a damaged or foreign file
        text = str(error).strip()
        foreign = _not_torch_save(path)
        if foreign is not None:  # torch's own words (e.g. about weights_only) would point elsewhere: say it first
            first = printable(text.splitlines()[0])[:200] if text else ""
            wanted = ("the weights saved with torch.save(model.state_dict(), PATH)" if weights_only else
                      "a whole model saved with torch.save(model, PATH), torch.jit.save or torch.export.save")
            raise DataError(f"checkpoint {path} is not a file written by torch.save (neither a zip archive nor a "
                            f"pickle: {foreign}); pass {wanted} (torch.load says: {type(error).__name__}"
                            f"{': ' + first if first else ''})") from None
        if weights_only and "weights only load failed" in text.lower() and zipfile.is_zipfile(path):
            # a torch.save archive holding more than tensors and containers (a pickled module, an argparse
            # Namespace among the hyper-parameters): weights_only refuses it rather than run code from the file
            blocked = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            why = f" (it pickles {blocked.group(1)})" if blocked else ""
            advice = (f"It is a Lightning checkpoint (its 'state_dict' is the weights): for a file you trust, "
                      f"extract them with python -c \"import torch; torch.save(torch.load('{path}', weights_only="
                      f"False)['state_dict'], 'weights.pt')\" and pass --checkpoint weights.pt with --model"
                      if _lightning_shaped(path) else  # the whole-model route would refuse its state_dict
                      "Save the weights alone (torch.save(model.state_dict(), 'weights.pt')), or, for a file you "
                      "trust holding the whole model, pass it as --checkpoint without --model")
            raise DataError(f"checkpoint {path} holds Python objects besides the weights{why}, which flowvar does not "
                            f"unpickle next to --model (that would run code from the file). {advice}") from None
        first = printable(text.splitlines()[0])[:200] if text else ""
        raise DataError(f"checkpoint {path} cannot be read by torch.load ({type(error).__name__}"
                        f"{': ' + first if first else ''}); is it a file written by torch.save?") from None


__all__ = ["PICKLE_PROTO", "ZIP_MAGIC", "read_checkpoint", "working_folder_importable"]
