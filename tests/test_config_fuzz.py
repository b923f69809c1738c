"""Property-based fuzz of every experiment's config schema (hardening issue, §1).

For every key of every experiment, hypothesis draws values of every kind — wrong types, out-of-range and non-finite
numbers, empty and huge lists, strings where numbers go — as a user would type them after ``--set``. Validation
either accepts the value or answers with one ``flowvar: error:`` line and exit status 2: never a traceback. Accepted
configs of the cheap closed-form experiments then run (with their sizes kept small).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowvar.cli import main
from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, experiments, parse_overrides, run_experiment

SPECS = experiments()
KEYS = sorted((name, f.name) for name, spec in SPECS.items() for f in dataclasses.fields(spec.config_cls))

numbers = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 2, 0.5, 1e-300, 1e300, 10**9]))
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=8),
                    st.sampled_from(["nan", ".nan", ".inf", "-.inf", "abc", "", "[]", "{}", "1e3", "0x10"]))


def _text(value: object) -> str:
    """A value as a user types it after --set (YAML flow style)."""
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    return str(value)


values = st.one_of(scalars, st.lists(scalars, max_size=4), st.lists(st.lists(numbers, max_size=3), max_size=3),
                   st.lists(numbers, min_size=50, max_size=60))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=values, quick=st.booleans())
def test_every_value_of_every_key_is_accepted_or_one_config_error(key: tuple[str, str], value: object,
                                                                   quick: bool) -> None:
    name, field = key
    raw = _text(value)
    try:
        build_config(SPECS[name], quick=quick, overrides=parse_overrides([f"{field}={raw}"]))
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message, message


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SPECS)), field=st.data(), value=values)
def test_the_cli_answers_bad_values_in_one_line_with_exit_2(name: str, field: st.DataObject, value: object,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    key = field.draw(st.sampled_from([f.name for f in dataclasses.fields(SPECS[name].config_cls)]))
    code = main(["config", name, "--quick", "--set", f"{key}={_text(value)}"])
    captured = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        lines = [ln for ln in captured.err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("flowvar: error:"), captured.err


# The cheap, closed-form experiments, run on accepted fuzzed configs with their sizes held small.
CHEAP = {"prop1": {"n_samples": "200"}, "lemma1": {"n_samples": "200", "rk4_steps": "10"},
         "counterexample1": {"n_samples": "50"}}
SIZES = {"n_samples", "rk4_steps", "euler_steps", "rk_steps"}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(CHEAP)), data=st.data())
def test_accepted_configs_of_the_cheap_experiments_run(name: str, data: st.DataObject, tmp_path_factory) -> None:
    fields = [f.name for f in dataclasses.fields(SPECS[name].config_cls) if f.name not in SIZES | {"seed"}]
    key = data.draw(st.sampled_from(fields))
    value = data.draw(st.one_of(numbers.filter(lambda v: not isinstance(v, float) or abs(v) < 1e6),
                                st.lists(st.floats(-50, 400, allow_nan=False), min_size=1, max_size=4)))
    overrides = {**CHEAP[name], key: _text(value)}
    try:
        config = build_config(SPECS[name], quick=True, overrides=overrides)
    except ConfigError:
        return
    # refused at run time with one line (e.g. a singular problem) is allowed; any other exception is a failure
    with contextlib.suppress(ConfigError):
        run_experiment(name, tmp_path_factory.mktemp(name), quick=True, config=config)
