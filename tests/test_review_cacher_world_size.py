"""Review cacheR 1: a 2-rank torchrun result was served as a cache hit to a one-process run (and back), though the
ranks' gradient reduction order changes the last digits as the thread count does. The key holds the world size
under torchrun only, so every single-process key is unchanged."""

from __future__ import annotations

import pytest

from flowvar.cache_key import cache_key, key_inputs
from flowvar.experiments.base import build_config, get_experiment


def test_the_world_size_is_keyed_under_torchrun_only(monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config(get_experiment("counterexample1"), quick=True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = key_inputs("counterexample1", config, True, threads=1)
    assert "world_size" not in alone
    key_alone = cache_key("counterexample1", config, True, threads=1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cache_key("counterexample1", config, True, threads=1) == key_alone  # torchrun with one rank: the same run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert key_inputs("counterexample1", config, True, threads=1)["world_size"] == 2
    assert cache_key("counterexample1", config, True, threads=1) != key_alone


def test_a_single_process_key_hashes_exactly_the_inputs_it_had_before_the_world_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every existing single-process entry stays a hit: without torchrun the key is the SHA-256 of the canonical JSON
    of the same fields as before world_size was keyed, nothing added (a literal key would change with every library
    commit through the code version, so the field set and the hashing are pinned instead)."""
    import hashlib
    import json

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = build_config(get_experiment("counterexample1"), quick=True)
    inputs = key_inputs("counterexample1", config, True, threads=1)
    assert set(inputs) == {"format", "experiment", "quick", "config", "code_version", "torch", "torch_threads",
                           "libraries"}
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    expected = "counterexample1-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert cache_key("counterexample1", config, True, threads=1) == expected
