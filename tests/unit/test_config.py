"""Configuration: file + environment + overrides, validated at start with one clear line per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.config.auth import CloudConfig
from provisioner.config.settings import ProvisionerConfig, load_config, parse_set_overrides
from provisioner.domain import names
from provisioner.domain.errors import ConfigError

NOAUTH: dict[str, Any] = {
    "auth_type": "noauth",
    "auth": {"endpoint": "http://cinder:8776/v3/abc", "token": "admin:abc"},
}
PASSWORD: dict[str, Any] = {
    "auth_type": "password",
    "auth": {
        "auth_url": "https://keystone/v3",
        "username": "u",
        "password": "s3cret-pw",
        "project_name": "p",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    },
}


def minimal(**extra: Any) -> dict[str, Any]:
    """The smallest valid mapping plus ``extra``."""
    return {"cluster_id": "prod-1", "clouds": {"main": NOAUTH}, **extra}


def error_field(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """The field named by the ConfigError that ``data`` raises."""
    with pytest.raises(ConfigError) as info:
        ProvisionerConfig.from_mapping(data, env=env or {})
    return info.value.field


def test_defaults() -> None:
    """A minimal config gets the documented defaults."""
    c = ProvisionerConfig.from_mapping(minimal())
    le = c.leader_election
    expected = (names.DEFAULT_PROVISIONER_NAME, "main", 32, 16, 200.0, 400, 15.0, 10.0, 2.0, "info")
    actual = (
        c.provisioner_name,
        c.default_cloud,
        c.workers,
        c.cinder_max_in_flight,
        c.kube_qps,
        c.kube_burst,
        le.lease_duration,
        le.renew_deadline,
        le.retry_period,
        c.log_level,
    )
    assert expected == actual


def test_noauth_cloud_uses_admin_token_plugin() -> None:
    """The no-auth mode is keystoneauth's admin_token plugin with endpoint and token."""
    cloud = ProvisionerConfig.from_mapping(minimal()).cloud(None)
    assert ("admin_token", True, "http://cinder:8776/v3/abc") == (
        cloud.auth_type,
        cloud.no_auth,
        cloud.auth["endpoint"],
    )


