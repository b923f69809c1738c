"""--pairs with a class-folder --data (fixH review finding 1): the loader reads rows by relative path (subfolder
first, then file name); pairs a user ordered by file name across the subfolders (a global index) must not read
"generalising" in silence — the audit records the row order, warns with both own-partner shares and makes the pairs
tests untestable."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from flowvar.audit import audit
from flowvar.audit.loading import load_labelled
from flowvar.audit.rules import ROW_ALIGNMENT_QUESTION
from flowvar.audit.sections import name_order
from flowvar.errors import DataError

N_CLASSES, PER_CLASS, SIDE = 3, 8, 4


class PairMemoriser(nn.Module):
    """v(x, t, y) = s · (x1_j − x0_j) for the pair j whose straight line passes nearest x at t: exactly the field of
    a model that memorised its pairs (s = 1, a parameter so that the gradient test can differentiate it)."""

    def __init__(self, x0: Tensor, x1: Tensor) -> None:
        super().__init__()
        self.register_buffer("x0", x0.flatten(1))
        self.register_buffer("x1", x1.flatten(1))
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1).expand(x.shape[0], 1, 1)
        lines = (1 - t) * self.x0[None] + t * self.x1[None]  # (B, N, D)
        nearest = (lines - x.flatten(1)[:, None]).pow(2).sum(-1).argmin(1)
        return (self.s * (self.x1[nearest] - self.x0[nearest])).reshape(x.shape)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """cls/<class>/<global index>.png with class = index mod 3: name order interleaves the classes, so it differs
    from the loader's subfolder-first order; sources drawn per global index (the user's order)."""
    root = tmp_path_factory.mktemp("pair_order") / "cls"
    gen = np.random.default_rng(0)
    for g in range(N_CLASSES * PER_CLASS):
        folder = root / str(g % N_CLASSES)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gen.integers(0, 256, (SIDE, SIDE), dtype=np.uint8), mode="L").save(folder / f"{g:04d}.png")
    files: list[str] = []
    x1, labels, _ = load_labelled("--data", root, row_files=files)
    by_name = torch.randn((len(files), 1, SIDE, SIDE), generator=torch.Generator().manual_seed(1))  # row g: file g
    global_index = torch.tensor([int(f.split("/")[1][:4]) for f in files])
    loader_order = by_name[global_index]  # row i: the source of loader row i's file
    return {"root": root, "files": files, "x1": x1, "labels": labels, "by_name": by_name,
            "loader_order": loader_order, "model": PairMemoriser(loader_order, x1)}


#: The audit seed of these tests, chosen by measurement. Whether the convention check accepts name-ordered --pairs is
#: a coin flip by construction: the memoriser explains fresh draws worse than the zero field (loss ratio q ≈ 1.5), so
#: only the training-pairs probe can fit it, and on name-ordered pairs (a source starts one item's line, its row's
#: item ends another) that probe's q sits near the 0.9 bound: below it for 6 of the audit seeds 0–9 (the convention
#: probes' stream, flowvar.audit.streams). Seed 2 accepts, so the audit reaches the pair-order check; seed 0 refuses,
#: the other way the misalignment is caught (test_a_refusing_convention_check_asks_about_the_row_order).
SEED, REFUSING_SEED = 2, 0


def _audit(c: dict, pairs: Tensor, seed: int = SEED) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = audit(c["model"], str(c["root"]), pairs=pairs, label_arg="positional", samples=40, steps=20,
                       coarse_steps=5, grad_samples=16, t_bins=2, device="cpu", seed=seed)
    return report, [str(w.message) for w in caught if "--pairs look ordered" in str(w.message)]


def test_the_row_order_is_subfolder_first_and_the_name_order_differs(class_folder: dict) -> None:
    files = class_folder["files"]
    assert files[:3] == ["0/0000.png", "0/0003.png", "0/0006.png"] and files[PER_CLASS] == "1/0001.png"
    order = name_order(files)
    assert order is not None and [files[i] for i in order[:3].tolist()] == ["0/0000.png", "1/0001.png", "2/0002.png"]
    assert name_order(["a.png", "b.png"]) is None  # a flat folder has one order
    assert name_order(["0/a.png", "1/b.png"]) is None  # both orders agree: nothing to check


def test_pairs_in_the_loaders_order_read_memorising_without_a_warning(class_folder: dict) -> None:
    report, warned = _audit(class_folder, class_folder["loader_order"])
    claims = {c.id: c for c in report.result.claims}
    assert claims["audit.pair_recovery"].verdict == "confirmed", report.summary()
    assert not warned
    check = claims["audit.pair_recovery"].evidence.get("pair_order_check")
    assert check is None  # only a doubted order is recorded on the claim
    order = report.result.config["data_row_order"]
    assert order["n_files"] == 24 and order["first"] == class_folder["files"][:3]
    assert order["last"] == class_folder["files"][-1] and len(order["sha256"]) == 64
    assert ("data: 24 files, rows by relative path compared component by component as strings, case-sensitively: "
            "folder by folder (a/… before a-c/…, torchvision ImageFolder's class order), then file name: 0/0000.png"
            in report.summary())
    assert len(json.dumps(report.to_dict()["config"]["data_row_order"])) < 400  # result.json stays small


def test_pairs_in_file_name_order_are_caught_not_read_generalising(class_folder: dict) -> None:
    report, warned = _audit(class_folder, class_folder["by_name"])
    claims = {c.id: c for c in report.result.claims}
    pairs, grad = claims["audit.pair_recovery"], claims["audit.gradient_signal"]
    assert pairs.verdict == "untestable" and grad.verdict == "untestable", report.summary()
    check = pairs.evidence["pair_order_check"]
    assert check["suspect"] and check["own_partner_name_order"] == 1.0
    assert check["own_partner_loader_order"] <= 0.5
    assert len(warned) == 1 and "100% of the sources end nearest their own partner" in warned[0]
    assert f"against {check['own_partner_loader_order']:.0%} in --data's row order" in warned[0]
    assert "reorder --pairs to --data's row order" in pairs.precondition["remedy"]
    line = next(r for r in report.reasons if r.startswith("pair recovery"))
    assert line.startswith("pair recovery: not testable (precondition not met:") and "--pairs rows follow" in line


def test_without_the_check_the_misaligned_pairs_would_read_as_not_memorised(class_folder: dict) -> None:
    """The failure the check guards: the rule alone, on the loader's rows, does not see the memorisation."""
    report, _ = _audit(class_folder, class_folder["by_name"])
    pairs = {c.id: c for c in report.result.claims}["audit.pair_recovery"]
    assert pairs.verdict_if_testable in ("refuted", "inconclusive"), pairs.evidence["fine"]


def test_a_refusing_convention_check_asks_about_the_row_order(class_folder: dict) -> None:
    """Where the convention probe's draws reject the name-ordered pairs, the refusal asks the row-order question."""
    with pytest.raises(DataError, match=re.escape(ROW_ALIGNMENT_QUESTION)):  # the one wording, with the order rule
        _audit(class_folder, class_folder["by_name"], seed=REFUSING_SEED)
