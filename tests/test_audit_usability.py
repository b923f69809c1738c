"""flowvar audit as a user meets it: a model module in the folder the command runs from (the ``flowvar`` console
script does not put that folder on sys.path, ``python -m`` does), files that are not torch.save checkpoints, the
error when no calling convention runs, an adaptive solver's coarse reading, and the data names the audit accepts.

The console-script tests run ``.venv/bin/flowvar`` in a subprocess with the model's folder as the working directory
and nothing on PYTHONPATH: an in-process test whose fixture puts the folder on sys.path cannot see the failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flowvar.audit import check_conventions, load_model
from flowvar.audit.loading import AUDIT_DATA_NAMES, import_factory, load_labelled
from flowvar.audit.sections import pair_recovery
from flowvar.data import NAMED_DATA
from flowvar.errors import ConfigError, DataError
from flowvar.sampling import integrate

D = 4

#: A user's model module: a constant field v = mu, the exact transport of N(0, I) onto N(mu, I) (it fits the
#: straight-path targets of data near mu, so the convention check passes without training).
USER_NETS = textwrap.dedent('''
    import torch
    from torch import nn


    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = nn.Parameter(torch.zeros(4))

        def forward(self, x, t):
            return self.mu.expand(x.shape[0], -1)


    def build():
        return Shift()
''')


def flowvar_script() -> list[str]:
    """The installed ``flowvar`` console script (what a user types), beside this interpreter; where it is missing,
    the same entry point under ``python -P``, which likewise leaves the working directory off sys.path."""
    script = Path(sys.executable).with_name("flowvar")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-P", "-c", "import sys; from flowvar.cli import main; sys.exit(main())"]


def run_in(folder: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """``flowvar audit ARGS`` run from ``folder`` with no PYTHONPATH (one torch thread: the test machine is shared)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([*flowvar_script(), "audit", *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a user has it: ``user_nets.py``, a state_dict and a whole pickled module of its Shift (mu = 3),
    training items x1 = mu + 0.3·noise (16, 4) and their sources x0 (16, 4) as .npy files."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "user_nets.py").write_text(USER_NETS)
    sys.path.insert(0, str(folder))  # only to build the files here; removed before any test runs
    try:
        import user_nets  # type: ignore[import-not-found]

        model = user_nets.build()
        with torch.no_grad():
            model.mu.fill_(3.0)
        torch.save(model.state_dict(), folder / "sd.pt")
        torch.save(model, folder / "whole.pt")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("user_nets", None)
    gen = torch.Generator().manual_seed(0)
    np.save(folder / "x1.npy", (3.0 + 0.3 * torch.randn(16, D, generator=gen)).numpy())
    np.save(folder / "x0.npy", torch.randn(16, D, generator=gen).numpy())
    return folder


#: The smallest audit that runs every test: it is the loading that is under test here.
SMALL = ["--data", "x1.npy", "--pairs", "x0.npy", "--samples", "20", "--steps", "4", "--coarse-steps", "2",
         "--grad-samples", "4", "--t-bins", "1", "--threads", "1", "--device", "cpu"]


# --------------------------------------------------------------------------------------------- 1. the model's module


def test_console_script_imports_the_model_module_from_the_working_folder(user_folder: Path) -> None:
    """`flowvar audit --model user_nets:build` run from the folder holding user_nets.py (docs/audit.md's worked
    example) audits the model, as `python -m flowvar.cli` would (a whole pickled module read from the working folder:
    the next test, in process, where the working folder is off sys.path as under the console script)."""
    done = run_in(user_folder, ["--model", "user_nets:build", "--checkpoint", "sd.pt", *SMALL, "--out", "a"])
    assert done.returncode == 0, done.stderr
    result = json.loads((user_folder / "a" / "result.json").read_text())
    assert "user_nets:build() with weights from sd.pt" in json.dumps(result)


def test_working_folder_is_on_sys_path_only_while_importing(user_folder: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The working folder is looked in for the factory's module and while unpickling a whole module, and leaves
    sys.path afterwards (the Python API must not change the caller's import path)."""
    monkeypatch.chdir(user_folder)
    monkeypatch.delitem(sys.modules, "user_nets", raising=False)
    before = list(sys.path)
    try:
        assert callable(import_factory("user_nets:build"))
        assert sys.path == before
        sys.modules.pop("user_nets", None)
        loaded = load_model(None, "whole.pt")
        assert loaded.source == "pickled module whole.pt" and float(loaded.module.mu.detach()[0]) == 3.0
        assert sys.path == before
    finally:
        sys.modules.pop("user_nets", None)


def test_pickled_module_whose_class_cannot_be_imported_names_the_module(user_folder: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpickling a whole module from another folder: the error names the module defining the model's class and
    how to make it importable, not "is it a file written by torch.save?"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_nets", raising=False)
    with pytest.raises(DataError) as caught:
        load_model(None, user_folder / "whole.pt")
    text = str(caught.value)
    assert "'user_nets'" in text and "run from the folder that holds it" in text and "PYTHONPATH" in text
    assert "written by torch.save" not in text
    with pytest.raises(ConfigError, match=r"cannot import 'user_nets'.*PYTHONPATH"):
        import_factory("user_nets:build")


class ScriptNet(nn.Module):
    """A model class as a training script defines it: pickled as ``__main__.ScriptNet`` (see the test below)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D + 1, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], 1))


def test_pickled_module_whose_class_was_defined_in_the_saving_script_says_so(
        user_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auditR 2: torch.save(Net()) from a training script pickles the class as __main__.Net, which no other process
    can import; torch.load's AttributeError ("Can't get attribute 'Net' on <module '__main__' …>") read as "is it a
    file written by torch.save?". The error names the class, the script, and the two ways to audit it. A class of an
    importable module that no longer has it (renamed since) is named with its module."""
    main_module = sys.modules["__main__"]
    monkeypatch.setattr(ScriptNet, "__module__", "__main__")
    monkeypatch.setattr(main_module, "ScriptNet", ScriptNet, raising=False)
    torch.save(ScriptNet(), tmp_path / "whole.pt")  # what `python train.py` defining ScriptNet writes
    monkeypatch.delattr(main_module, "ScriptNet")  # another process: its __main__ is not the training script
    with pytest.raises(DataError) as caught:
        load_model(None, tmp_path / "whole.pt")
    text = str(caught.value)
    assert "model's class 'ScriptNet', defined in the script that saved it (module __main__)" in text, text
    assert "--model module:factory" in text and "flowvar.audit.audit(model, ...)" in text
    assert "written by torch.save" not in text
    # renamed since: user_nets is importable from its folder, but its class Shift is now called Shifted
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "user_nets.py").write_text(USER_NETS.replace("class Shift(", "class Shifted(").replace(
        "return Shift()", "return Shifted()"))
    monkeypatch.chdir(renamed)
    monkeypatch.delitem(sys.modules, "user_nets", raising=False)
    try:
        with pytest.raises(DataError, match=r"pickles the model's class 'Shift' of module 'user_nets', which has no "
                                            r"Shift now \(renamed or moved"):
            load_model(None, user_folder / "whole.pt")
    finally:
        sys.modules.pop("user_nets", None)


# --------------------------------------------------------------------------------------------- 2. not a torch file


@pytest.mark.parametrize("factory", [None, "torch.nn:Identity"])
def test_a_file_that_is_not_a_torch_checkpoint_says_so_first(factory: str | None, tmp_path: Path) -> None:
    """A CSV, an .npy array or an empty file as --checkpoint: the error says it is no torch.save file (neither a
    zip archive nor a pickle) before quoting torch, whose own text points at weights_only."""
    csv = tmp_path / "x1.csv"
    np.savetxt(csv, np.ones((3, 2)), delimiter=",")
    npy = tmp_path / "x1.npy"
    np.save(npy, np.ones((3, 2)))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path, kind in ((csv, "text"), (npy, "a NumPy .npy array"), (empty, "empty")):
        with pytest.raises(DataError) as caught:
            load_model(factory, path)
        text = str(caught.value)
        assert text.startswith(f"checkpoint {path} is not a file written by torch.save (neither a zip archive nor a "
                               f"pickle"), text
        assert kind in text.split("torch.load")[0], text


# --------------------------------------------------------------------------------------------- 3. no convention runs


class NaNTX(nn.Module):
    """A ``forward(t, x)`` network (torchcfm's order) whose output is NaN: only the tx call runs."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D + 1, D)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([x, t.reshape(-1, 1)], 1)) * float("nan")


class WrongWidth(nn.Module):
    """A ``forward(x, t)`` network whose output has one column too many."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D + 1, D + 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([x, t.reshape(-1, 1)], 1))


def test_no_convention_runs_names_each_cause_by_its_convention() -> None:
    """Every call fails: each cause carries its convention's name; a NaN output leads, without the shape and
    integer-timestep advice that does not fit it."""
    train = torch.randn(32, D, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DataError) as caught:
        check_conventions(NaNTX(), train, None, torch.Generator().manual_seed(1))
    text = str(caught.value)
    # forward(t, x) reached by model(t, x) and by keywords (flow_matching's model(x=x, t=t)); the others raise
    assert text.startswith("the model returns NaN/Inf on the training data under tx, flow_matching; its weights are "
                           "finite"), text
    assert "xt, diffusers: IndexError" in text and "cat: TypeError" in text
    assert "integer timesteps" not in text and "shape and channels" not in text
    broken = NaNTX()
    with torch.no_grad():
        broken.lin.weight[0, :2] = float("inf")
    with pytest.raises(DataError, match=r"under tx, flow_matching; 2 of its 24 weights are NaN/Inf"):
        check_conventions(broken, train, None, torch.Generator().manual_seed(1))
    with pytest.raises(DataError) as caught:
        check_conventions(WrongWidth(), train, None, torch.Generator().manual_seed(1))
    text = str(caught.value)
    assert "(xt, diffusers, flow_matching: DataError: the model's output has shape (128, 5)" in text, text
    assert "tx: IndexError" in text and "cat: TypeError" in text and "NaN" not in text
    assert "shape and channels" in text and "integer timesteps" in text


# --------------------------------------------------------------------------------------------- 4. adaptive solver


class Rotation(nn.Module):
    """v(x, t) = A x, A a rotation generator: curved paths, so a 2-step Euler grid ends elsewhere than an adaptive
    solve."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor([[0.0, -2.0], [2.0, 0.0]]))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x @ self.a.T


def test_adaptive_method_reads_pairs_once_adaptively_and_once_on_a_coarse_euler_grid() -> None:
    """--method dopri5: its steps only set save times, so a second dopri5 solve at --coarse-steps is the same solve
    (endpoints identical). The coarse reading is a fixed Euler grid of --coarse-steps instead, and the report says
    which solver each reading used."""
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(25, 2, generator=gen), torch.randn(25, 2, generator=gen)  # odd: one median
    field = Rotation()
    adaptive_20 = integrate(field, x0, method="dopri5", steps=20).x1
    adaptive_2 = integrate(field, x0, method="dopri5", steps=2).x1
    assert torch.equal(adaptive_20, adaptive_2)  # why one dopri5 solve per grid measures nothing twice
    euler_2 = integrate(field, x0, method="euler", steps=2).x1
    section = pair_recovery(field, x0, x1, method="dopri5", steps=20, coarse_steps=2)
    fine, coarse = section.claim.evidence["fine"], section.claim.evidence["coarse"]
    assert fine["method"] == "dopri5" and fine["steps"] is None and fine["adaptive"] is True
    assert coarse["method"] == "euler" and coarse["steps"] == 2 and coarse["adaptive"] is False
    assert fine["l2_own.median"] == pytest.approx(float((adaptive_20 - x1).norm(dim=1).median()), rel=1e-6)
    assert coarse["l2_own.median"] == pytest.approx(float((euler_2 - x1).norm(dim=1).median()), rel=1e-6)
    assert "dopri5, adaptive steps" in section.text and "coarse grid (euler, 2 steps)" in section.text
    # a fixed-grid method keeps its own coarse grid
    rk4 = pair_recovery(field, x0, x1, method="rk4", steps=20, coarse_steps=2).claim.evidence
    assert rk4["coarse"]["method"] == "rk4" and rk4["fine"]["steps"] == 20 and rk4["fine"]["adaptive"] is False


# --------------------------------------------------------------------------------------------- 5. data names


def test_missing_data_path_lists_only_the_names_the_audit_accepts(tmp_path: Path) -> None:
    """The audit refuses the synthetic gmm set, so a missing --data path offers digits and lfw, not gmm."""
    with pytest.raises(DataError) as caught:
        load_labelled("--data", tmp_path / "nope.npy")
    text = str(caught.value)
    assert "does not exist" in text and "digits" in text and "lfw" in text and "gmm" not in text
    assert text.startswith("--data"), text
    assert set(AUDIT_DATA_NAMES) == set(NAMED_DATA) - {"gmm"}  # the names offered are the bundled ones it reads
    with pytest.raises(ConfigError, match=r"'gmm' is an experiment's synthetic set.*digits or lfw"):
        load_labelled("--data", "gmm")


def test_a_saved_audit_names_each_pair_recovery_readings_solver() -> None:
    """`flowvar show` of an adaptive audit printed "fine grid (– steps)": the adaptive solve has no step count. It
    names each reading's solver as the report does; audits saved before readings recorded their method keep their
    step counts."""
    from flowvar.audit.saved import claim_numbers

    evidence = {"n_pairs": 16, "chance": 1 / 16,
                "fine": {"accuracy_own": 1.0, "score": 1.0, "accuracy_ot": 0.1, "method": "dopri5", "adaptive": True,
                         "steps": None},
                "coarse": {"accuracy_own": 0.9, "score": 0.89, "method": "euler", "adaptive": False, "steps": 10}}
    text = claim_numbers("audit.pair_recovery", evidence)
    assert "on the fine grid (dopri5, adaptive steps), 90% on the coarse (euler, 10 steps)" in text
    old = {**evidence, "fine": {"accuracy_own": 1.0, "steps": 100}, "coarse": {"accuracy_own": 0.9, "steps": 10}}
    assert "on the fine grid (100 steps), 90% on the coarse (10 steps)" in claim_numbers("audit.pair_recovery", old)


class _ZeroField(nn.Module):
    """v = 0 for images: enough for the input checks, which refuse before any evaluation."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_pairs_shape_error_names_the_data_files_skipped_as_unreadable(tmp_path: Path) -> None:
    """Before: "--pairs has shape (5, …) but --data has (4, …)" only, though a file of --data had been skipped as
    unreadable (the warning printed earlier): the pairs were made for every file of the folder."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(data / f"t{i:02d}.png")
    (data / "t04.png").write_bytes(b"not a png")
    np.save(tmp_path / "pairs5.npy", np.zeros((5, 1, 8, 8), dtype=np.float32))
    np.save(tmp_path / "pairs7.npy", np.zeros((7, 1, 8, 8), dtype=np.float32))
    from flowvar.audit import audit
    from flowvar.errors import ShapeError

    with pytest.warns(UserWarning, match="skipped 1 unreadable"), pytest.raises(
            ShapeError, match=r"--pairs has shape \(5, 1, 8, 8\) but --data has \(4, 1, 8, 8\); .*shapes must match; "
                              r"--data has 1 row\(s\) fewer because 1 of its files could not be read and were skipped "
                              r"\(t04\.png\): repair them, or remove them and their rows of --pairs"):
        audit(_ZeroField(), data, pairs=tmp_path / "pairs5.npy", device="cpu")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"), pytest.raises(ShapeError) as other:
        audit(_ZeroField(), data, pairs=tmp_path / "pairs7.npy", device="cpu")
    assert "shapes must match" in str(other.value) and "skipped" not in str(other.value)  # 7 ≠ 4 + 1: no guess
