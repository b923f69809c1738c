"""Typed experiment configs: layering (YAML, quick, --config, --seed, --set), overrides, coercion, the size
bound and former experiment names (flowvar.experiments.config / registry)."""

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowvar.errors import ConfigError
from flowvar.experiments.base import ExperimentSpec, build_config, coerce, get_experiment, parse_overrides


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


def test_sizes_that_cannot_finish_are_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A config estimated at more than $FLOWVAR_MAX_DAYS (default 30) days on 2 cores is one line, exit 2, with the
    estimate; raising the bound lets validation pass; the default configs are all inside it."""
    from flowvar.cli import main
    from flowvar.experiments.base import MAX_DAYS_DEFAULT, build_config, discover, estimated_runtime, get_experiment
    from flowvar.experiments.config import package_defaults

    fig4 = get_experiment("fig4")
    full = build_config(fig4)
    yaml_full = package_defaults(fig4).expected_runtime_s["full"]
    assert estimated_runtime(fig4, full) == pytest.approx(yaml_full)  # the YAML's full-mode estimate
    doubled = build_config(fig4, overrides={"repeats": 60, "n_samples": 20000})
    assert estimated_runtime(fig4, doubled) == pytest.approx(4 * yaml_full)  # linear in each count (2 × 2)
    for name in discover():
        spec = get_experiment(name)
        estimate = estimated_runtime(spec, build_config(spec))
        assert estimate is None or estimate < MAX_DAYS_DEFAULT * 86400

    out = tmp_path / "out"
    # ten times the bound, whatever the YAML's estimate: 10⁸ samples (the schema's cap on a count) and repeats to match
    huge = {"n_samples": 10**8, "repeats": math.ceil(10 * MAX_DAYS_DEFAULT * 86400 / yaml_full
                                                     * full.n_samples / 10**8 * full.repeats)}
    assert main(["run", "fig4", "--quiet", "--out", str(out), "--set", f"n_samples={huge['n_samples']}",
                 "--set", f"repeats={huge['repeats']}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowvar: error: fig4: this config would take ~") and "FLOWVAR_MAX_DAYS" in err
    assert "\n" not in err and not out.exists()

    monkeypatch.setenv("FLOWVAR_MAX_DAYS", str(20 * MAX_DAYS_DEFAULT))
    build_config(fig4, overrides=huge)  # accepted under the raised bound
    monkeypatch.setenv("FLOWVAR_MAX_DAYS", "soon")
    with pytest.raises(ConfigError, match="FLOWVAR_MAX_DAYS must be a positive number of days"):
        build_config(fig4)


def test_the_cpu_size_guard_does_not_refuse_a_run_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's estimate is of 2 CPU cores: the paper's CelebA setting of table2 is ~10⁴ such days but a day or two
    of GPUs. device=auto or cuda with CUDA available is not refused; on the CPU (device=cpu, or no GPU) it is."""
    import torch

    import flowvar.experiments._image_data as image_data
    from flowvar.experiments.base import build_config, get_experiment

    table2 = get_experiment("table2")
    paper = {"ns": [5000, 50000], "resolution": 64, "steps": 100000, "base_channels": 128}
    # the paper's sizes need CelebA's 202,599 images (validated before the size guard): stand in for it
    monkeypatch.setattr(image_data, "count_items", lambda *args, **kwargs: 202_599)
    for device in ("auto", "cuda", "cpu"):
        with pytest.raises(ConfigError, match="days on 2 CPU cores"):  # no GPU here: every device is the CPU
            build_config(table2, overrides={**paper, "device": device})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("auto", "cuda"):
        assert build_config(table2, overrides={**paper, "device": device}).steps == 100000
    with pytest.raises(ConfigError, match="days on 2 CPU cores"):
        build_config(table2, overrides={**paper, "device": "cpu"})


def test_a_former_experiment_name_still_selects_it() -> None:
    """Identifiers use one spelling ("memorisation"); the former CLI name keeps working everywhere a name is read."""
    from flowvar.experiments.base import get_experiment
    from flowvar.experiments.registry import ALIASES, discover
    from flowvar.reproduce import parse_only, parse_scoped_overrides

    assert ALIASES == {"memorization_phase": "memorisation_phase"}
    assert "memorization_phase" not in discover() and "memorisation_phase" in discover()
    assert get_experiment("memorization_phase").name == "memorisation_phase"
    assert parse_only(["prop1,memorization_phase"]) == ["prop1", "memorisation_phase"]
    assert parse_scoped_overrides(["memorization_phase.seed=3"]) == {"memorisation_phase": {"seed": "3"}}


