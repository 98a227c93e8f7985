"""Hostile configuration for ``cinder-provisioner run``: files, values, environment variables, flags.

Each case runs the real command line (``provisioner.cli.main.main``) in this process with a clean
environment and asserts the whole answer: exit 2, nothing on stdout, exactly one stderr line
``error: <setting>: …`` naming the setting, no traceback, and never the secret the case planted. A few
cases run the console script as a subprocess to prove the same from outside.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from provisioner.cli.main import main

SECRET = "Sup3r-Secret-Value"
NOAUTH = "    auth_type: noauth\n    auth:\n      endpoint: http://cinder:8776/v3/p\n      token: admin:p\n"
PASSWORD_AUTH = (
    "    auth:\n"
    "      auth_url: {url}\n"
    "      username: u\n"
    f"      password: {SECRET}\n"
    "      project_name: p\n"
    "      user_domain_name: Default\n"
    "      project_domain_name: Default\n"
)
GOOD = "cluster_id: c\nclouds:\n  main:\n" + NOAUTH
KUBECONFIG = (
    "apiVersion: v1\nkind: Config\n"
    "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
    "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    "current-context: c\n"
    f"users: [{{name: u, user: {{token: {SECRET}}}}}]\n"
)


@dataclass(frozen=True)
class Answer:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A run that gets past its configuration points the logs at pytest's captured stderr; put them back.

    Otherwise later tests (whose controller threads log) write to a closed stream and their threads die.
    """
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    structlog.configure(**saved_structlog)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CINDER_PROVISIONER_*, OS_*, KUBERNETES_* variables; HOME without a kubeconfig."""
    for key in list(os.environ):
        if key.startswith(("CINDER_PROVISIONER_", "OS_", "KUBERNETES_")):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Answer:
    """Run the command line in-process; argparse's SystemExit counts as an exit code."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return Answer(code, captured.out, captured.err)


def assert_refused(answer: Answer, setting: str, *, secret: str = SECRET) -> None:
    """Exit 2, one stderr line naming ``setting``, nothing else, no traceback, no secret."""
    lines = answer.err.splitlines()
    assert (2, "", 1) == (answer.code, answer.out, len(lines)), answer
    assert lines[0].startswith(f"error: {setting}:"), lines[0]
    assert "Traceback" not in answer.err
    assert secret not in answer.err


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- the config file itself -------------------------------------------------------------------------

FILE_CASES: dict[str, bytes | str] = {
    "not-utf8-latin1": "cluster_id: caf\xe9\n".encode("latin-1"),
    "not-utf8-binary": b"\xff\xfe\x00\x01" * 64,
    "utf16": GOOD.encode("utf-16"),
    "top-level-list": "- cluster_id: c\n",
    "top-level-scalar": "just a string\n",
    "yaml-syntax": "cluster_id: [c\n",
    "tab-indent": "cluster_id: c\nclouds:\n\tmain: {}\n",
    "two-documents": GOOD + "---\n" + GOOD,
    "deep-nesting": "x: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-json": '{"x":' * 5000 + "1" + "}" * 5000,
    "alias-bomb": "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)),
    "recursive-alias": "cluster_id: c\nx: &x [*x]\n",
    "python-tag": "cluster_id: !!python/object/apply:os.system ['true']\n",
    "too-large": "# " + "x" * (5 << 20) + "\n",
}


