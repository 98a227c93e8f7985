"""Table tests for the provision flow's pure decisions, and its behaviour over time on fakes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderReferenceNotFound, CinderUnavailable
from provisioner.domain.model import CreateVolumeRequest, SnapshotId, Volume, VolumeId
from provisioner.flows.adopt import Adopt, Refuse
from provisioner.flows.provision import _class_grace, reconcile_claim
from provisioner.flows.provision_decide import (
    Abandon,
    AdoptVolume,
    Bind,
    ClaimState,
    Create,
    Done,
    Fail,
    Limits,
    LookUp,
    PersistIntent,
    ReplaceErrorVolume,
    ResolveDuplicates,
    Step,
    VolumeState,
    Wait,
    decide,
    decide_claim,
    decide_volume,
    reference_error,
)
from provisioner.flows.provision_execute import resolve_content_kind
from tests.fakes.ports import make_context

UID = "0e572045-ae5a-491c-83e4-6b55e6dfa8be"
PV = names.pv_name_for(UID)
CLAIM = ClaimState(key="ns/data", uid=UID, class_name="fast")
INTENT = replace(CLAIM, intent=True)
LIMITS = Limits(max_error_retries=3, create_deadline_seconds=600.0)


def vol(status: str = "available") -> Volume:
    return Volume(id=VolumeId("v1"), name=PV, status=status, size_gib=1)


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        pytest.param(replace(CLAIM, deleting=True, intent=True), Abandon(), id="deleted-with-intent"),
        pytest.param(replace(CLAIM, deleting=True), Done(), id="deleted-without-intent"),
        pytest.param(replace(CLAIM, bound_to="pv-x"), Done(release=True), id="bound"),
        pytest.param(replace(CLAIM, class_name=""), Done(), id="no-class"),
        pytest.param(replace(CLAIM, ours=False), Done(), id="not-ours"),
        pytest.param(replace(CLAIM, pv="ours"), Done(release=True), id="pv-exists-ours"),
        pytest.param(
            replace(CLAIM, pv="foreign"),
            Fail(reason="pv_name_conflict", message=f"PV {PV} exists but belongs to another claim"),
            id="pv-exists-foreign",
        ),
        pytest.param(
            replace(CLAIM, class_found=False),
            Fail(reason="class_not_found", message="StorageClass 'fast' not found", retry=60.0),
            id="class-missing",
        ),
        pytest.param(
            replace(CLAIM, class_found=False, class_grace=3.5),
            Wait(reason="class_not_in_cache", delay=1.0),
            id="class-missing-young-claim-waits-without-warning",
        ),
        pytest.param(
            replace(CLAIM, class_found=False, class_grace=0.4),
            Wait(reason="class_not_in_cache", delay=0.4),
            id="class-missing-grace-almost-over",
        ),
        pytest.param(
            replace(CLAIM, bad_class="parameters.fsType: bad"),
            Fail(reason="invalid_parameters", message="StorageClass fast: parameters.fsType: bad"),
            id="bad-class",
        ),
        pytest.param(
            replace(CLAIM, bad_claim="spec.accessModes: bad"),
            Fail(reason="invalid_claim", message="claim: spec.accessModes: bad"),
            id="bad-claim",
        ),
        pytest.param(replace(CLAIM, waits_for_node=True), Done(), id="wait-for-first-consumer"),
        pytest.param(
            replace(CLAIM, cloud_wait=3.0), Wait(reason="rate_limited", delay=3.0), id="cloud-closed-429"
        ),
        pytest.param(
            replace(INTENT, poll_wait=1.5), Wait(reason="poll_not_due", delay=1.5), id="poll-not-due"
        ),
        pytest.param(replace(CLAIM, poll_wait=1.5), LookUp(), id="poll-timer-without-intent-looks-up"),
        pytest.param(CLAIM, LookUp(), id="in-order"),
    ],
)
def test_decide_claim(claim: ClaimState, expected: Step) -> None:
    """Each Kubernetes-side situation gives exactly one step."""
    assert expected == decide_claim(claim)


@pytest.mark.parametrize(
    ("claim", "volume", "expected"),
    [
        pytest.param(CLAIM, VolumeState(duplicates=True), ResolveDuplicates(), id="duplicates"),
        pytest.param(CLAIM, VolumeState(), Create(), id="no-volume-create"),
        pytest.param(
            CLAIM,
            VolumeState(in_flight_wait=20.0),
            Wait(reason="previous_create_in_flight", delay=20.0),
            id="other-replicas-create-may-land",
        ),
        pytest.param(CLAIM, VolumeState(volume=vol()), PersistIntent(), id="volume-without-intent"),
        pytest.param(
            INTENT, VolumeState(volume=vol("creating")), Wait(reason="waiting", poll=True), id="creating"
        ),
        pytest.param(
            INTENT,
            VolumeState(volume=vol("creating"), waited=601.0),
            Wait(
                reason="waiting",
                poll=True,
                warn="Cinder volume v1 still creating after 600s; still waiting",
            ),
            id="creating-past-deadline-warns-once",
        ),
        pytest.param(
            INTENT,
            VolumeState(volume=vol("creating"), waited=601.0, deadline_warned=True),
            Wait(reason="waiting", poll=True),
            id="creating-past-deadline-already-warned",
        ),
        pytest.param(
            INTENT, VolumeState(volume=vol("deleting")), Wait(reason="deleting", poll=True), id="deleting"
        ),
        pytest.param(
            INTENT,
            VolumeState(volume=vol("error")),
            ReplaceErrorVolume(volume_id="v1", status="error", attempt=1, give_up=False),
            id="error-first",
        ),
        pytest.param(
            INTENT,
            VolumeState(volume=vol("error_restoring"), error_volumes=2),
            ReplaceErrorVolume(volume_id="v1", status="error_restoring", attempt=3, give_up=True),
            id="error-last-gives-up",
        ),
        pytest.param(
            INTENT,
            VolumeState(volume=vol("awaiting-transfer")),
            Wait(reason="awaiting-transfer", poll=True),
            id="unknown-status-waits",
        ),
        pytest.param(INTENT, VolumeState(volume=vol()), Bind(volume=vol()), id="available-bind"),
        pytest.param(INTENT, VolumeState(volume=vol("in-use")), Bind(volume=vol("in-use")), id="in-use-bind"),
    ],
)
def test_decide_volume(claim: ClaimState, volume: VolumeState, expected: Step) -> None:
    """Each Cinder-side situation gives exactly one step."""
    assert expected == decide_volume(claim, volume, LIMITS)


def test_decide_uses_the_volume_only_after_lookup() -> None:
    """A claim that is not in order is decided without looking at Cinder's answer."""
    assert Done() == decide(replace(CLAIM, ours=False), VolumeState(), LIMITS)
    assert Create() == decide(CLAIM, VolumeState(), LIMITS)
    assert LookUp() == decide(CLAIM, None, LIMITS)


