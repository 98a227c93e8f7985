"""The benchmark end to end, small: ``cinder-provisioner run`` processes against a world server process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from provisioner.testworld.harness.bench_stats import TARGETS

BENCH = [sys.executable, "-m", "provisioner.testworld.harness.bench"]


def test_small_benchmark_run_prints_table_then_exactly_the_issue_keys(tmp_path: Path) -> None:
    """N=10 burst (tuned and shipped defaults, each with its delete burst) and a 20-pair scale run: exit 0,
    a table, the JSON line last with the issue's keys; every claim created once and exported."""
    details = tmp_path / "details.json"
    result = subprocess.run(
        [*BENCH, "--parts", "p1,p2", "--pvcs", "10", "--latency", "0.05", "--scale-pairs", "20",
         "--timeout", "120", "--details", str(details)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert 0 == result.returncode, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    line = json.loads(lines[-1])
    assert list(TARGETS) == list(line)
    assert all(
        line[k] is None for k in ("p3_failover_s", "p3_failover_tuned_s", "p4_overhead_ms", "p5_ratio")
    )
    assert all(
        line[k] is not None
        for k in (
            "p1_efficiency",
            "p1_cpu_ms_per_pvc",
            "p1_peak_rss_mib",
            "p1_defaults_efficiency",
            "p2_ready_s",
        )
    )
    table = "\n".join(lines[:-1])
    assert "p1_efficiency" in table
    assert "p1 in-flight slots held" in table
    assert "N·T/C = 10·0.05/32" in table  # the bound printed next to the measured wall
    assert 0 < line["p1_efficiency"] < 1.0  # the bound is a bound
    assert 20 < line["p1_peak_rss_mib"] < 500  # a Python process, measured from /proc, not ours
    figures = json.loads(details.read_text())
    for part in ("p1", "p1_defaults"):
        p = figures[part]
        assert 0 == p["exit_code"]  # SIGTERM drained and exited 0
        assert 1.0 == p["cinder_by_operation_per_pvc"]["create_volume"]  # one create per claim, no duplicate
        assert 1.0 == p["cinder_by_operation_per_pvc"]["create_attachment"]
        assert 1.0 == p["kube_unnamed_creates_per_pvc"]["create persistentvolumes"]
        assert p["cinder_named_per_pvc_min_max"][0] >= 3  # create + attachment create/complete, per claim
        assert {"list persistentvolumeclaims", "watch persistentvolumeclaims"} <= set(p["kube_fixed"])
        assert p["wall_s"] >= p["bound_s"]
        assert 1.0 == p["delete"]["cinder_by_operation_per_pvc"]["delete_volume"]
        # the cap's slot-seconds, read from the process's own metrics: every create held one for ≥ T
        assert p["slot_ms_per_attempt"]["create_volume"] >= 50.0
        assert p["slot_busy_s"] * p["in_flight"] >= 10 * 0.05
        assert {"create_attachment", "complete_attachment"} <= set(p["slot_seconds_by_operation"])
        assert 0.0 <= p["host_steal_pct"] <= p["host_busy_pct"] + p["host_steal_pct"] <= 100.0
    assert {"workers": 64, "cinder_max_in_flight": 32, "kube_qps": 2000.0, "kube_burst": 2000} == figures[
        "p1"
    ]["limits"]
    assert "shipped defaults" == figures["p1_defaults"]["limits"]
    assert 16 == figures["p1_defaults"]["in_flight"]
    assert 40 == figures["p2"]["objects"]
    assert "pw-" not in result.stdout  # the emulator's password (pw-…) stays out of the output
    assert "pw-" not in details.read_text()


def test_a_broken_benchmark_exits_1_with_one_line(tmp_path: Path) -> None:
    """Claims that cannot bind in time (create takes 30 s, 3 s allowed): exit 1, 'bench: broken', no JSON."""
    result = subprocess.run(
        [*BENCH, "--parts", "p1", "--pvcs", "2", "--latency", "30", "--timeout", "3", "--no-defaults"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert 1 == result.returncode
    assert result.stderr.startswith("bench: broken: BenchError: only 0 of 2 claims bound after 3 s")
    assert "" == result.stdout
