"""OpenStack clouds and their credentials: ``CloudConfig`` and the readers that build it.

Why a module of its own: credentials come from three places (an inline entry in the provisioner config, a
named cloud in a ``clouds.yaml``, or the ``OS_*`` environment) and must be validated *at start*, with one
line that names the bad setting, instead of failing on the first Cinder call minutes later. The option
names and which of them are secret come from keystoneauth1's own plugin loaders
(``keystoneauth1.loading.get_plugin_loader``), so we accept exactly what keystoneauth accepts and never
keep a second list that drifts. ``keystoneauth1.loading`` only describes options; no I/O happens here (the
session is built in ``provisioner/adapters/cinder/session.py``).

Supported ``auth_type`` values:

* ``password`` (keystone v2/v3 generic password), ``v3password``
* ``v3applicationcredential`` (alias ``application_credential``)
* ``token`` (a pre-issued Keystone token), ``v3token``
* ``admin_token`` (alias ``noauth``): no Keystone at all; an explicit Cinder ``endpoint`` and a fixed
  ``token``. For Cinder running with ``auth_strategy = noauth`` the token is ``<user>:<project_id>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keystoneauth1 import loading

from provisioner.config.documents import DocumentError, load_yaml, read_text, shown_key
from provisioner.domain.errors import ConfigError
from provisioner.domain.numbers import finite_float

#: Our spelling → keystoneauth1 loader name.
AUTH_TYPE_ALIASES: Mapping[str, str] = {
    "noauth": "admin_token",
    "application_credential": "v3applicationcredential",
    "v3applicationcredential": "v3applicationcredential",
    "password": "password",
    "v3password": "v3password",
    "token": "token",
    "v3token": "v3token",
    "admin_token": "admin_token",
}
INTERFACES = ("public", "internal", "admin")
#: Where a ``clouds.yaml`` is looked for when none is named (the openstacksdk order).
CLOUDS_YAML_SEARCH = (
    "./clouds.yaml",
    "~/.config/openstack/clouds.yaml",
    "/etc/openstack/clouds.yaml",
)
_REDACTED = "<redacted>"
#: Options whose values are URLs keystoneauth or the Cinder client will connect to.
_URL_OPTIONS = ("auth_url", "endpoint")
_MICROVERSION = re.compile(r"3\.[0-9]{1,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudConfig:
    """One OpenStack cloud the provisioner may create volumes in (a StorageClass picks it by ``name``)."""

    #: The name StorageClasses use in their ``cloud`` parameter.
    name: str
    #: keystoneauth1 loader name (``password``, ``v3applicationcredential``, ``token``, ``admin_token``).
    auth_type: str
    #: Options for that loader (``auth_url``, ``username``, ``password``, ``endpoint``, ``token`` ...).
    #: Holds secrets: excluded from ``repr``; use ``redacted_auth()`` to show it.
    auth: Mapping[str, str] = field(repr=False, default_factory=dict)
    #: Catalog region; None = whatever the catalog offers first.
    region_name: str | None = None
    #: Catalog interface: public, internal or admin.
    interface: str = "public"
    #: CA bundle file for TLS verification (Keystone and Cinder).
    cacert: str | None = None
    #: Skip TLS verification (never in production; contradicts ``cacert``).
    insecure: bool = False
    #: Use this Cinder endpoint instead of the catalog's (Keystone still authenticates).
    endpoint_override: str | None = None
    #: Per-request HTTP timeout.
    timeout_seconds: float = 30.0
    #: Never negotiate a microversion above this (e.g. "3.44"); None = the highest both sides support.
    max_microversion: str | None = None

    @property
    def no_auth(self) -> bool:
        """True when Cinder is reached without Keystone (explicit endpoint + fixed token)."""
        return self.auth_type == "admin_token"

    def redacted_auth(self) -> dict[str, str]:
        """The auth options with every secret replaced: safe to log or print."""
        secret = _secret_option_names(self.auth_type)
        return {k: (_REDACTED if k in secret else v) for k, v in self.auth.items()}


def _loader_options(auth_type: str, field_name: str) -> list[Any]:
    try:
        options: list[Any] = loading.get_plugin_loader(auth_type).get_options()
    except Exception as e:  # keystoneauth raises NoMatchingPlugin; never let it out
        raise ConfigError(field_name, f"unknown auth_type {auth_type!r}") from e
    return options


def _secret_option_names(auth_type: str) -> set[str]:
    try:
        options = _loader_options(auth_type, "auth_type")
    except ConfigError:
        return set()
    return {o.dest for o in options if o.secret} | {"password", "token", "application_credential_secret"}


def _canonical_auth_type(raw: object, field_name: str) -> str:
    if not isinstance(raw, str) or raw not in AUTH_TYPE_ALIASES:
        choices = ", ".join(sorted(AUTH_TYPE_ALIASES))
        raise ConfigError(field_name, f"unknown auth_type {raw!r} (one of: {choices})")
    return AUTH_TYPE_ALIASES[raw]


def _check_auth(auth_type: str, auth: Mapping[str, str], prefix: str) -> None:
    """Unknown options and missing credentials → ConfigError naming ``<prefix>.auth.<option>``."""
    options = _loader_options(auth_type, f"{prefix}.auth_type")
    known = {o.dest for o in options} | {d.dest for o in options for d in o.deprecated}
    for key in auth:
        if key not in known:
            raise ConfigError(f"{prefix}.auth.{shown_key(key)}", f"not an option of auth_type {auth_type}")
    for o in options:
        if o.required and not auth.get(o.dest):
            raise ConfigError(f"{prefix}.auth.{o.dest}", f"required for auth_type {auth_type}")

    def need(key: str, why: str) -> None:
        if not auth.get(key):
            raise ConfigError(f"{prefix}.auth.{key}", why)

    if auth_type in ("password", "v3password"):
        need("password", f"required for auth_type {auth_type}")
        if not (auth.get("username") or auth.get("user_id")):
            raise ConfigError(f"{prefix}.auth.username", "username or user_id is required")
    elif auth_type == "v3applicationcredential":
        need("application_credential_secret", "required for application credentials")
        if not auth.get("application_credential_id"):
            need("application_credential_name", "application_credential_id or _name is required")
            if not (auth.get("username") or auth.get("user_id")):
                raise ConfigError(
                    f"{prefix}.auth.username", "a credential given by name needs username or user_id"
                )
    elif auth_type in ("token", "v3token"):
        need("token", "required for token auth")
    elif auth_type == "admin_token":
        need("endpoint", "no-auth mode needs the Cinder endpoint (…/v3/<project_id>)")
        need("token", "no-auth mode needs a token (for Cinder noauth: <user>:<project_id>)")
        if not str(auth["endpoint"]).startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.auth.endpoint", "must be an http(s) URL")


def _as_str_map(value: object, field_name: str, *, secret: frozenset[str] = frozenset()) -> dict[str, str]:
    """A mapping of option → string. Values are never echoed in errors (some of them are secrets).

    Integers are taken as written (``project_id: 1234``) except for the options in ``secret``, where YAML's
    reading of a bare number can change it (``0777`` is 511, ``1_000`` is 1000): those must be quoted.
    Fractions are refused everywhere for the same reason (``1.10`` would become ``1.1``).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, f"must be a mapping, not {_kind(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        key = f"{field_name}.{shown_key(k)}"
        if v is None:
            continue
        if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and str(k) in secret):
            raise ConfigError(
                key, "must be a string: quote it in YAML (a bare number may be read differently)"
            )
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise ConfigError(key, f"must be a string, not {_kind(v)}")
        text = str(v)
        if _CONTROL.search(text):
            raise ConfigError(key, "must not contain control characters (newline, tab, NUL …)")
        out[str(k)] = text
    return out


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", bool: "true/false"}.get(type(value), type(value).__name__)


