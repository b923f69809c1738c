"""Image data sets as tensors ``(N, C, H, W)`` (PAPER.md §3.5, §3.6, §4 "Images"): image files, the bundled sets and
``uint8`` arrays scaled to [−1, 1], float arrays used as given (:func:`load_array`).

One entry point, :func:`load_images`, returns an :class:`ImageSet` (the images, where they came from, and
which items were chosen). Sources:

* ``"digits"``: scikit-learn's bundled ``load_digits`` (1797 grey 8×8 images, values 0..16), resized to
  ``resolution``. The default offline stand-in for CelebA.
* ``"lfw"``: scikit-image's bundled ``lfw_subset()``: its first 100 images are grey 25×25 faces (the other
  100 are non-face background patches and are not used), resized to ``resolution``.
* ``"celeba"``: CelebA's aligned images read from a folder the user already has
  (``<data_dir>/img_align_celeba/*.jpg``, or the other layouts :func:`celeba_folder` lists, or ``data_dir``
  pointing at that folder): centre crop 140×140, then resize to ``resolution``. Every image must be CelebA's
  178×218 (the crop is its face box); another size is refused naming the file. The attribute, landmark and
  partition files are not read.
* ``"folder"``: any folder of images (``IMAGE_EXTENSIONS``, any case; ``recursive=True`` to descend): each image
  is centre-cropped to its largest central square, then resized to ``resolution`` — so a folder with mixed
  sizes and aspect ratios gives one consistent geometry. Hidden files and hidden folders (``.DS_Store``,
  AppleDouble ``._x.jpg``, ``.ipynb_checkpoints/``) are not data and are left out; other files are picked by
  extension, so ``Thumbs.db`` or ``notes.txt`` are never opened. The files left out by extension are counted in the
  set's ``source`` line ("2 other files left out (notes.txt, x.tga)"), and those of a format Pillow reads (``.tga``,
  ``.ico``, …: images the user may have meant) get a warning naming them; hidden files are not counted. Symlinked
  files are read, and symlinked folders are not followed (``recursive=True`` neither descends into nor counts a
  linked folder: no loops, no second copies). A broken link with an image extension is counted and reported with
  the unreadable files ("… (a broken symbolic link to T)"); entries that resolve to the same file (a link to a file
  of the folder) are read once, the first in row order, with a warning naming the others. A multi-frame file
  (animated GIF, multi-page TIFF) gives its first frame. A folder holding images
  both of its own and in sub-folders (a class tree with a preview at its top) is refused naming both counts, unless
  ``recursive`` says which to read (:func:`mixed_folder_error`).
* ``"npy"``: a user's own array (see :func:`load_array`); ``data_dir`` is the ``.npy`` file.

Conventions:

* Resizing is antialiased: PIL ``BILINEAR`` (a triangle filter widened by the downscale factor) for files,
  and the matching ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` for arrays.
* Modes: ``channels=1`` converts to PIL ``"L"`` (ITU-R 601-2 luma), ``channels=3`` to ``"RGB"`` (grey
  images are replicated; CMYK is converted by PIL). Images with transparency (RGBA, LA, PA, palette images
  with a transparent colour, grey and RGB images with a transparent colour key such as a PNG's tRNS, in any format)
  are first composited onto black: a pixel of alpha a keeps a/255 of its colour (a colour key's pixels turn black).
  16-bit images are scaled to 8 bits by their full range, never by their own maximum, so a dark 16-bit image stays
  dark: grey PNG/TIFF/PGM by v / 257 (rounded), colour (RGB PNG) by PIL's own decoder
  (the high byte, v // 256). A 32-bit integer image (e.g. an int32 TIFF) has no known pixel scale and is
  refused. Float ("F") images are read as [0, 1] when their maximum is <= 1, else as [0, 255], decided once for
  a folder: when any of its float images exceeds 1, all are on [0, 255] (a dark image of a 0..255 set stays
  dark); one holding NaN or Inf, or values below 0 or above 255 (a [−1, 1] image), is refused naming the file.
  An EXIF orientation tag is applied first, so photos come out the way viewers show them.
* Values: 8-bit pixels v map to v / 127.5 − 1; digits v ∈ [0, 16] to v / 8 − 1; LFW's floats f ∈ [0, 1]
  to 2f − 1. A float ``.npy`` array is used as given (with a warning when its images lie within [0, 1]
  or reach past 2: :func:`load_array`).
* Sizes: any ``resolution`` >= 4 is produced; image files and arrays smaller than it are upsampled, with one warning
  naming how many and the smallest (bilinear enlargement adds blur, not detail); the bundled digits (8×8) and LFW
  (25×25) are enlarged without one (their size is known, and 32 is the default every experiment asks for).
* Subsets: ``n`` items are drawn without replacement by a permutation seeded with ``seed``; the chosen
  items keep their original order (``indices`` is sorted). For a fixed seed the subset of size n is
  contained in the subset of any larger size. An unreadable file is skipped with a warning naming it and
  the next file of the permutation takes its place.

:func:`resolve_data` turns a user's ``--data`` argument (a bundled name, a folder, a ``.npy`` / ``.npz`` file) into a
:class:`DataSpec`, and :func:`load_split` loads a file-backed source and splits it into training and held-out items
(``flowvar advise-sigma``, :mod:`flowvar.experiments.sigma_tradeoff`).

Nothing here downloads anything: the bundled sets ship inside the scikit-learn / scikit-image wheels and the
folder loaders only read local files.

Why this module is long: every data source flowvar reads (the bundled digits, image folders, CelebA, LFW,
arrays) shares one loading contract — validation, the corrupt-file summary, the named-data resolution — kept in
one place so that every experiment and the audit read data the same way.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps
from torch import Tensor

from flowvar.distributions import Empirical
from flowvar.errors import ConfigError, DataError, ShapeError, nonfinite_error

SOURCES: tuple[str, ...] = ("digits", "lfw", "celeba", "folder", "npy")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                                     ".ppm", ".pgm", ".pbm", ".pnm")
CELEBA_CROP = 140
CELEBA_SIZE = (178, 218)  # (width, height) of every aligned-and-cropped CelebA image: the 140 crop assumes it
CELEBA_EXTENSIONS: tuple[str, ...] = (".jpg", ".png")  # the JPEG release, and the official PNG one
LFW_FACES = 100

Source = Literal["digits", "lfw", "celeba", "folder", "npy"]


# --------------------------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class ImageSet:
    """A data set held in memory.

    * ``images``: (N, C, H, W) float32 (or (N, d) vectors for a 2-D ``.npy`` array): in [−1, 1] from image files,
      the bundled sets, ``uint8`` arrays and arrays read with a ``value_range``; a float array's values as given;
    * ``name``: the source (``"digits"``, ``"lfw"``, ``"celeba"``, ``"folder"``, ``"npy"``);
    * ``source``: a human-readable description (where the data came from, and how it was transformed);
    * ``indices``: (N,) long, sorted: the position of each row in the full source (the sorted file list
      for folders);
    * ``files``: for folder sources, the path of each row relative to the folder; otherwise None;
    * ``labels``: (N,) long class labels where the source has them (digits' digit, an ``.npz`` file's ``labels`` /
      ``y`` array); otherwise None;
    * ``unreadable``: for folder sources, the files (relative to the folder) skipped as unreadable while loading —
      each replaced by the next file of the draw, so a caller counting the folder's files sees this many fewer rows.
    """

    images: Tensor
    name: str
    source: str
    indices: Tensor
    files: tuple[str, ...] | None = None
    labels: Tensor | None = None
    unreadable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images.ndim not in (2, 4) or self.images.shape[0] == 0:
            raise ShapeError(f"ImageSet images must have shape (N, C, H, W) or (N, d) with N >= 1, got "
                             f"{tuple(self.images.shape)}")
        if self.indices.shape != (self.images.shape[0],):
            raise ShapeError(f"ImageSet indices must have shape ({self.images.shape[0]},), got "
                             f"{tuple(self.indices.shape)}")
        if self.files is not None and len(self.files) != self.images.shape[0]:
            raise ShapeError(f"ImageSet has {self.images.shape[0]} images but {len(self.files)} file names")
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ShapeError(f"ImageSet labels must have shape ({self.images.shape[0]},), got "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one item: (C, H, W) for images, (d,) for vectors."""
        return tuple(self.images.shape[1:])

    @property
    def channels(self) -> int:
        """C; raises ShapeError for vector data."""
        self._require_images("channels")
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        """The side R of square images (H = W: every loader here but an array kept at its own size); ShapeError for
        vector data and for images that are not square, which have no one side (``images.shape[-2:]`` holds both)."""
        self._require_images("resolution")
        h, w = self.images.shape[2:]
        if h != w:
            raise ShapeError(f"resolution is the side of square images; this set's are {h}x{w} (H x W): read "
                             f"images.shape[-2:], or load them with resolution= to make them square")
        return h

    def _require_images(self, what: str) -> None:
        if self.images.ndim != 4:
            raise ShapeError(f"{what} is defined for images (N, C, H, W); this set holds vectors of shape "
                             f"{tuple(self.images.shape)}")

    def distribution(self) -> ImageDistribution:
        """The set as a :class:`~flowvar.distributions.Distribution` drawing items uniformly with replacement."""
        return ImageDistribution(self)


class ImageDistribution(Empirical):
    """:class:`~flowvar.distributions.Empirical` over an :class:`ImageSet`: ``sample(n, generator)`` →
    (n, C, H, W) rows drawn uniformly with replacement. ``image_set`` keeps the provenance."""

    def __init__(self, image_set: ImageSet) -> None:
        super().__init__(image_set.images)
        self.image_set = image_set

    def __repr__(self) -> str:
        return f"ImageDistribution({self.image_set.name}, n={len(self.image_set)}, shape={self.event_shape})"


# --------------------------------------------------------------------------------------------- validation


def check_resolution(resolution: object) -> int:
    """A square output side: an integer >= 4."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or int(resolution) < 4:
        raise ConfigError(f"resolution must be an integer >= 4 (pixels per side), got {resolution!r}; "
                          f"for example resolution=16 or 32")
    return int(resolution)


def _check_n(n: object) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise ConfigError(f"n must be a positive integer (the subset size) or None for every item, got {n!r}")
    return int(n)


def _check_seed(seed: object) -> int:
    # the range of flowvar.seeding.check_seed (TrainConfig, the experiments): a seed of -1 was accepted here only
    # because torch.Generator.manual_seed wraps negative values, so -1 silently meant 2**64 - 1
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def _check_value_range(value_range: object) -> tuple[float, float]:
    """``value_range`` as two finite floats lo < hi, else a one-line ConfigError (a string "0,1" would otherwise
    fail in float() and an infinite hi would map every value to −1)."""
    if isinstance(value_range, str | bytes) or not hasattr(value_range, "__len__") or len(value_range) != 2:
        raise ConfigError(f"value_range must be a pair of numbers (lo, hi), e.g. (0, 255), got {value_range!r}")
    lo, hi = value_range  # type: ignore[misc]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in (lo, hi)):
        raise ConfigError(f"value_range must be a pair of numbers (lo, hi), e.g. (0, 255), got {value_range!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not hi > lo:
        raise ConfigError(f"value_range must be two finite numbers with lo < hi, got {value_range!r}")
    return lo, hi


def _check_channels(channels: object, default: int) -> int:
    if channels is None:
        return default
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey), 3 (RGB) or left out for the source's own (--channels on the "
                          f"command line, channels= from Python), got {channels!r}")
    return int(channels)  # type: ignore[call-overload]


class TooFewImagesError(DataError):
    """A loader was asked for more items than it can give. The numbers, for callers that name their own settings
    (an experiment's ``ns`` list rather than the library's ``n``) and rephrase the message:

    * ``requested``: the ``n`` asked for;
    * ``available``: how many items can be given — the most a caller can ask for (the readable files when some
      are unreadable);
    * ``total``: how many items (files, rows) the source holds, readable or not;
    * ``unreadable``: the files found unreadable while loading, each "path (error)" (empty when the source is simply
      smaller than ``requested``).
    """

    def __init__(self, message: str, *, requested: int, available: int, total: int,
                 unreadable: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.requested, self.available, self.total, self.unreadable = requested, available, total, unreadable


def _too_many(n: int, available: int, what: str) -> TooFewImagesError:
    return TooFewImagesError(f"asked for n={n} images but {what} has only {available}; lower n to at most "
                             f"{available} (or pass n=None for all of them)", requested=n, available=available,
                             total=available)


def shortlist(items: Sequence[str], sep: str = "; ") -> str:
    """The first three of ``items`` joined by ``sep``, then ``sep`` "…" when there are more: how the loaders'
    messages name files (unreadable ones, ones of the wrong size, sub-folders)."""
    return sep.join(items[:3]) + (f"{sep}…" if len(items) > 3 else "")


def subset_order(total: int, seed: int) -> Tensor:
    """The seeded order in which items of a source of size ``total`` are chosen: (total,) long permutation."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))


