"""The report's three formats and the CLI's progress line (only on a terminal)."""

from __future__ import annotations

import csv
import io
import json

from provisioner.audit.decide import audit
from provisioner.audit.model import SCHEMA_VERSION
from provisioner.audit.render import CSV_COLUMNS, age_text, table, to_csv, to_json
from provisioner.cli.audit import Progress, parse_duration
from tests.unit.audit.builders import DAY, observed, options, pv, pvc, vol

REPORT = audit(
    observed([vol("v1", "u1", status="available", size=4)], pvs=[pv("u2", "v2")], pvcs=[pvc("u2")]), options()
)


def test_json_schema_fields() -> None:
    """The JSON document has the documented top-level fields, the version and one object per finding."""
    doc = json.loads(to_json(REPORT))
    assert SCHEMA_VERSION == doc["schema_version"]
    assert [
        "schema_version",
        "cluster_id",
        "clouds",
        "generated_at",
        "scanned",
        "errors",
        "findings",
        "summary",
    ] == list(doc)
    orphan = next(f for f in doc["findings"] if f["kind"] == "orphan-volume")
    assert {
        "kind": "orphan-volume",
        "cloud": "default",
        "cinder": {
            "kind": "volume",
            "id": "v1",
            "name": "pvc-u1",
            "status": "available",
            "cluster": "c1",
            "attachments": 0,
        },
        "kubernetes": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data"},
        "age_seconds": 2 * DAY,
        "size_gib": 4,
        "storage_class": "fast",
        "volume_type": "rbd",
    } == {k: v for k, v in orphan.items() if k not in ("detail", "action")}


def test_csv_has_a_header_and_a_row_per_finding() -> None:
    """CSV: the documented columns, one row per finding."""
    rows = list(csv.reader(io.StringIO(to_csv(REPORT))))
    assert list(CSV_COLUMNS) == rows[0]
    assert [["missing-volume", "v2"], ["orphan-volume", "v1"]] == [[r[0], r[3]] for r in rows[1:]]


def test_table_lists_findings_and_the_summary() -> None:
    """The table names each finding and sums GiB per kind."""
    text = table(REPORT)
    assert "orphan-volume   default  volume/v1  available  pvc/default/data  2d0h  4" in text
    assert "missing-volume  default  volume/v2  -          pv/pvc-u2" in text
    assert "orphan-volume   1      4" in text
    assert "fast          2      5" in text


def test_age_text() -> None:
    """Ages read as d/h/m/s."""
    assert ["-", "42s", "5m3s", "2h0m", "3d4h"] == [
        age_text(a) for a in (None, 42, 303, 7200, 3 * DAY + 4 * 3600)
    ]


def test_durations() -> None:
    """--grace / --stuck-after take plain seconds or s/m/h/d."""
    assert [90.0, 90.0, 1800.0, 86400.0, 604800.0] == [
        parse_duration(t) for t in ("90", "90s", "30m", "24h", "7d")
    ]


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_only_on_a_terminal() -> None:
    """The progress line is drawn on a TTY and never written elsewhere."""
    ticks = iter(range(0, 100))
    on_tty = Stream(True)
    p = Progress(on_tty, enabled=on_tty.isatty(), clock=lambda: float(next(ticks)))
    p("volumes", 500)
    p.done()
    assert "reading: volumes 500" in on_tty.getvalue()
    piped = Stream(False)
    p = Progress(piped, enabled=piped.isatty())
    p("volumes", 500)
    p.done()
    assert "" == piped.getvalue()
