"""The audit report as a readable table, JSON (schema in ``docs/audit.md``) or CSV.

Pure text builders: the CLI writes what these return, so every format is testable without a terminal.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from provisioner.audit.fix import FixResult
from provisioner.audit.model import Finding, Report, Tally

CSV_COLUMNS = (
    "kind",
    "cloud",
    "cinder_kind",
    "cinder_id",
    "cinder_name",
    "cinder_status",
    "cluster",
    "attachments",
    "k8s_kind",
    "k8s_namespace",
    "k8s_name",
    "age_seconds",
    "size_gib",
    "storage_class",
    "volume_type",
    "detail",
    "action",
)


def age_text(seconds: float | None) -> str:
    """``3d4h``, ``5h12m``, ``42s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _k8s(f: Finding) -> str:
    if not f.k8s_name:
        return "-"
    where = f"{f.k8s_namespace}/{f.k8s_name}" if f.k8s_namespace else f.k8s_name
    short = {"PersistentVolume": "pv", "PersistentVolumeClaim": "pvc", "VolumeSnapshotContent": "vsc"}
    return f"{short.get(f.k8s_kind, f.k8s_kind)}/{where}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


def _tallies(title: str, tallies: dict[str, Tally] | object) -> list[str]:
    assert isinstance(tallies, dict)
    rows = [[name, str(t.count), str(t.gib)] for name, t in tallies.items()]
    return _table([title, "COUNT", "GIB"], rows)


def table(report: Report) -> str:
    """Findings, then the summary per kind, StorageClass and volume type."""
    out: list[str] = []
    if report.errors:
        out += [f"error: {e}" for e in report.errors] + [""]
    s = report.scanned
    out.append(
        f"cluster {report.cluster_id}: {s.volumes} volumes, {s.snapshots} snapshots, {s.backups} backups, "
        f"{s.persistent_volumes} PVs, {s.claims} claims, {s.snapshot_contents} snapshot contents"
    )
    if not report.findings:
        out.append("no findings")
        return "\n".join(out) + "\n"
    rows = [
        [
            f.kind.value,
            f.cloud,
            f"{f.cinder_kind}/{f.cinder_id}" if f.cinder_id else "-",
            f.cinder_status or "-",
            _k8s(f),
            age_text(f.age_seconds),
            str(f.size_gib),
            f.detail,
        ]
        for f in report.findings
    ]
    out.append("")
    out += _table(["KIND", "CLOUD", "CINDER", "STATUS", "KUBERNETES", "AGE", "GIB", "DETAIL"], rows)
    summary = report.summary
    out.append("")
    out += _tallies("KIND", dict(summary.by_kind))
    out.append("")
    out += _tallies("STORAGECLASS", dict(summary.by_storage_class))
    out.append("")
    out += _tallies("VOLUME TYPE", dict(summary.by_volume_type))
    return "\n".join(out) + "\n"


def to_json(report: Report, fixes: Sequence[FixResult] | None = None) -> str:
    doc = report.to_json()
    if fixes is not None:
        doc["fix"] = [r.to_json() for r in fixes]
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in report.findings:
        writer.writerow(
            [
                f.kind.value,
                f.cloud,
                f.cinder_kind,
                f.cinder_id,
                f.cinder_name,
                f.cinder_status,
                f.cluster,
                f.attachments,
                f.k8s_kind,
                f.k8s_namespace,
                f.k8s_name,
                "" if f.age_seconds is None else f"{f.age_seconds:.0f}",
                f.size_gib,
                f.storage_class,
                f.volume_type,
                f.detail,
                f.action,
            ]
        )
    return buf.getvalue()


def fix_table(results: Sequence[FixResult], *, yes: bool) -> str:
    if not results:
        return "fix: nothing to do\n"
    rows = [
        [
            r.action,
            r.finding.kind.value,
            r.finding.cloud,
            r.finding.cinder_id,
            r.reason or "-",
            r.request_id or "-",
        ]
        for r in results
    ]
    head = "fix:" if yes else "fix (dry run; add --yes to delete):"
    return (
        "\n".join([head, *_table(["ACTION", "KIND", "CLOUD", "CINDER ID", "REASON", "REQUEST ID"], rows)])
        + "\n"
    )
