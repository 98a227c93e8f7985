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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keystoneauth1 import loading

from provisioner.domain.errors import ConfigError

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
            raise ConfigError(f"{prefix}.auth.{key}", f"not an option of auth_type {auth_type}")
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


def _as_str_map(value: object, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, "must be a mapping")
    out: dict[str, str] = {}
    for k, v in value.items():
        if v is None:
            continue
        if isinstance(v, bool | dict | list):
            raise ConfigError(f"{field_name}.{k}", "must be a string")
        out[str(k)] = str(v)
    return out


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
                raise ConfigError(f"{prefix}.{key}", "unknown setting")
    auth = _as_str_map(entry.get("auth"), f"{prefix}.auth")
    raw_type = entry.get("auth_type")
    if raw_type is None:
        raw_type = "v3applicationcredential" if "application_credential_secret" in auth else "password"
    auth_type = _canonical_auth_type(raw_type, f"{prefix}.auth_type")
    _check_auth(auth_type, auth, prefix)
    interface = str(entry.get("interface") or "public").removesuffix("URL")
    if interface not in INTERFACES:
        raise ConfigError(f"{prefix}.interface", f"must be one of {', '.join(INTERFACES)}")
    insecure = _as_bool(entry.get("insecure", False), f"{prefix}.insecure")
    if "verify" in entry:
        insecure = insecure or not _as_bool(entry["verify"], f"{prefix}.verify")
    cacert = entry.get("cacert") or None
    if cacert is not None and insecure:
        raise ConfigError(f"{prefix}.insecure", "contradicts cacert: either verify with a CA or do not")
    timeout = entry.get("timeout_seconds", 30.0)
    try:
        timeout_f = float(timeout)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix}.timeout_seconds", "must be a number") from e
    if timeout_f <= 0:
        raise ConfigError(f"{prefix}.timeout_seconds", "must be > 0")
    max_mv = entry.get("max_microversion")
    if max_mv is not None and not _is_microversion(str(max_mv)):
        raise ConfigError(f"{prefix}.max_microversion", "must look like 3.N")
    endpoint_override = entry.get("endpoint_override") or None
    if auth_type == "admin_token" and endpoint_override:
        raise ConfigError(f"{prefix}.endpoint_override", "no-auth mode takes its endpoint from auth.endpoint")
    return CloudConfig(
        name=name,
        auth_type=auth_type,
        auth=auth,
        region_name=(str(entry["region_name"]) if entry.get("region_name") else None),
        interface=interface,
        cacert=str(cacert) if cacert else None,
        insecure=insecure,
        endpoint_override=str(endpoint_override) if endpoint_override else None,
        timeout_seconds=timeout_f,
        max_microversion=str(max_mv) if max_mv is not None else None,
    )


def _is_microversion(text: str) -> bool:
    major, _, minor = text.partition(".")
    return major == "3" and minor.isdigit()


def read_clouds_yaml(path: str | None, cloud: str, *, prefix: str, env: Mapping[str, str]) -> CloudConfig:
    """The named ``cloud`` from a clouds.yaml (``path``, else OS_CLIENT_CONFIG_FILE, else the search path).

    A ``secure.yaml`` next to it (the openstacksdk convention for keeping passwords apart) is merged in.
    """
    import yaml

    candidates = [path] if path else [env.get("OS_CLIENT_CONFIG_FILE") or "", *CLOUDS_YAML_SEARCH]
    found = next((Path(c).expanduser() for c in candidates if c and Path(c).expanduser().is_file()), None)
    if found is None:
        where = path or ", ".join(c for c in candidates if c)
        raise ConfigError(f"{prefix}.clouds_yaml", f"no clouds.yaml found ({where})")
    try:
        doc = yaml.safe_load(found.read_text(encoding="utf-8")) or {}
        secure_path = found.with_name("secure.yaml")
        secure = yaml.safe_load(secure_path.read_text(encoding="utf-8")) if secure_path.is_file() else {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{prefix}.clouds_yaml", f"cannot read {found}: {type(e).__name__}") from e
    entries = doc.get("clouds") if isinstance(doc, Mapping) else None
    if not isinstance(entries, Mapping) or cloud not in entries:
        raise ConfigError(f"{prefix}.cloud", f"cloud {cloud!r} not found in {found}")
    entry = dict(entries[cloud])
    secure_entry = (secure or {}).get("clouds", {}).get(cloud, {}) if isinstance(secure, Mapping) else {}
    if isinstance(secure_entry, Mapping):
        auth = {**(entry.get("auth") or {}), **(secure_entry.get("auth") or {})}
        entry = {**entry, **{k: v for k, v in secure_entry.items() if k != "auth"}, "auth": auth}
    known = {k: v for k, v in entry.items() if k in _CLOUD_KEYS}
    return cloud_from_entry(cloud, known, prefix=f"{prefix}(clouds.yaml:{cloud})", strict=False)


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
        raise ConfigError(prefix, "must be a mapping")
    entry = dict(raw)
    if entry.pop("from_env", False):
        if entry:
            raise ConfigError(f"{prefix}.from_env", f"cannot be combined with {', '.join(sorted(entry))}")
        return cloud_from_env(name, env, prefix=prefix)
    if "clouds_yaml" in entry or "cloud" in entry:
        path = entry.pop("clouds_yaml", None)
        cloud = entry.pop("cloud", None)
        if not cloud:
            raise ConfigError(f"{prefix}.cloud", "name of the cloud in clouds.yaml is required")
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
