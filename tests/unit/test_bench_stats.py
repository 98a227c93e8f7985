"""The benchmark's pure parts: /proc and rusage parsing, request naming, per-claim attribution, maths."""

from __future__ import annotations

import os
import resource
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from provisioner.telemetry.metrics import make_metrics
from provisioner.testworld.harness import bench_stats as st
from provisioner.testworld.harness.bench_stats import CinderCall, KubeRequest

UID_A = "11111111-2222-3333-4444-555555555555"
UID_B = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CLAIMS = {UID_A: "b00000", UID_B: "b00001"}
STAT = "4242 (cinder (prov) x) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 75 0 0 20 0 9 0 100 0 0"


def test_proc_stat_counts_fields_after_the_last_parenthesis() -> None:
    """utime/stime are fields 14/15 even when the command name holds spaces and ')'."""
    assert (2.5, 0.75) == st.parse_proc_stat(STAT, 100)


def test_proc_stat_without_command_name_is_refused() -> None:
    """A text that is not a stat line raises, naming what is missing."""
    with pytest.raises(ValueError, match=r"no '\)'"):
        st.parse_proc_stat("4242 S 1 2 3", 100)
    with pytest.raises(ValueError, match="expected at least 15"):
        st.parse_proc_stat("4242 (x) S 1 2", 100)


def test_proc_status_reads_rss_and_high_water_mark_in_kib() -> None:
    """VmRSS and VmHWM in kB; other lines ignored; a foreign unit refused."""
    text = "Name:\tcinder-prov\nVmPeak:\t  900000 kB\nVmHWM:\t   76000 kB\nVmRSS:\t   70123 kB\nThreads:\t9\n"
    assert {"VmHWM": 76000, "VmRSS": 70123} == st.parse_proc_status(text)
    assert {} == st.parse_proc_status("Name:\tkthreadd\n")
    with pytest.raises(ValueError, match="VmRSS"):
        st.parse_proc_status("VmRSS:\t 1 MB\n")


def test_usage_from_proc_and_rusage() -> None:
    """Both sources give user/system seconds and KiB; ru_maxrss (KiB on Linux) is the high-water mark."""
    u = st.usage_from_proc(STAT, "VmHWM:\t 2048 kB\nVmRSS:\t 1024 kB\n", 100)
    assert (2.5, 0.75, 3.25, 1024, 2048) == (u.user_s, u.system_s, u.cpu_s, u.rss_kib, u.hwm_kib)
    ru = resource.struct_rusage((1.5, 0.25, 81920, *([0] * 13)))
    r = st.usage_from_rusage(ru)
    assert (1.5, 0.25, 81920, 0) == (r.user_s, r.system_s, r.hwm_kib, r.rss_kib)


def test_usage_of_this_process_agrees_with_getrusage() -> None:
    """Parsing our own /proc entries gives what the kernel's rusage says (to a clock tick)."""
    pid = os.getpid()
    u = st.usage_from_proc(
        Path(f"/proc/{pid}/stat").read_text(),
        Path(f"/proc/{pid}/status").read_text(),
        os.sysconf("SC_CLK_TCK"),
    )
    ru = resource.getrusage(resource.RUSAGE_SELF)
    assert 0 < u.rss_kib <= u.hwm_kib
    assert abs(u.hwm_kib - ru.ru_maxrss) < 4096
    assert abs(u.cpu_s - (ru.ru_utime + ru.ru_stime)) < 0.1


