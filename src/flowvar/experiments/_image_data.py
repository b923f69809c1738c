"""Which images the image experiments load and what their results record of them (PAPER.md §3.5, §3.6, §4 "Images").

A kit module (shared by table2, table3 and sigma_tradeoff, and by :func:`flowvar.experiments._imaging.prepare`),
holding everything about the data, nothing about the UNet or its training (:mod:`flowvar.experiments._imaging`):

* :data:`IMAGE_DATASETS`, :data:`CELEBA_ALTERNATIVE` — the ``dataset`` values and what a missing CelebA's error
  offers instead;
* :class:`DataSource`, :class:`SeededImageSource` — the config fields that name the data (any experiment config with
  them: table2's and table3's :class:`~flowvar.experiments._imaging.ImageExperimentConfig`, sigma_tradeoff's);
* :func:`check_image_source` — the configs' ``validate()`` check, without decoding an image, that the source exists,
  holds images and enough of them (messages in the config keys);
* :func:`source_channels` — the channel count asked of the loader (a folder left at ``channels=None`` in its own
  mode); :func:`load_subset`, :func:`nested_subset` — the seeded images of a run and its smaller nested sizes;
  :func:`too_few_images` — a loader's too-few error rephrased in the config key that asked;
* :func:`describe_data`, :func:`data_choice`, :func:`stored_data_record` — what a result records of the data it used
  (metric ``data``), the end of the experiment's ``data`` choice read from that record, and that record kept when a
  stored result is judged again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from flowvar.cache_key import data_digest
from flowvar.data import (
    DEFAULT_RESOLUTION,
    ImageSet,
    TooFewImagesError,
    count_items,
    default_geometry,
    load_images,
    nested_hint,
    npy_is_vectors,
    shortlist,
)
from flowvar.errors import ConfigError, DataError
from flowvar.seeding import generator

if TYPE_CHECKING:
    from flowvar.experiments.base import RunContext

IMAGE_DATASETS = ("digits", "lfw", "celeba", "folder", "npy")
"""The ``dataset`` values of the image experiments."""

CELEBA_ALTERNATIVE = "set dataset=lfw or dataset=digits"
"""What a missing CelebA's error offers instead, in the experiments' config keys (:func:`flowvar.data.celeba_folder`'s
``otherwise``)."""


class DataSource(Protocol):
    """The config fields that name an experiment's image data (table2, table3, sigma_tradeoff)."""

    dataset: str
    data_dir: str | None
    channels: int | None


class SeededImageSource(DataSource, Protocol):
    """A :class:`DataSource` with the fields that choose its images: ``resolution`` (px) and ``data_seed`` (the seeded
    subset); what :func:`load_subset` reads (an :class:`~flowvar.experiments._imaging.ImageExperimentConfig`)."""

    resolution: int
    data_seed: int


def check_image_source(config: DataSource, needed: int, size_key: str, experiment: str) -> int:
    """Check, without decoding an image, that ``config``'s data source exists, holds images and at least ``needed``
    of them (``size_key``: the config key that asked for them); returns the count. Called by the configs'
    ``validate()``, which ``flowvar run``, ``reproduce`` and ``sweep`` call before writing anything, so a bad
    ``data_dir`` is one line and exit status 2 everywhere. Messages name the config keys (``data_dir``,
    ``dataset``, ``size_key``), not the library's arguments.
    """
    dataset, data_dir = config.dataset, config.data_dir
    if dataset not in IMAGE_DATASETS:
        raise ConfigError(f"dataset must be one of {', '.join(IMAGE_DATASETS)}, got {dataset!r}")
    if dataset in ("folder", "npy", "celeba") and not data_dir:
        raise ConfigError(f"dataset={dataset} needs data_dir: --set data_dir=PATH (the "
                          f"{'.npy file' if dataset == 'npy' else 'folder'})")
    if dataset == "folder" and data_dir:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data_dir {folder} does not exist or is not a folder; set data_dir to a folder of image "
                            f"files (.png, .jpg, …)")
        # remembered for the count below; a folder with images of its own and in sub-folders is refused
        if not count_items("folder", data_dir, use="set data_dir to"):
            raise DataError(f"data_dir {folder} holds no image files{nested_hint(folder, config=True)}")
    if dataset == "npy" and data_dir and Path(data_dir).expanduser().is_file() and npy_is_vectors(data_dir):
        raise DataError(f"{experiment} trains a UNet on images, but data_dir {data_dir} holds (N, d) vectors; give an "
                        f"(N, H, W) or (N, C, H, W) array, or study vectors with sigma_tradeoff (flowvar "
                        f"advise-sigma --data {data_dir})")
    # the library's messages from here name data_dir and the shape (a missing, unreadable or misshapen .npy) and,
    # for CelebA, its layout and the datasets to use instead
    available = count_items(dataset, data_dir, celeba_otherwise=CELEBA_ALTERNATIVE)
    if available < needed:
        fix = f"lower {size_key} to at most {available} or add images" if available >= 2 else "add images (2 at least)"
        raise DataError(f"{size_key} asks for {needed} images but data_dir {data_dir or dataset} holds only "
                        f"{available}; {fix}")
    return available