@pytest.mark.parametrize(("name", "key"), [("table1", "seed"), ("prop2", "gmm_seed"), ("table2", "data_seed")])
def test_seeds_stay_below_2_to_the_62(name: str, key: str) -> None:
    """Every replicate seed seed + k must stay a 63-bit seed (flowvar.seeding): refused up front, one line."""
    from flowvar.experiments.base import get_experiment

    spec = get_experiment(name)
    assert getattr(build_config(spec, quick=True, overrides={key: str(2**62 - 1)}), key) == 2**62 - 1
    with pytest.raises(ConfigError, match=rf"{name}: {key} must be below 2\*\*62") as err:
        build_config(spec, quick=True, overrides={key: str(2**62)})
    assert "\n" not in str(err.value)


GMM_EXPERIMENTS = ("prop2", "table1", "memorisation_phase", "sigma_tradeoff")


@pytest.mark.parametrize("name", GMM_EXPERIMENTS)
def test_the_gmm_target_is_declared_once(name: str) -> None:
    """prop2, table1, memorisation_phase and sigma_tradeoff take the Table 1 GMM from one schema: the same fields,
    the same checks (one-line errors naming the key), and config.gmm(d) is the mixture those fields define."""
    import dataclasses

    import torch

    from flowvar.distributions import GaussianMixture
    from flowvar.experiments.base import GMMTargetConfig, get_experiment

    spec = get_experiment(name)
    assert issubclass(spec.config_cls, GMMTargetConfig)
    shared = {f.name: f.type for f in dataclasses.fields(GMMTargetConfig)}
    assert {f.name: f.type for f in dataclasses.fields(spec.config_cls) if f.name in shared} == shared
    config = build_config(spec, quick=True)
    expected = GaussianMixture.random(3, config.n_components, config.mean_scale, config.component_std,
                                      config.gmm_seed, dtype=torch.float64)
    assert torch.equal(config.gmm(3, torch.float64).means, expected.means)
    for key, bad, message in (("n_components", "0", "must hold counts from 1"), ("mean_scale", "0", "must be > 0"),
                              ("component_std", "-1", "must be > 0"), ("gmm_seed", "-1", "must be >= 0")):
        with pytest.raises(ConfigError, match=f"{name}: {key} {message}") as err:
            build_config(spec, quick=True, overrides={key: bad})
        assert "\n" not in str(err.value)


def test_fig4_and_fig5_share_one_schema() -> None:
    import dataclasses

    from flowvar.experiments._gaussian_variance import GaussianVarianceConfig
    from flowvar.experiments.base import get_experiment

    shared = [f.name for f in dataclasses.fields(GaussianVarianceConfig)]
    fig4, fig5 = (get_experiment(n).config_cls for n in ("fig4", "fig5"))
    assert issubclass(fig4, GaussianVarianceConfig) and issubclass(fig5, GaussianVarianceConfig)
    assert [f.name for f in dataclasses.fields(fig5)] == [*shared, "rotation_planes"]
    assert [f.name for f in dataclasses.fields(fig4)] == [*shared, "independent_contrast"]


def test_the_advisor_margins_may_be_0_and_other_margins_stay_positive() -> None:
    # gen_margin=0 / mem_margin=0 were refused by the generic '.*margin' rule though the rule allows them
    spec = get_experiment("sigma_tradeoff")
    config = build_config(spec, quick=True, overrides={"gen_margin": "0", "mem_margin": "0"})
    assert (config.gen_margin, config.mem_margin) == (0.0, 0.0)
    for key in ("gen_margin", "mem_margin"):
        with pytest.raises(ConfigError, match=rf"sigma_tradeoff: {key} must be >= 0, got -0.1"):
            build_config(spec, quick=True, overrides={key: "-0.1"})
    for name, key in (("sigma_tradeoff", "reduce_margin"), ("table1", "generalisation_margin")):
        with pytest.raises(ConfigError, match=rf"{name}: {key} must be > 0, got 0"):
            build_config(get_experiment(name), quick=True, overrides={key: "0"})