@pytest.mark.parametrize("content", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_bad_config_file(clean_env: Path, capsys: pytest.CaptureFixture[str], content: bytes | str) -> None:
    """A config file that is not a readable YAML mapping of sane shape: ``config``, one line."""
    path = write(clean_env / "p.yaml", content)
    assert_refused(cli(["run", "--config", str(path)], capsys), "config")


@pytest.mark.parametrize("kind", ["missing", "directory", "dangling-symlink"])
def test_config_path_unusable(clean_env: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """A config path that does not exist, is a directory or a dangling symlink: ``config``."""
    path = clean_env / "p.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling-symlink":
        path.symlink_to(clean_env / "gone.yaml")
    assert_refused(cli(["run", "--config", str(path)], capsys), "config")


# --- values ------------------------------------------------------------------------------------------

CLOUD = "cluster_id: c\nclouds:\n  main:\n"
VALUE_CASES: list[tuple[str, str, str]] = [
    ("workers-fraction", GOOD + "workers: 2.5\n", "workers"),
    ("workers-fraction-string", GOOD + "workers: '2.5'\n", "workers"),
    ("workers-whole-float", GOOD + "workers: 2.0\n", "workers"),
    ("workers-nan", GOOD + "workers: .nan\n", "workers"),
    ("workers-inf", GOOD + "workers: .inf\n", "workers"),
    ("workers-bool", GOOD + "workers: yes\n", "workers"),
    ("workers-list", GOOD + "workers: [1]\n", "workers"),
    ("workers-hex", GOOD + "workers: '0x10'\n", "workers"),
    ("workers-underscore", GOOD + "workers: '1_0'\n", "workers"),
    ("workers-huge", GOOD + "workers: 99999999999999999999999\n", "workers"),
    ("kube-qps-nan", GOOD + "kube_qps: .nan\n", "kube_qps"),
    ("kube-qps-inf", GOOD + "kube_qps: .inf\n", "kube_qps"),
    ("kube-qps-negative", GOOD + "kube_qps: -1\n", "kube_qps"),
    ("deadline-inf", GOOD + "create_deadline_seconds: .inf\n", "create_deadline_seconds"),
    ("lease-nan", GOOD + "leader_election:\n  lease_duration: .nan\n", "leader_election.lease_duration"),
    ("retry-inf-string", GOOD + "leader_election:\n  retry_period: inf\n", "leader_election.retry_period"),
    ("lease-name-invalid", GOOD + "leader_election:\n  lease_name: Bad_Name\n", "leader_election.lease_name"),
    ("section-not-mapping", GOOD + "leader_election: [a]\n", "leader_election"),
    ("cluster-id-float", "cluster_id: 1.10\nclouds:\n  main:\n" + NOAUTH, "cluster_id"),
    ("cluster-id-newline", 'cluster_id: "c\\nx"\nclouds:\n  main:\n' + NOAUTH, "cluster_id"),
    ("provisioner-name-bad", GOOD + "provisioner_name: 'netvol io/cinder'\n", "provisioner_name"),
    ("connector-ip", GOOD + "connector:\n  ip: not-an-ip\n", "connector.ip"),
    ("connector-host-space", GOOD + "connector:\n  host: 'a b'\n", "connector.host"),
    ("connector-host-dash", GOOD + "connector:\n  host: --help\n", "connector.host"),
    (
        "connector-initiator-nul",
        GOOD + 'connector:\n  initiator: "iqn.2024-01.io.x\\0y"\n',
        "connector.initiator",
    ),
    ("metrics-port-range", GOOD + "metrics_bind_address: '0.0.0.0:99999'\n", "metrics_bind_address"),
    ("metrics-bad-v6", GOOD + "metrics_bind_address: '[zz]:8080'\n", "metrics_bind_address"),
    ("metrics-host-space", GOOD + "metrics_bind_address: 'a b:8080'\n", "metrics_bind_address"),
    ("metrics-no-port", GOOD + "metrics_bind_address: localhost\n", "metrics_bind_address"),
    ("default-cloud-list", GOOD + "default_cloud: [main]\n", "default_cloud"),
    ("unknown-setting", GOOD + "wokers: 4\n", "wokers"),
    ("clouds-list", "cluster_id: c\nclouds: [main]\n", "clouds"),
    ("cloud-entry-scalar", "cluster_id: c\nclouds:\n  main: oops\n", "clouds.main"),
    ("cloud-auth-list", CLOUD + "    auth_type: password\n    auth: [a, b]\n", "clouds.main.auth"),
    ("auth-url-no-scheme", CLOUD + PASSWORD_AUTH.format(url="keystone"), "clouds.main.auth.auth_url"),
    ("auth-url-ftp", CLOUD + PASSWORD_AUTH.format(url="ftp://keystone/v3"), "clouds.main.auth.auth_url"),
    ("auth-url-no-host", CLOUD + PASSWORD_AUTH.format(url="https:///v3"), "clouds.main.auth.auth_url"),
    (
        "auth-url-bad-port",
        CLOUD + PASSWORD_AUTH.format(url="https://k:99999/v3"),
        "clouds.main.auth.auth_url",
    ),
    ("auth-url-space", CLOUD + PASSWORD_AUTH.format(url="'https://k/v3 x'"), "clouds.main.auth.auth_url"),
    (
        "endpoint-override-no-scheme",
        CLOUD + PASSWORD_AUTH.format(url="https://k/v3") + "    endpoint_override: cinder:8776\n",
        "clouds.main.endpoint_override",
    ),
    (
        "noauth-endpoint-no-host",
        CLOUD + "    auth_type: noauth\n    auth:\n      endpoint: 'http://'\n      token: admin:p\n",
        "clouds.main.auth.endpoint",
    ),
    (
        "microversion-unquoted",
        GOOD.replace("  main:\n", "  main:\n    max_microversion: 3.50\n"),
        "clouds.main.max_microversion",
    ),
    (
        "microversion-int",
        GOOD.replace("  main:\n", "  main:\n    max_microversion: 3\n"),
        "clouds.main.max_microversion",
    ),
    (
        "microversion-text",
        GOOD.replace("  main:\n", "  main:\n    max_microversion: '3.x'\n"),
        "clouds.main.max_microversion",
    ),
    (
        "timeout-nan",
        GOOD.replace("  main:\n", "  main:\n    timeout_seconds: .nan\n"),
        "clouds.main.timeout_seconds",
    ),
    (
        "timeout-inf-string",
        GOOD.replace("  main:\n", "  main:\n    timeout_seconds: 'inf'\n"),
        "clouds.main.timeout_seconds",
    ),
    (
        "cacert-missing",
        GOOD.replace("  main:\n", "  main:\n    cacert: /nonexistent/ca.pem\n"),
        "clouds.main.cacert",
    ),
    ("cacert-directory", GOOD.replace("  main:\n", "  main:\n    cacert: /\n"), "clouds.main.cacert"),
    ("region-list", GOOD.replace("  main:\n", "  main:\n    region_name: [a]\n"), "clouds.main.region_name"),
    ("from-env-not-bool", "cluster_id: c\nclouds:\n  main:\n    from_env: maybe\n", "clouds.main.from_env"),
    (
        "password-fraction",
        CLOUD + PASSWORD_AUTH.format(url="https://k/v3").replace(SECRET, "1.10"),
        "clouds.main.auth.password",
    ),
    (
        "password-octal",
        CLOUD + PASSWORD_AUTH.format(url="https://k/v3").replace(SECRET, "0777"),
        "clouds.main.auth.password",
    ),
    (
        "password-newline",
        CLOUD + PASSWORD_AUTH.format(url="https://k/v3").replace(SECRET, f'"{SECRET}\\nx"'),
        "clouds.main.auth.password",
    ),
    (
        "password-mapping",
        CLOUD + PASSWORD_AUTH.format(url="https://k/v3").replace(SECRET, "{a: 1}"),
        "clouds.main.auth.password",
    ),
    (
        "unknown-auth-option-keeps-secret",
        CLOUD + PASSWORD_AUTH.format(url="https://k/v3") + "      colour: red\n",
        "clouds.main.auth.colour",
    ),
]


@pytest.mark.parametrize(("text", "setting"), [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES])
def test_bad_value(clean_env: Path, capsys: pytest.CaptureFixture[str], text: str, setting: str) -> None:
    """A bad value in the file: one line naming exactly that setting, the password never shown."""
    path = write(clean_env / "p.yaml", text)
    assert_refused(cli(["run", "--config", str(path)], capsys), setting)


def test_microversion_refusal_says_to_quote_it(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``max_microversion: 3.50`` unquoted is refused with the hint to quote it; quoted it is accepted."""
    path = write(clean_env / "p.yaml", GOOD.replace("  main:\n", "  main:\n    max_microversion: 3.50\n"))
    answer = cli(["run", "--config", str(path)], capsys)
    assert_refused(answer, "clouds.main.max_microversion")
    assert '"3.50"' in answer.err
    from provisioner.config.settings import load_config

    quoted = write(clean_env / "q.yaml", GOOD.replace("  main:\n", "  main:\n    max_microversion: '3.50'\n"))
    assert "3.50" == load_config(str(quoted), env={}).cloud(None).max_microversion


# --- clouds.yaml / secure.yaml ----------------------------------------------------------------------

CLOUDS_REF = "cluster_id: c\nclouds:\n  main:\n    clouds_yaml: clouds.yaml\n    cloud: example\n"
CLOUDS_CASES: list[tuple[str, bytes | str, bytes | str | None, str]] = [
    ("not-utf8", b"clouds:\n  example:\n    region_name: R\xe9gion\n", None, "clouds.main.clouds_yaml"),
    ("entry-scalar", "clouds: {example: oops}\n", None, "clouds.main(clouds.yaml:example)"),
    ("entry-list", "clouds: {example: [a, b]}\n", None, "clouds.main(clouds.yaml:example)"),
    ("auth-list", "clouds: {example: {auth: [a, b]}}\n", None, "clouds.main(clouds.yaml:example).auth"),
    ("clouds-list", "clouds: [example]\n", None, "clouds.main.clouds_yaml"),
    ("top-list", "- example\n", None, "clouds.main.clouds_yaml"),
    ("deep", "clouds: " + "[" * 5000 + "]" * 5000 + "\n", None, "clouds.main.clouds_yaml"),
    ("syntax", "clouds: {example: [\n", None, "clouds.main.clouds_yaml"),
    (
        "auth-url-no-scheme",
        "clouds:\n  example:\n" + PASSWORD_AUTH.format(url="keystone"),
        None,
        "clouds.main(clouds.yaml:example).auth.auth_url",
    ),
    (
        "microversion-unquoted",
        "clouds:\n  example:\n" + PASSWORD_AUTH.format(url="https://k/v3") + "    max_microversion: 3.50\n",
        None,
        "clouds.main(clouds.yaml:example).max_microversion",
    ),
    (
        "secure-not-utf8",
        "clouds:\n  example:\n" + PASSWORD_AUTH.format(url="https://k/v3"),
        b"clouds:\n  example:\n    auth:\n      password: caf\xe9\n",
        "clouds.main.clouds_yaml",
    ),
    (
        "secure-entry-scalar",
        "clouds:\n  example:\n" + PASSWORD_AUTH.format(url="https://k/v3"),
        "clouds: {example: oops}\n",
        "clouds.main(secure.yaml:example)",
    ),
    (
        "secure-auth-list",
        "clouds:\n  example:\n" + PASSWORD_AUTH.format(url="https://k/v3"),
        f"clouds: {{example: {{auth: [{SECRET}]}}}}\n",
        "clouds.main(secure.yaml:example).auth",
    ),
]


@pytest.mark.parametrize(
    ("clouds", "secure", "setting"), [c[1:] for c in CLOUDS_CASES], ids=[c[0] for c in CLOUDS_CASES]
)
def test_bad_clouds_yaml(
    clean_env: Path,
    capsys: pytest.CaptureFixture[str],
    clouds: bytes | str,
    secure: bytes | str | None,
    setting: str,
) -> None:
    """A clouds.yaml (or secure.yaml) that is not UTF-8, not mappings, or holds bad values: one line."""
    write(clean_env / "clouds.yaml", clouds)
    if secure is not None:
        write(clean_env / "secure.yaml", secure)
    path = write(clean_env / "p.yaml", CLOUDS_REF)
    assert_refused(cli(["run", "--config", str(path)], capsys), setting)


def test_clouds_yaml_missing(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clouds_yaml path that does not exist names clouds.<name>.clouds_yaml."""
    path = write(clean_env / "p.yaml", CLOUDS_REF.replace("clouds.yaml", "nowhere.yaml"))
    assert_refused(cli(["run", "--config", str(path)], capsys), "clouds.main.clouds_yaml")


# --- environment variables --------------------------------------------------------------------------

ENV_CASES: list[tuple[str, dict[str, str], str]] = [
    ("workers-fraction", {"CINDER_PROVISIONER_WORKERS": "2.5"}, "workers"),
    ("workers-nan", {"CINDER_PROVISIONER_WORKERS": "nan"}, "workers"),
    ("workers-blank", {"CINDER_PROVISIONER_WORKERS": " "}, "workers"),
    ("workers-exponent", {"CINDER_PROVISIONER_WORKERS": "1e3"}, "workers"),
    ("qps-nan", {"CINDER_PROVISIONER_KUBE_QPS": "nan"}, "kube_qps"),
    ("qps-inf", {"CINDER_PROVISIONER_KUBE_QPS": "inf"}, "kube_qps"),
    ("qps-infinity", {"CINDER_PROVISIONER_KUBE_QPS": "-Infinity"}, "kube_qps"),
    (
        "retry-nan",
        {"CINDER_PROVISIONER_LEADER_ELECTION__RETRY_PERIOD": "NaN"},
        "leader_election.retry_period",
    ),
    ("enabled-maybe", {"CINDER_PROVISIONER_LEADER_ELECTION__ENABLED": "maybe"}, "leader_election.enabled"),
    ("unknown", {"CINDER_PROVISIONER_WOKERS": "4"}, "wokers"),
    ("log-level", {"CINDER_PROVISIONER_LOG_LEVEL": "chatty"}, "log_level"),
    ("namespace", {"CINDER_PROVISIONER_NAMESPACE": "Not_A_Namespace"}, "namespace"),
]


@pytest.mark.parametrize(("env", "setting"), [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_bad_environment_variable(
    clean_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    setting: str,
) -> None:
    """A bad CINDER_PROVISIONER_* value: the setting is named, and so is the variable that set it."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = write(clean_env / "p.yaml", GOOD)
    answer = cli(["run", "--config", str(path)], capsys)
    assert_refused(answer, setting)
    assert f"(set by {next(iter(env))})" in answer.err


OS_BASE = {
    "OS_AUTH_URL": "https://keystone/v3",
    "OS_USERNAME": "u",
    "OS_PASSWORD": SECRET,
    "OS_PROJECT_NAME": "p",
    "OS_USER_DOMAIN_NAME": "Default",
    "OS_PROJECT_DOMAIN_NAME": "Default",
}
OS_CASES: list[tuple[str, dict[str, str], str]] = [
    ("auth-url-no-scheme", {"OS_AUTH_URL": "keystone"}, "clouds.default(OS_*).auth.auth_url"),
    ("cacert-missing", {"OS_CACERT": "/nonexistent/ca.pem"}, "clouds.default(OS_*).cacert"),
    ("password-control", {"OS_PASSWORD": SECRET + "\x07"}, "clouds.default(OS_*).auth.password"),
    ("auth-type-unknown", {"OS_AUTH_TYPE": "kerberos"}, "OS_AUTH_TYPE"),
    ("insecure-maybe", {"OS_INSECURE": "maybe"}, "clouds.default(OS_*).insecure"),
    ("interface-bogus", {"OS_INTERFACE": "backstage"}, "clouds.default(OS_*).interface"),
]


@pytest.mark.parametrize(("env", "setting"), [c[1:] for c in OS_CASES], ids=[c[0] for c in OS_CASES])
def test_bad_os_environment(
    clean_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    setting: str,
) -> None:
    """A cloud from OS_* with a bad variable: one line naming it, the password never shown."""
    for key, value in {**OS_BASE, **env}.items():
        monkeypatch.setenv(key, value)
    path = write(clean_env / "p.yaml", "cluster_id: c\n")
    assert_refused(cli(["run", "--config", str(path)], capsys), setting)


def test_config_variable_is_not_a_setting(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CINDER_PROVISIONER_CONFIG names the file; it is not refused as an unknown setting 'config'."""
    path = write(clean_env / "p.yaml", GOOD)
    monkeypatch.setenv("CINDER_PROVISIONER_CONFIG", str(path))
    answer = cli(["run"], capsys)  # gets as far as the kubeconfig (HOME has none)
    assert_refused(answer, "--kubeconfig")


# --- command-line flags -----------------------------------------------------------------------------

SET_CASES: list[tuple[str, list[str], str]] = [
    ("workers-fraction", ["workers=2.5"], "workers"),
    ("workers-nan", ["workers=nan"], "workers"),
    ("no-equals", ["workers"], "--set"),
    ("empty-key", ["=4"], "--set"),
    ("empty-part", ["leader_election..enabled=1"], "--set"),
    ("unknown", ["colour=red"], "colour"),
    ("into-scalar", ["workers.x=1"], "workers"),
    ("secret-value-not-echoed", [f"bogus={SECRET}"], "bogus"),
    ("bad-address", ["metrics_bind_address=nowhere"], "metrics_bind_address"),
]


@pytest.mark.parametrize(("items", "setting"), [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_bad_set_override(
    clean_env: Path, capsys: pytest.CaptureFixture[str], items: list[str], setting: str
) -> None:
    """A bad ``--set``: one line naming the setting (or ``--set`` itself), values never echoed."""
    path = write(clean_env / "p.yaml", GOOD)
    argv = ["run", "--config", str(path)]
    for item in items:
        argv += ["--set", item]
    assert_refused(cli(argv, capsys), setting)


def _kubeconfig(tmp: Path, kind: str) -> str:
    path = tmp / "kubeconfig"
    if kind == "missing":
        return str(tmp / "nowhere")
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        write(path, KUBECONFIG.encode() + b"\xff")
    elif kind == "not-yaml":
        write(path, f"users: [{{token: {SECRET}\n")
    elif kind == "not-a-kubeconfig":
        write(path, f"token: {SECRET}\n")
    elif kind == "bad-server":
        write(path, KUBECONFIG.replace("https://127.0.0.1:1", "not a url"))
    elif kind == "no-context":
        write(path, KUBECONFIG.replace("current-context: c", "current-context: other"))
    elif kind == "empty":
        write(path, "")
    else:
        write(path, KUBECONFIG)
    return str(path)


KUBECONFIG_KINDS = [
    "missing",
    "directory",
    "not-utf8",
    "not-yaml",
    "not-a-kubeconfig",
    "bad-server",
    "no-context",
    "empty",
]


@pytest.mark.parametrize("kind", KUBECONFIG_KINDS)
def test_bad_kubeconfig(clean_env: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """A --kubeconfig that is missing or unusable: one line naming --kubeconfig, its token never shown."""
    path = write(clean_env / "p.yaml", GOOD)
    answer = cli(["run", "--config", str(path), "--kubeconfig", _kubeconfig(clean_env, kind)], capsys)
    assert_refused(answer, "--kubeconfig")


def test_no_kubeconfig_outside_a_cluster(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --kubeconfig, outside a cluster and without ~/.kube/config: one line naming --kubeconfig."""
    path = write(clean_env / "p.yaml", GOOD)
    assert_refused(cli(["run", "--config", str(path)], capsys), "--kubeconfig")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


ADDRESS_CASES: dict[str, Callable[[int], str]] = {
    "in-use": lambda port: f"127.0.0.1:{port}",
    "not-local": lambda _port: "192.0.2.1:8080",  # TEST-NET-1: never an address of this host
    "unresolvable": lambda _port: "no-such-host.invalid:8080",
}


@pytest.mark.parametrize("address", ADDRESS_CASES.values(), ids=ADDRESS_CASES.keys())
def test_metrics_address_cannot_be_listened_on(
    clean_env: Path, capsys: pytest.CaptureFixture[str], busy_port: int, address: Callable[[int], str]
) -> None:
    """metrics_bind_address in use (or not ours): exit 2 naming it, before anything else starts."""
    path = write(clean_env / "p.yaml", GOOD + f"metrics_bind_address: '{address(busy_port)}'\n")
    answer = cli(["run", "--config", str(path), "--kubeconfig", _kubeconfig(clean_env, "good")], capsys)
    assert_refused(answer, "metrics_bind_address")


def test_identity_with_a_newline(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lease identity that is not printable is refused naming --identity."""
    path = write(clean_env / "p.yaml", GOOD)
    assert_refused(cli(["run", "--config", str(path), "--identity", "a\nb"], capsys), "--identity")


# --- from outside: the console script ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "setting"),
    [
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "config"),
        ("cluster_id: caf\xe9\n".encode("latin-1"), "config"),
        (GOOD + "workers: 2.5\n", "workers"),
    ],
    ids=["deep", "latin1", "fraction"],
)
def test_console_script_prints_one_line(tmp_path: Path, content: bytes | str, setting: str) -> None:
    """The installed command, as a process: exit 2, one stderr line, no traceback."""
    path = write(tmp_path / "p.yaml", content)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CINDER_PROVISIONER_", "OS_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert_refused(Answer(proc.returncode, proc.stdout, proc.stderr), setting)