def nested_subset(images: ImageSet, n: int, seed: int) -> ImageSet:
    """``n`` rows of ``images`` chosen by a permutation from the "nested_subset" stream of ``seed`` (the data seed;
    kept in their original order), so the subset of size n is contained in that of any larger size; all rows when n
    equals the set's size."""
    total = len(images)
    if n > total:
        raise ConfigError(f"asked for a subset of {n} images from a set of {total}")
    if n == total:
        return images
    rows = torch.randperm(total, generator=generator(seed, "nested_subset"))[:n].sort().values
    files = tuple(images.files[i] for i in rows.tolist()) if images.files is not None else None
    return ImageSet(images.images[rows], images.name, f"{images.source}; nested subset of {n}", images.indices[rows],
                    files)


def source_channels(config: DataSource) -> int | None:
    """The channel count the loader is asked for: ``config.channels`` when set; for a folder left at None, its own
    mode as the audit reads a folder without ``--channels`` (:func:`flowvar.data.default_geometry`, the one rule for
    both): that of its first readable image, 1 for grey, 3 for colour — with that function's warning when other
    images of the folder differ from the first, naming how many and ``channels=`` to read them otherwise; else None
    (the loader's default is then the source's own: digits and lfw 1, celeba 3, an array its C).

    Why: the folder loader's default is RGB, under which a grey folder becomes 3 identical channels — D three times
    and every distance, OT cost and σ√D √3 times what the images hold. And one grey preview sorted first turned a
    colour folder grey without a word (review dataR 1: only the first header was read): D a third, the colour gone
    from every distance. The record (:func:`describe_data`) says the first readable image decided; ``channels``
    sets it.

    Cost: every file's header, no pixels (the loader decodes the files it draws next): about 0.6 s for a folder of
    4000 64×64 JPEGs or BMPs on one core, on top of the 0.3 s of listing it, against 3.8 s to decode the 4000."""
    if config.channels is not None or config.dataset != "folder" or not config.data_dir:
        return config.channels
    # the resolution is given (the experiments always set one, and it is not used here), so only the channels are
    # defaulted: no size warning
    return default_geometry(Path(config.data_dir).expanduser(), resolution=DEFAULT_RESOLUTION, channels=None)[1]


def resolved_data_dir(config: DataSource) -> str | None:
    """``config.data_dir`` as an absolute path (``~`` expanded, links resolved; the config keeps it as typed), None
    for the bundled sets: what the loader is given and the result records."""
    return str(Path(config.data_dir).expanduser().resolve()) if config.data_dir else None


def load_subset(config: SeededImageSource, n: int, size_key: str = "n") -> ImageSet:
    """``n`` images of ``config.dataset`` at ``config.resolution`` (subset seeded by ``data_seed``), in
    :func:`source_channels`; ``data_dir`` resolved to an absolute path, so the set's ``source`` names where it was.

    Raises:
        TooFewImagesError: fewer than ``n`` files are readable (validation counts files without decoding them),
            rephrased in the config key ``size_key`` that asked for ``n`` (the loader's names ``n``), same numbers.
    """
    data_dir = resolved_data_dir(config)
    try:
        return load_images(config.dataset, n=n, resolution=config.resolution, seed=config.data_seed,
                           data_dir=data_dir, channels=source_channels(config))
    except TooFewImagesError as error:
        raise too_few_images(error, size_key, data_dir or config.dataset) from error