@pytest.mark.parametrize("raw", ["[0, 0.1", "[[1, 0], [0, 1]", "{0, 0.1"])
def test_a_list_with_unbalanced_brackets_is_named_as_such(raw: str) -> None:
    # it was split on commas first: "sigmas expects a number, got '[0'"
    with pytest.raises(ConfigError, match=r"angles is not a valid list \(check its brackets\); write it as "
                                          r"\[0, 0.1\] or 0,0.1$"):
        build_config(SPEC, overrides={"angles": raw})
    assert build_config(SPEC, overrides={"angles": "[0, 0.1]"}).angles == (0.0, 0.1)



def test_a_config_file_naming_a_key_twice_is_refused_with_both_lines(tmp_path) -> None:
    """PyYAML keeps the last of two equal keys silently (``steps: 10`` … ``steps: 20`` ran 20 steps with no word);
    a config file names each key once, at every level, or is refused naming the key and its two lines."""
    from flowvar.errors import ConfigError
    from flowvar.experiments.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("steps: 10\nlr: 0.1\nsteps: 20\n")
    with pytest.raises(ConfigError, match=r"key 'steps' appears twice \(lines 1 and 3\)"):
        read_yaml(path)
    path.write_text("fig6:\n  steps: 10\n  quick:\n    steps: 5\n    steps: 6\n")
    with pytest.raises(ConfigError, match=r"key 'steps' appears twice \(lines 4 and 5\)"):
        read_yaml(path)
    path.write_text("steps: 10\nquick:\n  steps: 5\n")  # one key per mapping: the quick section is its own
    assert read_yaml(path) == {"steps": 10, "quick": {"steps": 5}}


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("seed", "0123", 123),  # YAML 1.1 read a leading zero as octal: 83
    ("steps", "010", 10),  # was 8
    ("steps", "08", 8),  # was a refusal ('08' is no octal number)
    ("steps", "10_000", 10_000),
    ("steps", "+7", 7),
    ("sigma", "1e-3", 1e-3),
    ("sigma", ".5", 0.5),
    ("fast", "on", True),  # a boolean key still takes yes/no/on/off
    ("fast", "No", False),
    ("noise", "on", "on"),  # a string key keeps the text as written: YAML 1.1 made it True, then 'True'
    ("noise", "0.50", "0.50"),  # not the float 0.5 printed back
    ("noise", "010", "010"),
    ("noise", "2024-01-01", "2024-01-01"),  # not a date
    ("noise", "'yes'", "yes"),  # a YAML-quoted string is unquoted
    ("angles", "010,1e-3", (10.0, 1e-3)),
    ("width", "null", None),
])
def test_set_values_are_decimal_and_string_keys_keep_their_text(key: str, text: str, expected: object) -> None:
    """``--set`` values are read by YAML 1.2's core schema with decimal integers, not YAML 1.1's implicit types
    (octal ``010`` → 8, base-60 ``1:30`` → 90, ``0b11`` → 3, ``on`` → True), matching ``--seed 010`` → 10."""
    value = getattr(build_config(SPEC, overrides={key: text}), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["1:30", "0b11", "0o17", "0x1f", "-0x10"])
def test_set_integers_in_other_bases_or_base_60_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"steps expects an integer, got '{text}'; write it in decimal digits"):
        build_config(SPEC, overrides={"steps": text})


def test_yaml_files_read_numbers_like_set_does(tmp_path: Path) -> None:
    """A config file's ``seed: 010`` is 10 (not octal 8), ``1:30`` and ``0x10`` stay text, ``on`` stays text."""
    from flowvar.experiments.config import parse_config_mapping, read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("seed: 010\nsteps: 1:30\nnoise: on\nfast: yes\nsigma: 1e-3\nangles: [08, .5]\n")
    assert read_yaml(path) == {"seed": 10, "steps": "1:30", "noise": "on", "fast": "yes", "sigma": 1e-3,
                               "angles": [8, 0.5]}
    path.write_text("seed: 010\nnoise: on\nfast: yes\nsigma: 1e-3\nangles: [08, .5]\n")
    values = parse_config_mapping(SPEC, read_yaml(path), str(path)).values
    assert values == {"seed": 10, "noise": "on", "fast": True, "sigma": 1e-3, "angles": (8.0, 0.5)}
    path.write_text("seed: !!int 0x10\n")
    with pytest.raises(ConfigError, match=r"not valid YAML.*not a decimal integer"):
        read_yaml(path)
