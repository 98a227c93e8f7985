"""The chaos harness's behaviour counters: attribution of synthetic request logs to claims, and bounds."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from provisioner.domain import names
from provisioner.testworld.cinder_emulator.http import CallRecord
from provisioner.testworld.harness import chaos_metrics as cm
from provisioner.testworld.harness.chaos import storm_length
from provisioner.testworld.kube_sim.faults import RequestRecord

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
VOL1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
ATT1 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
TARGET = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
P = "/v3/0123456789abcdef0123456789abcdef"

HEALTHY = cm.Claim(namespace="default", name="claim-00000", uid=U1, created_at=100.0)
BAD = cm.Claim(
    namespace="default",
    name="bad-restore-0",
    uid=U2,
    created_at=100.0,
    kind="bad_restore",
    ids=frozenset({TARGET}),
)


def call(
    op: str, path: str, at: float, *, body: Any = None, result_id: str | None = None, status: int = 200
) -> CallRecord:
    return CallRecord(
        method="GET",
        path=path,
        operation=op,
        microversion="3.71",
        status=status,
        request_id="req-x",
        at=at,
        body=body,
        result_id=result_id,
    )


def create_body(uid: str) -> dict[str, Any]:
    return {
        "volume": {
            "size": 1,
            "name": f"pvc-{uid}",
            "metadata": {names.META_PVC_UID: uid, names.META_CLUSTER: "chaos"},
        }
    }


def test_cinder_calls_are_attributed_by_name_body_and_learned_ids() -> None:
    """Name filter, create body, then the created volume's and attachment's ids all count for the claim."""
    calls = [
        call("find_volume", f"{P}/volumes/detail?name=pvc-{U1}&metadata=%7B%27c%27%3A+%27chaos%27%7D", 1.0),
        call("create_volume", f"{P}/volumes", 2.0, body=create_body(U1), result_id=VOL1, status=202),
        call("get_volume", f"{P}/volumes/{VOL1}", 3.0),
        call(
            "create_attachment",
            f"{P}/attachments",
            4.0,
            body={"attachment": {"volume_uuid": VOL1}},
            result_id=ATT1,
        ),
        call("delete_attachment", f"{P}/attachments/{ATT1}", 5.0),
        call("list_volumes", f"{P}/volumes/detail?metadata=%7B%27c%27%3A+%27chaos%27%7D", 6.0),
        call("auth", "/identity/v3/auth/tokens", 7.0),
    ]
    by_claim, unattributed = cm.attribute_cinder(calls, [HEALTHY, BAD])
    assert [1.0, 2.0, 3.0, 4.0, 5.0] == by_claim[U1]
    assert [] == by_claim[U2]
    assert {"auth": 1, "list_volumes": 1} == unattributed


def test_bad_restore_target_id_is_attributed_to_its_claim() -> None:
    """A call on the path-like restore target (``../volumes/<id>``) counts for the claim that named it."""
    calls = [
        call("unknown", f"{P}/snapshots/../volumes/{TARGET}", 1.0, status=404),
        call("get_volume", f"{P}/volumes/{TARGET}", 2.0, status=404),
    ]
    by_claim, unattributed = cm.attribute_cinder(calls, [HEALTHY, BAD])
    assert [1.0, 2.0] == by_claim[U2]
    assert {} == unattributed


def test_a_call_naming_two_claims_is_unattributed() -> None:
    """Ambiguity is not guessed away: a request naming two claims' uids counts for neither."""
    calls = [call("list_volumes", f"{P}/volumes?name~={U1},{U2}", 1.0)]
    by_claim, unattributed = cm.attribute_cinder(calls, [HEALTHY, BAD])
    assert ([], [], {"list_volumes": 1}) == (by_claim[U1], by_claim[U2], unattributed)


def test_claim_uid_beats_the_id_of_another_claims_object() -> None:
    """A restore create names the source's snapshot and the new claim's uid: the uid decides."""
    calls = [
        call("create_volume", f"{P}/volumes", 1.0, body=create_body(U1), result_id=VOL1, status=202),
        call("create_volume", f"{P}/volumes", 2.0, body={**create_body(U2), "snapshot_id": VOL1}, status=202),
    ]
    by_claim, _ = cm.attribute_cinder(calls, [HEALTHY, BAD])
    assert ([1.0], [2.0]) == (by_claim[U1], by_claim[U2])