def _check_url(value: str, field_name: str) -> str:
    """An ``http(s)://host[:port]/…`` URL, else ``ConfigError`` (``auth_url: keystone`` has no scheme)."""
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(
            field_name, "must be an http:// or https:// URL with a host (e.g. https://keystone:5000/v3)"
        )
    if any(c.isspace() for c in value):
        raise ConfigError(field_name, "must not contain whitespace")
    return value


def _optional_str(entry: Mapping[str, Any], key: str, prefix: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{prefix}.{key}", f"must be a string, not {_kind(value)}")
    if _CONTROL.search(value):
        raise ConfigError(f"{prefix}.{key}", "must not contain control characters")
    return value


def _check_cacert(path: str, field_name: str) -> str:
    """The CA bundle must exist and be readable now, not on the first TLS handshake minutes later."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            field_name, f"{path!r} is not a file" if file.exists() else f"{path!r} does not exist"
        )
    if not os.access(file, os.R_OK):
        raise ConfigError(field_name, f"{path!r} is not readable")
    return str(file)


def _microversion(raw: object, field_name: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, float | int) and not isinstance(raw, bool):
        raise ConfigError(
            field_name,
            f'must be a quoted string such as "3.50": unquoted, YAML reads {raw!r} as a number '
            f"(3.50 becomes 3.5, another microversion)",
        )
    if not isinstance(raw, str) or not _MICROVERSION.fullmatch(raw.strip()):
        raise ConfigError(field_name, 'must look like "3.N" (a quoted string, e.g. "3.44")')
    return raw.strip()


def _as_bool(value: object, field_name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(field_name, f"must be true or false, not {value!r}")


_CLOUD_KEYS = {
    "auth_type",
    "auth",
    "region_name",
    "interface",
    "cacert",
    "insecure",
    "verify",
    "endpoint_override",
    "timeout_seconds",
    "max_microversion",
}


def cloud_from_entry(name: str, entry: Mapping[str, Any], *, prefix: str, strict: bool = True) -> CloudConfig:
    """Build a CloudConfig from a clouds.yaml-shaped entry (``auth_type``, ``auth``, ``region_name``…).

    ``strict`` rejects unknown top-level keys (our own config); a real clouds.yaml carries keys for other
    tools, which are ignored.
    """
    if strict:
        for key in entry:
            if key not in _CLOUD_KEYS:
                raise ConfigError(f"{prefix}.{shown_key(key)}", "unknown setting")
    raw_auth = entry.get("auth")
    raw_type = entry.get("auth_type")
    if raw_type is None:
        has_secret = isinstance(raw_auth, Mapping) and "application_credential_secret" in raw_auth
        raw_type = "v3applicationcredential" if has_secret else "password"
    auth_type = _canonical_auth_type(raw_type, f"{prefix}.auth_type")
    secret = frozenset(_secret_option_names(auth_type))
    auth = _as_str_map(raw_auth, f"{prefix}.auth", secret=secret)
    _check_auth(auth_type, auth, prefix)
    for key in _URL_OPTIONS:
        if auth.get(key):
            _check_url(auth[key], f"{prefix}.auth.{key}")
    interface = (_optional_str(entry, "interface", prefix) or "public").removesuffix("URL")
    if interface not in INTERFACES:
        raise ConfigError(f"{prefix}.interface", f"must be one of {', '.join(INTERFACES)}")
    insecure = _as_bool(entry.get("insecure", False), f"{prefix}.insecure")
    if "verify" in entry:
        insecure = insecure or not _as_bool(entry["verify"], f"{prefix}.verify")
    cacert = _optional_str(entry, "cacert", prefix)
    if cacert is not None and insecure:
        raise ConfigError(f"{prefix}.insecure", "contradicts cacert: either verify with a CA or do not")
    if cacert is not None:
        cacert = _check_cacert(cacert, f"{prefix}.cacert")
    timeout_f = finite_float(
        entry.get("timeout_seconds", 30.0), f"{prefix}.timeout_seconds", lo=0.001, hi=3600
    )
    max_mv = _microversion(entry.get("max_microversion"), f"{prefix}.max_microversion")
    endpoint_override = _optional_str(entry, "endpoint_override", prefix)
    if auth_type == "admin_token" and endpoint_override:
        raise ConfigError(f"{prefix}.endpoint_override", "no-auth mode takes its endpoint from auth.endpoint")
    if endpoint_override is not None:
        _check_url(endpoint_override, f"{prefix}.endpoint_override")
    return CloudConfig(
        name=name,
        auth_type=auth_type,
        auth=auth,
        region_name=_optional_str(entry, "region_name", prefix),
        interface=interface,
        cacert=cacert,
        insecure=insecure,
        endpoint_override=endpoint_override,
        timeout_seconds=timeout_f,
        max_microversion=max_mv,
    )


def read_clouds_yaml(path: str | None, cloud: str, *, prefix: str, env: Mapping[str, str]) -> CloudConfig:
    """The named ``cloud`` from a clouds.yaml (``path``, else OS_CLIENT_CONFIG_FILE, else the search path).

    A ``secure.yaml`` next to it (the openstacksdk convention for keeping passwords apart) is merged in.
    """
    candidates = [path] if path else [env.get("OS_CLIENT_CONFIG_FILE") or "", *CLOUDS_YAML_SEARCH]
    found = next((Path(c).expanduser() for c in candidates if c and Path(c).expanduser().is_file()), None)
    if found is None:
        where = path or ", ".join(c for c in candidates if c)
        raise ConfigError(f"{prefix}.clouds_yaml", f"no clouds.yaml found ({where})")
    secure_path = found.with_name("secure.yaml")
    doc = _clouds_document(found, f"{prefix}.clouds_yaml")
    secure = _clouds_document(secure_path, f"{prefix}.clouds_yaml") if secure_path.is_file() else {}
    where = f"{prefix}(clouds.yaml:{cloud})"
    entries = doc.get("clouds")
    if entries is not None and not isinstance(entries, Mapping):
        raise ConfigError(
            f"{prefix}.clouds_yaml", f"'clouds' in {found} must be a mapping of cloud name → settings"
        )
    if not isinstance(entries, Mapping) or cloud not in entries:
        raise ConfigError(f"{prefix}.cloud", f"cloud {cloud!r} not found in {found}")
    entry = _entry_mapping(entries[cloud], where)
    secure_clouds = secure.get("clouds")
    secure_entry = _entry_mapping(
        secure_clouds.get(cloud) if isinstance(secure_clouds, Mapping) else None,
        f"{prefix}(secure.yaml:{cloud})",
    )
    if secure_entry:
        auth = {
            **_entry_mapping(entry.get("auth"), f"{where}.auth"),
            **_entry_mapping(secure_entry.get("auth"), f"{prefix}(secure.yaml:{cloud}).auth"),
        }
        entry = {**entry, **{k: v for k, v in secure_entry.items() if k != "auth"}, "auth": auth}
    known = {k: v for k, v in entry.items() if k in _CLOUD_KEYS}
    return cloud_from_entry(cloud, known, prefix=where, strict=False)


def _clouds_document(path: Path, field_name: str) -> Mapping[str, Any]:
    """A clouds.yaml / secure.yaml document: a mapping (empty file = empty mapping)."""
    try:
        doc = load_yaml(read_text(path), source=str(path))
    except DocumentError as e:
        raise ConfigError(field_name, str(e)) from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(field_name, f"{path} must hold a mapping at the top level")
    return doc


def _entry_mapping(value: object, field_name: str) -> dict[str, Any]:
    """A cloud entry (or its ``auth``) as found in clouds.yaml: a mapping, or absent."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, f"must be a mapping, not {_kind(value)}")
    return {str(k): v for k, v in value.items()}


def cloud_from_env(name: str, env: Mapping[str, str], *, prefix: str) -> CloudConfig:
    """A cloud from ``OS_*`` variables: every keystoneauth option ``x_y`` is read from ``OS_X_Y``."""
    if env.get("OS_CLOUD"):
        return read_clouds_yaml(None, env["OS_CLOUD"], prefix=prefix, env=env)
    raw_type = env.get("OS_AUTH_TYPE")
    if raw_type is None:
        if env.get("OS_APPLICATION_CREDENTIAL_SECRET"):
            raw_type = "v3applicationcredential"
        elif env.get("OS_TOKEN") and not env.get("OS_AUTH_URL"):
            raw_type = "admin_token"
        elif env.get("OS_TOKEN"):
            raw_type = "token"
        else:
            raw_type = "password"
    auth_type = _canonical_auth_type(raw_type, "OS_AUTH_TYPE")
    auth: dict[str, str] = {}
    for opt in _loader_options(auth_type, "OS_AUTH_TYPE"):
        for dest in (opt.dest, *(d.dest for d in opt.deprecated)):
            value = env.get("OS_" + dest.upper())
            if value:
                auth.setdefault(opt.dest, value)
    entry: dict[str, Any] = {"auth_type": auth_type, "auth": auth}
    for key, var in (
        ("region_name", "OS_REGION_NAME"),
        ("interface", "OS_INTERFACE"),
        ("cacert", "OS_CACERT"),
        ("insecure", "OS_INSECURE"),
    ):
        if env.get(var):
            entry[key] = env[var]
    if auth_type == "admin_token" and "endpoint" not in auth and env.get("OS_VOLUME_ENDPOINT"):
        auth["endpoint"] = env["OS_VOLUME_ENDPOINT"]
    return cloud_from_entry(name, entry, prefix=f"{prefix}(OS_*)")


def parse_cloud(name: str, raw: object, *, env: Mapping[str, str], base_dir: Path | None) -> CloudConfig:
    """One entry under ``clouds:`` in the provisioner config (see docs/configuration.md)."""
    prefix = f"clouds.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix, f"must be a mapping, not {_kind(raw)}")
    entry = {str(k): v for k, v in raw.items()}
    if _as_bool(entry.pop("from_env", False), f"{prefix}.from_env"):
        if entry:
            raise ConfigError(f"{prefix}.from_env", f"cannot be combined with {', '.join(sorted(entry))}")
        return cloud_from_env(name, env, prefix=prefix)
    if "clouds_yaml" in entry or "cloud" in entry:
        path = entry.pop("clouds_yaml", None)
        cloud = entry.pop("cloud", None)
        if not cloud:
            raise ConfigError(f"{prefix}.cloud", "name of the cloud in clouds.yaml is required")
        if not isinstance(cloud, str):
            raise ConfigError(f"{prefix}.cloud", f"must be a string, not {_kind(cloud)}")
        if path is not None and not isinstance(path, str):
            raise ConfigError(f"{prefix}.clouds_yaml", f"must be a path, not {_kind(path)}")
        if path and base_dir is not None and not os.path.isabs(str(path)):
            path = str(base_dir / str(path))
        base = read_clouds_yaml(str(path) if path else None, str(cloud), prefix=prefix, env=env)
        if "auth" in entry or "auth_type" in entry:
            raise ConfigError(f"{prefix}.auth", "credentials come from clouds.yaml; do not repeat them here")
        merged: dict[str, Any] = {
            "auth_type": base.auth_type,
            "auth": dict(base.auth),
            "region_name": base.region_name,
            "interface": base.interface,
            "cacert": base.cacert,
            "insecure": base.insecure,
            "endpoint_override": base.endpoint_override,
            "timeout_seconds": base.timeout_seconds,
            "max_microversion": base.max_microversion,
        }
        merged.update(entry)
        return cloud_from_entry(name, merged, prefix=prefix)
    # inline; no-auth shorthand: endpoint + token at the top level
    if "endpoint" in entry or "token" in entry:
        auth_type = entry.pop("auth_type", "admin_token")
        auth = {"endpoint": entry.pop("endpoint", None), "token": entry.pop("token", None)}
        entry = {**entry, "auth_type": auth_type, "auth": {k: v for k, v in auth.items() if v}}
    return cloud_from_entry(name, entry, prefix=prefix)