REQUEST = CreateVolumeRequest(
    name=PV, size_gib=1, volume_type="fsat", availability_zone="az9", snapshot_id=None, metadata={}
)
PVC: dict[str, Any] = {"metadata": {"name": "data", "namespace": "ns", "uid": UID}}


@pytest.mark.parametrize(
    ("reference", "request_", "pvc", "expected"),
    [
        pytest.param(
            "volume_type",
            REQUEST,
            PVC,
            "parameters.type: volume type 'fsat' does not exist in cloud 'main'",
            id="type",
        ),
        pytest.param(
            "availability_zone",
            REQUEST,
            PVC,
            "parameters.availability: availability zone 'az9' does not exist in cloud 'main'",
            id="az",
        ),
        pytest.param(
            "snapshot_id",
            replace(REQUEST, snapshot_id=SnapshotId("s1")),
            {"metadata": {**PVC["metadata"], "annotations": {names.ANN_RESTORE_FROM_SNAPSHOT: "s1"}}},
            f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]: Cinder snapshot 's1' does not exist "
            "in cloud 'main'",
            id="restore-annotation",
        ),
        pytest.param(
            "snapshot_id",
            replace(REQUEST, snapshot_id=SnapshotId("s1")),
            PVC,
            "spec.dataSource: Cinder snapshot 's1' does not exist in cloud 'main'",
            id="volumesnapshot",
        ),
        pytest.param(
            "source_volid",
            replace(REQUEST, source_volid=VolumeId("v7")),
            PVC,
            "spec.dataSource: source volume 'v7' does not exist in cloud 'main'",
            id="clone",
        ),
    ],
)
def test_reference_error_names_the_users_field(
    reference: str, request_: CreateVolumeRequest, pvc: dict[str, Any], expected: str
) -> None:
    """A create's 404 becomes an error naming the class or claim field that caused it."""
    err = CinderReferenceNotFound("not found", reference=reference, operation="create_volume")
    assert expected == str(reference_error(err, cloud="main", request=request_, pvc=pvc))