def test_failed_creates_teach_no_ids_and_successful_ones_are_volumes_created() -> None:
    """Only a successful create (``result_id`` set) makes a volume; 404s for a bad type make none."""
    calls = [
        call("create_volume", f"{P}/volumes", 1.0, body=create_body(U2), status=404),
        call("create_volume", f"{P}/volumes", 2.0, body=create_body(U1), result_id=VOL1, status=202),
    ]
    assert set() == cm.volumes_created(calls, [BAD])
    assert {VOL1} == cm.volumes_created(calls, [HEALTHY])


def test_claim_writes_count_patch_and_put_on_the_claim_and_its_status() -> None:
    """Reads, watches, creates and other claims' writes are not writes of this claim."""
    base = "/api/v1/namespaces/default/persistentvolumeclaims"
    reqs = [
        RequestRecord(method="PATCH", path=f"{base}/claim-00000", query="", status=200, at=1.0),
        RequestRecord(method="PUT", path=f"{base}/claim-00000/status", query="", status=409, at=2.0),
        RequestRecord(method="GET", path=f"{base}/claim-00000", query="", status=200, at=3.0),
        RequestRecord(method="POST", path=base, query="", status=201, at=4.0),
        RequestRecord(method="PATCH", path=f"{base}/bad-restore-0", query="", status=200, at=5.0),
        RequestRecord(method="PATCH", path="/api/v1/namespaces/other/persistentvolumeclaims/claim-00000",
                      query="", status=200, at=6.0),
    ]  # fmt: skip
    writes = cm.claim_writes(reqs, [HEALTHY, BAD])
    assert ([1.0, 2.0], [5.0]) == (writes[U1], writes[U2])


def test_events_count_objects_and_sum_counts_per_claim() -> None:
    """Objects, count sum, reasons and reporting instances per claim (a new leader makes new objects)."""
    events = [
        {
            "involvedObject": {"kind": "PersistentVolumeClaim", "uid": U2},
            "reason": "A",
            "count": 7,
            "reportingInstance": "replica-1",
        },
        {
            "involvedObject": {"kind": "PersistentVolumeClaim", "uid": U2},
            "reason": "A",
            "reportingInstance": "replica-2",
        },
        {"involvedObject": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "claim-00000"}},
        {"involvedObject": {"kind": "PersistentVolume", "uid": U1}, "count": 3},
    ]
    found = cm.claim_events(events, [HEALTHY, BAD])
    assert {U2: (2, 8, 1, 2), U1: (1, 1, 1, 1)} == {
        uid: (s.event_objects, s.event_count, s.event_reasons, s.event_instances) for uid, s in found.items()
    }