def choose_indices(total: int, n: int | None, seed: int, what: str) -> Tensor:
    """``n`` distinct sorted indices into ``range(total)`` (all of them for None); DataError if n > total."""
    if n is None:
        return torch.arange(total)
    if n > total:
        raise _too_many(n, total, what)
    return subset_order(total, seed)[:n].sort().values


# --------------------------------------------------------------------------------------------- transforms


def resize_tensor(images: Tensor, resolution: int) -> Tensor:
    """Centre-crop to the largest central square, then antialiased bilinear resize.

    ``images``: (N, C, H, W) float → (N, C, resolution, resolution). Values stay inside the input's range
    (bilinear weights are non-negative); nothing is done when the size already matches.
    """
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top:top + side, left:left + side]
    if side == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=True)


#: Formats whose integer ("I") images are at most 16 bits deep: PIL reads a 16-bit PGM/PPM as mode "I" with values
#: on the 0..65535 scale (whatever its maxval), and older Pillow versions read a 16-bit grey PNG the same way.
SIXTEEN_BIT_FORMATS: tuple[str, ...] = ("PNG", "PPM")


def _to_mode(img: Image.Image, channels: int, path: Path | None = None, file_format: str | None = None,
             float_unit: bool = False) -> Image.Image:
    """Convert any PIL mode to "L" (channels=1) or "RGB" (channels=3), compositing transparency onto black.

    16-bit grey (mode "I;16*", or "I" read from a PNG/PPM) maps v ∈ [0, 65535] to v / 257 ∈ [0, 255] whatever the
    image's own maximum, so a dark 16-bit image stays dark. A 32-bit integer image ("I" from e.g. a TIFF) carries no
    pixel scale: DataError naming ``path``. A float image ("F") is on [0, 1] when ``float_unit`` (scaled by 255),
    on [0, 255] when not (the reader decides: :func:`_read_image`, once per folder in :func:`_load_files`).
    """
    if img.mode.startswith("I;16") or (img.mode == "I" and file_format in SIXTEEN_BIT_FORMATS):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8))
    elif img.mode == "I":
        raise DataError(f"{path} is a 32-bit integer image ({file_format or 'unknown format'}, mode I), whose pixel "
                        f"scale flowvar cannot know; save it as an 8-bit or 16-bit PNG or TIFF")
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = a * 255.0 if float_unit else a
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:
        # a palette's transparent index, or a grey / RGB PNG's tRNS colour key (every pixel of that value is fully
        # transparent): the same picture saved in either PNG mode gives the same image
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def _pil_to_tensor(img: Image.Image) -> Tensor:
    """An "L" or "RGB" image → (C, H, W) float32 in [−1, 1]."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


def center_crop_box(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """PIL box (left, top, right, bottom) of the central ``side`` × ``side`` square (floors the offsets)."""
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _check_float_image(path: Path, values: np.ndarray) -> None:
    """DataError naming ``path`` for a float ("F") image whose ``values`` no pixel scale of :func:`_to_mode` maps: NaN
    or ±Inf (cast to 8 bits, NaN became 0 and Inf 255 — a black or white image), or values below 0 or above 255
    (clipped: a [−1, 1] image saved from a model's output lost its dark half)."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = values.size - int(np.count_nonzero(finite))
        raise DataError(f"{path} is a float image holding {bad} NaN or infinite value(s) of {values.size}, which no "
                        f"pixel scale maps; fix or remove the file")
    if not values.size:
        return
    lo, hi = float(values.min()), float(values.max())
    if lo < 0.0 or hi > 255.0:
        fix = ("(x + 1) / 2 (a [−1, 1] image)" if lo >= -1.0 and hi <= 1.0 else
               "to [0, 1] or [0, 255] by the scale its values were made on")
        raise DataError(f"{path} is a float image spanning [{lo:g}, {hi:g}]; float images are read on [0, 1] (when "
                        f"every value is <= 1) or [0, 255], and values outside would be clipped: rescale it {fix} and "
                        f"save it again")


def _read_image(path: Path, channels: int, resolution: int, crop: int | None, float_unit: bool | None = None
                ) -> tuple[Tensor, int, bool | None]:
    """Decode one file → ((C, resolution, resolution) in [−1, 1], the side of the square it was cut from, and for a
    float image whether it was read on [0, 1] (None for other images). ``float_unit``: a float image's scale
    (:func:`_to_mode`); None: [0, 1] when its own maximum is <= 1, else [0, 255].

    ``crop``: CelebA's fixed central 140×140 square (the image must then be CelebA's 178×218) or None for the
    largest central square. Raises OSError/ValueError for unreadable files (the caller skips them) and DataError for
    an image that is not 178×218 under ``crop``, a 32-bit integer image or a float image off both scales
    (:func:`_check_float_image`).
    """
    with Image.open(path) as opened:
        opened.load()
        unit = None
        if opened.mode == "F":
            values = np.asarray(opened)
            _check_float_image(path, values)
            unit = float_unit if float_unit is not None else bool(values.max(initial=0) <= 1.0)
        img = _to_mode(ImageOps.exif_transpose(opened), channels, path, opened.format, bool(unit))
    w, h = img.size
    side = min(w, h) if crop is None else crop
    if side > min(w, h):
        raise DataError(f"{path} is {w}x{h}, smaller than the {crop}x{crop} centre crop; CelebA's aligned images "
                        f"are 178x218 — point data_dir at img_align_celeba, not at another image folder")
    if crop is not None and (w, h) != CELEBA_SIZE:
        # the fixed crop is CelebA's face box: on an image of another size it cuts out an arbitrary patch
        raise DataError(f"{path} is {w}x{h}, not the 178x218 of CelebA's aligned-and-cropped images, so the fixed "
                        f"{crop}x{crop} face crop would not fit it; point data_dir at img_align_celeba, or load "
                        f"other images with name='folder'")
    img = img.crop(center_crop_box(w, h, side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
    return _pil_to_tensor(img), side, unit


def to_uint8(images: Tensor) -> np.ndarray:
    """[−1, 1] images (N, C, H, W) → uint8 array (N, H, W, C) (values clipped), e.g. for saving."""
    if images.ndim != 4:
        raise ShapeError(f"to_uint8 expects images of shape (N, C, H, W), got {tuple(images.shape)}")
    a = ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(0, 2, 3, 1).numpy()


def save_grid(images: Tensor, path: str | Path, nrow: int = 8, padding: int = 1) -> Path:
    """Tile [−1, 1] images (N, C, H, W) into one PNG with ``nrow`` images per row; returns the path."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = max(1, min(int(nrow), n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = arr[i]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[:, :, 0] if c == 1 else grid).save(out)
    return out


# --------------------------------------------------------------------------------------------- loaders


def _finish_array(images: Tensor, name: str, source: str, n: int | None, seed: int, channels: int,
                  resolution: int, labels: Tensor | None = None) -> ImageSet:
    """Subset, resize and channel-replicate (N, 1, h, w) grey images already in [−1, 1] (and their (N,) labels)."""
    idx = choose_indices(images.shape[0], n, seed, source)
    out = resize_tensor(images[idx], resolution).clamp_(-1.0, 1.0)
    if channels == 3:
        out = out.expand(-1, 3, -1, -1)
    return ImageSet(out.contiguous(), name, f"{source}, resized to {resolution}x{resolution}", idx,
                    labels=labels[idx] if labels is not None else None)


def load_digits(n: int | None = None, resolution: int = 16, seed: int = 0, channels: int | None = None) -> ImageSet:
    """scikit-learn's bundled 8×8 digits (1797 images, 0..16) → (n, C, resolution, resolution) in [−1, 1]; the
    digit each image shows (0..9) is its label."""
    from sklearn.datasets import load_digits as sk_load_digits

    resolution, n, seed = check_resolution(resolution), _check_n(n), _check_seed(seed)
    channels = _check_channels(channels, 1)
    bunch = sk_load_digits()
    raw = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32))
    images = (raw / 8.0 - 1.0)[:, None]
    return _finish_array(images, "digits", "scikit-learn load_digits (1797 grey 8x8 digits)", n, seed, channels,
                         resolution, labels=torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)))


def load_lfw(n: int | None = None, resolution: int = 16, seed: int = 0, channels: int | None = None) -> ImageSet:
    """scikit-image's bundled LFW faces (the 100 faces of ``lfw_subset()``, grey 25×25) → [−1, 1] tensors."""
    from skimage.data import lfw_subset

    resolution, n, seed = check_resolution(resolution), _check_n(n), _check_seed(seed)
    channels = _check_channels(channels, 1)
    raw = np.asarray(lfw_subset())[:LFW_FACES]
    scale = 255.0 if raw.dtype == np.uint8 or raw.max() > 1.0 else 1.0
    images = torch.from_numpy((raw.astype(np.float32) / scale) * 2.0 - 1.0)[:, None]
    return _finish_array(images, "lfw", f"scikit-image lfw_subset (the {LFW_FACES} grey 25x25 faces)", n, seed,
                         channels, resolution)


def _hidden(path: Path, folder: Path) -> bool:
    """Whether ``path`` or a folder between it and ``folder`` is hidden (its name starts with a dot)."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


#: :func:`row_order_key` in words (recorded with an audit's row order; --pairs must follow it).
ROW_ORDER_RULE = ("by relative path compared component by component as strings, case-sensitively: folder by folder "
                  "(a/… before a-c/…, torchvision ImageFolder's class order), then file name")


def row_order_key(path: PurePath, folder: PurePath) -> tuple[str, ...]:
    """The key :func:`list_image_files` sorts by: ``path``'s components below ``folder``, compared as strings.

    So a folder's files come folder by folder — ``a/…`` before ``a-c/…`` and ``Tomato/…`` before ``Tomato 1/…``
    (whole names compared; as one string '-' and ' ' sort before '/'), the class order of torchvision's
    ``ImageFolder`` — and case-sensitively on every OS: pathlib compares Windows paths case-insensitively, which put
    ``bird.png`` before ``Cat.png`` there and moved a seeded subset (indices into this order). On Linux it is
    pathlib's own order, so no recorded order changed when the key was made explicit.
    """
    return path.relative_to(folder).parts


def list_image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files (by extension, case-insensitive) under ``folder``, sorted by relative path compared component by
    component (:func:`row_order_key`: the order of a folder's rows).

    Hidden files and everything inside hidden folders are left out: they are tools' bookkeeping, not data — macOS'
    AppleDouble ``._photo.jpg`` files (metadata under an image's name), Jupyter's ``.ipynb_checkpoints/``, a
    ``.thumbnails/`` cache — and would otherwise count as (unreadable or duplicated) images.
    """
    return _folder_files(folder, recursive)[0]


def _folder_files(folder: Path, recursive: bool) -> tuple[list[Path], list[Path], list[tuple[Path, Path]]]:
    """(the image files :func:`list_image_files` returns, the other non-hidden files beside them, the image entries
    left out as duplicates — each with the entry kept for the same file), each in :func:`row_order_key` order: one
    listing for all three, so :func:`load_folder` can say what it left out.

    A broken symbolic link is an entry like a file (its name picks the list): an image one is then reported
    unreadable when it is read, not dropped without a word. Image entries that resolve to the same file (a link to
    a file of the folder, two links to one file elsewhere) are one image: the first in row order is kept, so no
    image is two rows (once in training, once held out). Only links need resolving: glob does not descend into
    linked folders, so an entry that is no link is the file at its own path."""
    pattern = "**/*" if recursive else "*"
    images: list[Path] = []
    others: list[Path] = []
    for p in folder.glob(pattern):
        if not _hidden(p, folder) and (p.is_file() or (p.is_symlink() and not p.exists())):
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)

    def key(p: Path) -> tuple[str, ...]:
        return row_order_key(p, folder)

    images.sort(key=key)
    base = folder.resolve()
    kept: dict[Path, Path] = {}  # resolved file -> the entry read for it
    unique: list[Path] = []
    duplicates: list[tuple[Path, Path]] = []
    for p in images:
        target = base / p.relative_to(folder)
        if p.is_symlink():
            # a loop of links (RuntimeError before Python 3.13) keeps its own path: unreadable, and unique
            with contextlib.suppress(OSError, RuntimeError):
                target = p.resolve()
        if target in kept:
            duplicates.append((p, kept[target]))
        else:
            kept[target] = p
            unique.append(p)
    return unique, sorted(others, key=key), duplicates


def _warn_duplicates(folder: Path, duplicates: Sequence[tuple[Path, Path]]) -> None:
    """One warning naming the entries of ``folder`` left out because they resolve to a file already read
    (:func:`_folder_files`), each with the entry kept."""
    if duplicates:
        shown = shortlist([f"{p.relative_to(folder)} is {k.relative_to(folder)}" for p, k in duplicates], ", ")
        count = len(duplicates)
        warnings.warn(f"{count} {'entry' if count == 1 else 'entries'} of folder {folder} "
                      f"{'resolves' if count == 1 else 'resolve'} to a file already read under another name and "
                      f"{'was' if count == 1 else 'were'} left out, so no image is two rows ({shown}); remove the "
                      f"duplicate links to silence this", stacklevel=3)


@functools.cache
def _pillow_image_extensions() -> frozenset[str]:
    """The extensions of the formats this Pillow opens with a decoder of its own (stub formats such as HDF5 or BUFR,
    which it names but cannot decode, left out): a file with one of these that :data:`IMAGE_EXTENSIONS` lacks is most
    likely an image the user meant to be read."""
    from PIL import ImageFile

    def decodes(fmt: str) -> bool:
        factory = Image.OPEN.get(fmt, (None, None))[0]
        return factory is not None and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))

    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if decodes(fmt))