@pytest.mark.parametrize(
    ("method", "path", "query", "watch", "expected"),
    [
        ("GET", "/api/v1/persistentvolumeclaims", "", False, ("list persistentvolumeclaims", "", "")),
        ("GET", "/api/v1/persistentvolumes", "watch=true&rv=5", False, ("watch persistentvolumes", "", "")),
        ("GET", "/api/v1/persistentvolumes", "", True, ("watch persistentvolumes", "", "")),
        ("POST", "/api/v1/persistentvolumes", "", False, ("create persistentvolumes", "", "")),
        ("GET", "/api/v1/persistentvolumes/pvc-x", "", False, ("get persistentvolumes", "", "pvc-x")),
        (
            "PATCH",
            "/api/v1/namespaces/ns/persistentvolumeclaims/c1",
            "",
            False,
            ("patch persistentvolumeclaims", "ns", "c1"),
        ),
        (
            "PUT",
            "/api/v1/namespaces/ns/persistentvolumeclaims/c1/status",
            "",
            False,
            ("update persistentvolumeclaims/status", "ns", "c1"),
        ),
        ("POST", "/api/v1/namespaces/ns/events", "", False, ("create events", "ns", "")),
        (
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
            "",
            False,
            ("update leases", "kube-system", "l"),
        ),
        ("GET", "/api/v1/namespaces", "", False, ("list namespaces", "", "")),
        ("GET", "/api/v1/namespaces/default", "", False, ("get namespaces", "", "default")),
        ("DELETE", "/api/v1/persistentvolumes/pvc-x", "", False, ("delete persistentvolumes", "", "pvc-x")),
    ],
)
def test_kube_target_names_requests_like_the_audit_log(
    method: str, path: str, query: str, watch: bool, expected: tuple[str, str, str]
) -> None:
    """verb + resource(/subresource), namespace and name from method, path and query."""
    t = st.kube_target(KubeRequest(method=method, path=path, query=query, watch=watch))
    assert expected == (t.key, t.namespace, t.name)


def test_kube_attribution_by_claim_and_pv_name() -> None:
    """Claim paths and pvc-<uid> PVs go to their claim; creates to the shared bucket; lists are fixed."""
    reqs = [
        KubeRequest(method="GET", path="/api/v1/persistentvolumeclaims"),
        KubeRequest(method="GET", path="/api/v1/persistentvolumeclaims", watch=True),
        KubeRequest(method="PATCH", path="/api/v1/namespaces/default/persistentvolumeclaims/b00000"),
        KubeRequest(method="PATCH", path="/api/v1/namespaces/default/persistentvolumeclaims/b00000"),
        KubeRequest(method="PATCH", path="/api/v1/namespaces/default/persistentvolumeclaims/b00001"),
        KubeRequest(method="POST", path="/api/v1/persistentvolumes"),
        KubeRequest(method="POST", path="/api/v1/persistentvolumes"),
        KubeRequest(method="PATCH", path=f"/api/v1/persistentvolumes/pvc-{UID_B}"),
        KubeRequest(
            method="PATCH", path="/api/v1/persistentvolumes/pvc-00000000-0000-0000-0000-000000000000"
        ),
        KubeRequest(method="POST", path="/api/v1/namespaces/default/events"),
        KubeRequest(method="PUT", path="/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"),
        KubeRequest(method="PATCH", path="/api/v1/namespaces/default/persistentvolumeclaims/someone-else"),
    ]
    a = st.attribute_kube(reqs, CLAIMS)
    assert {
        "b00000": Counter({"patch persistentvolumeclaims": 2}),
        "b00001": Counter({"patch persistentvolumeclaims": 1, "patch persistentvolumes": 1}),
    } == a.per_claim
    assert Counter({"create persistentvolumes": 2, "create events": 1}) == a.unnamed_per_claim_work
    assert Counter(
        {"list persistentvolumeclaims": 1, "watch persistentvolumeclaims": 1, "update leases": 1,
         "patch persistentvolumes": 1, "patch persistentvolumeclaims": 1}
    ) == a.fixed  # fmt: skip
    # 3 unnamed creates shared by 2 claims = 1.5 each: b00000 has 3.5, b00001 3.5
    assert ["b00000", "b00001"] == a.claims_over(3.0)
    assert [] == a.claims_over(3.5)


