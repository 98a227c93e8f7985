"""The provisioner's configuration: one typed, validated, immutable object built at start.

Why: every setting is read in one place, checked once, and documented here (``docs/configuration.md`` is
the long form). A missing or contradictory setting stops the program before it touches Kubernetes or
Cinder, with one ``errors.ConfigError`` line that names the setting (``field: message``).

Sources, lowest precedence first:

1. the YAML file (``config/provisioner.yaml`` is a commented example);
2. the environment: ``CINDER_PROVISIONER_<SETTING>`` for scalar settings, nested ones joined with ``__``
   (``CINDER_PROVISIONER_LEADER_ELECTION__LEASE_DURATION=20``); OpenStack credentials from ``OS_*`` when
   no ``clouds`` are configured (see ``provisioner/config/auth.py``);
3. overrides (command-line ``--set key=value``, dotted keys: ``leader_election.retry_period=1``).
"""

from __future__ import annotations

import ipaddress
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.config.auth import CloudConfig, cloud_from_env, parse_cloud
from provisioner.config.documents import load_file, shown_key
from provisioner.domain import names
from provisioner.domain.errors import ConfigError
from provisioner.domain.model import Connector
from provisioner.domain.numbers import finite_float, strict_int

__all__ = [
    "CloudConfig",
    "ConnectorConfig",
    "LeaderElectionConfig",
    "ProvisionerConfig",
    "load_config",
    "parse_set_overrides",
]

ENV_PREFIX = "CINDER_PROVISIONER_"
#: ``CINDER_PROVISIONER_CONFIG`` names the file (``run --config``'s default); it is not a setting.
ENV_CONFIG = ENV_PREFIX + "CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
#: The initiator name sent to Cinder when none is configured.
DEFAULT_INITIATOR = "iqn.2024-01.io.netvol:provisioner"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_IQN = re.compile(r"^(iqn\.[0-9]{4}-[0-9]{2}\.[!-~]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$")
#: The StorageClass ``provisioner`` field: a domain-like name, optionally with a path (``netvol.io/cinder``).
_PROVISIONER_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorConfig:
    """The connector the central provisioner sends to Cinder (reference/connection-info.md).

    For iSCSI, Cinder grants access to ``initiator``: every node must log in with this same IQN.
    """

    host: str = field(default_factory=platform.node)
    ip: str = "127.0.0.1"
    initiator: str = DEFAULT_INITIATOR
    multipath: bool = False

    def to_connector(self) -> Connector:
        """The model object the Cinder port takes."""
        return Connector(host=self.host, ip=self.ip, initiator=self.initiator, multipath=self.multipath)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderElectionConfig:
    """Lease-based leader election (client-go semantics; seconds)."""

    enabled: bool = True
    lease_name: str = "cinder-provisioner"
    #: How long a lease is valid without renewal; must exceed renew_deadline.
    lease_duration: float = 15.0
    #: The leader gives up if it could not renew for this long; must exceed 1.2 x retry_period.
    renew_deadline: float = 10.0
    #: Pause between acquire/renew attempts.
    retry_period: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionerConfig:
    """Everything the controller needs to run. Build with ``load_config`` or ``from_mapping``."""

    #: Our identity, used to stamp Cinder volumes (metadata ``netvol.io/cluster``); required.
    cluster_id: str
    #: Named clouds; a StorageClass parameter ``cloud`` picks one by name.
    clouds: Mapping[str, CloudConfig]
    #: The cloud for classes without a ``cloud`` parameter.
    default_cloud: str
    #: StorageClass ``provisioner`` value we serve.
    provisioner_name: str = names.DEFAULT_PROVISIONER_NAME
    #: Namespace the provisioner runs in (its Lease lives here).
    namespace: str = "cinder-provisioner"
    #: Where provisioner-owned Secrets (CHAP, cephx) are written; defaults to ``namespace``.
    secret_namespace: str = "cinder-provisioner"  # noqa: S105 - a namespace name, not a secret
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    #: Reconcile worker threads (twice the Cinder cap: a worker waits out its Cinder call).
    workers: int = 32
    #: Maximum Cinder HTTP calls in flight at once (per cloud).
    cinder_max_in_flight: int = 16
    #: Kubernetes client rate limit (queries per second, burst).
    kube_qps: float = 200.0
    kube_burst: int = 400
    #: host:port for /metrics, /healthz and /readyz.
    metrics_bind_address: str = "0.0.0.0:8080"
    #: Give up waiting (Warning event, keep retrying slowly) after this long in creating / deleting.
    create_deadline_seconds: float = 600.0
    delete_deadline_seconds: float = 600.0
    #: Volumes that went to ``error`` are deleted and re-created at most this many times.
    max_error_retries: int = 3
    #: A claim that failed for good (a typo'd volume type, a bad restore id) is retried this often.
    final_retry_seconds: float = 300.0
    #: A worker inside one reconcile step for longer makes ``/healthz`` fail (the kubelet restarts us).
    stuck_worker_seconds: float = 300.0
    #: A new leader whose caches have not synced by then releases the lease and exits 1.
    cache_sync_deadline_seconds: float = 300.0
    #: The leader's periodic audit (docs/audit.md): seconds between runs; 0 turns it off.
    audit_interval_seconds: float = 3600.0
    #: The periodic audit calls a transitional Cinder status older than this ``stuck``.
    audit_stuck_after_seconds: float = 3600.0
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    log_level: str = "info"

    def cloud(self, name: str | None) -> CloudConfig:
        """The cloud a StorageClass names (None/empty → the default). Unknown → ConfigError."""
        key = name or self.default_cloud
        try:
            return self.clouds[key]
        except KeyError:
            known = ", ".join(sorted(self.clouds))
            raise ConfigError("cloud", f"no cloud named {key!r} (known: {known})") from None

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
    ) -> ProvisionerConfig:
        """Validate an already merged mapping (file + env + overrides). ``env`` feeds ``OS_*`` clouds."""
        return _build(dict(data), env=env if env is not None else {}, base_dir=base_dir)


