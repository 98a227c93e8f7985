"""P1: a burst of N claims provisioned (and then deleted) by one ``cinder-provisioner run`` process.

Every claim exists before the process starts; Cinder's create (and, in the delete burst, delete) call
takes T seconds and the process may have C calls in flight (its ``cinder_max_in_flight``), so the burst
cannot finish before ``N·T/C``. Wall time runs from the moment the process is started to the moment the
last claim turned Bound (recorded by the world server as the store commits it), so interpreter start,
imports, informer sync and the lease are inside it — what a user pays after ``kubectl rollout restart``.
CPU and peak RSS are the provisioner process's own (``/proc/<pid>`` at that moment; ``wait4`` at exit).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.config.settings import ProvisionerConfig
from provisioner.testworld.harness import bench_stats as st
from provisioner.testworld.harness.bench_process import CLASS, Limits, Logs, RunProcess, WorldProcess


def _shipped_default(setting: str) -> int:
    value = ProvisionerConfig.__dataclass_fields__[setting].default
    if not isinstance(value, int):
        raise TypeError(f"{setting} has no integer default")
    return value


#: The shipped in-flight cap: the defaults run is measured against N·T/(this).
DEFAULT_IN_FLIGHT = _shipped_default("cinder_max_in_flight")


class BenchError(RuntimeError):
    """The benchmark itself broke (a claim never bound, the process died): not a missed target."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstSpec:
    """One burst: N claims, create time T, the limits of the run (None: the shipped defaults)."""

    n: int
    latency_s: float
    limits: Limits
    delete: bool = True
    log_level: str = "info"
    timeout_s: float = 900.0

    @property
    def in_flight(self) -> int:
        return self.limits.cinder_max_in_flight or DEFAULT_IN_FLIGHT


def requests_report(logs: Logs, start: float, end: float, n: int, claims: dict[str, str]) -> dict[str, Any]:
    """Kubernetes requests and Cinder calls in ``[start, end]``: totals and by verb per claim, and how
    they split between per-claim work (attributed to each claim by name) and the process's fixed cost."""
    kube = st.within(logs.kube, start, end)
    cinder = st.within(logs.cinder, start, end)
    k_attr = st.attribute_kube(kube, claims)
    c_attr = st.attribute_cinder([c for c in logs.cinder if c.at <= end], claims, since=start)
    k_per = [sum(c.values()) for c in k_attr.per_claim.values()]
    c_per = [sum(c.values()) for c in c_attr.per_claim.values()]
    return {
        "kube_requests_per_pvc": round(len(kube) / n, 3),
        "kube_by_verb_per_pvc": st.per_claim_by_key(st.kube_counts(kube), n),
        "kube_fixed": dict(sorted(k_attr.fixed.items())),
        "kube_unnamed_creates_per_pvc": per_claim_unnamed(k_attr, n),
        "kube_named_per_pvc_min_max": [min(k_per, default=0), max(k_per, default=0)],
        "cinder_calls_per_pvc": round(len(cinder) / n, 3),
        "cinder_by_operation_per_pvc": st.per_claim_by_key(Counter(c.operation for c in cinder), n),
        "cinder_fixed": dict(sorted(c_attr.fixed.items())),
        "cinder_named_per_pvc_min_max": [min(c_per, default=0), max(c_per, default=0)],
    }


def per_claim_unnamed(attr: st.Attribution, n: int) -> dict[str, float]:
    """The creates no path names (Events, PVs, Secrets), per claim."""
    return st.per_claim_by_key(attr.unnamed_per_claim_work, n)


