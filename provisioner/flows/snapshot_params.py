"""VolumeSnapshotClass ``parameters`` for our driver, parsed once into a typed record (pure).

| parameter | default | meaning |
|---|---|---|
| ``type`` | ``snapshot`` | ``snapshot``: a Cinder snapshot; ``backup``: a Cinder backup (backup service) |
| ``force-create`` | ``false`` | snapshot an ``in-use`` volume (before 3.66 Cinder needs ``force``) |
| ``incremental`` | ``false`` | backups only: incremental when a previous backup of the volume exists |
| ``cloud`` | the PV's cloud | the configured cloud the source volume lives in |

``csi.storage.k8s.io/*`` keys (the CSI sidecar's secret parameters) are accepted and ignored; any other key
is refused naming it, so a typo never silently changes what a snapshot is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from provisioner.domain.errors import InvalidInput

SnapshotKind = Literal["snapshot", "backup"]
KNOWN = frozenset({"type", "force-create", "incremental", "cloud"})
SIDECAR_PREFIX = "csi.storage.k8s.io/"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotParams:
    """What a VolumeSnapshotClass of our driver asks for."""

    kind: SnapshotKind = "snapshot"
    force: bool = False
    incremental: bool = False
    cloud: str | None = None


def _boolean(key: str, value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", ""):
        return False
    raise InvalidInput(f"parameters.{key}", f"must be true or false, not {value!r}")


def parse_snapshot_parameters(raw: Mapping[str, Any] | None) -> SnapshotParams:
    """The typed parameters; InvalidInput names the offending ``parameters.<key>``."""
    values = dict(raw or {})
    for key in sorted(values):
        if key not in KNOWN and not key.startswith(SIDECAR_PREFIX):
            raise InvalidInput(f"parameters.{key}", f"unknown parameter; known: {', '.join(sorted(KNOWN))}")
    kind = str(values.get("type", "snapshot")).strip().lower() or "snapshot"
    if kind not in ("snapshot", "backup"):
        raise InvalidInput("parameters.type", f"must be snapshot or backup, not {values['type']!r}")
    incremental = _boolean("incremental", values.get("incremental", "false"))
    if incremental and kind != "backup":
        raise InvalidInput("parameters.incremental", "only backups (type: backup) can be incremental")
    cloud = values.get("cloud")
    if cloud is not None and (not isinstance(cloud, str) or not cloud.strip()):
        raise InvalidInput("parameters.cloud", f"must be a configured cloud name, not {cloud!r}")
    return SnapshotParams(
        kind="backup" if kind == "backup" else "snapshot",
        force=_boolean("force-create", values.get("force-create", "false")),
        incremental=incremental,
        cloud=cloud.strip() if isinstance(cloud, str) else None,
    )