def test_event_creation_times_and_messages_are_kept_and_collect_carries_duplicates() -> None:
    """firstTimestamp becomes a monotonic time (the window bound), messages are listed, and ``collect``
    passes the duplicate count on (it once dropped it, so the duplicate bound could never fail)."""
    stamp = datetime.fromtimestamp(time.time() - 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ev = {"kind": "PersistentVolumeClaim", "uid": U2}
    events = [
        {"involvedObject": ev, "type": "Warning", "reason": "ProvisioningFailed", "message": "m1",
         "firstTimestamp": stamp},
        {"involvedObject": ev, "type": "Warning", "reason": "ProvisioningFailed", "message": "m1",
         "firstTimestamp": stamp},
        {"involvedObject": ev, "type": "Warning", "reason": "ProvisioningFailed", "message": "m2"},
    ]  # fmt: skip
    found = cm.claim_events(events, [HEALTHY, BAD])[U2]
    assert 2 == len(found.event_first)
    assert abs(found.event_first[0] - (time.monotonic() - 30)) < 2.0
    assert [
        "ProvisioningFailed: m1",
        "ProvisioningFailed: m1",
        "ProvisioningFailed: m2",
    ] == found.event_messages
    seen, _ = cm.collect([HEALTHY, BAD], [], [], events)
    assert (1, 3, 2) == (seen[U2].event_duplicates, seen[U2].event_objects, len(seen[U2].event_first))


def test_windows_and_rates() -> None:
    """Calls in the first window after creation, and the busiest sliding second."""
    times = [100.0, 100.2, 100.5, 100.9, 101.0, 150.0, 161.0]
    assert 6 == cm.within(times, 100.0, 60.0)
    assert 4 == cm.max_per_window(times, 1.0)
    assert 0 == cm.max_per_window([], 1.0)
    assert (2, 4, 0) == (
        cm.percentile([1, 2, 3, 4], 50),
        cm.percentile([4, 1, 3], 100),
        cm.percentile([], 50),
    )


def test_summary_reports_bad_claim_violations_and_healthy_percentiles() -> None:
    """A bad claim over its bounds is a violation each; healthy claims only get p50/max."""
    seen = {
        U1: cm.Seen(cinder=[100.0 + i for i in range(30)], writes=[101.0, 102.0]),
        U2: cm.Seen(
            cinder=[100.0 + i / 10 for i in range(20)] + [170.0],
            writes=[101.0],
            event_objects=5,
            event_duplicates=1,
            event_first=[100.0, 100.5, 101.0, 102.0, 170.0],  # four in the first minute, one after
        ),
    }
    out = cm.summarize([HEALTHY, BAD], seen, unattributed={"auth": 5}, bounds=cm.Bounds(bad_events=3))
    assert {
        "calls_window": 20,
        "writes_window": 1,
        "event_objects": 5,
        "event_objects_window": 4,
        "events": 0,
        "event_reasons": 0,
        "event_duplicates": 1,
        "event_instances": 0,
        "calls_per_second_max": 10,
        "calls": 21,
    } == out["bad_claims"]["bad-restore-0"]
    assert (30, 30, 2) == (out["healthy_calls_p50"], out["healthy_calls_max"], out["healthy_writes_max"])
    assert (20, 10, 5) == (
        out["bad_calls_window_max"],
        out["calls_per_second_max"],
        out["cinder_calls_unattributed"],
    )
    assert [
        "bad-restore-0 (bad_restore): 20 Cinder calls in its first 60 s (bound 12)",
        "bad-restore-0 (bad_restore): 4 Event objects in its first 60 s (bound 3)",
        "bad-restore-0 (bad_restore): 1 duplicate Event objects (bound 0)",
    ] == out["violations"]
    assert out["bounds_ok"] is False
    assert (
        cm.summarize([HEALTHY, BAD], seen, {}, cm.Bounds(bad_calls=50, bad_events=5, bad_event_duplicates=1))[
            "bounds_ok"
        ]
        is True
    )


def test_calls_per_second_bound_applies_to_every_claim_when_set() -> None:
    """The per-second bound is off by default and, when set, covers healthy claims too."""
    seen = {U1: cm.Seen(cinder=[1.0, 1.1, 1.2]), U2: cm.Seen()}
    out = cm.summarize([HEALTHY, BAD], seen, {}, cm.Bounds(calls_per_second=2))
    assert ["claim-00000: 3 Cinder calls in one second (bound 2)"] == out["violations"]


def test_worker_deaths_count_only_threads_that_end_while_the_replica_runs() -> None:
    """A worker that returned while its replica ran is a death, counted once; during shutdown it is not."""
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    alive = threading.Event()
    running = threading.Thread(target=alive.wait)
    running.start()
    deaths = cm.WorkerDeaths()
    deaths.sample([done, running], stopping=lambda: True)
    assert 0 == deaths.count
    deaths.sample([done, running], stopping=lambda: False)
    deaths.sample([done, running], stopping=lambda: False)
    assert 1 == deaths.count
    alive.set()
    running.join()


def test_storm_is_a_minute_or_a_quarter_of_a_short_run() -> None:
    """300 cycles (~4 min) get the full minute; 30 cycles get a quarter of their ~24 s."""
    assert (60.0, 6.0, 0.0) == (storm_length(60, 300), storm_length(60, 30), storm_length(0, 300))
