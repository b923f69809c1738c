"""A folder with images both of its own and in sub-folders — a class tree with a preview or sample grid left at its
top — is refused wherever it would be read in part, naming both counts and both remedies. Before, the audit read
only the 2 top images (at their 64×64 size, labels dropped, no warning) and judged memorisation on them; the
library, ``resolve_data`` (advise-sigma) and the experiments' validation read the top images alone just as silently.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowvar.audit.loading import load_labelled
from flowvar.data import count_items, image_subfolders, load_folder, load_images, resolve_data
from flowvar.errors import DataError


def _png(path: Path, side: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``cls``: class folders a/, a-c/, B/ of three 16×16 images each, and preview.png, grid.png (64×64) at the top;
    a hidden folder and an image-less folder, which are not data."""
    root = tmp_path / "cls"
    for k, name in enumerate(("a", "a-c", "B")):
        for i in range(3):
            _png(root / name / f"{i}.png", 16, 60 * k + 10 * i)
    _png(root / "preview.png", 64, 200)
    _png(root / "grid.png", 64, 250)
    _png(root / ".ipynb_checkpoints" / "x.png", 16, 0)
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")
    return root


COUNTS = r"folder .*cls holds 2 image file\(s\) of its own \(grid\.png, preview\.png\) and 9 in its sub-folders " \
         r"\(B \(3\), a \(3\), a-c \(3\)\), so which are the data is ambiguous and neither part is read alone; "


def test_the_audit_refuses_a_class_tree_with_images_at_its_top(tree: Path) -> None:
    with pytest.raises(DataError, match=COUNTS + r"to read its sub-folders as classes \(one label each\), move its own "
                                              r"2 out of it; to read only its own 2, move them into a folder of their "
                                              r"own and pass that$"):
        load_labelled("--data", tree)
    aside = tree.parent / "previews"
    aside.mkdir()
    for name in ("preview.png", "grid.png"):
        shutil.move(tree / name, aside / name)
    x, labels, desc = load_labelled("--data", tree)  # the first remedy: the tree is read as its 3 classes
    assert x.shape == (9, 3, 16, 16) and labels is not None and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert "3 classes by subfolder (0=B, 1=a, 2=a-c)" in desc
    x, labels, _ = load_labelled("--data", aside)  # the second: the top images on their own
    assert x.shape == (2, 3, 64, 64) and labels is None


def test_the_library_and_the_commands_refuse_it_too_each_naming_its_own_remedies(tree: Path) -> None:
    with pytest.raises(DataError, match=COUNTS + r"to read the 9 in the sub-folders, pass the sub-folder that holds "
                                              r"them \(e\.g\. .*cls/B\) or gather them into one folder; to read only "
                                              r"its own 2, move the sub-folders out of it \(or the 2 into a folder of "
                                              r"their own, and pass that\)$"):
        resolve_data(tree)  # flowvar advise-sigma --data, and the audit's reading of a plain folder
    with pytest.raises(DataError, match=COUNTS + r"pass recursive=True to read all 11, or recursive=False to read "
                                              r"only its own 2$"):
        load_folder(tree, resolution=8)
    with pytest.raises(DataError, match=COUNTS + r"to read the 9 in the sub-folders, use the sub-folder"):
        count_items("folder", str(tree))  # what the experiments' validation counts
    with pytest.raises(DataError, match=COUNTS):
        load_images("folder", resolution=8, data_dir=tree)
    # chosen explicitly, either part is read
    assert load_folder(tree, resolution=8, recursive=False).files == ("grid.png", "preview.png")
    assert len(load_folder(tree, resolution=8, recursive=True)) == 11


def test_hidden_and_image_less_sub_folders_are_not_a_second_part(tree: Path) -> None:
    for name in ("a", "a-c", "B"):
        shutil.rmtree(tree / name)
    assert image_subfolders(tree) == []
    assert count_items("folder", str(tree)) == 2 and resolve_data(tree).dataset == "folder"
    assert load_folder(tree, resolution=8).files == ("grid.png", "preview.png")
    x, labels, _ = load_labelled("--data", tree)
    assert x.shape == (2, 3, 64, 64) and labels is None
