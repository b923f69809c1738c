"""Image helpers shared by the data test files (tests/test_data*.py): pixel levels, solid images and a folder of
mixed images.

Not a test module (pytest collects only ``test_*.py``); imported as ``from data_checks import ...``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def level(v: float) -> float:
    """An 8-bit pixel value in flowvar's [−1, 1] scale."""
    return v / 127.5 - 1.0


def solid(mode: str, size: tuple[int, int], color: object) -> Image.Image:
    return Image.new(mode, size, color)  # type: ignore[arg-type]


def mixed_folder(root: Path) -> Path:
    """``root/imgs``: seven readable images of mixed sizes and modes, one corrupt file, one non-image, one in a
    sub-folder."""
    d = root / "imgs"
    (d / "sub").mkdir(parents=True)
    solid("RGB", (20, 30), (200, 100, 50)).save(d / "a_rgb.png")
    solid("RGB", (40, 40), (10, 20, 30)).save(d / "b_rgb.jpg", quality=95)
    solid("L", (16, 16), 128).save(d / "c_grey.png")
    solid("RGBA", (24, 24), (255, 255, 255, 0)).save(d / "d_transparent.png")  # fully transparent → black
    pal = solid("P", (10, 12), 0)
    pal.putpalette([0, 200, 0] + [0, 0, 0] * 255)
    pal.save(d / "e_palette.png")
    solid("RGB", (9, 9), (0, 0, 255)).save(d / "f_small.bmp")
    solid("RGB", (16, 16), (1, 2, 3)).save(d / "sub" / "g_nested.png")
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    (d / "notes.txt").write_text("not an image")
    return d
