"""What the backup team's commands share: connections, references, waiting with progress, exit codes.

``snapshots``, ``snapshot create`` and ``restore`` talk to Kubernetes like kubectl (``--kubeconfig``,
``$KUBECONFIG``, ``~/.kube/config``, in-cluster) and to Cinder with the provisioner's own configuration
(``--config``, ``CINDER_PROVISIONER_*``), only for reads. Everything they change goes through Kubernetes
objects (a VolumeSnapshot, a claim), so the controller's guards apply to them exactly as to anyone else:
the CLI is never a side door into Cinder.

Exit codes: 0 done; 1 refused or failed (the Warning that stopped it is printed); 2 usage or configuration.
Progress goes to stderr, results to stdout (``-o json`` stays parseable).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from provisioner.domain import names
from provisioner.domain.errors import (
    CinderError,
    ConfigError,
    InvalidInput,
    KubeError,
    KubeNotFound,
)
from provisioner.ports import CinderPort

Obj = dict[str, Any]

ANN_RESTORE_FROM_BACKUP = names.ANN_RESTORE_FROM_BACKUP
SNAPSHOT_API = "snapshot.storage.k8s.io"
DEFAULT_SNAPSHOT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"
DEFAULT_STORAGE_CLASS = "storageclass.kubernetes.io/is-default-class"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class Usage(Exception):
    """The command line is wrong (exit 2)."""


class Refused(Exception):
    """The request was refused or failed (exit 1); the message says why."""


def parse_ref(text: str, what: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` → (namespace, name); ``Usage`` naming ``what`` otherwise."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise Usage(f"{what}: expected NAMESPACE/NAME, not {text[:80]!r}")
    for part in (namespace, name):
        if len(part) > 253 or not _NAME.match(part):
            raise Usage(f"{what}: {part[:80]!r} is not a Kubernetes object name")
    return namespace, name


def add_connection_options(p: argparse.ArgumentParser, *, cinder: bool = True) -> None:
    """``--kubeconfig`` (kubectl's rules) and, for commands that read Cinder, ``--config``."""
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    if cinder:
        p.add_argument(
            "--config",
            default=os.environ.get("CINDER_PROVISIONER_CONFIG"),
            help="the provisioner's config file (clouds, cluster_id; default $CINDER_PROVISIONER_CONFIG)",
        )


@dataclass
class Session:
    """The connections of one command run (Cinder opened only when a command needs it)."""

    kube: Any
    config_path: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time
    _config: Any = None
    _clouds: dict[str, CinderPort] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        """The provisioner configuration (``--config``, environment)."""
        if self._config is None:
            from provisioner.config.settings import load_config

            self._config = load_config(self.config_path)
        return self._config

    def cinder(self, cloud: str | None) -> CinderPort:
        """The Cinder port of a configured cloud (the claim's, or the default)."""
        from provisioner.adapters.cinder.client import make_cinder

        name = cloud or self.config.default_cloud
        if name not in self.config.clouds:
            raise Refused(
                f"no cloud named {name!r} in the configuration; configured: {sorted(self.config.clouds)}"
            )
        if name not in self._clouds:
            self._clouds[name] = make_cinder(self.config.clouds[name])
        return self._clouds[name]

    def progress(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def close(self) -> None:
        close = getattr(self.kube, "close", None)
        if close is not None:
            close()


def open_session(args: argparse.Namespace) -> Session:
    """Connect to Kubernetes the way kubectl would; ``ConfigError`` naming the source when it cannot."""
    from provisioner.adapters.kube import KubeAdapter, load_kubectl_configuration

    configuration = load_kubectl_configuration(args.kubeconfig)
    return Session(
        kube=KubeAdapter(configuration, qps=20, burst=40), config_path=getattr(args, "config", None)
    )


def run_command(
    args: argparse.Namespace, body: Callable[[Session], int], *, check: Callable[[], object] | None = None
) -> int:
    """``check`` the command line (no connection yet), then run ``body`` with a session; our errors
    become one stderr line and the exit code."""
    try:
        if check is not None:
            check()
    except Usage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from provisioner.telemetry import logs

    # Our libraries log (connections, retries): warnings only, to stderr, never into the results.
    logs.configure("warning", json_output=False, stream=sys.stderr)
    try:
        session = open_session(args)
    except ConfigError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        return body(session)
    except Usage as e:
        print(f"error: {e}", file=session.err)
        return 2
    except (ConfigError, InvalidInput) as e:
        print(f"error: {' '.join(str(e).split())}", file=session.err)
        return 2
    except Refused as e:
        print(f"error: {e}", file=session.err)
        return 1
    except (KubeError, CinderError) as e:
        print(f"error: {' '.join(str(e).split())}", file=session.err)
        return 1
    finally:
        session.close()


# ---- reading the claim's world --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimVolume:
    """A bound claim, its PV and the Cinder volume behind it."""

    pvc: Obj
    pv: Obj
    volume_id: str
    cloud: str | None


def get_or_refuse(session: Session, resource: str, name: str, namespace: str | None, what: str) -> Obj:
    try:
        obj: Obj = session.kube.get(resource, name, namespace=namespace)
    except KubeNotFound:
        where = f"{namespace}/{name}" if namespace else name
        raise Refused(f"{what} {where} not found") from None
    return obj


def claim_volume(session: Session, namespace: str, name: str) -> ClaimVolume:
    """The claim's volume (via its PV's annotation); Refused when unbound or not ours."""
    pvc = get_or_refuse(session, "persistentvolumeclaims", name, namespace, "PersistentVolumeClaim")
    pv_name = (pvc.get("spec") or {}).get("volumeName")
    if not pv_name:
        raise Refused(f"PersistentVolumeClaim {namespace}/{name} is not bound yet")
    pv = get_or_refuse(session, "persistentvolumes", pv_name, None, "PersistentVolume")
    ann = pv["metadata"].get("annotations") or {}
    volume_id = ann.get(names.ANN_VOLUME_ID)
    if not names.is_cinder_id(volume_id):
        raise Refused(f"PersistentVolume {pv_name} carries no Cinder volume id: not provisioned by us")
    return ClaimVolume(pvc=pvc, pv=pv, volume_id=str(volume_id), cloud=ann.get(names.ANN_CLOUD) or None)


def list_all(session: Session, resource: str) -> list[Obj]:
    items, _ = session.kube.list(resource)
    return list(items)


def events_of(session: Session, uid: str) -> list[Obj]:
    """Events about the object ``uid``, oldest first."""
    found = [e for e in list_all(session, "events") if (e.get("involvedObject") or {}).get("uid") == uid]
    return sorted(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


def iso(ts: float | None) -> str:
    """Unix seconds → RFC 3339 (UTC), ``-`` when unknown."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(wall: float) -> str:
    """A name suffix from the wall clock: ``20260102-030405``."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y%m%d-%H%M%S")


def watch_progress(
    session: Session,
    *,
    poll: Callable[[], tuple[str, str | None]],
    timeout: float,
    interval: float = 0.5,
) -> Iterator[str]:
    """Poll until ``poll`` says done; yields each new progress line (what changed), then returns.

    ``poll`` answers ``(state, verdict)``: ``verdict`` None = keep waiting, ``"ok"`` = done, anything else
    = the refusal that stopped it (raised as ``Refused``). Times out with ``Refused``.
    """
    deadline = session.clock() + timeout
    last = ""
    while True:
        state, verdict = poll()
        if state != last:
            last = state
            yield state
        if verdict == "ok":
            return
        if verdict is not None:
            raise Refused(verdict)
        if session.clock() >= deadline:
            raise Refused(f"timed out after {timeout:.0f}s; last state: {state}")
        session.sleep(interval)


def print_table(out: TextIO, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def storage_class_of(session: Session, namespace: str, claim: str | None) -> str | None:
    """The class of claim ``namespace/claim`` if it exists, else the cluster's default class (or None)."""
    if claim:
        try:
            pvc = session.kube.get("persistentvolumeclaims", claim, namespace=namespace)
            cls = (pvc.get("spec") or {}).get("storageClassName")
            if cls:
                return str(cls)
        except KubeNotFound:
            pass
    defaults = [
        sc["metadata"]["name"]
        for sc in list_all(session, "storageclasses")
        if (sc["metadata"].get("annotations") or {}).get(DEFAULT_STORAGE_CLASS) == "true"
    ]
    return sorted(defaults)[-1] if defaults else None


def pv_of_volume(session: Session, volume_id: str) -> Obj | None:
    """The PV (ours) whose Cinder volume is ``volume_id``."""
    for pv in list_all(session, "persistentvolumes"):
        if (pv["metadata"].get("annotations") or {}).get(names.ANN_VOLUME_ID) == volume_id:
            return pv
    return None


def quantity_of(mapping: Mapping[str, Any] | None) -> str | None:
    value = (mapping or {}).get("storage")
    return str(value) if value else None