def too_few_images(error: TooFewImagesError, size_key: str, where: str) -> TooFewImagesError:
    """``error`` (a loader's, in its argument ``n``) rephrased in the config key ``size_key``, with its numbers:
    "ns asks for 81 images but only 80 of the 81 files in data_dir D could be read (1 unreadable: …); lower ns to
    at most 80 or repair or remove the unreadable file(s)" (or "… but data_dir D holds only 80; …" when none is
    unreadable, as :func:`check_image_source` says it)."""
    available = error.available
    fix = f"lower {size_key} to at most {available}" if available >= 2 else "add images (2 at least)"
    if error.unreadable:
        shown = shortlist(error.unreadable)
        problem = (f"only {available} of the {error.total} files in data_dir {where} could be read "
                   f"({len(error.unreadable)} unreadable: {shown})")
        fix += " or repair or remove the unreadable file(s)"
    else:
        problem = f"data_dir {where} holds only {available}"
    return TooFewImagesError(f"{size_key} asks for {error.requested} images but {problem}; {fix}",
                             requested=error.requested, available=available, total=error.total,
                             unreadable=error.unreadable)


def describe_data(config: DataSource, images: ImageSet) -> dict[str, Any]:
    """What a result records of the data it used (the experiments' metric ``data``), from ``config`` and the
    ``images`` it loaded ((N, C, R, R): the largest size the run asked for):

    * ``dataset``; ``data_dir``: the path resolved to absolute (``~`` expanded; the config keeps it as typed), None
      for the bundled sets; ``source``: the loader's own description (:attr:`~flowvar.data.ImageSet.source`: where,
      files found / loaded / skipped, crop and resize, colour);
    * ``items_in_source``: the items the source holds (a folder's image files, readable or not; an array's rows);
      ``items_loaded``: N; ``unreadable_skipped``: the files skipped as unreadable on the way (relative to
      ``data_dir``; each replaced by the next file of the seeded draw);
    * ``channels`` (C), ``channels_from`` (the config, or for ``channels=None`` the source's own:
      :func:`source_channels`), ``colour_conversion``;
    * ``digest``: the data's digest as the cache key computes it (:func:`flowvar.cache_key.data_digest`: a file's
      SHA-256; a folder's listing — relative names, sizes and modification times — not its bytes), None for the
      bundled sets."""
    channels, dataset = images.channels, config.dataset
    if config.channels is not None:
        channels_from = f"config channels={config.channels}"
    elif dataset == "folder":
        channels_from = (f"the folder's own (channels=None): its first readable image is "
                         f"{'grey' if channels == 1 else 'colour'}")
    else:
        channels_from = "the source's own (channels=None)"
    if dataset in ("folder", "celeba"):
        colour = ("each file converted to PIL mode L (colour files by ITU-R 601-2 luma)" if channels == 1 else
                  "each file converted to PIL mode RGB (a grey file becomes 3 identical channels)")
    elif dataset == "npy":
        colour = ("none: the array's own channels" if config.channels is None else
                  f"converted to {channels} channel(s) where the array has the other count (RGB → grey by ITU-R "
                  f"601-2 luma, grey → 3 identical channels)")
    else:
        colour = "none: grey as bundled" if channels == 1 else "grey repeated into 3 identical channels"
    return {"dataset": dataset,
            "data_dir": resolved_data_dir(config),
            "source": images.source,
            "items_in_source": count_items(dataset, config.data_dir, celeba_otherwise=CELEBA_ALTERNATIVE),
            "items_loaded": len(images), "unreadable_skipped": list(images.unreadable),
            "channels": channels, "channels_from": channels_from, "colour_conversion": colour,
            "digest": data_digest(config.data_dir) if config.data_dir else None}


def stored_data_record(ctx: RunContext, part: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """An assemble's metric ``data``: the :func:`describe_data` record of the computing run, kept from its stored
    metrics ``part`` and returned (None for a result stored before it was kept, which then has none)."""
    data = part.get("data")
    if not isinstance(data, Mapping):
        return None
    ctx.metric("data", dict(data))
    return data


def data_choice(data: Mapping[str, Any] | None) -> str:
    """The end of an experiment's ``data`` choice from its :func:`describe_data` record: "; loaded: <source>; data
    digest <digest>" ("" without a record: a result stored before it was kept)."""
    if not isinstance(data, Mapping) or "source" not in data:
        return ""
    digest = f"; data digest {data['digest']}" if data.get("digest") else ""
    return f"; loaded: {data['source']}{digest}"


__all__ = [
    "CELEBA_ALTERNATIVE",
    "IMAGE_DATASETS",
    "DataSource",
    "SeededImageSource",
    "check_image_source",
    "data_choice",
    "describe_data",
    "load_subset",
    "nested_subset",
    "resolved_data_dir",
    "source_channels",
    "stored_data_record",
    "too_few_images",
]
