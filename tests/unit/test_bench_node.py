"""P4's arithmetic over the node agent's JSON log lines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from provisioner.testworld.harness.bench_node import stage_overhead, tool_seconds


def at(seconds: float) -> str:
    return datetime.fromtimestamp(1_800_000_000 + seconds, UTC).isoformat().replace("+00:00", "Z")


LINES = [
    {"event": "command", "argv": ["rbd", "help", "device", "map"], "seconds": 0.05, "timestamp": at(1.05)},
    {"event": "command_started", "argv": ["rbd", "device", "map", "volumes/volume-1"], "timestamp": at(1.06)},
    {"event": "rbd_mapped", "timestamp": at(1.16)},
    {"event": "command", "argv": ["mkfs.ext4"], "seconds": 0.04, "timestamp": at(1.21)},
    {"event": "staged", "timestamp": at(1.22)},
]


def test_tool_seconds_adds_commands_and_the_supervised_map() -> None:
    """0.05 + 0.04 from 'command' lines, plus the map from its start to rbd_mapped (0.10)."""
    total, map_s = tool_seconds(LINES)
    assert pytest.approx(0.19, abs=1e-6) == total
    assert pytest.approx(0.10, abs=1e-6) == map_s
    assert (0.0, None) == tool_seconds([{"event": "staged", "timestamp": at(0)}])


def test_stage_overhead_splits_the_stage() -> None:
    """Started at 0.8: 0.2 s before the first tool (0.15 of it any process's start), 0.03 s between tools."""
    split = stage_overhead(1_800_000_000 + 0.8, LINES, baseline_pre_s=0.15)
    assert pytest.approx(0.2, abs=1e-6) == split["pre_s"]
    assert pytest.approx(0.03, abs=1e-6) == split["in_op_s"]
    assert pytest.approx(0.08, abs=1e-6) == split["overhead_s"]
    with pytest.raises(RuntimeError, match="never logged 'staged'"):
        stage_overhead(0.0, LINES[:-1], baseline_pre_s=0.0)