# ---- executor and behaviour over time (fakes, fake clock) ----------------------------------------------


def _claim(world: Any, annotations: dict[str, str] | None = None) -> None:
    world.kube.put(
        "storageclasses",
        {
            "metadata": {"name": "fast", "resourceVersion": "1"},
            "provisioner": names.DEFAULT_PROVISIONER_NAME,
            "parameters": {"type": "fsat"},
        },
    )
    world.kube.put(
        "persistentvolumeclaims",
        {
            "metadata": {"name": "data", "namespace": "ns", "uid": UID, "annotations": annotations or {}},
            "spec": {
                "storageClassName": "fast",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def test_unknown_volume_type_is_one_final_error_naming_the_field() -> None:
    """Cinder 404 for the class type: final (slow retry), one create, two claim writes, one Warning."""
    world = make_context(final_retry_seconds=300.0)
    _claim(world)
    world.cinder.fail(
        "create_volume",
        CinderReferenceNotFound("Volume type with name fsat could not be found.", reference="volume_type"),
    )
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert ("final", 300.0) == (outcome.kind, outcome.delay)
    assert ["create_volume"] == world.cinder.methods_called()  # a claim never marked: no lookup
    warnings = world.events.distinct("Warning")
    assert 1 == len(warnings)
    assert "parameters.type: volume type 'fsat' does not exist in cloud 'default'" == warnings[0].message
    patches = [c for c in world.kube.calls if c[0] == "patch" and c[1] == "persistentvolumeclaims"]
    assert 2 == len(patches)  # intent, then the final failure recorded for the next leader


@pytest.mark.parametrize("value", ["../volumes/v1", "-x", "a/b", "", "x" * 200])
def test_bad_restore_annotation_never_reaches_cinder(value: str) -> None:
    """A restore id that is not a Cinder id: final error naming the annotation, no Cinder call at all."""
    world = make_context()
    _claim(world, {names.ANN_RESTORE_FROM_SNAPSHOT: value})
    outcome = reconcile_claim(world.ctx, "ns/data")
    assert "final" == outcome.kind
    assert [] == world.cinder.methods_called()
    (warning,) = world.events.distinct("Warning")
    assert f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]" in warning.message


def test_transient_errors_repeat_one_deduplicated_warning() -> None:
    """A Cinder outage: every attempt is a retryable error, and the user sees one Warning (count rising)."""
    world = make_context()
    _claim(world, {names.ANN_CREATE_ATTEMPT: "replica-0 0.000"})  # marked by us earlier: look up first
    world.cinder.fail("find_volume", CinderUnavailable("503", operation="find_volume", request_id="req-1"))
    outcomes = []
    for i in range(20):
        world.cinder.fail(
            "find_volume", CinderUnavailable("503", operation="find_volume", request_id=f"req-{i}")
        )
        outcomes.append(reconcile_claim(world.ctx, "ns/data").kind)
        world.clock.advance(5.0)
    assert ["error"] * 20 == outcomes
    assert 1 == len(world.events.distinct("Warning"))
    assert "create_volume" not in world.cinder.methods_called()


def test_a_recorded_final_failure_holds_a_new_leader_until_due() -> None:
    """The failure recorded on the claim stops a fresh replica (no memory) from calling Cinder early."""
    world = make_context(final_retry_seconds=300.0)
    _claim(world)
    world.cinder.fail(
        "create_volume",
        CinderReferenceNotFound("Volume type with name fsat could not be found.", reference="volume_type"),
    )
    reconcile_claim(world.ctx, "ns/data")
    fresh = make_context(kube=world.kube, clouds=world.clouds, clock=world.clock, final_retry_seconds=300.0)
    before = len(world.cinder.methods_called())
    outcome = reconcile_claim(fresh.ctx, "ns/data")
    assert ("requeue", "final_failure_not_due") == (outcome.kind, outcome.reason)
    assert before == len(world.cinder.methods_called())
    world.clock.advance(301.0)
    assert "final" == reconcile_claim(fresh.ctx, "ns/data").kind  # due again: one more try
    # one create, no lookup: the refused attempt's record released the intent (test_provision_refused.py)
    assert ["create_volume"] == world.cinder.methods_called()[before:]


def test_a_changed_claim_is_retried_despite_a_recorded_failure() -> None:
    """A user change (here: the class fixed) changes the shape, so the recorded failure no longer holds."""
    world = make_context(final_retry_seconds=300.0)
    _claim(world)
    world.cinder.fail(
        "create_volume",
        CinderReferenceNotFound("Volume type with name fsat could not be found.", reference="volume_type"),
        times=1,
    )
    reconcile_claim(world.ctx, "ns/data")
    sc = world.kube.find("storageclasses", "fast")
    assert sc is not None
    world.kube.put("storageclasses", {**sc, "metadata": {**sc["metadata"], "resourceVersion": "2"}})
    assert "requeue" == reconcile_claim(world.ctx, "ns/data").kind  # created; now polling
    assert 2 == world.cinder.methods_called().count("create_volume")


# ---- adoption ------------------------------------------------------------------------------------------

ADOPTING = replace(INTENT, adopting=True)
REFUSAL = Refuse(field="parameters.allowAdoption", message="not allowed", reason="adoption_not_allowed")


@pytest.mark.parametrize(
    ("claim", "volume", "expected"),
    [
        pytest.param(
            ADOPTING, VolumeState(), Wait(reason="adoption_not_checked", delay=1.0), id="no-verdict-yet"
        ),
        pytest.param(
            ADOPTING,
            VolumeState(adoption=REFUSAL),
            Fail(reason="adoption_not_allowed", message="parameters.allowAdoption: not allowed", retry=300.0),
            id="refused",
        ),
        pytest.param(
            replace(ADOPTING, intent=False),
            VolumeState(adoption=Adopt(volume=vol(), tags={"k": "v"})),
            PersistIntent(),
            id="intent-first",
        ),
        pytest.param(
            ADOPTING,
            VolumeState(adoption=Adopt(volume=vol(), tags={"k": "v"})),
            AdoptVolume(adopt=Adopt(volume=vol(), tags={"k": "v"})),
            id="tag-it",
        ),
        pytest.param(
            ADOPTING, VolumeState(adoption=Adopt(volume=vol())), Bind(volume=vol()), id="tagged-bind"
        ),
        pytest.param(
            ADOPTING,
            VolumeState(adoption=Adopt(volume=vol("error"))),
            Fail(
                reason="adopted_volume_error",
                message="adopted Cinder volume v1 is error; it is never replaced",
                retry=300.0,
            ),
            id="tagged-error-never-replaced",
        ),
        pytest.param(
            ADOPTING,
            VolumeState(adoption=Adopt(volume=vol("attaching")), duplicates=True),
            Bind(volume=vol("attaching")),
            id="never-sweeps-duplicates",
        ),
        pytest.param(
            ADOPTING,
            VolumeState(adoption=Adopt(volume=vol("maintenance"))),
            Wait(reason="maintenance", poll=True),
            id="tagged-waits",
        ),
    ],
)
def test_decide_adoption(claim: ClaimState, volume: VolumeState, expected: Step) -> None:
    """An adopting claim adopts the named volume or fails; it never creates, replaces or sweeps."""
    assert expected == decide_volume(claim, volume, LIMITS)


def test_claim_side_adoption_refusal_fails_before_cinder() -> None:
    """A refusal found on the claim alone (class disallows) is a Fail without looking Cinder up."""
    expected = Fail(reason="adoption_not_allowed", message="parameters.allowAdoption: not allowed")
    assert expected == decide_claim(replace(CLAIM, adopting=True, refused=REFUSAL))


def test_adoption_on_fakes_tags_and_never_deletes_the_admins_volume() -> None:
    """Allowed + available + untagged: tagged once, no create; an unmappable export only unexports it."""
    world = make_context()
    world.cinder.add_volume("adm-1", name="legacy-data", size_gib=2)
    _claim(world, {names.ANN_ADOPT_VOLUME: "adm-1"})
    sc = world.kube.find("storageclasses", "fast")
    assert sc is not None
    world.kube.put("storageclasses", {**sc, "parameters": {"allowAdoption": "true"}})
    reconcile_claim(world.ctx, "ns/data")  # the fake's connection info does not map: the export is undone
    called = world.cinder.methods_called()
    assert "create_volume" not in called
    assert "delete_volume" not in called
    assert 1 == called.count("set_volume_metadata")
    assert UID == world.cinder.volumes[VolumeId("adm-1")].metadata[names.META_PVC_UID]


def test_content_kind_of_an_adopted_volume_stays_adopted_after_tagging() -> None:
    """After tagging, the volume carries the claim's uid; it must still never be formatted."""
    pvc = {"metadata": {"uid": UID, "annotations": {names.ANN_ADOPT_VOLUME: "v1"}}}
    tagged = replace(vol(), metadata={names.META_PVC_UID: UID})
    assert "adopted" == resolve_content_kind(pvc, tagged)


@pytest.mark.parametrize(
    ("spec", "annotations", "volume_fields", "expected"),
    [
        pytest.param({}, {}, {}, "empty", id="new-claim-new-volume"),
        pytest.param({}, {}, {"snapshot_id": "s1"}, "snapshot", id="cinder-shows-a-snapshot"),
        pytest.param({}, {}, {"source_volid": "v0"}, "volume", id="cinder-shows-a-clone"),
        pytest.param(
            {},
            {},
            {"metadata": {names.META_PVC_UID: UID, names.META_RESTORED_FROM_BACKUP: "b1"}},
            "snapshot",
            id="restored-backup",
        ),
        # The claim asked for a source Cinder does not show (a broken restore): never "empty".
        pytest.param(
            {"dataSource": {"kind": "VolumeSnapshot", "name": "s"}}, {}, {}, "snapshot", id="snapshot-lost"
        ),
        pytest.param(
            {"dataSource": {"kind": "PersistentVolumeClaim", "name": "c"}}, {}, {}, "volume", id="clone-lost"
        ),
        pytest.param(
            {"dataSourceRef": {"kind": "VolumeSnapshot", "name": "s"}}, {}, {}, "snapshot", id="ref-lost"
        ),
        pytest.param({}, {names.ANN_RESTORE_FROM_SNAPSHOT: "s1"}, {}, "snapshot", id="annotation-lost"),
        pytest.param({}, {names.ANN_RESTORE_FROM_BACKUP: "b1"}, {}, "snapshot", id="backup-annotation-lost"),
    ],
)
def test_content_kind_never_lets_a_claim_that_asked_for_data_be_formatted(
    spec: dict[str, Any], annotations: dict[str, str], volume_fields: dict[str, Any], expected: str
) -> None:
    pvc = {"metadata": {"uid": UID, "annotations": annotations}, "spec": spec}
    fields = {"metadata": {names.META_PVC_UID: UID}, **volume_fields}
    assert expected == resolve_content_kind(pvc, replace(vol(), **fields))


def test_class_grace_counts_from_the_claims_creation() -> None:
    """A claim 2 s old has 3 s of grace left; 10 s old or an unreadable stamp has none."""
    born = "2026-01-01T00:00:00Z"
    t0 = 1_767_225_600.0  # that instant
    assert 3.0 == _class_grace(born, t0 + 2.0)
    assert 0.0 == _class_grace(born, t0 + 10.0)
    assert 0.0 == _class_grace(None, t0)
    assert 5.0 == _class_grace(born, t0 - 100.0)  # a clock behind the server: never more than the grace
