"""The order of a folder's rows (what ``--pairs``, ``--labels`` and a seeded subset follow) is the one recorded and
documented: relative paths compared component by component as strings — ``a/…`` before ``a-c/…``, ``Tomato/…``
before ``Tomato 1/…`` — not as one string ('-' and ' ' sort before '/'), and case-sensitive on every OS (Windows
paths compare case-insensitively). It is Linux's order of before, kept exactly: published audit results and pinned
orders do not move."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image

from flowvar.audit.sections import ROW_ORDER_RULE
from flowvar.data import list_image_files, load_folder, row_order_key

CLASSES = ("a", "a-c", "B", "Tomato", "Tomato 1")


def _tree(root: Path) -> Path:
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((4, 4), 40 * k + i, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_folder_rows_go_folder_by_folder_as_linux_sorted_them_before(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cls")
    found = [str(p.relative_to(root)) for p in list_image_files(root, recursive=True)]
    expected = [f"{c}/{i}.png" for c in ("B", "Tomato", "Tomato 1", "a", "a-c") for i in range(2)]
    assert found == expected
    # the order before this change (pathlib's own comparison, which on Linux is by components): unchanged
    before = sorted(p for p in root.glob("**/*") if p.is_file())
    assert found == [str(p.relative_to(root)) for p in before]
    # the documented rule was "as a string", which is another order on this tree
    assert sorted(found) != found and "as a string" not in ROW_ORDER_RULE and "component" in ROW_ORDER_RULE
    loaded = load_folder(root, resolution=4, channels=1, recursive=True)
    assert list(loaded.files or ()) == expected


def test_the_row_order_is_case_sensitive_on_windows_paths_too() -> None:
    """pathlib compares Windows paths case-insensitively (``bird.png`` before ``Cat.png``); the key does not, so a
    seeded subset (indices into the sorted list) picks the same files on Windows as on Linux."""
    for pure in (PurePosixPath, PureWindowsPath):
        folder = pure("data")
        files = [folder / "bird.png", folder / "Cat.png", folder / "a-c" / "x.png", folder / "a" / "x.png"]
        ordered = sorted(files, key=lambda p: row_order_key(p, folder))
        assert [p.relative_to(folder).as_posix() for p in ordered] == ["Cat.png", "a/x.png", "a-c/x.png", "bird.png"]
    assert sorted([PureWindowsPath("Cat.png"), PureWindowsPath("bird.png")])[0].name == "bird.png"  # why a key