def _warn_left_out_images(folder: Path, others: Sequence[Path]) -> None:
    """One warning naming the files of ``others`` (left out by extension) that Pillow could read as images."""
    images = [str(p.relative_to(folder)) for p in others if p.suffix.lower() in _pillow_image_extensions()]
    if images:
        warnings.warn(f"{len(images)} file(s) in folder {folder} are images Pillow reads but whose extension flowvar "
                      f"does not, and were left out ({shortlist(images, ', ')}); flowvar reads "
                      f"{', '.join(IMAGE_EXTENSIONS)}: convert them (e.g. to PNG) to use them", stacklevel=3)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether a folder entry is a folder (a link to one too); False for a loop of links, which ``is_dir`` raises
    for (the listing reports such an image entry as unreadable)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def image_subfolders(folder: Path) -> list[tuple[str, int]]:
    """(name, how many image files it holds at any depth) of each sub-folder of ``folder`` that holds any, in
    :func:`row_order_key` order; hidden sub-folders are left out, as :func:`list_image_files` leaves them out."""
    with os.scandir(folder) as entries:  # scandir: no stat per entry, which matters in a folder of 200k files
        names = sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e))
    counts = [(name, len(list_image_files(folder / name, recursive=True))) for name in names]
    return [(name, count) for name, count in counts if count]


#: The remedies of :func:`mixed_folder_error` in words every command can use (``{use}``: "pass" for a command-line
#: argument, "set data_dir to" for a config key); :func:`load_folder` names its ``recursive`` instead.
MIXED_FOLDER_FIX = ("to read the {nested} in the sub-folders, {use} the sub-folder that holds them (e.g. {example}) or "
                    "gather them into one folder; to read only its own {own}, move the sub-folders out of it (or the "
                    "{own} into a folder of their own, and {use} that)")


def mixed_folder_error(folder: Path, own: Sequence[Path], how: str = MIXED_FOLDER_FIX, use: str = "use"
                       ) -> DataError | None:
    """The DataError for ``folder`` when it holds image files of its own (``own``, from :func:`list_image_files`)
    and sub-folders holding images too (:func:`image_subfolders`); None when it does not.

    Such a folder is most often a class tree (``a/``, ``b/``, … as torchvision's ``ImageFolder``) with a preview or
    sample-grid image left at its top, or a folder of images with a thumbnails sub-folder. Reading either part alone
    silently drops the other — the audit judged memorisation on the 2 stray images of a 9-image tree, at their
    size — so it is refused, naming both counts. ``how``: the remedies, a ``str.format`` template with the counts
    ``{own}``, ``{nested}``, ``{all}``, the first sub-folder ``{example}`` and ``{use}``.
    """
    if not own:
        return None
    subfolders = image_subfolders(folder)
    if not subfolders:
        return None
    nested = sum(count for _, count in subfolders)
    where = shortlist([f"{name} ({count})" for name, count in subfolders], ", ")
    mine = shortlist([p.name for p in own], ", ")
    fix = how.format(own=len(own), nested=nested, all=len(own) + nested, example=folder / subfolders[0][0], use=use)
    return DataError(f"folder {folder} holds {len(own)} image file(s) of its own ({mine}) and {nested} in its "
                     f"sub-folders ({where}), so which are the data is ambiguous and neither part is read alone; {fix}")


def _load_files(folder: Path, files: list[Path], n: int | None, seed: int, channels: int, resolution: int,
                crop: int | None, what: str) -> tuple[Tensor, Tensor, tuple[str, ...], tuple[str, ...]]:
    """Decode ``n`` files in the seeded order, skipping unreadable ones with a warning.

    Returns images (n, C, R, R), their sorted indices into ``files``, their paths relative to ``folder``, and the
    paths (relative to ``folder``) of the files skipped as unreadable on the way.

    Memory: each decoded row is written into one tensor allocated for the n rows up front, and the rows are then put
    into file order in place (:func:`_sort_rows_in_place`), so the peak is the output plus one row — stacking a list
    of the rows held them twice (a 188 MiB output peaked at 382 MiB; review dataR 7).
    """
    total = len(files)
    if n is not None and n > total:
        raise _too_many(n, total, what)
    order = torch.arange(total) if n is None else subset_order(total, seed)
    want = total if n is None else n
    rows = torch.empty((want, channels, resolution, resolution), dtype=torch.float32)
    drawn: list[int] = []  # the file index of each row written, in draw order
    sides: dict[int, int] = {}
    float_unit: dict[int, bool] = {}  # file index -> read on [0, 1]
    skipped: list[str] = []
    skipped_files: list[str] = []
    for i in order.tolist():
        if len(drawn) == want:
            break
        try:
            image, sides[i], unit = _read_image(files[i], channels, resolution, crop)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            skipped.append(f"{files[i]} ({_unreadable_reason(files[i], error)})")
            skipped_files.append(str(files[i].relative_to(folder)))
            continue
        rows[len(drawn)] = image
        drawn.append(i)
        if unit is not None:
            float_unit[i] = unit
    if float_unit and not _folder_float_unit(files, float_unit):
        # one scale for the folder's float images: a dark image of a 0..255 set (its maximum <= 1) read on [0, 1]
        # would come out up to 255 times too bright, so when any of the folder exceeds 1 they are all on [0, 255]
        for row, i in enumerate(drawn):
            if float_unit.get(i):
                rows[row] = _read_image(files[i], channels, resolution, crop, float_unit=False)[0]
    named = shortlist(skipped)
    if not drawn:
        raise DataError(f"none of the {total} image files in {what} could be read (skipped: {named}); check that "
                        f"they are valid images")
    if n is not None and len(drawn) < n:
        raise TooFewImagesError(f"asked for n={n} images but only {len(drawn)} of the {total} files in {what} "
                                f"could be read ({len(skipped)} unreadable: {named}); lower n to at most "
                                f"{len(drawn)}", requested=n, available=len(drawn), total=total,
                                unreadable=tuple(skipped))
    if skipped:  # one summary line, not one warning per file
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) in {what}: {named}", stacklevel=3)
    _warn_upsampled([(files[i], side) for i, side in sides.items()], resolution, what)
    # fewer rows than allocated only when every file was asked for and some were unreadable: a view of the first
    # ones (the few unused rows stay allocated with it), not a copy
    images = rows[:len(drawn)]
    idx = _sort_rows_in_place(images, drawn)
    names = tuple(str(files[i].relative_to(folder)) for i in idx)
    return images, torch.tensor(idx, dtype=torch.long), names, tuple(skipped_files)


def _unreadable_reason(path: Path, error: BaseException) -> str:
    """Why ``path`` could not be read, for the skipped-files summary: "a broken symbolic link to T" when it is one
    (its target T as the link holds it; PIL's error would only say the file does not exist), else the error's type
    and first line."""
    if path.is_symlink() and not path.exists():
        return f"a broken symbolic link to {os.readlink(path)}"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _sort_rows_in_place(rows: Tensor, keys: list[int]) -> list[int]:
    """Reorder ``rows`` (k, …) in place so that their ``keys`` (k distinct ints, row j's key ``keys[j]``) ascend;
    returns the sorted keys. Follows the permutation's cycles with one spare row, so no second copy of ``rows`` is
    made (``rows[order]`` would be one); nothing moves when the keys already ascend (every file read in order)."""
    order = sorted(range(len(keys)), key=keys.__getitem__)  # order[k]: the row that belongs at position k
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        spare = rows[start].clone()
        position = start
        while True:
            done[position] = True
            source = order[position]
            if source == start:
                rows[position] = spare
                break
            rows[position] = rows[source]
            position = source
    return [keys[j] for j in order]


def unreadable_rows_note(what: str, expected: int, rows: int, unreadable: list[str] | tuple[str, ...],
                         other: str) -> str:
    """The end of an error about ``other``'s ``expected`` rows not matching the ``rows`` of ``what`` (a folder): when
    the difference is the files skipped as unreadable (``unreadable``, :attr:`ImageSet.unreadable`), those files
    named as the likely reason ("; …"); else "". ``other`` was most likely made for every file of the folder."""
    if not unreadable or expected != rows + len(unreadable):
        return ""
    shown = shortlist(unreadable, ", ")
    return (f"; {what} has {len(unreadable)} row(s) fewer because {len(unreadable)} of its files could not be read and "
            f"were skipped ({shown}): repair them, or remove them and their rows of {other}")


def _file_counts(total: int, loaded: int, unreadable: int, other: Sequence[str] = (),
                 duplicates: Sequence[str] = ()) -> str:
    """How many files a folder holds and, when it differs, how many were loaded and skipped, the ``duplicates``
    (names: entries resolving to a file already counted) and the ``other`` files (names) left out by extension:
    "81 files, 80 loaded, 1 unreadable skipped, 1 duplicate entry left out (link.png), 2 other files left out
    (notes.txt, x.tga)" (an ImageSet's ``source``, which names what the rows are)."""
    text = f"{total} files"
    if loaded != total:
        text += f", {loaded} loaded"
    if unreadable:
        text += f", {unreadable} unreadable skipped"
    if duplicates:
        text += (f", {len(duplicates)} duplicate entr{'ies' if len(duplicates) > 1 else 'y'} left out "
                 f"({shortlist(list(duplicates), ', ')})")
    if other:
        text += f", {len(other)} other file{'s' if len(other) > 1 else ''} left out ({shortlist(list(other), ', ')})"
    return text