def test_noauth_shorthand_endpoint_and_token() -> None:
    """``endpoint`` + ``token`` at the cloud's top level mean no-auth mode."""
    c = ProvisionerConfig.from_mapping(
        minimal(clouds={"m": {"endpoint": "http://c/v3/p", "token": "admin:p"}})
    )
    assert "admin_token" == c.cloud("m").auth_type


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"clouds": {"main": NOAUTH}}, "cluster_id"),
        (minimal(cluster_id="bad id!"), "cluster_id"),
        (minimal(workers=0), "workers"),
        (minimal(workers="many"), "workers"),
        (minimal(kube_qps=200, kube_burst=100), "kube_burst"),
        (minimal(log_level="chatty"), "log_level"),
        (minimal(metrics_bind_address="8080"), "metrics_bind_address"),
        (minimal(secret_namespace="Not_A_Namespace"), "secret_namespace"),
        (minimal(surprise=1), "surprise"),
        (minimal(connector={"initiator": "not-an-iqn"}), "connector.initiator"),
        (minimal(connector={"colour": "red"}), "connector.colour"),
        (
            minimal(leader_election={"lease_duration": 10, "renew_deadline": 10}),
            "leader_election.lease_duration",
        ),
        (minimal(leader_election={"renew_deadline": 2, "retry_period": 2}), "leader_election.renew_deadline"),
        (minimal(leader_election={"enabled": "maybe"}), "leader_election.enabled"),
        (minimal(clouds={}), "clouds"),
        (minimal(clouds={"a": NOAUTH, "b": NOAUTH}), "default_cloud"),
        (minimal(default_cloud="nowhere"), "default_cloud"),
        (minimal(clouds={"m": {"auth_type": "kerberos-magic"}}), "clouds.m.auth_type"),
        (minimal(clouds={"m": {"auth_type": "noauth", "auth": {"token": "t"}}}), "clouds.m.auth.endpoint"),
        (
            minimal(clouds={"m": {"auth_type": "noauth", "auth": {"endpoint": "cinder:8776"}}}),
            "clouds.m.auth.token",
        ),
        (
            minimal(clouds={"m": {**PASSWORD, "auth": {"auth_url": "https://k/v3", "username": "u"}}}),
            "clouds.m.auth.password",
        ),
        (
            minimal(clouds={"m": {**PASSWORD, "auth": {"password": "x", "username": "u"}}}),
            "clouds.m.auth.auth_url",
        ),
        (
            minimal(clouds={"m": {**PASSWORD, "auth": {**PASSWORD["auth"], "colour": "red"}}}),
            "clouds.m.auth.colour",
        ),
        (minimal(clouds={"m": {**PASSWORD, "cacert": "/ca.pem", "insecure": True}}), "clouds.m.insecure"),
        (minimal(clouds={"m": {**PASSWORD, "interface": "backstage"}}), "clouds.m.interface"),
        (minimal(clouds={"m": {**PASSWORD, "max_microversion": "2.1"}}), "clouds.m.max_microversion"),
        (minimal(clouds={"m": {**PASSWORD, "timeout_seconds": 0}}), "clouds.m.timeout_seconds"),
        (minimal(clouds={"m": {**PASSWORD, "region": "x"}}), "clouds.m.region"),
        (minimal(clouds={"m": {"from_env": True, "region_name": "x"}}), "clouds.m.from_env"),
    ],
)
def test_bad_settings_name_the_field(data: dict[str, Any], field: str) -> None:
    """Each missing/contradictory setting raises ConfigError naming exactly that setting."""
    assert field == error_field(data)


def test_config_error_is_one_line() -> None:
    """The message is one line starting with the field."""
    with pytest.raises(ConfigError) as info:
        ProvisionerConfig.from_mapping(minimal(workers=-1))
    text = str(info.value)
    assert (True, False) == (text.startswith("workers: "), "\n" in text)


def test_application_credential_by_id() -> None:
    """v3 application credentials validate with id + secret."""
    entry = {
        "auth_type": "application_credential",
        "auth": {
            "auth_url": "https://k/v3",
            "application_credential_id": "i",
            "application_credential_secret": "s",
        },
    }
    c = ProvisionerConfig.from_mapping(minimal(clouds={"m": entry}))
    assert "v3applicationcredential" == c.cloud("m").auth_type


def test_application_credential_by_name_needs_a_user() -> None:
    """A credential given by name without a user is refused, naming username."""
    entry = {
        "auth_type": "v3applicationcredential",
        "auth": {
            "auth_url": "https://k/v3",
            "application_credential_name": "n",
            "application_credential_secret": "s",
        },
    }
    assert "clouds.m.auth.username" == error_field(minimal(clouds={"m": entry}))


def test_token_auth() -> None:
    """A pre-issued Keystone token is the ``token`` plugin."""
    entry = {"auth_type": "token", "auth": {"auth_url": "https://k/v3", "token": "gAAAA", "project_id": "p"}}
    assert "token" == ProvisionerConfig.from_mapping(minimal(clouds={"m": entry})).cloud("m").auth_type


def test_cloud_lookup_by_storageclass_name() -> None:
    """cloud(name) picks a named cloud; an unknown name is a ConfigError listing the known ones."""
    c = ProvisionerConfig.from_mapping(minimal(clouds={"a": NOAUTH, "b": PASSWORD}, default_cloud="a"))
    with pytest.raises(ConfigError) as info:
        c.cloud("z")
    assert ("b", "a", True) == (c.cloud("b").name, c.cloud("").name, "a, b" in str(info.value))


