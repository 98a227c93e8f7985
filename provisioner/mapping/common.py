"""Typed readers for Cinder connection-info fields, shared by the rbd and iscsi mappings.

Connection info is an open-ended dict written by whichever Cinder driver exported the volume. Every read
goes through these helpers so a wrong type or a missing value becomes ``InvalidInput`` naming the field
(``data.hosts``), never a ``KeyError``/``TypeError`` deep in the mapping. Error messages never quote a
value that could be secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """Key material a PV needs: values for a provisioner-owned Secret, or an admin Secret to reference.

    ``data`` holds plaintext secret values; ``repr=False`` keeps them out of any accidental log line.
    """

    secret_type: str
    data: Mapping[str, str] = field(default_factory=dict, repr=False)
    existing_name: str | None = None


def fname(key: str) -> str:
    """The user-facing name of a connection-info field."""
    return f"data.{key}"


def opt_str(data: Mapping[str, Any], key: str) -> str | None:
    """An optional string; empty counts as absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(fname(key), "must be a string")
    return value or None


def req_str(data: Mapping[str, Any], key: str) -> str:
    """A required, non-empty string."""
    value = opt_str(data, key)
    if value is None:
        raise InvalidInput(fname(key), "missing")
    return value


def opt_bool(data: Mapping[str, Any], key: str) -> bool:
    """An optional boolean (absent or null → False); Cinder sends JSON booleans."""
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(fname(key), "must be a boolean")
    return value


def opt_list(data: Mapping[str, Any], key: str) -> list[Any] | None:
    """An optional list (absent, null or empty → None)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise InvalidInput(fname(key), "must be a list")
    return list(value) or None


def as_int(value: Any, field_name: str, *, low: int, high: int) -> int:
    """An integer in [low, high]; digit strings are accepted (drivers differ)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field_name, "must be an integer")
    if not low <= value <= high:
        raise InvalidInput(field_name, f"must be between {low} and {high}")
    return value


def read_only(data: Mapping[str, Any]) -> bool:
    """``access_mode`` ``ro`` → read-only; ``rw`` or absent → read-write."""
    mode = opt_str(data, "access_mode")
    if mode is None or mode.lower() == "rw":
        return False
    if mode.lower() == "ro":
        return True
    raise InvalidInput(fname("access_mode"), "must be 'rw' or 'ro'")


def refuse_encrypted(data: Mapping[str, Any]) -> None:
    """Cinder front-end encryption needs LUKS keys from Barbican on the node: not supported."""
    if opt_bool(data, "encrypted"):
        raise InvalidInput(
            fname("encrypted"),
            "the volume type uses Cinder encryption, which this provisioner does not support; "
            "use an unencrypted volume type",
        )