def run_burst(spec: BurstSpec, workdir: Path | None = None) -> dict[str, Any]:
    """Provision ``spec.n`` claims with one ``run`` process, then delete them; the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="bench-p1-") as tmp:
        root = workdir or Path(tmp)
        with WorldProcess(root, create_latency=spec.latency_s) as world:
            return _burst(world, spec)


def _burst(world: WorldProcess, spec: BurstSpec) -> dict[str, Any]:
    n = spec.n
    world.post("/class", {"name": CLASS, "parameters": {"type": "rbd"}})
    created = world.post("/claims", {"prefix": "b", "count": n, "class": CLASS})
    if not created.get("idle"):
        raise BenchError("the simulator's PV controller did not settle after creating the claims")
    world.post("/clear-logs", {})
    host_before = st.parse_host_cpu(Path("/proc/stat").read_text())
    run = RunProcess(world, spec.limits, identity="bench-a", log_level=spec.log_level)
    out: dict[str, Any] = {"n": n, "latency_s": spec.latency_s, "in_flight": spec.in_flight}
    out["limits"] = spec.limits.settings() or "shipped defaults"
    try:
        done = world.wait("bound", n, spec.timeout_s)
        at_bound = run.usage()
        host = st.host_cpu_report(host_before, st.parse_host_cpu(Path("/proc/stat").read_text()))
        if not done["ok"]:
            raise BenchError(
                f"only {done.get('bound')} of {n} claims bound after {spec.timeout_s:g} s\n{run.log_tail()}"
            )
        wall = done["at"] - run.started
        slots = st.slot_use_from_metrics(run.metrics())
        bound = st.physical_bound(n, spec.latency_s, spec.in_flight)
        logs = world.logs()
        creates = [c.at for c in logs.cinder if c.operation == "create_volume" and c.at >= run.started]
        out.update(
            bound_s=round(bound, 3),
            wall_s=round(wall, 3),
            efficiency=round(st.efficiency(bound, wall), 4),
            # where the time went: process start → first create answered, → last create answered, → all Bound
            first_create_done_s=round(min(creates) - run.started, 3) if creates else None,
            last_create_done_s=round(max(creates) - run.started, 3) if creates else None,
            cpu_ms_per_pvc=round(st.cpu_ms_per_claim(at_bound.cpu_s, n), 3),
            cpu_user_s=round(at_bound.user_s, 3),
            cpu_system_s=round(at_bound.system_s, 3),
            peak_rss_mib=round(at_bound.hwm_kib / 1024, 1),
            **requests_report(logs, run.started, done["at"], n, logs.claims),
            # the cap's slot-seconds by operation: creates alone would fill it for exactly N·T/C
            **st.slot_report(slots, spec.in_flight, n),
            **host,  # the machine while it ran: a busy or stolen host makes the same code slower
        )
        if spec.delete:
            out["delete"] = _delete_burst(world, run, spec, claims=logs.claims)
    finally:
        final = run.stop()
    out["exit_code"] = run.exit_code
    out["whole_run_cpu_s"] = round(final.cpu_s, 3)
    out["whole_run_max_rss_mib"] = round(final.hwm_kib / 1024, 1)
    if run.exit_code != 0:
        raise BenchError(
            f"the provisioner exited {run.exit_code} after SIGTERM (expected 0)\n{run.log_tail()}"
        )
    return out


def _delete_burst(
    world: WorldProcess, run: RunProcess, spec: BurstSpec, *, claims: dict[str, str]
) -> dict[str, Any]:
    """Delete every claim at once (delete call T seconds): time until no PV and no volume is left."""
    n = spec.n
    world.post("/latency", {"operation": "delete_volume", "seconds": spec.latency_s})
    before = run.usage()
    started = time.monotonic()
    world.post("/delete-claims", {"prefix": "b"})
    pvs = world.wait("pvs_gone", 0, spec.timeout_s)
    volumes = world.wait("volumes_gone", 0, spec.timeout_s)
    after = run.usage()
    if not (pvs["ok"] and volumes["ok"]):
        raise BenchError(
            f"delete burst unfinished after {spec.timeout_s:g} s: {pvs} {volumes}\n{run.log_tail()}"
        )
    ended = max(pvs["at"], volumes["at"])
    wall = ended - started
    bound = st.physical_bound(n, spec.latency_s, spec.in_flight)
    logs = world.logs()
    return {
        "bound_s": round(bound, 3),
        "wall_s": round(wall, 3),
        "efficiency": round(st.efficiency(bound, wall), 4),
        "cpu_ms_per_pvc": round(st.cpu_ms_per_claim(after.cpu_s - before.cpu_s, n), 3),
        **requests_report(logs, started, ended, n, claims),
    }
