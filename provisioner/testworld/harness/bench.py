"""The benchmark of issue 13: ``cinder-provisioner run`` measured the way users run it.

Every part starts the provisioner as a **process** (the console script, a config file, a kubeconfig)
against the test world served from **another process** (``world_server``), and measures that process:
wall time from its start, CPU (user + system) and peak RSS (``/proc/<pid>``, ``wait4``), Kubernetes
requests and Cinder calls per claim by verb (the simulators' request logs). Parts:

- **P1** burst: N claims, Cinder create T s, C in flight; tuned limits and the shipped defaults; the delete
  burst after each (``bench_burst``).
- **P2** scale: N bound PV + claim pairs before start: resident bytes per object, start → ``/readyz``.
- **P3** failover: two processes, the leader SIGKILLed mid-burst: kill → the standby's first PV, at the
  default and at tuned lease timings (``bench_scale``).
- **P4** node agent: per-stage overhead above the fake tools' own time; udev-hang recovery beyond the
  trigger delay (``bench_node``).
- **P5** real Cinder: N claims end to end through the ``run`` process against real OpenStack Cinder vs
  the same Cinder called directly (create → available → export) at the same concurrency, in the same run
  (``bench_real``; needs the ``cinder-real`` extra: ``tox -e bench-real``; skipped, null, without it).

Prints a table (measure, value, target, physical bound / notes), then ONE JSON line with exactly the
issue's keys (null for a part not run). Exit 0 whatever the numbers; 1 only when the benchmark itself
broke (a claim never bound, a process died) so ``.ci/run`` can run a small version that cannot rot.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from provisioner.testworld.harness import bench_stats as st
from provisioner.testworld.harness.bench_burst import BenchError, BurstSpec, run_burst
from provisioner.testworld.harness.bench_process import Limits
from provisioner.testworld.harness.bench_scale import run_failover, run_scale

ALL_PARTS = ("p1", "p2", "p3", "p4", "p5")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m provisioner.testworld.harness.bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument(
        "--parts",
        default="p1,p2,p3,p4,p5",
        help="comma-separated parts to run (p5 is skipped when real Cinder is not installed)",
    )
    p.add_argument("--pvcs", type=int, default=1000, help="P1 burst size N")
    p.add_argument("--latency", type=float, default=0.5, help="Cinder create (and delete) time T, seconds")
    p.add_argument("--in-flight", type=int, default=32, help="tuned cinder_max_in_flight C")
    p.add_argument("--workers", type=int, default=64, help="tuned workers")
    p.add_argument("--kube-qps", type=float, default=2000.0, help="tuned kube_qps (and kube_burst)")
    p.add_argument("--defaults-pvcs", type=int, default=None, help="N of the shipped-defaults burst (P1)")
    p.add_argument("--no-defaults", action="store_true", help="skip the shipped-defaults burst")
    p.add_argument("--no-delete", action="store_true", help="skip the delete bursts")
    p.add_argument("--scale-pairs", type=int, default=10_000, help="P2: bound PV + claim pairs")
    p.add_argument("--failover-pvcs", type=int, default=200, help="P3 burst size")
    p.add_argument("--failover-kill-at", type=float, default=0.25, help="P3: kill when this share is Bound")
    p.add_argument(
        "--tuned-lease", default="3,2,0.5", help="P3 tuned lease_duration,renew_deadline,retry_period (s)"
    )
    p.add_argument("--no-default-failover", action="store_true", help="P3: only the tuned lease timings")
    p.add_argument("--node-repeats", type=int, default=5, help="P4: stages per measurement")
    p.add_argument("--p5-pvcs", type=int, default=100, help="P5: claims (and direct volumes) per round")
    p.add_argument("--p5-in-flight", type=int, default=16, help="P5: concurrency C of both contenders")
    p.add_argument("--p5-rounds", type=int, default=2, help="P5: rounds (each runs both; order alternates)")
    p.add_argument("--p5-poll", type=float, default=0.25, help="P5: the direct client's status poll, s")
    p.add_argument("--log-level", default="info", help="the provisioner's log_level (users run info)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds any one wait may take")
    p.add_argument("--json-only", action="store_true", help="print only the JSON line")
    p.add_argument("--details", default=None, help="also write every part's full figures (JSON) here")
    return p


def _lease(text: str) -> Limits:
    duration, renew, retry = (float(x) for x in text.split(","))
    return Limits(lease_duration=duration, renew_deadline=renew, retry_period=retry)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected parts; every part's full figures by part name."""
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - set(ALL_PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    tuned = Limits(
        workers=args.workers,
        cinder_max_in_flight=args.in_flight,
        kube_qps=args.kube_qps,
        kube_burst=max(int(args.kube_qps), 1),
    )
    out: dict[str, Any] = {}
    common = {"delete": not args.no_delete, "log_level": args.log_level, "timeout_s": args.timeout}
    if "p1" in parts:
        out["p1"] = run_burst(BurstSpec(n=args.pvcs, latency_s=args.latency, limits=tuned, **common))
        if not args.no_defaults:
            n = args.defaults_pvcs or args.pvcs
            out["p1_defaults"] = run_burst(BurstSpec(n=n, latency_s=args.latency, limits=Limits(), **common))
    if "p2" in parts:
        out["p2"] = run_scale(
            args.scale_pairs, limits=Limits(), timeout_s=args.timeout, log_level=args.log_level
        )
    if "p3" in parts:
        failover = {
            "kill_at_fraction": args.failover_kill_at,
            "timeout_s": args.timeout,
            "log_level": args.log_level,
        }
        out["p3_tuned"] = run_failover(
            args.failover_pvcs, args.latency, limits=_tuned_lease(tuned, args.tuned_lease), **failover
        )
        if not args.no_default_failover:
            out["p3"] = run_failover(args.failover_pvcs, args.latency, limits=tuned, **failover)
    if "p4" in parts:
        from provisioner.testworld.harness.bench_node import run_node

        out["p4"] = run_node(repeats=args.node_repeats)
    if "p5" in parts:
        if importlib.util.find_spec("cinder") is None:
            out["p5_skipped"] = "real Cinder is not installed here (the cinder-real extra: tox -e bench-real)"
            print(f"bench: p5 skipped: {out['p5_skipped']}", file=sys.stderr)
        else:
            from provisioner.testworld.harness.bench_real import RealSpec, run_real

            out["p5"] = run_real(
                RealSpec(
                    n=args.p5_pvcs,
                    in_flight=args.p5_in_flight,
                    rounds=args.p5_rounds,
                    poll_s=args.p5_poll,
                    log_level=args.log_level,
                    timeout_s=args.timeout,
                )
            )
    return out


def _tuned_lease(tuned: Limits, text: str) -> Limits:
    lease = _lease(text)
    return Limits(
        workers=tuned.workers,
        cinder_max_in_flight=tuned.cinder_max_in_flight,
        kube_qps=tuned.kube_qps,
        kube_burst=tuned.kube_burst,
        lease_duration=lease.lease_duration,
        renew_deadline=lease.renew_deadline,
        retry_period=lease.retry_period,
    )


def summary(results: dict[str, Any]) -> dict[str, float | None]:
    """The issue's JSON keys from the parts' figures (null for a part not run)."""
    p1, p1d, p2 = results.get("p1"), results.get("p1_defaults"), results.get("p2")
    p3, p3t, p4, p5 = results.get("p3"), results.get("p3_tuned"), results.get("p4"), results.get("p5")
    values: dict[str, float | None] = {
        "p1_efficiency": p1["efficiency"] if p1 else None,
        "p1_cpu_ms_per_pvc": p1["cpu_ms_per_pvc"] if p1 else None,
        "p1_peak_rss_mib": p1["peak_rss_mib"] if p1 else None,
        "p1_kube_requests_per_pvc": p1["kube_requests_per_pvc"] if p1 else None,
        "p1_cinder_calls_per_pvc": p1["cinder_calls_per_pvc"] if p1 else None,
        "p1_defaults_efficiency": p1d["efficiency"] if p1d else None,
        "p2_bytes_per_object": p2["bytes_per_object"] if p2 else None,
        "p2_ready_s": p2["ready_s"] if p2 else None,
        "p3_failover_s": p3["failover_s"] if p3 else None,
        "p3_failover_tuned_s": p3t["failover_s"] if p3t else None,
        "p4_overhead_ms": p4["overhead_ms"] if p4 else None,
        "p4_recovery_s": p4["recovery_s"] if p4 else None,
        "p5_ratio": p5["ratio"] if p5 else None,
    }
    return st.summary_line(values)


def _fmt(value: Any) -> str:
    if value is None:
        return "not run"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _target(key: str, override: float | None = None) -> str:
    target, direction = st.TARGETS[key]
    target = override if override is not None else target
    return "-" if target is None else f"{direction} {_fmt(float(target))}"


def _verdict(key: str, value: float | None, override: float | None = None) -> str:
    target, direction = st.TARGETS[key]
    ok = st.meets(value, override if override is not None else target, direction)
    return "" if ok is None else ("met" if ok else "MISSED")


def table(results: dict[str, Any], line: dict[str, float | None]) -> str:
    """The readable table: each JSON value next to its target and the physical bound."""
    rows: list[tuple[str, str, str, str]] = []

    def row(key: str, notes: str, override: float | None = None) -> None:
        value = line[key]
        rows.append(
            (key, _fmt(value), _target(key, override), f"{_verdict(key, value, override)}  {notes}".strip())
        )

    p1, p1d = results.get("p1"), results.get("p1_defaults")
    if p1:
        rows.append(
            (
                "p1 wall (start → all Bound)",
                f"{p1['wall_s']:.2f} s",
                "",
                f"bound N·T/C = {p1['n']}·{p1['latency_s']:g}/{p1['in_flight']} = {p1['bound_s']:.2f} s; "
                f"first create {p1['first_create_done_s']} s; host CPU busy {p1['host_busy_pct']} %, "
                f"steal {p1['host_steal_pct']} %",
            )
        )
    if p1 and p1.get("slot_seconds_by_operation"):
        held = ", ".join(f"{op} {ms} ms" for op, ms in p1["slot_ms_per_attempt"].items())
        rows.append(
            (
                "p1 in-flight slots held",
                f"{p1['slot_busy_s']:.2f} s",
                "",
                f"slot-seconds / C (N·T/C = {p1['bound_s']:.2f} s is the creates' T alone); "
                f"per attempt: {held}; a create waited {p1['create_slot_wait_mean_s']} s for its slot",
            )
        )
    row("p1_efficiency", f"tuned: {p1['limits']}" if p1 else "")
    row("p1_cpu_ms_per_pvc", "whole process, start included" if p1 else "")
    row("p1_peak_rss_mib", "VmHWM at the last Bound" if p1 else "")
    row("p1_kube_requests_per_pvc", _by_key(p1, "kube_by_verb_per_pvc"))
    row("p1_cinder_calls_per_pvc", _by_key(p1, "cinder_by_operation_per_pvc"))
    if p1 and "delete" in p1:
        d = p1["delete"]
        rows.append(
            (
                "p1 delete burst",
                f"{d['wall_s']:.2f} s",
                "",
                f"efficiency {d['efficiency']:.3f} vs bound {d['bound_s']:.2f} s; "
                f"{d['kube_requests_per_pvc']} kube, {d['cinder_calls_per_pvc']} cinder per claim",
            )
        )
    row(
        "p1_defaults_efficiency",
        f"wall {p1d['wall_s']:.2f} s vs N·T/{p1d['in_flight']} = {p1d['bound_s']:.2f} s; "
        f"{p1d['cpu_ms_per_pvc']} ms CPU, {p1d['peak_rss_mib']} MiB"
        if p1d
        else "",
    )
    p2 = results.get("p2")
    row(
        "p2_bytes_per_object",
        f"{p2['objects']} objects; RSS {p2['rss_mib']} MiB vs {p2['empty_rss_mib']} MiB empty" if p2 else "",
    )
    row("p2_ready_s", f"process start → /readyz 200; empty cluster {p2['empty_ready_s']} s" if p2 else "")
    p3, p3t = results.get("p3"), results.get("p3_tuned")
    row(
        "p3_failover_s",
        f"lease {p3['lease_duration_s']:g} s; lease taken after {p3['lease_taken_s']} s" if p3 else "",
        override=p3["lease_duration_s"] + 2.0 if p3 else None,
    )
    row(
        "p3_failover_tuned_s",
        f"lease {p3t['lease_duration_s']:g} s / retry {p3t['retry_period_s']:g} s; "
        f"all Bound {p3t['all_bound_s']} s after the kill"
        if p3t
        else "",
    )
    p4 = results.get("p4")
    row("p4_overhead_ms", p4.get("overhead_notes", "") if p4 else "")
    row("p4_recovery_s", p4.get("recovery_notes", "") if p4 else "")
    p5 = results.get("p5")
    skipped = results.get("p5_skipped")
    row("p5_ratio", p5.get("notes", "") if p5 else f"P5 skipped: {skipped}" if skipped else "")
    return st.render_table(rows)


def _by_key(part: dict[str, Any] | None, key: str) -> str:
    if not part:
        return ""
    return ", ".join(f"{k} {v:g}" for k, v in part[key].items() if v >= 0.05)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see ``--help``)."""
    args = _parser().parse_args(argv)
    started = time.monotonic()
    try:
        results = measure(args)
    except (BenchError, TimeoutError, RuntimeError, OSError) as e:
        print(f"bench: broken: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    line = summary(results)
    if not args.json_only:
        print(table(results, line))
        print(f"\n(all parts: {time.monotonic() - started:.0f} s)")
    if args.details:
        with open(args.details, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