def test_secrets_are_not_in_repr() -> None:
    """Neither repr(config) nor redacted_auth() shows a password."""
    c = ProvisionerConfig.from_mapping(minimal(clouds={"m": PASSWORD}))
    redacted = c.cloud("m").redacted_auth()
    assert (False, "<redacted>", "u") == ("s3cret-pw" in repr(c), redacted["password"], redacted["username"])


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


CLOUDS_YAML = """
clouds:
  prod:
    auth:
      auth_url: https://keystone.example/v3
      username: k8s
      project_name: kubernetes
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionTwo
    interface: internal
    verify: false
    identity_api_version: 3
"""


def test_clouds_yaml_named_cloud_with_secure_yaml(tmp_path: Path) -> None:
    """A named cloud from clouds.yaml; the password comes from secure.yaml next to it."""
    write(tmp_path, "clouds.yaml", CLOUDS_YAML)
    write(tmp_path, "secure.yaml", "clouds:\n  prod:\n    auth:\n      password: from-secure\n")
    config = write(
        tmp_path, "p.yaml", "cluster_id: c\nclouds:\n  main:\n    clouds_yaml: clouds.yaml\n    cloud: prod\n"
    )
    cloud = load_config(str(config), env={}).cloud("main")
    actual = (cloud.auth_type, cloud.region_name, cloud.interface, cloud.insecure, cloud.auth["password"])
    assert ("password", "RegionTwo", "internal", True, "from-secure") == actual


