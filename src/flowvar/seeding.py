"""One seed story: every random stream of a run is derived from the run's seed by name.

A run has one seed (an experiment's ``config.seed``: the YAML value, ``--seed``, a sweep's ``--seeds``). Every
source of randomness in it is a *stream* named by a string and, where there are several of a kind, integer or
string keys::

    derive_seed(seed, "eval")                 # the evaluation sources
    derive_seed(seed, "pairs", d, n)          # the training pairs of cell (d, N)

:func:`derive_seed` hashes the root and the stream name together (BLAKE2b, below), so two different streams get
unrelated 63-bit seeds — unlike hand-picked offsets (``seed + 1000 * k + i``), which coincide as soon as an index
outgrows its spacing — and the value does not depend on the order in which a run asks for its streams, on the
process (Python's ``hash()`` is salted per process; this is not) or on the platform. A stream is recomputed from
its name alone, so a sweep point that runs one cell of a grid draws exactly that cell's numbers of the full run.

The encoding, for anyone recomputing a seed elsewhere: the JSON array ``[root, *stream]`` without spaces
(``json.dumps(..., separators=(",", ":"))``: ``[0,"pairs",2,16]``), UTF-8, hashed by BLAKE2b with an 8-byte
digest and ``person=b"flowvar.seed"``; the seed is the big-endian digest shifted right by one bit (63 bits, so it
fits ``torch.Generator.manual_seed`` and :class:`flowvar.train.TrainConfig` alike). The empty stream is the root
itself: ``derive_seed(s) == s``.

What a stream seeds:

* a ``torch.Generator`` (:func:`generator`) for data, noise, evaluation sources, Monte-Carlo draws;
* a library call that takes a seed (``TrainConfig(seed=)``/``train_cfm(seed=)``: the batch stream; an OT solver's
  ``seed=``): pass it a derived seed;
* model initialisation, which draws from torch's global generator: :func:`seeded_global_rng` seeds that generator
  from a derived seed for the ``with`` block only and restores its state afterwards, so building a model never
  leaks global state (build on the CPU, then move the model).

Replicates (training seeds) of an experiment are :class:`Streams` of their own: replicate k of a run with seed
S has seed S + k (the ``seed=S+k`` label in results) and names its streams under ``"replicate"``
(``derive_seed(S + k, "replicate", "pairs", d)``), so they never coincide with the run-level streams of S and a
replicate's numbers depend on its seed S + k only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from flowvar.errors import ConfigError

SEED_LIMIT = 2**63
"""Seeds are integers in [0, 2**63): what :class:`flowvar.train.TrainConfig` and ``manual_seed`` both accept."""
_PERSON = b"flowvar.seed"  # BLAKE2b personalisation: flowvar's seeds are a hash family of their own
REPLICATE = "replicate"
"""The stream name under which a replicate's streams live (reserved: no run-level stream is called that)."""

StreamKey = str | int


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int in [0, 2**63), or a one-line :class:`ConfigError` naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{what} must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def _check_stream(stream: tuple[object, ...]) -> tuple[StreamKey, ...]:
    """A stream is empty (the root) or a name (str) followed by str or int keys; floats are refused (format them,
    e.g. ``f"sigma={sigma}"``): equal values must give equal streams, and 1 and 1.0 encode differently."""
    if stream and not isinstance(stream[0], str):
        raise ConfigError(f"a random stream starts with its name, e.g. ('eval', 3); got {stream!r} (integer offsets "
                          f"from the seed are gone: name the stream)")
    bad = [k for k in stream if isinstance(k, bool) or not isinstance(k, str | int)]
    if bad:
        raise ConfigError(f"random stream keys must be str or int, got {bad[0]!r} in {stream!r}; format a float "
                          f"key as a string (e.g. f'sigma={{sigma}}')")
    return stream  # type: ignore[return-value]


def derive_seed(root: int, *stream: StreamKey) -> int:
    """The seed of stream ``stream`` of a run with seed ``root``: an int in [0, 2**63).

    seed = BLAKE2b-64(UTF-8 JSON ``[root, *stream]``, person ``flowvar.seed``) >> 1 (big-endian); the empty stream
    is ``root`` itself. Raises ConfigError for a root outside [0, 2**63) or a stream that does not start with a
    name or holds anything but str and int keys.
    """
    root = check_seed(root, "the root seed")
    if not stream:
        return root
    keys = _check_stream(stream)
    data = json.dumps([root, *keys], separators=(",", ":")).encode()
    digest = hashlib.blake2b(data, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") >> 1


def generator(root: int, *stream: StreamKey) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with :func:`derive_seed` (``root``, ``*stream``)."""
    return torch.Generator().manual_seed(derive_seed(root, *stream))


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Inside the block torch's global CPU generator is seeded with ``seed``; on exit its state is restored.

    For code that draws from the global generator and takes no ``generator=`` — model initialisation above all:
    ``with seeded_global_rng(derive_seed(s, "init")): model = MLPField(...)``. Only the CPU generator is forked
    and seeded (``torch.random.fork_rng(devices=[])``; not ``torch.manual_seed``, which would also re-seed every
    CUDA device for good): build the model on the CPU, then move it.
    """
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def forked_global_rng(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Fork the global RNGs a model on ``device`` draws from (dropout-like randomness): the CPU one, and the CUDA
    device's when the model is there. Their states are restored on exit, so draws inside (a training run, an extra
    forward, a fingerprint) leave the caller's random streams as they were."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


@dataclass(frozen=True)
class Streams:
    """The named random streams of one seed: a run's (``Streams(seed)``, what a RunContext delegates to) or a
    replicate's (:meth:`replicate`). ``seed`` is the label results show; ``prefix`` is prepended to every stream."""

    seed: int
    prefix: tuple[StreamKey, ...] = ()

    def __post_init__(self) -> None:
        check_seed(self.seed)

    def derive_seed(self, *stream: StreamKey) -> int:
        """:func:`derive_seed` (``seed``, ``*prefix``, ``*stream``): for library calls that take a seed."""
        if not self.prefix and stream and stream[0] == REPLICATE:
            raise ConfigError(f"the stream name {REPLICATE!r} is reserved for replicates: use replicate(k)")
        return derive_seed(self.seed, *self.prefix, *_check_stream(stream))

    def generator(self, *stream: StreamKey) -> torch.Generator:
        """A fresh CPU generator of stream ``stream`` (see :meth:`derive_seed`)."""
        return torch.Generator().manual_seed(self.derive_seed(*stream))

    def global_rng(self, *stream: StreamKey) -> contextlib.AbstractContextManager[None]:
        """:func:`seeded_global_rng` with stream ``stream``'s seed: ``with ctx.global_rng("init"): model = ...``."""
        return seeded_global_rng(self.derive_seed(*stream))

    def replicate(self, k: int) -> Streams:
        """Replicate ``k`` (0, 1, …): the streams of seed ``seed + k`` under the name ``"replicate"``."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"a replicate index is an integer >= 0, got {k!r}")
        if self.prefix:
            raise ConfigError("a replicate has no replicates of its own: call replicate() on the run's streams")
        seed = self.seed + k
        if seed >= SEED_LIMIT:
            raise ConfigError(f"replicate seed {self.seed} + {k} is not below 2**63; lower the seed")
        return Streams(seed, (REPLICATE,))


__all__ = ["REPLICATE", "SEED_LIMIT", "StreamKey", "Streams", "check_seed", "derive_seed", "forked_global_rng",
           "generator", "seeded_global_rng"]
