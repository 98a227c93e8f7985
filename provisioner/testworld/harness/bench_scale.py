"""P2 (scale) and P3 (failover): ``cinder-provisioner run`` processes on a cluster that is already big,
and a leader killed mid-burst.

P2 seeds N bound PV + claim pairs (as the controller leaves them) before the process starts and times
process start → ``/readyz`` 200 (informers listed and synced); memory per object is the resident set at
ready minus that of the same process on an empty cluster, over the 2·N cached objects.

P3 starts two processes with leader election, waits until the first leads and the second is ready, starts
a burst, SIGKILLs the leader once a share of the claims is Bound, and times kill → the first PV the
standby creates (a PV that did not exist 0.25 s after the kill, when the dead leader's last requests are
long answered). The standby has to wait out the dead leader's lease: the target is lease duration + 2 s.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from provisioner.testworld.harness import bench_stats as st
from provisioner.testworld.harness.bench_burst import BenchError
from provisioner.testworld.harness.bench_process import CLASS, Limits, RunProcess, WorldProcess

#: What the standby's first new PV is compared against: PVs that existed this long after the kill.
SETTLE_AFTER_KILL_S = 0.25


def _ready_run(count: int, limits: Limits, timeout_s: float, log_level: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-p2-") as tmp,
        WorldProcess(Path(tmp), create_latency=0) as world,
    ):
        world.post("/class", {"name": CLASS, "parameters": {"type": "rbd"}})
        seeded_at = time.monotonic()
        if count:
            seeded = world.post("/seed-bound", {"count": count, "class": CLASS}, timeout=timeout_s + 600)
            if not seeded.get("idle"):
                raise BenchError("the simulator did not settle after seeding")
            state = world.get("/state")
            if (state["claims"], state["bound"], state["pvs"]) != (count, count, count):
                raise BenchError(f"seeding left {state}, expected {count} bound claims and PVs")
        seed_s = time.monotonic() - seeded_at
        world.post("/clear-logs", {})
        run = RunProcess(world, limits, identity="bench-a", log_level=log_level)
        try:
            ready_s = run.wait_ready(timeout_s)
            usage = run.usage()
            logs = world.logs()
        finally:
            run.stop()
        if run.exit_code != 0:
            raise BenchError(f"the provisioner exited {run.exit_code} after SIGTERM\n{run.log_tail()}")
        start_requests = st.kube_counts(st.within(logs.kube, run.started, run.started + ready_s))
        return {
            "objects": 2 * count,
            "seed_s": round(seed_s, 2),
            "ready_s": round(ready_s, 3),
            "rss_kib": usage.rss_kib,
            "hwm_kib": usage.hwm_kib,
            "cpu_s_to_ready": round(usage.cpu_s, 3),
            "kube_requests_to_ready": dict(sorted(start_requests.items())),
        }


def run_scale(
    count: int, *, limits: Limits, timeout_s: float = 300.0, log_level: str = "info"
) -> dict[str, Any]:
    """P2: ready time and resident bytes per cached object with ``count`` PVs + ``count`` claims."""
    empty = _ready_run(0, limits, timeout_s, log_level)
    full = _ready_run(count, limits, timeout_s, log_level)
    return {
        "pairs": count,
        "objects": full["objects"],
        "ready_s": full["ready_s"],
        "empty_ready_s": empty["ready_s"],
        "bytes_per_object": round(st.bytes_per_object(full["rss_kib"], empty["rss_kib"], full["objects"]), 1),
        "rss_mib": round(full["rss_kib"] / 1024, 1),
        "empty_rss_mib": round(empty["rss_kib"] / 1024, 1),
        "peak_rss_mib": round(full["hwm_kib"] / 1024, 1),
        "cpu_s_to_ready": full["cpu_s_to_ready"],
        "seed_s": full["seed_s"],
        "kube_requests_to_ready": full["kube_requests_to_ready"],
    }


def _await(predicate: Any, timeout_s: float, what: str, *runs: RunProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for run in runs:
            if run.proc.poll() is not None:
                raise BenchError(f"{what}: a provisioner exited ({run.proc.returncode})\n{run.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not after {timeout_s:g} s")
        time.sleep(0.02)


def run_failover(
    n: int,
    latency_s: float,
    *,
    limits: Limits,
    kill_at_fraction: float = 0.25,
    timeout_s: float = 300.0,
    log_level: str = "info",
) -> dict[str, Any]:
    """P3: SIGKILL the leader once ``kill_at_fraction`` of ``n`` claims are Bound; time until the standby
    creates its first PV."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-p3-") as tmp,
        WorldProcess(Path(tmp), create_latency=latency_s) as world,
    ):
        world.post("/class", {"name": CLASS, "parameters": {"type": "rbd"}})
        leader = RunProcess(world, limits, identity="bench-a", log_level=log_level)
        standby: RunProcess | None = None
        try:
            _await(
                lambda: world.get("/state")["lease_holder"] == "bench-a", timeout_s, "first leader", leader
            )
            standby = RunProcess(world, limits, identity="bench-b", log_level=log_level)
            standby.wait_ready(timeout_s)
            world.post("/claims", {"prefix": "f", "count": n, "class": CLASS})
            threshold = max(1, int(n * kill_at_fraction))
            _await(lambda: world.get("/state")["bound"] >= threshold, timeout_s, "first share bound", leader)
            os.kill(leader.pid, signal.SIGKILL)
            killed = time.monotonic()
            leader.stop(signal.SIGKILL)
            bound_at_kill = world.get("/state")["bound"]
            time.sleep(SETTLE_AFTER_KILL_S)
            before = set(world.get("/moments")["pv_created_at"])
            done = world.wait("bound", n, timeout_s)
            if not done["ok"]:
                raise BenchError(
                    f"only {done.get('bound')} of {n} bound after the failover\n{standby.log_tail()}"
                )
            moments = world.get("/moments")
        finally:
            leader.stop(signal.SIGKILL)
            if standby is not None:
                standby.stop()
        if standby.exit_code != 0:
            raise BenchError(f"the standby exited {standby.exit_code} after SIGTERM\n{standby.log_tail()}")
        new = sorted(at for name, at in moments["pv_created_at"].items() if name not in before)
        takeovers = [at for at, holder in moments["leases"] if holder == "bench-b" and at >= killed]
        if not new or not takeovers:
            raise BenchError("the standby never took over and provisioned")
        le = limits.settings().get("leader_election", {})
        return {
            "n": n,
            "bound_at_kill": bound_at_kill,
            "lease_duration_s": le.get("lease_duration", 15.0),
            "retry_period_s": le.get("retry_period", 2.0),
            "lease_taken_s": round(takeovers[0] - killed, 3),
            "failover_s": round(new[0] - killed, 3),
            "all_bound_s": round(done["at"] - killed, 3),
        }