def _folder_float_unit(files: list[Path], known: dict[int, bool]) -> bool:
    """Whether every float ("F") image among ``files`` has its maximum <= 1 (all are then read on [0, 1]; else all on
    [0, 255]). ``known``: the answer per file already decoded (index into ``files`` → its maximum <= 1).

    Decided from the whole folder, not from the subset loaded, so that an image's values do not depend on ``n`` or
    ``seed`` (a subset stays contained in a larger one). Only headers are read, and pixels of the float files
    only — they are rare, and the scan runs only when a loaded image is one; unreadable files are passed over (the
    loader skips and reports them).
    """
    if not all(known.values()):
        return False
    for i, path in enumerate(files):
        if i in known:
            continue
        try:
            with Image.open(path) as img:
                values = np.asarray(img) if img.mode == "F" else None
                # a NaN or Inf compares as "not <= 1": a file refused when read (_check_float_image) sets no scale
                if values is not None and np.isfinite(values).all() and not values.max(initial=0) <= 1.0:
                    return False
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    return True


#: PIL modes whose images are grey (one channel once converted); any other mode is read as colour.
GREY_MODES: tuple[str, ...] = ("1", "L", "LA", "La", "I", "F")


def _header_geometry(path: Path) -> tuple[int, int] | None:
    """(side of the largest central square, channels: 1 grey, 3 colour) of one image file, from its header only;
    None for a file PIL cannot open (the loader skips and reports those)."""
    try:
        with Image.open(path) as img:
            grey = img.mode in GREY_MODES or img.mode.startswith("I;16")
            return min(img.size), 1 if grey else 3
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _headers(folder: Path, recursive: bool, every: bool) -> list[tuple[Path, tuple[int, int]]]:
    """(file, :func:`_header_geometry`) of the readable image files of ``folder`` in :func:`list_image_files` order:
    every one, or (``every=False``) the first only. DataError when the folder holds no readable image."""
    files = list_image_files(folder, recursive)
    if not files:
        raise DataError(f"folder {folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    found: list[tuple[Path, tuple[int, int]]] = []
    for path in files:
        if (geometry := _header_geometry(path)) is not None:
            found.append((path, geometry))
            if not every:
                break
    if not found:
        raise DataError(f"none of the {len(files)} image files in {folder} could be read (the first: {files[0]}); "
                        f"check that they are valid images")
    return found


def first_image_geometry(folder: Path, recursive: bool = False) -> tuple[int, int]:
    """(side of the largest central square, channels) of the first readable image file of ``folder`` (in
    :func:`list_image_files` order): the default geometry when a user gives a folder without a resolution.

    Only headers are read. Unreadable files are passed over (the loader skips and reports them); a side below 4 is
    raised to 4, the smallest resolution flowvar takes. DataError when the folder holds no readable image.
    """
    side, channels = _headers(folder, recursive, every=False)[0][1]
    return max(4, side), channels


def default_geometry(folder: Path, resolution: int | None, channels: int | None, recursive: bool = False
                     ) -> tuple[int, int]:
    """(resolution, channels) to read ``folder`` with: each given one as given, each left None that of its first
    readable image (:func:`first_image_geometry`) — with a warning when other images of the folder differ from the
    first in it, naming how many, their spread and the option that chooses (``--resolution`` / ``resolution=``,
    ``--channels`` / ``channels=``).

    Why: one 8×8 thumbnail sorted first shrank a folder of 64×64 images to 8×8 (63/64 of their pixels gone), and one
    grey file first turned a colour folder grey, each without a word — a fully convolutional model runs at any size,
    so nothing failed later either. Every header is read when something is defaulted (about 0.1 ms a file; no pixels
    are decoded, and the loader decodes them all next).
    """
    if resolution is not None and channels is not None:
        return resolution, channels
    found = _headers(folder, recursive, every=True)
    first, (side, mode) = found[0]
    name = first.relative_to(folder)
    if resolution is None:
        resolution = max(4, side)
        sides = sorted(s for _, (s, _) in found if s != side)
        if sides:
            common = max(sorted(set(sides)), key=sides.count)  # ties: the smallest, so the text is the same each run
            warnings.warn(f"the images of folder {folder} differ in size: its first, {name}, sets the default "
                          f"resolution {resolution} (its largest central square is {side}x{side}), but {len(sides)} of "
                          f"the {len(found)} readable images are another size (their squares {sides[0]}..{sides[-1]} "
                          f"px a side, most often {common}), and every image is resized to {resolution}x{resolution}; "
                          f"pass --resolution / resolution= to choose, e.g. --resolution {common}", stacklevel=2)
    if channels is None:
        channels = mode
        others = sum(1 for _, (_, m) in found if m != mode)
        if others:
            other = 3 if mode == 1 else 1
            kinds = ("grey", "colour") if mode == 1 else ("colour", "grey")
            read = ("grey (colour ones by ITU-R 601-2 luma)" if mode == 1 else
                    "as RGB (grey ones as 3 identical channels)")
            warnings.warn(f"the images of folder {folder} differ in colour: its first, {name}, is {kinds[0]}, which "
                          f"sets the default channels {mode}, but {others} of the {len(found)} readable images are "
                          f"{kinds[1]}, and every image is read {read}; pass --channels {other} / "
                          f"channels={other} to read them {'in colour' if mode == 1 else 'grey'}", stacklevel=2)
    return resolution, channels


def _warn_upsampled(sides: list[tuple[Path, int]], resolution: int, what: str) -> None:
    """One warning when images were enlarged: their squares (side < ``resolution``) hold less detail than the
    output, so the model would learn bilinear blur. ``sides``: (file, side of the square it was cut from)."""
    small = sorted(((side, str(path)) for path, side in sides if side < resolution))
    if small:
        side, name = small[0]
        warnings.warn(f"{len(small)} of the {len(sides)} images in {what} are smaller than {resolution}x{resolution} "
                      f"and were upsampled (smallest: {name}, a {side}x{side} square); pass --resolution {side} / "
                      f"resolution={side} or less to keep every image's own pixels", stacklevel=4)


def load_folder(data_dir: str | Path, n: int | None = None, resolution: int = 32, seed: int = 0,
                channels: int | None = None, recursive: bool | None = None) -> ImageSet:
    """Every image file in ``data_dir`` (``recursive`` to include sub-folders) → (n, C, R, R) in [−1, 1].

    Each image is centre-cropped to its largest central square and resized to ``resolution`` (so mixed
    sizes give one geometry); ``channels`` 3 (default) or 1 sets the colour conversion. ``recursive``: True reads
    the sub-folders' images too, False only the folder's own; None (the default) reads the folder's own and refuses a
    folder that has images both of its own and in sub-folders (:func:`mixed_folder_error`), which is then to be
    chosen.
    """
    resolution, n, seed = check_resolution(resolution), _check_n(n), _check_seed(seed)
    asked, channels = channels, _check_channels(channels, 3)  # asked: None when the caller left it to the default
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist (or is not a folder); pass data_dir pointing at a "
                        f"folder of image files ({', '.join(IMAGE_EXTENSIONS[:5])}, …)")
    files, others, duplicates = _folder_files(folder, bool(recursive))
    if not files:
        hint = "" if recursive else "; pass recursive=True if they are in sub-folders"
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}{hint}")
    if recursive is None and (mixed := mixed_folder_error(
            folder, files, "pass recursive=True to read all {all}, or recursive=False to read only its own {own}")):
        raise mixed
    images, idx, names, unreadable = _load_files(folder, files, n, seed, channels, resolution, None,
                                                 f"folder {folder}")
    _warn_left_out_images(folder, others)
    _warn_duplicates(folder, duplicates)
    colour = "RGB" if channels == 3 else "grey"
    if asked is None and channels == 3 and images.shape[0] > 0 and bool(
            (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()):
        # kept as 3 channels (a model or an audit may expect RGB), but said: a grey folder trains 3× the inputs
        colour = "RGB with 3 identical channels (grey images: pass channels=1, --set channels=1, for one)"
    left_out = [str(p.relative_to(folder)) for p in others]
    doubled = [str(p.relative_to(folder)) for p, _ in duplicates]
    source = (f"image folder {folder} ({_file_counts(len(files), len(idx), len(unreadable), left_out, doubled)}"
              f"{', recursive' if recursive else ''}), largest central square resized to {resolution}x{resolution}, "
              f"{colour}")
    return ImageSet(images, "folder", source, idx, names, unreadable=unreadable)


def _is_celeba_file(path: Path) -> bool:
    # hidden files are left out: a macOS copy leaves an AppleDouble ._000001.jpg beside every image
    return path.suffix.lower() in CELEBA_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def celeba_files(folder: Path) -> list[Path]:
    """CelebA's image files in ``folder`` (``.jpg``, or ``.png`` of the official PNG release; any case), sorted by
    name, case-sensitively on every OS (:func:`row_order_key`)."""
    return sorted((p for p in folder.iterdir() if _is_celeba_file(p)), key=lambda p: p.name)


def _viewed_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file as viewers show it, read from its header only (PIL decodes no pixels until
    asked): an EXIF orientation that turns it by 90° swaps the two, as the loader's ``exif_transpose`` does. None for a
    file PIL cannot open (the loader skips and reports those)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            # "exif" in info: the header carried it (a JPEG's APP1); asking a PNG for it otherwise decodes the file
            if "exif" in img.info and img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


_T = TypeVar("_T")

_FOLDER_MEMORY: dict[tuple[str, str], tuple[int, Any]] = {}
"""(what, folder) → (the folder's st_mtime_ns then, the value): :func:`_remembered_per_folder`'s memory."""


def _remembered_per_folder(what: str, folder: Path, compute: Callable[[], _T]) -> _T:
    """``compute()`` for ``folder``, remembered under ``what`` while the folder's modification time (which adding,
    removing or renaming a file changes) stays the same; always computed when the time cannot be read."""
    key = (what, str(folder.resolve()))
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        return compute()
    known = _FOLDER_MEMORY.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    value = compute()
    _FOLDER_MEMORY[key] = (stamp, value)
    return value


def _checked_celeba_files(folder: Path) -> list[Path]:
    """:func:`celeba_files` of ``folder`` after checking that every one is CelebA's 178×218 (from the headers: about
    0.1 ms a file); DataError naming the first files of another size and their count.

    The whole folder is checked, not the files a draw picks, so whether a folder is refused does not depend on ``n``
    or the seed. Remembered while the folder's modification time stays the same (validation, then loading, read the
    headers once)."""
    return _remembered_per_folder("celeba", folder, lambda: _check_celeba_sizes(folder))


def _check_celeba_sizes(folder: Path) -> list[Path]:
    files = celeba_files(folder)
    wrong = [(path, size) for path in files if (size := _viewed_size(path)) is not None and size != CELEBA_SIZE]
    if wrong:
        def told(path: Path, size: tuple[int, int]) -> str:
            small = f", smaller than the {CELEBA_CROP}x{CELEBA_CROP} centre crop" if min(size) < CELEBA_CROP else ""
            return f"{path.name} is {size[0]}x{size[1]}{small}"

        shown = shortlist([told(path, size) for path, size in wrong])
        raise DataError(f"{len(wrong)} of the {len(files)} image files in CelebA folder {folder} are not the 178x218 "
                        f"of CelebA's aligned-and-cropped images, so the fixed {CELEBA_CROP}x{CELEBA_CROP} face crop "
                        f"would not fit them ({shown}); remove them (every CelebA image is 178x218), or load the "
                        f"images as a plain folder instead (name='folder', dataset=folder)")
    return files


def celeba_folder(data_dir: str | Path, *, otherwise: str = "use name='lfw' or 'digits'") -> Path:
    """Locate CelebA's aligned images under ``data_dir``; DataError naming the expected layout if absent (ending
    "without it ``otherwise``": callers with other argument names, e.g. the experiments' config keys, name theirs).

    Accepted: ``data_dir/img_align_celeba/*.jpg`` (the official release), the Kaggle archive's nested
    ``data_dir/img_align_celeba/img_align_celeba/*.jpg``, torchvision's ``data_dir/celeba/img_align_celeba/*.jpg``,
    the official PNG release ``data_dir/img_align_celeba_png/*.png``, either release inside the official download's
    ``Img/`` folder (``data_dir/Img/img_align_celeba/``), or ``data_dir`` being such a folder itself. An archive left
    unextracted (``img_align_celeba.zip``, ``img_align_celeba_png.7z``) is named in the error.
    """
    root = Path(data_dir).expanduser()
    parents = (root, root / "celeba", root / "Img")
    candidates = [root / "img_align_celeba" / "img_align_celeba"]
    candidates += [parent / name for parent in parents for name in ("img_align_celeba", "img_align_celeba_png")]
    for candidate in (*candidates, root):
        if candidate.is_dir() and any(_is_celeba_file(p) for p in candidate.iterdir()):
            return candidate
    archives = sorted(str(p) for folder in parents if folder.is_dir() for p in folder.iterdir()
                      if p.name.lower().endswith((".zip", ".7z", ".tar", ".tar.gz", ".tgz")))
    unpack = f" Found the archive(s) {', '.join(archives)}: extract them first." if archives else ""
    raise DataError(f"CelebA images not found under {root}: expected the aligned-and-cropped release laid out as "
                    f"{root / 'img_align_celeba' / '000001.jpg'}, {root / 'img_align_celeba' / '000002.jpg'}, … "
                    f"(202,599 JPEGs of 178x218), or data_dir pointing at the img_align_celeba folder itself.{unpack} "
                    f"flowvar never downloads CelebA; without it {otherwise}")


def load_celeba(data_dir: str | Path, n: int | None = None, resolution: int = 64, seed: int = 0,
                channels: int | None = None) -> ImageSet:
    """CelebA aligned images → centre crop 140×140 → antialiased resize → (n, C, R, R) in [−1, 1]."""
    resolution, n, seed = check_resolution(resolution), _check_n(n), _check_seed(seed)
    channels = _check_channels(channels, 3)
    folder = celeba_folder(data_dir)
    files = _checked_celeba_files(folder)
    images, idx, names, unreadable = _load_files(folder, files, n, seed, channels, resolution, CELEBA_CROP,
                                                 f"CelebA folder {folder}")
    source = (f"CelebA {folder} ({_file_counts(len(files), len(idx), len(unreadable))}), centre crop {CELEBA_CROP} "
              f"resized to {resolution}x{resolution}, {'RGB' if channels == 3 else 'grey'}")
    return ImageSet(images, "celeba", source, idx, names, unreadable=unreadable)


#: The suffixes (any case) of the array files flowvar reads: numpy.save's and numpy.savez's.
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")


def _unsupported_data_file(path: Path) -> DataError:
    """The DataError for a data file whose suffix is not one of :data:`ARRAY_SUFFIXES` (a torch ``.pt``, a ``.csv``):
    one sentence for :func:`resolve_data` and the array loaders alike (numpy would open a ``.pt`` — a zip — as an
    ``.npz`` and list its members)."""
    return DataError(f"unsupported data file {path} ({path.suffix or 'no extension'}); save arrays with numpy.save as "
                     f".npy ((N, d) vectors or (N, [C,] H, W) images; numpy.savez as .npz with labels) or pass a "
                     f"folder of images")


def _array_file(path: str | Path) -> Path:
    """``path`` as an existing array file; DataError for a folder (naming the folder source), a missing path or a
    suffix other than .npy / .npz (:func:`_unsupported_data_file`)."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(f"array file {file} is a folder; pass the path of a .npy file, or load a folder of images "
                        f"as a folder source (load_folder / name='folder'; dataset=folder in flowvar run)")
    if not file.is_file():
        raise DataError(f"array file {file} does not exist; pass the path of a .npy file holding (N, H, W), "
                        f"(N, C, H, W) or (N, d) data")
    if file.suffix.lower() not in ARRAY_SUFFIXES:
        raise _unsupported_data_file(file)
    return file


def _refuse_empty_items(file: Path, shape: tuple[int, ...]) -> None:
    """ShapeError for an array whose items hold no values, (N, 0) or (N, C, 0, W): every later min/max/mean over
    them would fail inside torch."""
    if 0 in shape[1:]:
        raise ShapeError(f"{file} holds an array of shape {shape}, whose items are empty; expected (N, d) vectors with "
                         f"d >= 1 or images with C, H, W >= 1")


def _looks_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` is most likely channels-last images, which flowvar would read as channels-first
    ((N, C, H, W), or (N, H, W) grey images) without a word — every pixel then in the wrong place.

    * 4-D ``(a, b, c, d)``: (N, H, W, C) when ``b`` is not a channel count (1, 3, 4) and ``d`` is (the classic
      colour case, squares or not), or when ``b == c > d`` and ``d <= 4`` (a square H = W beside a small last axis: 2
      channels of a flow field, tiny 4×4 RGB images), since (N, C, H, W) images have their square in the last two
      axes. ``b == c == d`` (e.g. (N, 3, 3, 3)) or ``d > b`` (e.g. (N, 3, 3, 4)) stays ambiguous and is read as
      (N, C, H, W).
    * 3-D ``(a, b, c)``: one (H, W, C) image saved without its batch axis when ``c <= 4 < b``: as (N, H, W) it would
      be ``a`` grey images only ``c`` pixels wide.
    """
    if len(shape) == 4:
        _, b, c, d = shape
        return (b not in (1, 3, 4) and d in (1, 3, 4)) or (b == c > d and d <= 4)
    if len(shape) == 3:
        return shape[2] <= 4 < shape[1]
    return False


def _refuse_channels_last(file: Path, shape: tuple[int, ...]) -> None:
    """ShapeError (one line: the shape read, the likely layout and the transpose that fixes it) for an array that
    :func:`_looks_channels_last`; called from the header alone by :func:`count_items`, so validation and
    ``advise-sigma`` name the layout before any item count."""
    shape = tuple(int(s) for s in shape)
    if not _looks_channels_last(shape):
        return
    if len(shape) == 4:
        n, h, w, c = shape
        raise ShapeError(f"{file} holds shape {shape}, which looks channels-last (N, H, W, C): {n} images of {h}x{w} "
                         f"with {c} channel(s), which would be read as {h} channels of {w}x{c} images; save it as "
                         f"(N, C, H, W): np.save(path, np.transpose(a, (0, 3, 1, 2)))")
    h, w, c = shape
    raise ShapeError(f"{file} holds shape {shape}, which looks like one channels-last (H, W, C) image ({h}x{w} with "
                     f"{c} channel(s)), which would be read as {h} grey images of {w}x{c} (3-D arrays are (N, H, W)); "
                     f"save it as (1, C, H, W): np.save(path, a.transpose(2, 0, 1)[None]) (or, for {h} items of shape "
                     f"({w}, {c}) that are not images, as (N, d) vectors: a.reshape({h}, -1))")


def _open_array(file: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    """``file`` opened by numpy: a ``.npy`` memory-mapped (its header read; rows are read when indexed), an ``.npz``
    as a lazy NpzFile; DataError naming the saver for an unreadable file."""
    try:
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError:  # truncated, or pickled objects: numpy's own reading names the problem more plainly
            return np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # BadZipFile: a truncated .npz download
        raise _unreadable_array(file, error) from None


def _unreadable_array(file: Path, error: Exception) -> DataError:
    """The DataError for a ``.npy``/``.npz`` file numpy could not read (``error``), naming what is wrong: a file without
    numpy's header (numpy calls it pickled data and suggests ``allow_pickle``, the wrong remedy), an array of Python
    objects, or else numpy's own words; each with the saver that writes a readable one."""
    npz = file.suffix.lower() == ".npz"
    saver = "numpy.savez" if npz else "numpy.save"
    head = _file_head(file, 6)
    if not npz and head is not None and head != b"\x93NUMPY":
        return DataError(f"{file} is not a .npy file (it does not start with numpy's header; a text or CSV file "
                         f"renamed?); load it into an array and save it with {saver}")
    if "allow_pickle" in str(error):
        return DataError(f"{file} holds Python objects, not numbers; convert them to a numeric array "
                         f"(np.asarray(x, dtype=np.float32)) and save that with {saver}")
    return DataError(f"{file} is not a readable {file.suffix or '.npy'} array ({error}); save it with {saver}")


def _file_head(file: Path, size: int) -> bytes | None:
    """The first ``size`` bytes of ``file`` (None when it cannot be read)."""
    try:
        with open(file, "rb") as handle:
            return handle.read(size)
    except OSError:
        return None


#: A memory-mapped array is scanned in blocks of rows of about this many bytes: the checks over every row then hold
#: one block in memory, never a copy of the file (a 15 GB uint8 array took ~190 GB when converted whole).
SCAN_BLOCK_BYTES = 1 << 26


def _blocks(raw: np.ndarray) -> Iterator[np.ndarray]:
    """``raw`` in consecutive blocks of whole rows, each about :data:`SCAN_BLOCK_BYTES` (at least one row)."""
    step = max(1, SCAN_BLOCK_BYTES // max(1, raw[0].nbytes))
    for start in range(0, raw.shape[0], step):
        yield np.asarray(raw[start:start + step])


@dataclass(frozen=True)
class _Scan:
    """Every value of an array, read block by block: ``lo`` and ``hi`` its least and greatest finite values (numpy
    scalars of its dtype; None when none is finite) and ``nonfinite`` how many are NaN or ±Inf."""

    lo: Any
    hi: Any
    nonfinite: int


def _scan(raw: np.ndarray) -> _Scan:
    lo = hi = None
    nonfinite = 0
    for block in _blocks(raw):
        if block.dtype.kind == "f" and not (finite := np.isfinite(block)).all():
            nonfinite += block.size - int(np.count_nonzero(finite))
            block = block[finite]
        if block.size:
            lo = block.min() if lo is None else min(lo, block.min())
            hi = block.max() if hi is None else max(hi, block.max())
    return _Scan(lo, hi, nonfinite)


def _std(raw: np.ndarray) -> float:
    """The standard deviation (with Bessel's correction, as ``torch.std``) of every value of an integer array, from
    sums over blocks (exact in float64 for 8-bit values up to ~10¹¹ of them)."""
    total = squares = 0.0
    for block in _blocks(raw):
        b = block.astype(np.float64)
        total, squares = total + float(b.sum()), squares + float(np.square(b).sum())
    count = raw.size
    return math.sqrt(max(squares - total * total / count, 0.0) / max(count - 1, 1))


def load_array(path: str | Path, n: int | None = None, resolution: int | None = None, seed: int = 0,
               channels: int | None = None, value_range: tuple[float, float] | None = None) -> ImageSet:
    """A user's ``.npy`` array: (N, H, W) grey images, (N, C, H, W) images, or (N, d) vectors; or an ``.npz`` file
    holding such an array and, optionally, its (N,) integer class labels (:func:`npz_arrays` names the keys).

    Values: ``uint8`` arrays, images or vectors (flattened 8-bit pixels), map [0, 255] to [−1, 1];
    ``value_range=(lo, hi)`` maps [lo, hi] linearly to [−1, 1], images or vectors (DataError if values fall
    outside); float arrays are used as given (assumed already scaled; float images with values in [0, > 2] get a
    warning, as they are most often unscaled 0..255 pixels, and so do float images within [0, 1] with a positive
    value, most often torchvision ``ToTensor``'s [0, 1] pixels: half as wide as flowvar's [−1, 1]). Images of any
    other integer or bool dtype (uint16, int64, ...) have no known pixel scale: DataError asking for
    ``value_range`` or a uint8 / float32 file. Integer (N, d) vectors other than uint8 are used as given.
    Channels-last arrays — (N, H, W, C) and a single (H, W, C) image, by the rule of :func:`_looks_channels_last` —
    are refused with the transpose that fixes them; NaN/Inf, object
    (pickled) arrays and truncated files are refused.
    ``resolution``: resize images (largest central square, antialiased bilinear); None keeps their size.
    ``channels``: 1 or 3 to convert grey↔RGB (RGB → grey by ITU-R 601-2 luma); None keeps C.

    Memory: a ``.npy`` file is memory-mapped and only the ``n`` rows chosen are read into memory and converted (the
    checks above read every row, block by block); an ``.npz`` file's array is decompressed whole, in its own dtype.
    """
    n, seed = _check_n(n), _check_seed(seed)
    value_range = _check_value_range(value_range) if value_range is not None else None
    file = _array_file(path)
    raw = _open_array(file)  # a .npy memory-mapped: the rows returned are the only ones converted
    raw_labels = None
    if isinstance(raw, np.lib.npyio.NpzFile):
        with raw:
            raw, raw_labels = npz_arrays(file, raw)
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "uifb":
        raise DataError(f"{file} must hold a numeric array, got {getattr(raw, 'dtype', type(raw))}")
    if raw.ndim not in (2, 3, 4) or raw.shape[0] == 0:
        raise ShapeError(f"{file} holds an array of shape {raw.shape}; expected (N, H, W), (N, C, H, W) or (N, d) "
                         f"with N >= 1")
    _refuse_empty_items(file, raw.shape)
    _refuse_channels_last(file, raw.shape)
    # the checks below see every row (whether a file is refused does not depend on n), from one block-by-block scan
    # of the file (:func:`_scan`); uint8 images without a value range need none (one scale, finite)
    scan = None if raw.dtype == np.uint8 and raw.ndim != 2 and value_range is None else _scan(raw)
    if raw.ndim in (3, 4) and value_range is None and raw.dtype != np.uint8 and raw.dtype.kind in "uib":
        # only uint8 has one pixel scale; 16-bit, 12-bit-in-uint16 or 0..255-in-int64 pixels used as given would
        # put images in [0, 65535] while flowvar's are in [−1, 1]
        assert scan is not None
        lo, hi = scan.lo, scan.hi
        # the suggested range is the data's own top (digits are 0..16, not 0..255); the commands differ in how to
        # pass it: only load_array and `flowvar audit` take a value range, `flowvar run` / `advise-sigma` do not
        # signed data (CT numbers, differences) keep their own floor: (0, top) would leave the negative values
        # outside the range it suggests, and a / top * 2 - 1 below −1
        bottom, top = min(int(lo), 0), max(int(hi), 1)
        if top <= bottom:
            top = bottom + 1
        span = f"(a + {-bottom}) / {top - bottom}" if bottom else f"a / {top}"
        raise DataError(f"{file} holds {raw.dtype} images (values {lo}..{hi}), whose pixel scale flowvar cannot "
                        f"know. If {bottom}..{top} is their full scale: in Python pass value_range=({bottom}, {top}) "
                        f"to load_array; in `flowvar audit` pass --value-range {bottom},{top}; for `flowvar run` / "
                        f"`flowvar advise-sigma` save them as float32 already scaled, {span} * 2 - 1 (used as given). "
                        f"8-bit pixels can also be saved as uint8 (mapped from 0..255 to [−1, 1])")
    if raw.dtype.kind == "f" and raw.dtype.itemsize > 4:
        # finite float64 values beyond float32's range would turn into inf and be reported as if the file held them
        assert scan is not None
        top = max((abs(float(v)) for v in (scan.lo, scan.hi) if v is not None), default=0.0)
        if top > float(np.finfo(np.float32).max):
            raise DataError(f"{file} holds values up to {top:g}, beyond float32 (about 3.4e38), which flowvar computes "
                            f"in; rescale the data")
    if scan is not None and scan.nonfinite:  # counted over the whole file
        raise nonfinite_error(f"array {file}", scan.nonfinite, raw.size)
    # float32 rounding is monotonic: the least and greatest of the converted values are the converted least and greatest
    lo32, hi32 = (float(np.float32(scan.lo)), float(np.float32(scan.hi))) if scan is not None else (0.0, 0.0)
    if value_range is not None:
        if lo32 < value_range[0] or hi32 > value_range[1]:
            raise DataError(f"{file} has values in [{lo32}, {hi32}], outside value_range {value_range}; widen "
                            f"value_range or drop it to use values as given")
    elif raw.dtype == np.uint8 and raw.ndim == 2:
        # 8-bit pixels, also as flattened vectors (MNIST as (N, 784)): one scale, 0..255 → [−1, 1]. The same
        # numbers saved as int64 are used as given, so counts or codes saved as uint8 would be squeezed into a
        # sliver of [−1, 1] and get another σ advice: warn when the values use little of 0..255
        assert scan is not None
        lo8, hi8 = int(scan.lo), int(scan.hi)
        if hi8 - lo8 < UINT8_SPAN_WARN:
            warnings.warn(f"{file} holds uint8 vectors with values {lo8}..{hi8}, mapped as 8-bit pixels from 0..255 "
                          f"to [−1, 1] (spread becomes {_std(raw) / 127.5:.3g}); if they are counts or "
                          f"codes, not pixels, save them as int64 or float32 (used as given) — or standardise them",
                          stacklevel=2)
    elif raw.ndim in (3, 4) and raw.dtype.kind == "f" and float_pixel_scale(lo32, hi32) == "0..255":
        # used as given (a model may be trained on any scale), but non-negative values this large are most often
        # 0..255 pixels saved as floats, which flowvar's [−1, 1] experiments would train on unscaled
        warnings.warn(f"{file} holds float images with values in [{lo32:g}, {hi32:g}], used as given; flowvar's "
                      f"images are in [−1, 1]: if these are 0..255 pixels save them as uint8 (any command), or pass "
                      f"value_range=(0, 255) in Python / --value-range 0,255 in `flowvar audit`", stacklevel=2)
    elif raw.ndim in (3, 4) and raw.dtype.kind == "f" and float_pixel_scale(lo32, hi32) == "0..1":
        # [0, 1] is torchvision ToTensor's scale, the most common float image array: used as given it is half the
        # width of flowvar's [−1, 1] images, so σ advice and an audit come out on another scale than the docs say.
        # (All zeros, hi32 == 0, is no pixel scale at all and gets no warning.)
        warnings.warn(f"{file} holds float images with values in [{lo32:g}, {hi32:g}], used as given; flowvar's "
                      f"images are in [−1, 1]: if these are [0, 1] pixels save them as x * 2 - 1 (any command, "
                      f"advise-sigma included), or pass value_range=(0, 1) in Python / --value-range 0,1 in "
                      f"`flowvar audit`", stacklevel=2)
    # how the values were rescaled, for the data line of every summary (nothing said: used as given)
    scaled = (f", rescaled from value_range {tuple(value_range)} to [−1, 1]" if value_range is not None else
              ", uint8 rescaled from 0..255 to [−1, 1]" if raw.dtype == np.uint8 else "")
    idx = choose_indices(raw.shape[0], n, seed, f"array {file}")
    # rows first, then conversion, in place: a subset reads and converts only its rows; all rows make one copy
    with np.errstate(over="ignore"):
        data = torch.from_numpy(np.array(raw if n is None else raw[idx.numpy()], dtype=np.float32))
    if value_range is not None:
        lo, hi = value_range
        data.sub_(lo).div_(hi - lo).mul_(2.0).sub_(1.0)  # (x − lo) / (hi − lo) · 2 − 1
    elif raw.dtype == np.uint8:
        data.div_(127.5).sub_(1.0)
    labels = check_labels(f"{file} labels", raw_labels, raw.shape[0])[idx] if raw_labels is not None else None
    if data.ndim == 2:
        if resolution is not None or channels is not None:
            raise ConfigError(f"{file} holds vectors of shape (N, d) = {tuple(raw.shape)}; resolution and channels "
                              f"apply to images only — drop --resolution / --channels (resolution= / channels= from "
                              f"Python)")
        return ImageSet(data.contiguous(), "npy", f"array {file} (vectors {tuple(raw.shape)}{scaled})", idx,
                        labels=labels)
    if data.ndim == 3:
        data = data[:, None]
    c = data.shape[1]
    if channels is not None:
        channels = _check_channels(channels, c)
        if channels == 3 and c == 1:
            data = data.expand(-1, 3, -1, -1)
        elif channels == 1 and c == 3:
            data = (0.299 * data[:, 0] + 0.587 * data[:, 1] + 0.114 * data[:, 2])[:, None]
        elif channels != c:
            raise ShapeError(f"{file} has {c} channels; channels={channels} converts only between 1 and 3")
    desc = f"array {file} {tuple(raw.shape)}{scaled}"
    if resolution is not None:
        resolution = check_resolution(resolution)
        side = min(data.shape[-2:])
        if side < resolution:  # as for image files: enlarged images carry bilinear blur, not detail
            warnings.warn(f"{file} holds {data.shape[-2]}x{data.shape[-1]} images, smaller than {resolution}x"
                          f"{resolution}: they were upsampled; pass --resolution {side} / resolution={side} (their "
                          f"own size) or less to keep their own pixels", stacklevel=2)
        data = resize_tensor(data, resolution)
        desc += f", resized to {resolution}x{resolution}"
    return ImageSet(data.contiguous(), "npy", desc, idx, labels=labels)


#: Keys of an ``.npz`` file's data array (the first present is used; a file holding one array besides its labels
#: may name it anything) and of its class labels.
NPZ_DATA_KEYS: tuple[str, ...] = ("x", "data", "images", "x1")
NPZ_LABEL_KEYS: tuple[str, ...] = ("labels", "y")


def npz_arrays(file: Path, npz: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray | None]:
    """(the data array, the labels array or None) of an ``.npz`` file: the data under the first of
    :data:`NPZ_DATA_KEYS` (or its only array besides the labels), the labels under the first of
    :data:`NPZ_LABEL_KEYS`. DataError naming the keys it holds otherwise."""
    data_key, label_key = _npz_keys(file, npz)
    try:
        return npz[data_key], npz[label_key] if label_key is not None else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _unreadable_array(file, error) from None


def _npz_keys(file: Path, npz: np.lib.npyio.NpzFile) -> tuple[str, str | None]:
    """(the data array's key, the labels' key or None) of an ``.npz`` file, as :func:`npz_arrays` picks them."""
    keys = list(npz.files)
    label_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
    others = [k for k in keys if k != label_key]
    data_key = next((k for k in NPZ_DATA_KEYS if k in keys), others[0] if len(others) == 1 else None)
    if data_key is None:
        raise DataError(f"{file} holds the arrays {keys or 'none'}; name the data array one of "
                        f"{', '.join(NPZ_DATA_KEYS)} (and its class labels {' or '.join(NPZ_LABEL_KEYS)})")
    return data_key, label_key


def check_labels(what: str, labels: object, n: int) -> Tensor:
    """Class labels as an (n,) long tensor: integers >= 0 (integral floats are accepted), one per data item.
    DataError / ShapeError naming ``what`` otherwise."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.dtype.kind not in "uifb":
        raise DataError(f"{what} must be integer class labels, got {arr.dtype}")
    if arr.shape != (n,):
        raise ShapeError(f"{what} has shape {arr.shape}; give one class label per data item: shape ({n},)")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise DataError(f"{what} holds non-integer values; class labels are integers 0, 1, 2, ...")
    if n and arr.min() < 0:
        raise DataError(f"{what} holds negative values (min {arr.min()}); class labels are integers 0, 1, 2, ...")
    if n and arr.max() > np.iinfo(np.int64).max:  # uint64 or huge floats would wrap to negative int64
        raise DataError(f"{what} holds values beyond int64 (max {arr.max()}); class labels are integers 0, 1, 2, ...")
    return torch.from_numpy(arr.astype(np.int64))


_BUNDLED: dict[str, Callable[..., ImageSet]] = {"digits": load_digits, "lfw": load_lfw}


#: The side :func:`load_images` resizes to when ``resolution`` is None, for every source but ``"npy"`` (which keeps the
#: array's own size).
DEFAULT_RESOLUTION = 32


def load_images(name: Source | str, n: int | None = None, resolution: int | None = None, seed: int = 0,
                data_dir: str | Path | None = None, channels: int | None = None, recursive: bool | None = None
                ) -> ImageSet:
    """Load ``n`` items (None: all) of a source as an :class:`ImageSet` of (n, C, R, R) tensors (or (n, d) vectors for
    an (N, d) ``.npy`` array): in [−1, 1] for every source but a float ``.npy`` array, whose values are used as given
    (:func:`load_array`).

    ``name``: one of :data:`SOURCES` (see the module docstring). ``data_dir``: the folder for ``"celeba"`` /
    ``"folder"``, the ``.npy`` file for ``"npy"``; must be None for the bundled sets. ``resolution``: the output
    side R; None keeps an ``"npy"`` array's own size (and its vectors as vectors) and gives
    :data:`DEFAULT_RESOLUTION` (32) for the other sources. ``channels``: 1 or 3 (None: 1 for digits/lfw, 3 for
    celeba/folder, the array's own for npy). ``recursive``: folders only (:func:`load_folder`: None refuses a folder
    with images both of its own and in sub-folders).

    Raises:
        ConfigError: unknown ``name``, a bad ``n``/``resolution``/``seed``/``channels``, a missing or
            superfluous ``data_dir``.
        DataError: missing files, ``n`` larger than the source, nothing readable.
    """
    if name not in SOURCES:
        raise ConfigError(f"unknown image source {name!r}; choose one of {list(SOURCES)}")
    if recursive and name != "folder":
        raise ConfigError(f"recursive=True applies to name='folder' only, not {name!r}")
    if name in _BUNDLED:
        if data_dir is not None:
            raise ConfigError(f"{name!r} ships inside its Python package and reads no files; drop data_dir "
                              f"(got {str(data_dir)!r}), or use name='folder' / 'celeba' for your own images")
        return _BUNDLED[name](n=n, resolution=DEFAULT_RESOLUTION if resolution is None else resolution, seed=seed,
                              channels=channels)
    if data_dir is None:
        what = {"celeba": "the folder holding img_align_celeba/", "folder": "the image folder",
                "npy": "the .npy file"}[name]
        raise ConfigError(f"name={name!r} needs data_dir: {what}")
    if name == "npy":  # an array keeps its own size unless a resolution is asked for (vectors have none)
        return load_array(data_dir, n=n, resolution=resolution, seed=seed, channels=channels)
    side = DEFAULT_RESOLUTION if resolution is None else resolution
    if name == "celeba":
        return load_celeba(data_dir, n=n, resolution=side, seed=seed, channels=channels)
    return load_folder(data_dir, n=n, resolution=side, seed=seed, channels=channels, recursive=recursive)


# --------------------------------------------------------------------------------------------- a user's data argument


NAMED_DATA: tuple[str, ...] = ("gmm", "digits", "lfw")
"""Data names :func:`resolve_data` accepts without a path (``flowvar advise-sigma --data gmm``)."""


@dataclass(frozen=True)
class DataSpec:
    """Where a study's data come from: ``dataset`` (gmm | digits | lfw | celeba | folder | npy) and ``data_dir``
    (the folder or the .npy file; None for the bundled sets)."""

    dataset: str
    data_dir: str | None


def resolve_data(data: str | Path, dataset: str | None = None) -> DataSpec:
    """Infer the dataset kind from ``data``: the names ``"gmm"``, ``"digits"``, ``"lfw"``; an existing folder →
    ``"folder"`` (``"celeba"`` when ``dataset="celeba"``); an existing ``.npy`` or ``.npz`` file → ``"npy"`` (read by
    :func:`load_array`).

    Raises DataError (one line naming the path and the fix) for a missing path, an unsupported file type or a folder
    without image files of its own (naming the sub-folders when they hold the images), ConfigError for an unknown
    ``dataset``.
    """
    spec = _resolve_data(data, dataset)
    # a forced kind the data are not is refused, never silently replaced by the inferred one
    if dataset is not None and dataset != spec.dataset:
        raise ConfigError(f"dataset {dataset!r} does not match the data {str(data).strip()!r}, which are "
                          f"{spec.dataset!r}; drop dataset (it is inferred) or pass data of that kind"
                          + ("" if spec.dataset != "folder" or dataset == "celeba" else
                             " (dataset='celeba' is the one kind a folder can be forced to)"))
    return spec


def _resolve_data(data: str | Path, dataset: str | None) -> DataSpec:
    text = str(data).strip()
    if dataset is not None and dataset not in ("gmm", "digits", "lfw", "celeba", "folder", "npy"):
        raise ConfigError(f"dataset must be one of gmm, digits, lfw, celeba, folder, npy, got {dataset!r}")
    if text.lower() in NAMED_DATA and not Path(text).exists():
        return DataSpec(text.lower(), None)
    if not text:
        raise DataError("no data given; pass a folder of images, a .npy file, or one of gmm, digits, lfw")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a folder of images, a .npy file (numpy.save), an "
                        f".npz file (numpy.savez, labels optional), or one of the bundled names gmm, digits, lfw")
    if path.is_dir():
        if dataset == "celeba":
            celeba_folder(path)
            return DataSpec("celeba", str(path))
        own = list_image_files(path)
        if not own:
            raise DataError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}){nested_hint(path)}")
        if mixed := mixed_folder_error(path, own, use="pass"):
            raise mixed
        return DataSpec("folder", str(path))
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise _unsupported_data_file(path)
    return DataSpec("npy", str(path))


def nested_hint(folder: Path, config: bool = False) -> str:
    """The end of the no-images error for ``folder``: where its images are when they sit in sub-folders (the data
    argument takes one folder of images, not a tree) — CelebA's layout named as such, with the dataset that reads
    it — else what to pass instead. ``config``: in the experiments' config keys (``dataset``, ``data_dir``) rather
    than the command line's and Python's arguments."""
    nested = list_image_files(folder, recursive=True)
    if not nested:
        return ("; set data_dir to a folder of image files (.png, .jpg, …)" if config else
                "; pass a folder of images or a .npy array")
    try:
        celeba = celeba_folder(folder)
    except DataError:
        celeba = None
    if celeba is not None:
        # a folder is never read as CelebA by its layout alone: its sub-folder, passed on its own, is a plain folder
        # (largest central square), so the face crop is asked for by name, the same for either path
        crop = f"CelebA's {CELEBA_CROP}x{CELEBA_CROP} face crop"
        if config:
            return (f", but it is laid out as CelebA (its {len(celeba_files(celeba))} images are in {celeba}): set "
                    f"dataset=celeba for {crop} (data_dir as it is), or data_dir={celeba} to read them as a plain "
                    f"folder of images (largest central square)")
        return (f", but it is laid out as CelebA (its {len(celeba_files(celeba))} images are in {celeba}): pass "
                f"--dataset celeba (dataset='celeba' from Python) for {crop}, or pass {celeba} to read them as a "
                f"plain folder of images (largest central square)")
    parents = sorted({p.parent.relative_to(folder) for p in nested}, key=lambda p: p.parts)
    shown = shortlist([str(p) for p in parents], ", ")
    if config:
        return (f"; its {len(nested)} image(s) are in sub-folders, which dataset=folder does not read: set data_dir to "
                f"the sub-folder that holds them (e.g. {folder / parents[0]}; they are in {shown}), or gather them "
                f"into one folder")
    return (f", but its sub-folders hold {len(nested)} (in {shown}); only the folder's own files are read: pass the "
            f"sub-folder that holds the images (e.g. {folder / parents[0]}), or gather the images into one folder")


def count_items(dataset: str, data_dir: str | None, *, celeba_otherwise: str = "use name='lfw' or 'digits'",
                use: str = "use") -> int:
    """How many items a file-backed source holds, without decoding them (digits 1797, lfw 100).

    A folder's listing is remembered while the folder's modification time stays the same, so validating many
    configs on one folder (a sweep's points, each built and validated) lists it once. A folder with images both of
    its own and in sub-folders is refused as :func:`load_folder` refuses it (:func:`mixed_folder_error`, whose
    remedies say ``use``). ``celeba_otherwise``: the alternative :func:`celeba_folder`'s error names."""
    if dataset == "digits":
        return 1797
    if dataset == "lfw":
        return LFW_FACES
    if data_dir is None:
        raise ConfigError(f"dataset={dataset!r} needs data_dir (the folder or the .npy file)")
    if dataset == "folder":
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"image folder {folder} does not exist (or is not a folder); set data_dir to a folder "
                            f"of images")
        return _listing_size("folder", folder, use)
    if dataset == "celeba":
        return _listing_size("celeba", celeba_folder(data_dir, otherwise=celeba_otherwise))
    file = _array_file(data_dir)
    shape = _array_shape(file)
    if len(shape) not in (2, 3, 4):
        raise DataError(f"{file} holds an array of shape {shape}; expected (N, d) vectors or (N, H, W) / "
                        f"(N, C, H, W) images")
    _refuse_empty_items(file, shape)
    _refuse_channels_last(file, shape)  # before any count: a wrong layout is the first thing to fix
    return int(shape[0])


def _listing_size(kind: Literal["folder", "celeba"], folder: Path, use: str = "use") -> int:
    """How many images :func:`list_image_files` (``folder``: DataError when it has images in sub-folders too, its
    remedies saying ``use``) or :func:`_checked_celeba_files` (``celeba``: each file checked to be 178×218) finds in
    ``folder``, listed again only when the folder's modification time (which adding or removing a file changes) has
    moved."""
    if kind == "celeba":
        return len(_checked_celeba_files(folder))

    def unmixed_count() -> int:  # an error is raised, not remembered: the next call lists the folder again
        files = list_image_files(folder)
        if mixed := mixed_folder_error(folder, files, use=use):
            raise mixed
        return len(files)

    return _remembered_per_folder("listing", folder, unmixed_count)


def check_split_size(dataset: str, data_dir: str | None, n_train: int, min_heldout: int, *,
                     celeba_otherwise: str = "use name='lfw' or 'digits'") -> int:
    """The item count of a file-backed source (:func:`count_items`), or the DataError of :func:`load_split` when it
    cannot give ``n_train`` training items plus ``min_heldout`` held out. Cheap (no decoding): configs call it when
    validated, before anything is written."""
    available = count_items(dataset, data_dir, celeba_otherwise=celeba_otherwise)
    if available < n_train + min_heldout:
        raise _too_few_items(data_dir or dataset, f"holds {available} item(s)", available, n_train, min_heldout)
    return available


def _array_shape(file: Path) -> tuple[int, ...]:
    """The shape of a ``.npy`` file's array or of an ``.npz`` file's data array (:func:`npz_arrays`' choice), from its
    header: nothing else of the file is read (an ``.npz`` member is not decompressed). DataError for an unreadable
    file."""
    arr = _open_array(file)
    if not isinstance(arr, np.lib.npyio.NpzFile):
        return tuple(arr.shape)
    with arr:
        data_key, _ = _npz_keys(file, arr)
        member = f"{data_key}.npy" if f"{data_key}.npy" in arr.zip.namelist() else data_key
        try:
            with arr.zip.open(member) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    return tuple(np.lib.format.read_array_header_1_0(fp)[0])
                if version == (2, 0):
                    return tuple(np.lib.format.read_array_header_2_0(fp)[0])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise _unreadable_array(file, error) from None
        return tuple(npz_arrays(file, arr)[0].shape)  # a header of another version: read the array


def npy_is_vectors(data_dir: str) -> bool:
    """Whether a ``.npy`` (or ``.npz``) file holds (N, d) vectors (read from its header)."""
    return len(_array_shape(_array_file(data_dir))) == 2


def load_split(dataset: str, data_dir: str | None, n_train: int, n_heldout: int, *, resolution: int,
               channels: int | None, seed: int, min_heldout: int) -> tuple[ImageSet, Tensor, Tensor]:
    """Load ``n_train`` + up to ``n_heldout`` items of a file-backed source and split them.

    Returns (the loaded set, the training items (n_train, *shape), the held-out items (h, *shape)) with
    ``min_heldout`` <= h <= ``n_heldout``: the first ``n_train`` items of the source's draw seeded with ``seed``
    (:func:`subset_order`) train, the next ones are held out — nested, so ``n_heldout`` does not change the training
    items. The split is a function of the whole file list (the draw is a permutation of all the source's items):
    adding or removing a file redraws it, so items held out before may train after (60 files, one added: 7 of 20
    training items stayed; review dataR 3).
    (N, d) ``.npy`` arrays stay vectors; images are (N, C, R, R) in [−1, 1]. Raises DataError naming the count and
    the fix when the source holds fewer than ``n_train + min_heldout`` items.
    """
    where = data_dir or dataset
    available = check_split_size(dataset, data_dir, n_train, min_heldout)
    want = min(available, n_train + n_heldout)
    if dataset == "npy" and data_dir is not None and npy_is_vectors(data_dir):
        items = load_array(data_dir, n=want, seed=seed)
    else:
        try:
            items = load_images(dataset, n=want, resolution=resolution, seed=seed, data_dir=data_dir,
                                channels=channels)
        except TooFewImagesError as short:  # files were counted, but some cannot be decoded
            if short.available < n_train + min_heldout:
                raise _too_few_items(where, f"holds {available} image files of which only {short.available} can be "
                                            f"read (unreadable: {shortlist(short.unreadable)})", short.available,
                                     n_train, min_heldout, " (or repair or remove the unreadable files)") from None
            # every readable file: the set the seeded permutation reaches when it runs out of files
            items = load_images(dataset, resolution=resolution, data_dir=data_dir, channels=channels)
    # Nested split: rank the loaded rows by their place in the loaders' seeded draw (:func:`subset_order`) — the
    # first n_train of that draw train, the next ones are held out. So n_heldout (a sweep's n_eval) never changes the
    # training items, and a larger held-out set extends a smaller one (an unreadable file is passed over by both).
    draw_rank = torch.empty(available, dtype=torch.long)
    draw_rank[subset_order(available, seed)] = torch.arange(available)
    order = torch.argsort(draw_rank[items.indices])
    x = items.images
    train, heldout = x[order[:n_train]].contiguous(), x[order[n_train:]].contiguous()
    _check_scale(where, x)
    _check_duplicates(where, train, heldout)
    _check_spread(where, heldout)
    return items, train, heldout


#: Float images whose values are all ≥ 0 and reach past this are most often 0..255 pixels: :func:`load_array` warns
#: about such a file, and ``flowvar audit`` about such a tensor in memory (one bound for both).
PIXEL_SCALE_WARN = 2.0


def float_pixel_scale(lo: float, hi: float) -> str | None:
    """The pixel scale float images spanning [lo, hi] most likely are on, when it is not flowvar's [−1, 1]:
    ``"0..255"`` (all ≥ 0, reaching past :data:`PIXEL_SCALE_WARN`: unscaled 8-bit pixels saved as floats), ``"0..1"``
    (all within [0, 1] with a positive value: torchvision ``ToTensor``'s, half as wide as [−1, 1]; all zeros is no
    scale at all), else None. What :func:`load_array` and the audit's in-memory tensors warn about; each words its
    own remedy."""
    if lo < 0.0:
        return None
    if hi > PIXEL_SCALE_WARN:
        return "0..255"
    return "0..1" if 0.0 < hi <= 1.0 else None

#: uint8 vectors whose values span fewer than this many of the 256 levels get a warning from :func:`load_array`: they
#: are rescaled as pixels, which counts or codes (Poisson(3) counts: 0..12) are not.
UINT8_SPAN_WARN = 64
#: Beyond this magnitude data are refused by :func:`load_split`: a flow from N(0, I) sources to targets this large
#: diverges at the first steps (or learns nothing) at any σ the study compares.
MAX_DATA_MAGNITUDE = 1e6
#: A spread (std over all values) outside [1 / f, f] for this f gets a warning from :func:`load_split`.
SCALE_WARN_FACTOR = 100.0
#: A centre (root mean square over dimensions of the per-dimension means) beyond this many source standard
#: deviations gets a warning from :func:`load_split`: 300 ± 10 K or [0, 255] pixels as vectors.
LOCATION_WARN = 10.0

_STANDARDISE = ("standardise your data first, (x - x.mean(0)) / x.std(0) (σ is in the units of the data, and the "
                "study's sources are N(0, I))")


def _check_scale(where: str, x: Tensor) -> None:
    """The data against the N(0, I) source of the σ study: DataError beyond :data:`MAX_DATA_MAGNITUDE` (every σ
    would diverge — the training error then blames the learning rate), a warning when the spread is off by more than
    :data:`SCALE_WARN_FACTOR` either way. Nothing is rescaled: the numbers stay the user's."""
    top = float(x.abs().max())
    if top > MAX_DATA_MAGNITUDE:
        raise DataError(f"{where} holds values up to {top:.3g}, far beyond the scale of the N(0, I) source the flow "
                        f"starts from, so training would diverge at every σ; {_STANDARDISE}")
    spread = float(x.double().std()) if x.numel() > 1 else 0.0
    if spread > 0 and not 1.0 / SCALE_WARN_FACTOR <= spread <= SCALE_WARN_FACTOR:
        warnings.warn(f"{where} has values spread with std {spread:.3g} (max |x| {top:.3g}), far from the N(0, I) "
                      f"source's 1: the σ grid and the learning rate are on that scale; {_STANDARDISE}",
                      stacklevel=3)
    # a spread near 1 far from the origin (1e3 + N(0, 1)) passes the checks above, yet every training line then runs
    # from the source blob to a far one and σ = 0 pairs at chance instead of memorising: the study's premise fails
    centre = float(x.double().flatten(1).mean(0).pow(2).mean().sqrt()) if x.shape[0] > 0 else 0.0
    if centre > LOCATION_WARN:
        warnings.warn(f"{where} is centred {centre:.3g} source standard deviations from the origin (root mean square "
                      f"of the per-dimension means), far from the N(0, I) source: CFM(σ = 0) may not memorise such "
                      f"pairs, and the σ advice then answers another question; {_STANDARDISE}", stacklevel=3)


def _too_few_items(where: str, holds: str, available: int, n_train: int, min_heldout: int, repair: str = ""
                   ) -> DataError:
    """The error of :func:`load_split` when ``available`` items cannot give ``n_train`` training items plus
    ``min_heldout`` held out, with fixes that can all be applied (``--set`` keys of ``flowvar run sigma_tradeoff``
    and ``flowvar advise-sigma``; n_train >= 4, min_heldout >= 8 as the experiment validates)."""
    fit = available - min_heldout
    if fit >= 4:
        fix = f"lower n_train to at most {fit} (--set n_train={fit}) or provide more data"
    else:
        lower = " or lower min_heldout (--set min_heldout=8, the smallest)" if min_heldout > 8 else ""
        smallest = f" (at least {4 + min_heldout} with --set n_train=4, the smallest)" if n_train > 4 else ""
        fix = f"provide at least {n_train + min_heldout} items for n_train={n_train}{smallest}{lower}"
    return DataError(f"{where} {holds}, but the study needs n_train={n_train} training items plus at least "
                     f"{min_heldout} held out; {fix}{repair}")


def _check_duplicates(where: str, train: Tensor, heldout: Tensor) -> None:
    """A warning when training items (n_train, *shape) repeat exactly or held-out items (h, *shape) equal a training
    item: the study's chance level 1/N, its memorisation score M and the copy fraction assume N distinct items — a
    pairing that lands on a copy of the partner counts as a hit (chance is then Σ_k (n_k/N)², not 1/N), a held-out
    copy of a training item rewards copying in G, and a duplicated target's two nearest training items tie (ratio 1,
    never a copy). A warning, not an error: real sets (scraped images, rounded sensor values) may hold a few copies,
    and the numbers are then off by about their share (review adviseR 1)."""
    flat_train, flat_held = train.flatten(1), heldout.flatten(1)
    # one unique over both sets: a held-out row equals a training row iff their unique ids meet
    _, ids = torch.unique(torch.cat([flat_train, flat_held]), dim=0, return_inverse=True)
    train_ids, held_ids = ids[:flat_train.shape[0]], ids[flat_train.shape[0]:]
    distinct = int(torch.unique(train_ids).numel())
    copied = int(torch.isin(held_ids, train_ids).sum())
    if distinct == flat_train.shape[0] and copied == 0:
        return
    found = [f"its {flat_train.shape[0]} training items hold only {distinct} distinct"] \
        if distinct < flat_train.shape[0] else []
    found += [f"{copied} of its {flat_held.shape[0]} held-out items equal a training item"] if copied else []
    warnings.warn(f"{where}: {' and '.join(found)}; the study's chance level (1/N), memorisation score and copy "
                  f"fraction assume distinct items (a pairing that lands on a copy counts as a hit, a held-out copy "
                  f"rewards copying), so they measure something else here; remove the duplicates first, e.g. "
                  f"x = numpy.unique(x, axis=0)", stacklevel=3)


def _check_spread(where: str, heldout: Tensor) -> None:
    """DataError when the held-out items are mostly copies of a few points: the study's MMD bandwidth (the median
    pairwise distance of the held-out items, :func:`flowvar.metrics.median_heuristic`) is then 0, and no config key
    can set another one — the data themselves must change."""
    from flowvar.metrics import median_heuristic  # flowvar.metrics sits above flowvar.data

    try:
        median_heuristic(heldout)
    except DataError:
        distinct = torch.unique(heldout.flatten(1), dim=0).shape[0]
        raise DataError(f"{where}: most of the {heldout.shape[0]} held-out items coincide ({distinct} distinct), so "
                        f"their median pairwise distance — the bandwidth of the study's MMD scores — is 0; the data "
                        f"are (mostly) copies of a few items or constant: remove the duplicates (e.g. "
                        f"numpy.unique(x, axis=0)) or pass data with spread") from None


__all__ = [
    "ARRAY_SUFFIXES",
    "CELEBA_CROP",
    "CELEBA_EXTENSIONS",
    "CELEBA_SIZE",
    "DEFAULT_RESOLUTION",
    "GREY_MODES",
    "IMAGE_EXTENSIONS",
    "LFW_FACES",
    "MAX_DATA_MAGNITUDE",
    "MIXED_FOLDER_FIX",
    "NAMED_DATA",
    "NPZ_DATA_KEYS",
    "NPZ_LABEL_KEYS",
    "PIXEL_SCALE_WARN",
    "SCALE_WARN_FACTOR",
    "SOURCES",
    "DataSpec",
    "ImageDistribution",
    "ImageSet",
    "TooFewImagesError",
    "celeba_files",
    "celeba_folder",
    "center_crop_box",
    "check_labels",
    "check_resolution",
    "check_split_size",
    "choose_indices",
    "count_items",
    "default_geometry",
    "first_image_geometry",
    "float_pixel_scale",
    "image_subfolders",
    "list_image_files",
    "load_array",
    "load_celeba",
    "load_digits",
    "load_folder",
    "load_images",
    "load_lfw",
    "load_split",
    "mixed_folder_error",
    "nested_hint",
    "npy_is_vectors",
    "npz_arrays",
    "resize_tensor",
    "resolve_data",
    "row_order_key",
    "save_grid",
    "shortlist",
    "subset_order",
    "to_uint8",
    "unreadable_rows_note",
]