def test_cinder_attribution_follows_ids_the_answers_gave() -> None:
    """create (name) → id → get; attachment (volume_uuid) → its id → complete; lookups by claim uid."""
    lookup = f"/v3/p/volumes/detail?metadata=%7B%27uid%27%3A+%27{UID_A}%27%7D"
    calls = [
        CinderCall(operation="auth", path="/identity/v3/auth/tokens", at=0.0),
        CinderCall(operation="list_volumes", path=lookup, at=1.0),
        CinderCall(
            operation="create_volume", path="/v3/p/volumes", at=2.0, result_id="vol-a", volume=f"pvc-{UID_A}"
        ),
        CinderCall(
            operation="create_volume", path="/v3/p/volumes", at=2.0, result_id="vol-b", volume=f"pvc-{UID_B}"
        ),
        CinderCall(operation="get_volume", path="/v3/p/volumes/vol-a", at=3.0),
        CinderCall(
            operation="create_attachment", path="/v3/p/attachments", at=4.0, result_id="att-a", volume="vol-a"
        ),
        CinderCall(operation="complete_attachment", path="/v3/p/attachments/att-a/action", at=5.0),
        CinderCall(operation="delete_volume", path="/v3/p/volumes/vol-b", at=6.0),
        CinderCall(operation="list_volumes", path="/v3/p/volumes/detail", at=6.0),
    ]
    a = st.attribute_cinder(calls, CLAIMS)
    first = {"list_volumes": 1, "create_volume": 1, "get_volume": 1, "create_attachment": 1}
    assert Counter({**first, "complete_attachment": 1}) == a.per_claim["b00000"]
    assert Counter({"create_volume": 1, "delete_volume": 1}) == a.per_claim["b00001"]
    assert Counter({"auth": 1, "list_volumes": 1}) == a.fixed
    later = st.attribute_cinder(calls, CLAIMS, since=5.0)  # ids learnt from earlier calls, not counted
    assert Counter({"complete_attachment": 1}) == later.per_claim["b00000"]
    assert Counter({"delete_volume": 1}) == later.per_claim["b00001"]
    assert Counter({"list_volumes": 1}) == later.fixed


def test_within_and_counts() -> None:
    """Records in a closed time window; counts by key; per claim rounded and sorted."""
    reqs = [KubeRequest(method="POST", path="/api/v1/persistentvolumes", at=t) for t in (0.5, 1.0, 2.0, 3.5)]
    assert 2 == len(st.within(reqs, 1.0, 2.0))
    assert {"create persistentvolumes": 0.667} == st.per_claim_by_key(st.kube_counts(reqs[:2]), 3)
    assert {} == st.per_claim_by_key(Counter({"x": 1}), 0)


def test_cinder_calls_from_metrics_sum_every_status_of_an_operation() -> None:
    """The latency histogram's _count samples by operation (ok and errors summed); others ignored."""
    text = (
        "# HELP cinder_provisioner_cinder_request_seconds Cinder API call latency\n"
        'cinder_provisioner_cinder_request_seconds_bucket{le="0.5",operation="get_volume",status="ok"} 3.0\n'
        'cinder_provisioner_cinder_request_seconds_count{operation="get_volume",status="ok"} 7.0\n'
        'cinder_provisioner_cinder_request_seconds_count{operation="get_volume",status="CinderGone"} 2.0\n'
        'cinder_provisioner_cinder_request_seconds_count{operation="create_volume",status="ok"} 5.0\n'
        'cinder_provisioner_cinder_request_seconds_sum{operation="create_volume",status="ok"} 1.25\n'
        'cinder_provisioner_provision_total{outcome="success",reason="",storage_class="b"} 5.0\n'
    )
    assert Counter({"get_volume": 9, "create_volume": 5}) == st.cinder_calls_from_metrics(text)
    assert Counter() == st.cinder_calls_from_metrics("")


