"""``cinder-provisioner snapshots NAMESPACE/PVC [-o table|json]``: what a claim's volume can be restored from.

The Cinder snapshots and backups of the claim's volume (found through its PV), newest first, each with the
VolumeSnapshot that stands for it when there is one: the content whose ``status.snapshotHandle`` (or
pre-provisioned ``spec.source.snapshotHandle``) is the Cinder id, else the snapshot's own tags.
Read-only: Kubernetes and Cinder are only read.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from provisioner.cli.backup_team import (
    Session,
    add_connection_options,
    claim_volume,
    iso,
    list_all,
    parse_ref,
    print_table,
    run_command,
)
from provisioner.domain import names
from provisioner.domain.errors import CinderError
from provisioner.domain.model import VolumeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One restorable point in time."""

    id: str
    kind: str  # snapshot | backup
    created: str
    size_gib: int
    status: str
    volumesnapshot: str  # namespace/name, or "" when none stands for it
    created_at: float | None = None


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "snapshots", help="list the Cinder snapshots and backups of a claim's volume, newest first"
    )
    p.add_argument("claim", metavar="NAMESPACE/PVC")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_connection_options(p)


def run(args: argparse.Namespace) -> int:
    return run_command(
        args,
        lambda session: list_snapshots(session, args.claim, output=args.output),
        check=lambda: parse_ref(args.claim, "NAMESPACE/PVC"),
    )


def _volumesnapshot_index(session: Session) -> dict[str, str]:
    """Cinder id → ``namespace/name`` of the VolumeSnapshot bound to the content carrying it."""
    index: dict[str, str] = {}
    for content in list_all(session, "volumesnapshotcontents"):
        spec = content.get("spec") or {}
        if spec.get("driver") != names.CSI_DRIVER_NAME:
            continue
        handle = (content.get("status") or {}).get("snapshotHandle") or (spec.get("source") or {}).get(
            "snapshotHandle"
        )
        ref = spec.get("volumeSnapshotRef") or {}
        if handle and ref.get("name"):
            index[str(handle)] = f"{ref.get('namespace', '')}/{ref['name']}"
    return index


def _tagged(metadata: Any) -> str:
    md = dict(metadata or {})
    ns, name = md.get(names.META_PVC_NAMESPACE), md.get(names.META_SNAPSHOT_NAME)
    return f"{ns}/{name}" if ns and name else ""


def rows_for(session: Session, namespace: str, claim: str) -> tuple[list[Row], str | None]:
    """The rows, newest first, and a note when backups could not be listed."""
    found = claim_volume(session, namespace, claim)
    cinder = session.cinder(found.cloud)
    index = _volumesnapshot_index(session)
    rows = [
        Row(
            id=s.id,
            kind="snapshot",
            created=iso(s.created_at),
            size_gib=s.size_gib,
            status=s.status,
            volumesnapshot=index.get(s.id) or _tagged(s.metadata),
            created_at=s.created_at,
        )
        for s in cinder.list_snapshots(volume_id=VolumeId(found.volume_id))
    ]
    note = None
    try:
        backups = list(cinder.list_backups(volume_id=VolumeId(found.volume_id)))
    except CinderError as e:
        backups, note = [], f"backups not listed: {' '.join(str(e).split())}"
    rows += [
        Row(
            id=b.id,
            kind="backup",
            created=iso(b.created_at),
            size_gib=b.size_gib,
            status=b.status,
            volumesnapshot=index.get(b.id) or _tagged(b.metadata),
            created_at=b.created_at,
        )
        for b in backups
    ]
    rows.sort(key=lambda r: (r.created_at is not None, r.created_at or 0.0, r.id), reverse=True)
    return rows, note


def list_snapshots(session: Session, ref: str, *, output: str) -> int:
    namespace, claim = parse_ref(ref, "NAMESPACE/PVC")
    rows, note = rows_for(session, namespace, claim)
    if output == "json":
        doc = [{k: v for k, v in asdict(r).items() if k != "created_at"} for r in rows]
        print(json.dumps(doc, indent=2), file=session.out)
    else:
        print_table(
            session.out,
            ("ID", "KIND", "CREATED", "SIZE", "STATUS", "VOLUMESNAPSHOT"),
            [(r.id, r.kind, r.created, f"{r.size_gib}Gi", r.status, r.volumesnapshot or "-") for r in rows],
        )
    if note:
        session.progress(f"note: {note}")
    return 0
