"""One seed story (flowvar.seeding): derived seeds are a stable hash of (root, stream), distinct across streams
where the former hand-picked offsets collided, model initialisation leaves torch's global generator as it found
it, and an experiment run is a function of its seed alone."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from flowvar.errors import ConfigError
from flowvar.experiments.base import RunContext, run_experiment
from flowvar.results import to_jsonable
from flowvar.seeding import SEED_LIMIT, Streams, derive_seed, generator, seeded_global_rng
from flowvar.train import train_mlp_field


def reference_seed(root: int, *stream: str | int) -> int:
    """The documented encoding, written out independently: BLAKE2b-64 of the compact JSON [root, *stream]."""
    data = json.dumps([root, *stream], separators=(",", ":")).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"flowvar.seed").digest(), "big") >> 1


# ---------------------------------------------------------------------------------------------- derive_seed


@pytest.mark.parametrize(("root", "stream"), [(0, ("eval",)), (7, ("pairs", 2, 16)), (3, ("replicate", "init", "d=2")),
                                              (2**63 - 1, ("batches", "sigma=0.05", -1)), (5, ("σ", "é"))])
def test_derived_seed_is_the_documented_hash(root: int, stream: tuple[str | int, ...]) -> None:
    assert derive_seed(root, *stream) == reference_seed(root, *stream)
    assert 0 <= derive_seed(root, *stream) < SEED_LIMIT


def test_derived_seeds_do_not_move() -> None:
    """Pinned values: a change of the encoding would silently change every experiment's numbers."""
    assert derive_seed(0, "eval") == 7323298405019588585
    assert derive_seed(7, "pairs", 2, 16) == 1769721442099776888
    assert derive_seed(3, "replicate", "init", "d=2") == 3127795901247581454


def test_derived_seed_is_the_same_in_another_process() -> None:
    """Not Python's hash(), which is salted per process (PYTHONHASHSEED)."""
    code = "from flowvar.seeding import derive_seed; print(derive_seed(11, 'pairs', 'd=5', 3))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(salt), "PATH": ""}).stdout.strip() for salt in (1, 2)}
    assert outs == {str(derive_seed(11, "pairs", "d=5", 3))}


def test_empty_stream_is_the_root_and_names_are_typed() -> None:
    assert derive_seed(42) == 42
    assert derive_seed(1, "k", 1) != derive_seed(1, "k", "1")  # an int key and its string are different streams
    assert derive_seed(1, "a", "b") != derive_seed(1, "a,b") != derive_seed(1, "ab")
    for bad_root in (-1, SEED_LIMIT, True, 1.0, "0"):
        with pytest.raises(ConfigError, match="root seed"):
            derive_seed(bad_root, "eval")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="starts with its name"):
        derive_seed(0, 3, "eval")
    with pytest.raises(ConfigError, match="str or int"):
        derive_seed(0, "sigma", 0.05)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="str or int"):
        derive_seed(0, "flag", True)


def test_no_collisions_where_the_offsets_collided() -> None:
    """The former schemes, e.g. table2's ``seed + 10_000 * s_idx + n`` and lemma2's ``seed + stream + 20_000 + 100 i
    + k``, give one seed to two different streams on this grid; the named streams give every stream its own."""
    grid = list(itertools.product(range(3), range(0, 20_001, 50)))  # (seed index, N) as in table2
    old = [10_000 * s + n for s, n in grid]
    assert len(set(old)) < len(old)  # e.g. (0, 10000) and (1, 0)
    lemma2 = [20_000 + 100 * i + k for i in range(4) for k in range(150)]
    assert len(set(lemma2)) < len(lemma2)  # (0, 100) and (1, 0)
    run = Streams(0)
    new = {run.replicate(s).derive_seed("sources", n) for s, n in grid}
    new |= {run.replicate(s).derive_seed("init", n) for s, n in grid}
    new |= {run.derive_seed(name, i, k) for name in ("eval", "reflow") for i in range(4) for k in range(150)}
    assert len(new) == 2 * len(grid) + 2 * 4 * 150


def test_replicate_streams_are_their_seeds_own() -> None:
    run = Streams(10)
    rep = run.replicate(2)
    assert rep.seed == 12 and rep.derive_seed("init") == derive_seed(12, "replicate", "init")
    assert Streams(12).replicate(0).derive_seed("init") == rep.derive_seed("init")  # depends on seed 12 only
    assert rep.derive_seed("init") != Streams(12).derive_seed("init")  # never a run-level stream of seed 12
    with pytest.raises(ConfigError, match="reserved"):
        run.derive_seed("replicate", "init")
    with pytest.raises(ConfigError, match="no replicates"):
        rep.replicate(1)
    with pytest.raises(ConfigError, match="replicate index"):
        run.replicate(-1)
    with pytest.raises(ConfigError, match="below 2"):
        Streams(SEED_LIMIT - 1).replicate(1)


