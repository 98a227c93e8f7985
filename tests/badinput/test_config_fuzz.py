"""Hypothesis against the configuration parsers: any value anywhere is accepted or refused by name.

The property for every parser: it returns a typed result or raises ``ConfigError`` whose field names the
setting (one line, the planted secret never in it); no other exception ever escapes, and what is
accepted is what was written (no 2.5 → 2, no NaN, no 3.50 → "3.5").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.config.documents import DocumentError, load_yaml
from provisioner.config.settings import ProvisionerConfig, load_config, parse_set_overrides
from provisioner.domain.errors import ConfigError
from provisioner.domain.numbers import finite_float, strict_int

SECRET = "Sup3r-Secret-Value"
PASSWORD_CLOUD: dict[str, Any] = {
    "auth_type": "password",
    "auth": {
        "auth_url": "https://keystone/v3",
        "username": "u",
        "password": SECRET,
        "project_name": "p",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    },
}
BASE: dict[str, Any] = {"cluster_id": "c", "clouds": {"main": PASSWORD_CLOUD}}
SETTINGS = [
    ("cluster_id",),
    ("provisioner_name",),
    ("namespace",),
    ("secret_namespace",),
    ("default_cloud",),
    ("workers",),
    ("cinder_max_in_flight",),
    ("kube_qps",),
    ("kube_burst",),
    ("metrics_bind_address",),
    ("create_deadline_seconds",),
    ("delete_deadline_seconds",),
    ("max_error_retries",),
    ("log_level",),
    ("connector",),
    ("connector", "host"),
    ("connector", "ip"),
    ("connector", "initiator"),
    ("connector", "multipath"),
    ("leader_election",),
    ("leader_election", "enabled"),
    ("leader_election", "lease_name"),
    ("leader_election", "lease_duration"),
    ("leader_election", "renew_deadline"),
    ("leader_election", "retry_period"),
    ("clouds",),
    ("clouds", "main"),
    ("clouds", "main", "auth"),
    ("clouds", "main", "auth_type"),
    ("clouds", "main", "auth", "auth_url"),
    ("clouds", "main", "auth", "username"),
    ("clouds", "main", "auth", "password"),
    ("clouds", "main", "region_name"),
    ("clouds", "main", "interface"),
    ("clouds", "main", "cacert"),
    ("clouds", "main", "insecure"),
    ("clouds", "main", "endpoint_override"),
    ("clouds", "main", "timeout_seconds"),
    ("clouds", "main", "max_microversion"),
    ("clouds", "main", "from_env"),
]
INT_SETTINGS = [("workers",), ("cinder_max_in_flight",), ("kube_burst",), ("max_error_retries",)]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["nan", "inf", "-inf", "2.5", "3.50", "0x10", "1e3", " ", "--help", "a\nb", "\x00"])
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster_id": "c",
        "clouds": {"main": {**PASSWORD_CLOUD, "auth": dict(PASSWORD_CLOUD["auth"])}},
    }
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


def attempt(fn: Callable[[], Any], *errors: type[Exception]) -> Any:
    """``fn()``, or the exception of one of ``errors`` it raised (so the assertions stay outside except)."""
    try:
        return fn()
    except errors as e:
        return e


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SETTINGS), values)
def test_any_value_for_any_setting_is_accepted_or_refused_by_name(path: tuple[str, ...], value: Any) -> None:
    """from_mapping with anything at any setting: a config, or one ConfigError line naming a setting."""
    config = attempt(lambda: ProvisionerConfig.from_mapping(_with(path, value), env={}), ConfigError)
    if isinstance(config, ConfigError):
        text = str(config)
        assert (False, False, True) == ("\n" in text, SECRET in text, bool(config.field))
    else:
        numbers = (config.workers, config.kube_qps, config.leader_election.lease_duration)
        assert all(math.isfinite(n) for n in numbers)
        assert isinstance(config.workers, int)
        assert isinstance(config.cloud(None).max_microversion, str | None)
        if path in INT_SETTINGS:  # accepted as written: never a fraction rounded, never a bool
            assert not isinstance(value, float | bool)
            assert getattr(config, path[0]) == (value if isinstance(value, int) else int(str(value).strip()))
        if path == ("clouds", "main", "max_microversion") and value is not None:
            assert isinstance(value, str)
            assert value.strip() == config.cloud(None).max_microversion


ENV_KEYS = ["WORKERS", "KUBE_QPS", "LEADER_ELECTION__RETRY_PERIOD", "LOG_LEVEL", "X"]
NOAUTH_OVERRIDES = {
    "cluster_id": "c",
    "clouds.main.endpoint": "http://c/v3/p",
    "clouds.main.token": "admin:p",
}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ENV_KEYS), st.text(max_size=12), max_size=3))
def test_any_environment_is_accepted_or_refused_by_name(variables: dict[str, str]) -> None:
    """CINDER_PROVISIONER_* with any text: a config, or a ConfigError naming the variable that set it."""
    env = {f"CINDER_PROVISIONER_{k}": v for k, v in variables.items()}
    outcome = attempt(lambda: load_config(None, env=env, overrides=NOAUTH_OVERRIDES), ConfigError)
    if isinstance(outcome, ConfigError):
        cross_checks = ("kube_burst", "leader_election.renew_deadline", "leader_election.lease_duration")
        assert "\n" not in str(outcome)
        assert "(set by CINDER_PROVISIONER_" in str(outcome) or outcome.field in cross_checks
    else:
        assert isinstance(outcome, ProvisionerConfig)


@given(st.lists(st.text(max_size=20), max_size=4))
def test_set_items_parse_or_name_set(items: list[str]) -> None:
    """--set items: parsed, or refused naming --set."""
    parsed = attempt(lambda: parse_set_overrides(items), ConfigError)
    if isinstance(parsed, ConfigError):
        assert "--set" == parsed.field
    else:
        assert all(key and all(key.split(".")) for key in parsed)


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=25), st.booleans(), st.none()))
def test_strict_int_never_rounds(raw: object) -> None:
    """strict_int gives back exactly the whole number written, or refuses: never int(2.5) == 2."""
    value = attempt(lambda: strict_int(raw, "n", lo=-(10**18), hi=10**18), ConfigError)
    if isinstance(value, ConfigError):
        assert "n" == value.field
    else:
        assert not isinstance(raw, bool | float)
        assert value == (raw if isinstance(raw, int) else int(str(raw).strip()))


@given(
    st.one_of(
        st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=25), st.booleans()
    )
)
def test_finite_float_is_always_finite(raw: object) -> None:
    """finite_float never returns NaN or infinity, and never takes a bool for a number."""
    value = attempt(lambda: finite_float(raw, "x", lo=-1e300, hi=1e300), ConfigError)
    if isinstance(value, ConfigError):
        assert "x" == value.field
    else:
        assert (True, False) == (math.isfinite(value), isinstance(raw, bool))


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "0x1p3", "1_0", "٣"])
def test_finite_float_refuses_the_spellings_python_accepts(text: str) -> None:
    """Strings float() takes but a human never means as a setting are refused."""
    with pytest.raises(ConfigError):
        finite_float(text, "x", lo=-1e300, hi=1e300)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_is_a_document_error(text: str) -> None:
    """load_yaml on any text: a value, or a DocumentError of one line; never a YAMLError or RecursionError."""
    outcome = attempt(lambda: load_yaml(text, source="f"), DocumentError)
    assert not isinstance(outcome, DocumentError) or "\n" not in str(outcome)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=65, max_value=20_000), st.sampled_from(["[", '{"a":', "- "]))
def test_any_depth_beyond_the_limit_is_refused(depth: int, opener: str) -> None:
    """Nesting beyond 64 levels is refused by the iterative scan, however deep."""
    closer = {"[": "]", '{"a":': "}", "- ": ""}[opener]
    text = (
        (opener * depth + ("1" if opener != "[" else "") + closer * depth)
        if opener != "- "
        else "".join("  " * i + "- \n" for i in range(depth))
    )
    with pytest.raises(DocumentError):
        load_yaml(text, source="f")


@given(
    st.sampled_from(INT_SETTINGS),
    st.floats() | st.booleans() | st.sampled_from(["2.5", "nan", "1e3", "0x10"]),
)
def test_whole_number_settings_refuse_every_fraction(path: tuple[str, ...], value: Any) -> None:
    """A fraction, bool, NaN or exponent for a whole-number setting is refused naming it (never rounded)."""
    outcome = attempt(lambda: ProvisionerConfig.from_mapping(_with(path, value), env={}), ConfigError)
    assert isinstance(outcome, ConfigError)
    assert path[0] == outcome.field


FLOAT_SETTINGS = [("kube_qps",), ("create_deadline_seconds",), ("leader_election", "retry_period")]


@given(
    st.sampled_from(FLOAT_SETTINGS),
    st.sampled_from([math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity", "NaN", True]),
)
def test_number_settings_refuse_nan_and_infinity(path: tuple[str, ...], value: Any) -> None:
    """NaN and infinity, as YAML floats or as text, are refused naming the setting."""
    outcome = attempt(lambda: ProvisionerConfig.from_mapping(_with(path, value), env={}), ConfigError)
    assert isinstance(outcome, ConfigError)
    assert ".".join(path) == outcome.field


@pytest.mark.parametrize(
    "data",
    [
        {**BASE, "leader_election": {"\n": None}},
        {**BASE, "bad\nkey": 1},
        {"cluster_id": "c", "clouds": {"a\nb": PASSWORD_CLOUD}},
        {"cluster_id": "c", "clouds": {"main": {**PASSWORD_CLOUD, "x\ny": 1}}},
        {
            "cluster_id": "c",
            "clouds": {"main": {**PASSWORD_CLOUD, "auth": {**PASSWORD_CLOUD["auth"], "k\rv": "1"}}},
        },
    ],
    ids=["section-key", "top-key", "cloud-name", "cloud-key", "auth-key"],
)
def test_keys_with_newlines_stay_on_one_line(data: dict[str, Any]) -> None:
    """A key holding a newline is quoted in the field name: the refusal stays one line (found by the fuzz)."""
    with pytest.raises(ConfigError) as info:
        ProvisionerConfig.from_mapping(data, env={})
    assert (False, False) == ("\n" in str(info.value), "\r" in str(info.value))