def test_clouds_yaml_missing_cloud_names_the_setting(tmp_path: Path) -> None:
    """A cloud name absent from clouds.yaml → ConfigError on clouds.<name>.cloud."""
    write(tmp_path, "clouds.yaml", CLOUDS_YAML)
    config = write(
        tmp_path, "p.yaml", "cluster_id: c\nclouds:\n  main:\n    clouds_yaml: clouds.yaml\n    cloud: nope\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(config), env={})
    assert "clouds.main.cloud" == info.value.field


def test_os_environment_password(tmp_path: Path) -> None:
    """With no clouds configured, OS_* variables make the cloud ``default``."""
    ca = write(tmp_path, "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    env = {
        "OS_AUTH_URL": "https://k/v3",
        "OS_USERNAME": "u",
        "OS_PASSWORD": "pw",
        "OS_PROJECT_NAME": "p",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "R1",
        "OS_CACERT": str(ca),
    }
    cloud = ProvisionerConfig.from_mapping({"cluster_id": "c"}, env=env).cloud(None)
    expected = ("default", "password", "R1", str(ca), "u", "Default")
    assert expected == (
        cloud.name,
        cloud.auth_type,
        cloud.region_name,
        cloud.cacert,
        cloud.auth["username"],
        cloud.auth["user_domain_name"],
    )


def test_os_environment_noauth() -> None:
    """OS_AUTH_TYPE=noauth with OS_ENDPOINT and OS_TOKEN is the no-auth mode."""
    env = {"OS_AUTH_TYPE": "noauth", "OS_ENDPOINT": "http://c:8776/v3/p", "OS_TOKEN": "admin:p"}
    cloud = ProvisionerConfig.from_mapping({"cluster_id": "c"}, env=env).cloud(None)
    assert ("admin_token", "admin:p") == (cloud.auth_type, cloud.auth["token"])


def test_os_cloud_selects_from_clouds_yaml(tmp_path: Path) -> None:
    """OS_CLOUD + OS_CLIENT_CONFIG_FILE pick a clouds.yaml entry."""
    path = write(
        tmp_path, "clouds.yaml", CLOUDS_YAML.replace("username: k8s", "username: k8s\n      password: x")
    )
    env = {"OS_CLOUD": "prod", "OS_CLIENT_CONFIG_FILE": str(path)}
    c = ProvisionerConfig.from_mapping({"cluster_id": "c"}, env=env)
    assert ("prod", "RegionTwo") == (c.default_cloud, c.cloud(None).region_name)


def test_no_cloud_anywhere_names_clouds() -> None:
    """No clouds in the file and no OS_* → ConfigError on ``clouds``."""
    assert "clouds" == error_field({"cluster_id": "c"}, env={"HOME": "/root"})


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    """Environment overrides the file; --set overrides both; nested keys use __ / dots."""
    config = write(
        tmp_path,
        "p.yaml",
        "cluster_id: file\nworkers: 2\nclouds:\n  m:\n    endpoint: http://c/v3/p\n    token: admin:p\n",
    )
    env = {
        "CINDER_PROVISIONER_WORKERS": "3",
        "CINDER_PROVISIONER_CLUSTER_ID": "env",
        "CINDER_PROVISIONER_LEADER_ELECTION__RETRY_PERIOD": "1",
    }
    c = load_config(
        str(config), env=env, overrides=parse_set_overrides(["workers=5", "connector.multipath=true"])
    )
    assert ("env", 5, 1.0, True) == (
        c.cluster_id,
        c.workers,
        c.leader_election.retry_period,
        c.connector.multipath,
    )


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    """A missing file and a non-mapping YAML both fail on ``config``."""
    bad = write(tmp_path, "bad.yaml", "- just\n- a list\n")
    fields = []
    for path in (str(tmp_path / "missing.yaml"), str(bad)):
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        fields.append(info.value.field)
    assert ["config", "config"] == fields


def test_set_override_needs_key_value() -> None:
    """--set without '=' is refused."""
    with pytest.raises(ConfigError) as info:
        parse_set_overrides(["workers"])
    assert "--set" == info.value.field


def test_example_config_files_load() -> None:
    """config/provisioner.yaml (with config/clouds.yaml) is a valid configuration."""
    root = Path(__file__).resolve().parents[2]
    c = load_config(str(root / "config" / "provisioner.yaml"), env={})
    assert isinstance(c.cloud(None), CloudConfig)


def test_retry_liveness_and_sync_settings_reach_the_replica() -> None:
    """final_retry_seconds, stuck_worker_seconds and cache_sync_deadline_seconds are read, bounded, wired."""
    from provisioner.runtime.wiring import settings_from

    config = ProvisionerConfig.from_mapping(
        minimal(final_retry_seconds=42, stuck_worker_seconds=77, cache_sync_deadline_seconds=99), env={}
    )
    assert (42.0, 77.0, 99.0) == (
        config.final_retry_seconds,
        config.stuck_worker_seconds,
        config.cache_sync_deadline_seconds,
    )
    assert 42.0 == settings_from(config).final_retry_seconds
    assert 5.0 == settings_from(config, final_retry_seconds=5.0).final_retry_seconds  # an override wins
    assert 300.0 == ProvisionerConfig.from_mapping(minimal(), env={}).final_retry_seconds
    for key, bad in (
        ("final_retry_seconds", 0),
        ("stuck_worker_seconds", 1),
        ("cache_sync_deadline_seconds", "x"),
    ):
        assert key == error_field(minimal(**{key: bad}))


def test_create_in_flight_wait_covers_the_slowest_clouds_timeout() -> None:
    """Another replica's create is waited out for the slowest cloud's HTTP timeout + 5 s (35 s default)."""
    from provisioner.runtime.wiring import settings_from

    assert 35.0 == settings_from(ProvisionerConfig.from_mapping(minimal(), env={})).create_in_flight_seconds
    slow = {**NOAUTH, "timeout_seconds": 120}
    config = ProvisionerConfig.from_mapping(
        minimal(clouds={"main": NOAUTH, "slow": slow}, default_cloud="main"), env={}
    )
    assert 125.0 == settings_from(config).create_in_flight_seconds
    assert 5.0 == settings_from(config, create_in_flight_seconds=5.0).create_in_flight_seconds