def test_slot_use_from_the_real_exposition_of_the_slot_metrics() -> None:
    """The slot metrics as prometheus-client writes them: held seconds and waits by operation, every
    cloud summed; the report puts slot-seconds over C and a create's mean wait for its slot."""
    metrics = make_metrics()
    for cloud, waited, held in (("a", 0.0, 0.5), ("a", 0.2, 0.5), ("b", 0.4, 0.6)):
        metrics.observe_cinder_slot(cloud, "create_volume", waited, held)
    metrics.observe_cinder_slot("a", "create_attachment", 0.0, 0.025)
    metrics.observe_cinder("create_volume", "ok", 0.5)  # the call latency is not slot use
    use = st.slot_use_from_metrics(generate_latest(metrics.registry).decode())
    assert {"create_attachment", "create_volume"} == set(use)
    create = use["create_volume"]
    assert (3, 1.6, 0.6) == (create.attempts, round(create.held_s, 6), round(create.waited_s, 6))
    report = st.slot_report(use, in_flight=2, n=3)
    assert {"create_attachment": 25.0, "create_volume": 533.3} == report["slot_ms_per_attempt"]
    assert (0.812, 0.2) == (report["slot_busy_s"], report["create_slot_wait_mean_s"])
    assert 0.5417 == report["slot_seconds_per_pvc"]
    assert {} == st.slot_use_from_metrics("")
    metrics.observe_cinder_slot("a", "create_volume", 1.0, 0.5)
    later = st.slot_use_from_metrics(generate_latest(metrics.registry).decode())
    since = st.slot_use_since(later, use)
    assert ["create_volume"] == list(since)  # create_attachment made no attempt in between
    assert (1, 0.5, 1.0) == (
        since["create_volume"].attempts,
        round(since["create_volume"].held_s, 6),
        round(since["create_volume"].waited_s, 6),
    )
    assert None is st.slot_report({}, in_flight=2, n=0)["create_slot_wait_mean_s"]


def test_host_cpu_shares_between_two_proc_stat_readings() -> None:
    """Busy = not idle, iowait or steal; steal is its own share; a reading without ticks is zero."""
    before = st.parse_host_cpu("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    after = st.parse_host_cpu("cpu  160 0 70 900 10 0 10 140 0 0\n")
    assert {"host_busy_pct": 31.0, "host_steal_pct": 34.5} == st.host_cpu_report(before, after)
    assert {"host_busy_pct": 0.0, "host_steal_pct": 0.0} == st.host_cpu_report(after, after)
    with pytest.raises(ValueError, match="not /proc/stat"):
        st.parse_host_cpu("intr 1 2 3")
    assert set(st.HOST_COLUMNS) == set(st.parse_host_cpu(Path("/proc/stat").read_text()))


def test_efficiency_maths() -> None:
    """bound N·T/C, bound/wall, CPU per claim, bytes per object over an empty-cluster baseline."""
    assert 15.625 == st.physical_bound(1000, 0.5, 32)
    assert 0.5 == st.efficiency(15.625, 31.25)
    assert 12.5 == st.cpu_ms_per_claim(12.5, 1000)
    assert 2048.0 == st.bytes_per_object(70_000, 50_000, 10_000)
    with pytest.raises(ValueError, match="C ≥ 1"):
        st.physical_bound(10, 0.5, 0)
    with pytest.raises(ValueError, match="wall time must be positive"):
        st.efficiency(1.0, 0.0)
    with pytest.raises(ValueError, match="at least one claim"):
        st.cpu_ms_per_claim(1.0, 0)
    with pytest.raises(ValueError, match="at least one object"):
        st.bytes_per_object(1, 1, 0)


def test_summary_line_has_exactly_the_issue_keys_in_order() -> None:
    """Thirteen keys in the issue's order; parts not run are null; a stray key is refused."""
    line = st.summary_line({"p1_efficiency": 0.91234, "p2_ready_s": 3})
    assert [
        "p1_efficiency", "p1_cpu_ms_per_pvc", "p1_peak_rss_mib", "p1_kube_requests_per_pvc",
        "p1_cinder_calls_per_pvc", "p1_defaults_efficiency", "p2_bytes_per_object", "p2_ready_s",
        "p3_failover_s", "p3_failover_tuned_s", "p4_overhead_ms", "p4_recovery_s", "p5_ratio",
    ] == list(line)  # fmt: skip
    assert (0.912, 3.0, None) == (line["p1_efficiency"], line["p2_ready_s"], line["p5_ratio"])
    with pytest.raises(KeyError, match="p9_speed"):
        st.summary_line({"p9_speed": 1.0})


def test_meets_and_table() -> None:
    """Targets read in their direction; unknowns are neither met nor missed; the table lines up."""
    assert st.meets(0.96, 0.95, ">=") is True
    assert st.meets(2.5, 2.0, "<=") is False
    assert st.meets(None, 2.0, "<=") is None
    text = st.render_table([("p1_efficiency", "0.5", ">= 0.95", "MISSED"), ("x", "1", "", "")])
    lines = text.splitlines()
    assert lines[0].startswith("measure")
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].index("0.5") == lines[0].index("value")