def load_config(
    path: str | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> ProvisionerConfig:
    """Read ``path`` (YAML, optional), apply ``CINDER_PROVISIONER_*`` env and dotted ``overrides``."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    base_dir: Path | None = None
    if path:
        loaded = load_file(path, field="config")
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError("config", f"{path} must hold a mapping at the top level")
        data = {str(k): v for k, v in (loaded or {}).items()}
        base_dir = Path(path).resolve().parent
    sources: dict[str, str] = {}
    for env_key, env_value in env.items():
        if env_key.startswith(ENV_PREFIX) and env_key != ENV_CONFIG:
            dotted = env_key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_dotted(data, dotted, env_value)
            sources[dotted] = env_key
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
        sources[key] = f"--set {key}"
    try:
        return _build(data, env=env, base_dir=base_dir)
    except ConfigError as e:
        source = _source_of(e.field, sources)
        if source is None:
            raise
        raise ConfigError(e.field, f"{e.message} (set by {source})") from None


def _source_of(field_name: str, sources: Mapping[str, str]) -> str | None:
    """Which environment variable or ``--set`` gave ``field_name`` (or a section holding it)."""
    for key in sorted(sources, key=len, reverse=True):
        if field_name == key or field_name.startswith(key + "."):
            return sources[key]
    return None


def parse_set_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["workers=4", "leader_election.enabled=false"]`` → dict; a malformed item → ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"expected key=value, got {_shown(item)}")
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError("--set", f"{_shown(key)} has an empty part between dots")
        out[key] = value
    return out


def _shown(text: str) -> str:
    """A short printable rendering; the value part of a ``--set`` may be a secret, so only the key."""
    key = text.partition("=")[0]
    return ascii(key if len(key) <= 60 else key[:57] + "...") + (" (=…)" if "=" in text else "")


def _set_dotted(data: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
        node = child
    node[parts[-1]] = value


# --- validation -----------------------------------------------------------------------------------


def _int(data: Mapping[str, Any], key: str, default: int, *, lo: int, hi: int, prefix: str = "") -> int:
    return strict_int(data.get(key, default), prefix + key, lo=lo, hi=hi)


def _float(
    data: Mapping[str, Any], key: str, default: float, *, lo: float, hi: float = 86_400.0, prefix: str = ""
) -> float:
    return finite_float(data.get(key, default), prefix + key, lo=lo, hi=hi)


def _bool(data: Mapping[str, Any], key: str, default: bool, *, prefix: str = "") -> bool:
    raw = data.get(key, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    shown = ascii(raw) if isinstance(raw, str) and len(raw) <= 20 else type(raw).__name__
    raise ConfigError(prefix + key, f"must be true or false, not {shown}")


def _str(data: Mapping[str, Any], key: str, default: str | None, *, prefix: str = "") -> str:
    """A string setting; integers are taken as written, fractions refused (``1.10`` would read ``1.1``)."""
    raw = data.get(key, default)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ConfigError(prefix + key, "is required")
    if isinstance(raw, float):
        raise ConfigError(prefix + key, "must be a string: quote it in YAML (unquoted it reads as a number)")
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ConfigError(prefix + key, f"must be a string, not {_kind(raw)}")
    text = str(raw).strip()
    if _CONTROL.search(text):
        raise ConfigError(prefix + key, "must not contain control characters (newline, tab, NUL …)")
    if len(text) > 253:
        raise ConfigError(prefix + key, "is longer than 253 characters")
    return text


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", bool: "true/false"}.get(type(value), type(value).__name__)


def _section(data: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    raw = data.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(key, f"must be a mapping, not {_kind(raw)}")
    for k in raw:
        if k not in allowed:
            raise ConfigError(f"{key}.{shown_key(k)}", "unknown setting")
    return dict(raw)


def _bind_address(address: str) -> str:
    """``host:port`` / ``[v6]:port`` / ``:port`` with a port in 0..65535 and a plausible host."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("metrics_bind_address", f"expected host:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError("metrics_bind_address", f"{host!r} is not an IPv6 address") from None
    elif host and not _HOSTNAME.match(host):
        raise ConfigError("metrics_bind_address", f"{host!r} is not a host name or address")
    return address


_TOP_KEYS = set(ProvisionerConfig.__dataclass_fields__)


def _build(data: dict[str, Any], *, env: Mapping[str, str], base_dir: Path | None) -> ProvisionerConfig:
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(shown_key(key), "unknown setting")
    cluster_id = _str(data, "cluster_id", None)
    if not _CLUSTER_ID.match(cluster_id):
        raise ConfigError("cluster_id", "1-63 characters: letters, digits, '.', '_', '-'")
    provisioner_name = _str(data, "provisioner_name", names.DEFAULT_PROVISIONER_NAME)
    if not _PROVISIONER_NAME.match(provisioner_name):
        raise ConfigError("provisioner_name", "1-63 characters: letters, digits, '-', '_', '.', '/'")
    namespace = _str(data, "namespace", "cinder-provisioner")
    secret_namespace = _str(data, "secret_namespace", namespace)
    for key, ns in (("namespace", namespace), ("secret_namespace", secret_namespace)):
        if not _DNS_LABEL.match(ns):
            raise ConfigError(key, f"{ns!r} is not a valid namespace name")

    clouds = _clouds(data, env=env, base_dir=base_dir)
    default_cloud = data.get("default_cloud")
    if default_cloud is not None and not isinstance(default_cloud, str):
        raise ConfigError("default_cloud", f"must be the name of a cloud, not {_kind(default_cloud)}")
    if default_cloud is None:
        if len(clouds) > 1:
            raise ConfigError("default_cloud", f"required with several clouds ({', '.join(sorted(clouds))})")
        default_cloud = next(iter(clouds))
    if default_cloud not in clouds:
        raise ConfigError("default_cloud", f"{default_cloud!r} is not one of the configured clouds")

    c = _section(data, "connector", {"host", "ip", "initiator", "multipath"})
    connector = ConnectorConfig(
        host=_str(c, "host", platform.node() or "cinder-provisioner", prefix="connector."),
        ip=_str(c, "ip", "127.0.0.1", prefix="connector."),
        initiator=_str(c, "initiator", DEFAULT_INITIATOR, prefix="connector."),
        multipath=_bool(c, "multipath", False, prefix="connector."),
    )
    if not _IQN.match(connector.initiator) or len(connector.initiator) > 223:
        raise ConfigError("connector.initiator", f"{connector.initiator!r} is not an iSCSI name (iqn.…)")
    if not _HOSTNAME.match(connector.host):
        raise ConfigError("connector.host", "must be a host name: letters, digits, '-', '_', '.'")
    try:
        ipaddress.ip_address(connector.ip)
    except ValueError:
        raise ConfigError("connector.ip", f"{connector.ip!r} is not an IPv4 or IPv6 address") from None

    le = _section(
        data, "leader_election", {"enabled", "lease_name", "lease_duration", "renew_deadline", "retry_period"}
    )
    p = "leader_election."
    leader = LeaderElectionConfig(
        enabled=_bool(le, "enabled", True, prefix=p),
        lease_name=_str(le, "lease_name", "cinder-provisioner", prefix=p),
        lease_duration=_float(le, "lease_duration", 15.0, lo=0.1, hi=3600.0, prefix=p),
        renew_deadline=_float(le, "renew_deadline", 10.0, lo=0.1, hi=3600.0, prefix=p),
        retry_period=_float(le, "retry_period", 2.0, lo=0.05, hi=3600.0, prefix=p),
    )
    if not _SUBDOMAIN.match(leader.lease_name):
        raise ConfigError(p + "lease_name", f"{leader.lease_name!r} is not a valid Lease name")
    if not leader.lease_duration > leader.renew_deadline:
        raise ConfigError(p + "lease_duration", "must be greater than leader_election.renew_deadline")
    if not leader.renew_deadline > 1.2 * leader.retry_period:
        raise ConfigError(p + "renew_deadline", "must be greater than 1.2 x leader_election.retry_period")

    kube_qps = _float(data, "kube_qps", 200.0, lo=0.1, hi=100_000.0)
    kube_burst = _int(data, "kube_burst", 400, lo=1, hi=100_000)
    if kube_burst < kube_qps:
        raise ConfigError("kube_burst", f"must be ≥ kube_qps ({kube_qps:g})")
    address = _bind_address(_str(data, "metrics_bind_address", "0.0.0.0:8080"))
    log_level = _str(data, "log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    return ProvisionerConfig(
        cluster_id=cluster_id,
        clouds=clouds,
        default_cloud=str(default_cloud),
        provisioner_name=provisioner_name,
        namespace=namespace,
        secret_namespace=secret_namespace,
        connector=connector,
        workers=_int(data, "workers", 32, lo=1, hi=512),
        cinder_max_in_flight=_int(data, "cinder_max_in_flight", 16, lo=1, hi=1024),
        kube_qps=kube_qps,
        kube_burst=kube_burst,
        metrics_bind_address=address,
        create_deadline_seconds=_float(data, "create_deadline_seconds", 600.0, lo=1.0, hi=7 * 86_400.0),
        delete_deadline_seconds=_float(data, "delete_deadline_seconds", 600.0, lo=1.0, hi=7 * 86_400.0),
        max_error_retries=_int(data, "max_error_retries", 3, lo=0, hi=100),
        final_retry_seconds=_float(data, "final_retry_seconds", 300.0, lo=1.0, hi=86_400.0),
        stuck_worker_seconds=_float(data, "stuck_worker_seconds", 300.0, lo=10.0, hi=86_400.0),
        cache_sync_deadline_seconds=_float(data, "cache_sync_deadline_seconds", 300.0, lo=10.0, hi=86_400.0),
        audit_interval_seconds=_audit_interval(data),
        audit_stuck_after_seconds=_float(data, "audit_stuck_after_seconds", 3600.0, lo=1.0, hi=30 * 86_400.0),
        leader_election=leader,
        log_level=log_level,
    )


def _audit_interval(data: Mapping[str, Any]) -> float:
    """0 (off) or at least a minute: the audit lists every volume and PV, so it is rate-limited."""
    value = _float(data, "audit_interval_seconds", 3600.0, lo=0.0, hi=7 * 86_400.0)
    if 0 < value < 60:
        raise ConfigError("audit_interval_seconds", f"must be 0 (off) or at least 60, not {value:g}")
    return value


def _clouds(
    data: Mapping[str, Any], *, env: Mapping[str, str], base_dir: Path | None
) -> dict[str, CloudConfig]:
    raw = data.get("clouds")
    if raw is None:
        if not any(k.startswith("OS_") for k in env):
            raise ConfigError("clouds", "no cloud configured: set clouds in the file, OS_CLOUD or OS_*")
        name = env.get("OS_CLOUD") or "default"
        return {name: cloud_from_env(name, env, prefix=f"clouds.{name}")}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("clouds", "must be a non-empty mapping of cloud name → settings")
    clouds: dict[str, CloudConfig] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("clouds", f"cloud names must be non-empty strings, not {shown_key(name)}")
        if shown_key(name) != name:
            raise ConfigError(
                "clouds", f"cloud name {shown_key(name)} must be printable, without spaces, ≤ 64 characters"
            )
        clouds[name] = parse_cloud(name, entry, env=env, base_dir=base_dir)
    return clouds
