"""P5 of the benchmark, small: the ``run`` process and a direct client against the same real Cinder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.testworld.harness.bench_stats import TARGETS

pytestmark = pytest.mark.cinder_real

BENCH = [sys.executable, "-m", "provisioner.testworld.harness.bench"]


def test_small_p5_compares_the_run_process_with_direct_calls_on_real_cinder(tmp_path: Path) -> None:
    """N=6 at C=4, two rounds (both orders): exit 0, p5_ratio set (and only it), each side made exactly one
    create and one export per claim, every volume deleted again, and the process exited 0 on SIGTERM."""
    details = tmp_path / "details.json"
    result = subprocess.run(
        [*BENCH, "--parts", "p5", "--p5-pvcs", "6", "--p5-in-flight", "4", "--p5-rounds", "2",
         "--timeout", "240", "--details", str(details)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert 0 == result.returncode, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    line = json.loads(lines[-1])
    assert list(TARGETS) == list(line)
    assert [k for k in TARGETS if line[k] is not None] == ["p5_ratio"]
    assert "p5_ratio" in "\n".join(lines[:-1])
    p5 = json.loads(details.read_text())["p5"]
    assert 0 < p5["ratio"] < 10  # a ratio of two measured walls, not a constant
    assert (6, 4, 2) == (p5["n"], p5["in_flight"], len(p5["rounds"]))
    assert ["direct, ours", "ours, direct"] == [r["order"] for r in p5["rounds"]]
    for figures in p5["rounds"]:
        for side in ("direct", "ours"):
            calls = figures[side]["cinder_by_operation_per_pvc"]
            assert (1.0, 1.0, 1.0) == (
                calls["create_volume"],
                calls["create_attachment"],
                calls["complete_attachment"],
            ), side
            assert figures[side]["wall_s"] > 0
        assert 1.0 == figures["ours"]["kube_by_verb_per_pvc"]["create persistentvolumes"]
    assert p5["ours_s"] == pytest.approx(sum(r["ours"]["wall_s"] for r in p5["rounds"]), abs=0.01)
    assert "admin:" not in result.stdout  # the noauth token stays out of the output