def test_generators_draw_from_the_derived_seed() -> None:
    expected = torch.randn(5, generator=torch.Generator().manual_seed(derive_seed(4, "eval", 1)))
    assert torch.equal(torch.randn(5, generator=generator(4, "eval", 1)), expected)
    assert torch.equal(torch.randn(5, generator=Streams(4).generator("eval", 1)), expected)
    root = torch.randn(5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.randn(5, generator=generator(4)), root)  # the empty stream: the root seed itself


# ---------------------------------------------------------------------------------------------- global generator


def test_seeded_global_rng_restores_the_callers_state() -> None:
    torch.manual_seed(2024)
    before = torch.get_rng_state()
    with seeded_global_rng(derive_seed(1, "init")):
        inside = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(inside, torch.rand(4, generator=torch.Generator().manual_seed(derive_seed(1, "init"))))
    with Streams(1).global_rng("init"):
        assert torch.equal(torch.rand(4), inside)  # the same stream, the same draws, whatever came before


def test_train_mlp_field_leaves_the_global_generator_alone() -> None:
    from flowvar.couplings import FixedPairs

    g = torch.Generator().manual_seed(0)
    pairs = FixedPairs(torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    model, _ = train_mlp_field(pairs, 0.0, 2, width=8, depth=1, activation="silu", init_seed=derive_seed(0, "init"),
                               steps=2, batch_size=4, lr=1e-3, seed=derive_seed(0, "batches"))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(99)  # another global state: the same model
    again, _ = train_mlp_field(pairs, 0.0, 2, width=8, depth=1, activation="silu", init_seed=derive_seed(0, "init"),
                               steps=2, batch_size=4, lr=1e-3, seed=derive_seed(0, "batches"))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))


# ---------------------------------------------------------------------------------------------- the run context


def test_run_context_streams(tmp_path: Path) -> None:
    ctx = RunContext(name="x", out_dir=tmp_path, quick=True, seed=3)
    assert torch.equal(torch.rand(3, generator=ctx.generator("eval", 2)),
                       torch.rand(3, generator=generator(3, "eval", 2)))
    assert ctx.derive_seed("batches") == derive_seed(3, "batches")
    assert torch.equal(torch.rand(2, generator=ctx.generator()),  # a plugin's one stream: the seed itself
                       torch.rand(2, generator=torch.Generator().manual_seed(3)))
    assert ctx.replicate(4).seed == 7 and ctx.replicate(4).derive_seed("init") == derive_seed(7, "replicate", "init")
    with pytest.raises(ConfigError, match="starts with its name"):
        ctx.generator(100)  # type: ignore[arg-type]  # the former integer offsets
    with pytest.raises(AttributeError, match="read-only"):
        ctx.seed = 4


LEMMA2_TINY = {"steps": 10, "width": 8, "rounds": 1, "sigmas": (0.0, 0.5), "n_pairs": 50, "n_eval": 40,
               "method": "euler", "ode_steps": 5, "n_seeds": 2}


def _numbers(result: Any) -> Any:
    """A result's claims and metrics without the wall-clock times."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "runtime" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    data = to_jsonable(result.to_dict())
    return strip({"claims": data["claims"], "metrics": data["metrics"]})


def test_a_run_is_a_function_of_its_seed_and_leaves_the_global_generator_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = run_experiment("lemma2", tmp_path / "a", quick=True, overrides=LEMMA2_TINY)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state, untouched
    torch.manual_seed(456)  # whatever the caller's state, the same seed gives the same run, bit for bit
    second = run_experiment("lemma2", tmp_path / "b", quick=True, overrides=LEMMA2_TINY)
    assert json.dumps(_numbers(first), sort_keys=True) == json.dumps(_numbers(second), sort_keys=True)
    other = run_experiment("lemma2", tmp_path / "c", quick=True, seed=1, overrides=LEMMA2_TINY)
    # a replicate's numbers depend on its own seed only: training seed 1 is the same in both runs
    rounds, rounds_other = _numbers(first)["metrics"]["rounds"], _numbers(other)["metrics"]["rounds"]
    assert set(rounds_other["sigma=0.0"]) == {"seed=1", "seed=2"}
    for sigma in ("sigma=0.0", "sigma=0.5"):
        assert rounds_other[sigma]["seed=1"] == rounds[sigma]["seed=1"]
        assert rounds_other[sigma]["seed=2"] != rounds[sigma]["seed=0"]
