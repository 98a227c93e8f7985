"""docs/deployment.md names every metric the controller exports (the table and the code stay in step)."""

from __future__ import annotations

import re
from pathlib import Path

from provisioner.telemetry.metrics import make_metrics

DOCS = Path(__file__).parents[3] / "docs" / "deployment.md"


def _documented() -> set[str]:
    """Names in the metrics table; ``_suffix`` entries after a full name share its prefix."""
    table = DOCS.read_text().split("### Metrics", 1)[1].split("\n\n", 2)[1]
    names: set[str] = set()
    for line in table.splitlines():
        first = line.split("|")[1] if line.startswith("|") else ""
        for name in re.findall(r"`([a-z_]+)`", first):
            names.add("cinder_provisioner" + name if name.startswith("_") else name)
    return names


def test_every_exported_metric_is_in_the_table() -> None:
    """Each metric family make_metrics registers (as exposed: counters with ``_total``) is documented."""
    exported = {
        f.name + "_total" if f.type == "counter" else f.name for f in make_metrics().registry.collect()
    }
    assert "cinder_provisioner_cinder_slot_seconds_total" in exported
    assert set() == exported - _documented()
