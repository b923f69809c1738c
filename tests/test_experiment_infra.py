import json
from dataclasses import dataclass

import pytest

from flowvar.errors import ConfigError
from flowvar.experiments.base import ExperimentSpec, build_config, coerce, parse_overrides
from flowvar.results import Result, judge, to_jsonable


@dataclass
class DemoConfig:
    seed: int = 0
    steps: int = 100
    sigma: float = 0.05
    angles: tuple[float, ...] = (30.0, 120.0)
    noise: str = "constant"
    fast: bool = False
    width: int | None = None


SPEC = ExperimentSpec("demo", "demo", DemoConfig, lambda c, ctx: None, {"steps": 10}, {})


def test_build_config_layers_quick_seed_and_overrides() -> None:
    cfg = build_config(SPEC, quick=True, seed=7, overrides={"sigma": "0.1", "angles": "0,90", "fast": "true"})
    assert cfg == DemoConfig(seed=7, steps=10, sigma=0.1, angles=(0.0, 90.0), fast=True)
    assert build_config(SPEC, overrides={"width": "32"}).width == 32
    assert build_config(SPEC, overrides={"width": "null"}).width is None


@pytest.mark.parametrize(("key", "value", "match"), [
    ("steps", "abc", "expects an integer"),
    ("steps", "1.5", "expects an integer"),
    ("sigma", "x", "expects a number"),
    ("fast", "maybe", "true or false"),
    ("nope", "1", "unknown config key 'nope'"),
])
def test_bad_overrides(key: str, value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_config(SPEC, overrides={key: value})


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    assert coerce("k", "[1, 2]", list[int]) == [1, 2]


def test_judge_and_result_roundtrip() -> None:
    c = judge("x.y", "s", {"v": float("inf"), "p": 0.001}, confirmed=True, refuted=False, rule="p < 0.01")
    assert c.verdict == "confirmed" and c.evidence["v"] == "inf"
    assert judge("x", "s", {}, confirmed=False, refuted=False, rule="r").verdict == "inconclusive"
    with pytest.raises(ValueError):
        judge("x", "s", {}, confirmed=True, refuted=True, rule="r")
    r = Result(experiment="demo", title="t", config={"a": 1}, quick=True, claims=[c], metrics={"m": 1.5})
    again = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.claims[0].verdict == "confirmed" and again.metrics == {"m": 1.5}
    assert "| `x.y` | **confirmed** |" in r.summary_markdown()
    assert to_jsonable({"t": (1, float("nan"))}) == {"t": [1, "nan"]}
