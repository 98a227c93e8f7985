"""The snapshot flow: ``decide`` as a table (observed in → step out), parameters, and the content facts."""

# ruff: noqa: E501 - the decision tables read one situation per line

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderRateLimited, CinderUnavailable, InvalidInput
from provisioner.domain.model import Volume, VolumeId
from provisioner.flows.giveback import Backoff, Done, Fail, HoldCloud, Wait
from provisioner.flows.snapshot_execute import content_facts
from provisioner.flows.snapshot_params import SnapshotParams, parse_snapshot_parameters
from provisioner.flows.snapshots import (
    ANN_BEING_DELETED,
    SNAPSHOT_CREATION_FAILED,
    SNAPSHOT_DELETE_FAILED,
    ContentFacts,
    Create,
    Cut,
    Delete,
    Failed,
    MarkFailed,
    MarkReady,
    Observed,
    Persist,
    Poll,
    Release,
    decide,
)

COMMON = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
OURS = names.CONTENT_SNAPSHOT_FINALIZER
C = ContentFacts(
    name="snapcontent-u1",
    uid="c-uid",
    resource_version="5",
    finalizers=(COMMON, OURS),
    volume_handle="v1",
    class_name="cinder",
    ref_namespace="ns",
    ref_name="snap",
    ref_uid="u1",
)
PRE = replace(C, name="static", volume_handle=None, source_handle="s9", ref_uid="u2")
GONE = replace(C, deleting=True, being_deleted=True)
BACKOFF = Backoff(polls=2, started=100.0, initial=0.25, cap=5.0)
POLL = 0.25 * 1.5**2
UNAVAILABLE = CinderUnavailable("Service Unavailable", operation="list_snapshots", status_code=503)
RATE_LIMITED = CinderRateLimited("slow down", retry_after=7.0, status_code=429)
TAGS = {
    names.META_CLUSTER: "cluster-a",
    names.META_PVC_NAMESPACE: "ns",
    names.META_SNAPSHOT_NAME: "snap",
    names.META_SNAPSHOT_UID: "u1",
    names.META_CONTENT_NAME: "snapcontent-u1",
    names.META_PVC_NAME: "data",
    names.META_CREATED_BY: "replica-0",
}


def vol(status: str = "available") -> Volume:
    return Volume(id=VolumeId("v1"), name="pvc-x", size_gib=2, status=status)


def cut(status: str = "available", sid: str = "s1") -> Cut:
    return Cut(id=sid, status=status, size_gib=2, volume_id="v1")


def seen(content: ContentFacts | None = C, **kw: Any) -> Observed:
    values: dict[str, Any] = {"content": content, "looked": True, "backoff": BACKOFF, "cloud": "default"}
    values.update(kw)
    return Observed(**values)


def poll(content: ContentFacts, reason: str) -> Poll:
    return Poll(content=content, wait=Wait(delay=POLL, reason=reason))


def failed(content: ContentFacts, field: str, message: str) -> MarkFailed:
    return MarkFailed(content=content, reason=field, message=message)


def create(**kw: Any) -> Create:
    values: dict[str, Any] = {
        "content": C,
        "cloud": "default",
        "volume_id": VolumeId("v1"),
        "name": "snapshot-u1",
        "metadata": TAGS,
        "force": False,
        "then": poll(C, "creating"),
    }
    values.update(kw)
    return Create(**values)


IN_USE_MSG = 'Cinder volume v1 is in-use and the VolumeSnapshotClass does not allow snapshots of in-use volumes (parameters.force-create: "true")'

CASES: list[tuple[str, Observed, Any]] = [
    ("no content in the cache", Observed(content=None), Done()),
    ("another driver's content", seen(replace(C, driver="ebs.csi.aws.com")), Done()),
    ("ready with a handle: steady state", seen(replace(C, ready=True, status_handle="s1")), Done()),
    ("failed for good (status.error recorded)", seen(replace(C, error_message="went to error")), Done()),
    (
        "class parameters invalid: status.error naming the field",
        seen(params_error=InvalidInput("parameters.type", "must be snapshot or backup, not 'tape'")),
        failed(C, "invalid_parameters.type", "parameters.type: must be snapshot or backup, not 'tape'"),
    ),
    (
        "class names an unknown cloud",
        seen(cloud="mars"),
        failed(C, "invalid_cloud", "parameters.cloud: no cloud named 'mars'; configured: default"),
    ),
    (
        "volume handle is a path, never sent to Cinder",
        seen(replace(C, volume_handle="../volumes/x"), looked=False),
        failed(
            replace(C, volume_handle="../volumes/x"),
            "invalid_volume_handle",
            "spec.source.volumeHandle: not a Cinder volume id: '../volumes/x'",
        ),
    ),
    (
        "pre-provisioned handle is not an id",
        seen(replace(PRE, source_handle="a b"), looked=False),
        failed(
            replace(PRE, source_handle="a b"),
            "invalid_snapshot_handle",
            "spec.source.snapshotHandle: not a Cinder snapshot id: 'a b'",
        ),
    ),
    (
        "no finalizer yet: persist intent first (kind and cloud)",
        seen(replace(C, finalizers=(COMMON,)), looked=False),
        Persist(content=replace(C, finalizers=(COMMON,)), kind="snapshot", cloud="default"),
    ),
    (
        "backup class: the kind persisted is backup",
        seen(replace(C, finalizers=()), params=SnapshotParams(kind="backup"), looked=False),
        Persist(content=replace(C, finalizers=()), kind="backup", cloud="default"),
    ),
    (
        "cloud held by a 429",
        seen(cloud_wait=3.0, looked=False),
        Wait(delay=3.0, reason="rate_limited", poll=False),
    ),
    (
        "event before the poll is due: no Cinder read",
        seen(not_due=0.4, looked=False),
        Wait(delay=0.4, reason="poll_not_due", poll=False),
    ),
    (
        "lookup failed: Warning and retry",
        seen(failure=UNAVAILABLE),
        Failed(
            content=C,
            cause=Fail(
                reason="CinderUnavailable",
                message=f"looking up the Cinder snapshot: {UNAVAILABLE}",
                event=SNAPSHOT_CREATION_FAILED,
            ),
        ),
    ),
    (
        "lookup rate limited: hold the cloud",
        seen(failure=RATE_LIMITED),
        Failed(content=C, cause=HoldCloud(cloud="default", seconds=7.0)),
    ),
    (
        "no snapshot, source volume gone",
        seen(volume=None, volume_looked=True),
        failed(C, "volume_not_found", "spec.source.volumeHandle: Cinder volume v1 does not exist"),
    ),
    (
        "in-use volume, old microversion, class without force-create",
        seen(volume=vol("in-use"), inuse_needs_force=True),
        failed(C, "volume_in_use", IN_USE_MSG),
    ),
    (
        "in-use volume, class says force-create",
        seen(volume=vol("in-use"), params=SnapshotParams(force=True)),
        create(force=True),
    ),
    ("in-use volume, 3.66+: no force needed", seen(volume=vol("in-use"), inuse_needs_force=False), create()),
    (
        "available volume, force-create class: no force sent",
        seen(volume=vol(), params=SnapshotParams(force=True)),
        create(),
    ),
    ("available volume: create, tagged, deterministic name", seen(volume=vol()), create()),
    ("volume busy (extending): poll", seen(volume=vol("extending")), poll(C, "volume_extending")),
    ("snapshot creating: poll", seen(cuts=(cut("creating"),)), poll(C, "creating")),
    ("snapshot available: ready", seen(cuts=(cut(),)), MarkReady(content=C, cloud="default", cut=cut())),
    (
        "snapshot error: status.error with the reason",
        seen(cuts=(cut("error"),)),
        failed(C, "snapshot_error", "Cinder snapshot s1 of volume v1 went to status error"),
    ),
    (
        "two snapshots (create landed twice): keep the available one, give back the other",
        seen(cuts=(cut("creating", "s2"), cut("available", "s3"))),
        MarkReady(
            content=C, cloud="default", cut=cut("available", "s3"), duplicates=(cut("creating", "s2"),)
        ),
    ),
    (
        "the status handle's snapshot wins",
        seen(replace(C, status_handle="s2"), cuts=(cut("available", "s1"), cut("available", "s2"))),
        MarkReady(
            content=replace(C, status_handle="s2"),
            cloud="default",
            cut=cut("available", "s2"),
            duplicates=(cut("available", "s1"),),
        ),
    ),
    (
        "pre-provisioned: missing",
        seen(PRE, cuts=()),
        failed(PRE, "snapshot_not_found", "spec.source.snapshotHandle: Cinder snapshot s9 does not exist"),
    ),
    (
        "pre-provisioned: available → ready",
        seen(PRE, cuts=(cut(sid="s9"),)),
        MarkReady(content=PRE, cloud="default", cut=cut(sid="s9")),
    ),
    ("pre-provisioned: creating → poll", seen(PRE, cuts=(cut("creating", "s9"),)), poll(PRE, "creating")),
    # backups (type: backup)
    (
        "backup: no cinder-backup service",
        seen(replace(C, kind="backup"), volume=vol(), backup_service=False),
        failed(
            replace(C, kind="backup"),
            "no_backup_service",
            "parameters.type: backup, but this cloud runs no cinder-backup service",
        ),
    ),
    (
        "backup of an in-use volume needs force-create even on new clouds",
        seen(replace(C, kind="backup"), volume=vol("in-use"), inuse_needs_force=False),
        failed(replace(C, kind="backup"), "volume_in_use", IN_USE_MSG.replace("snapshots of", "backups of")),
    ),
    (
        "backup, incremental class, an earlier backup exists",
        seen(
            replace(C, kind="backup"),
            volume=vol(),
            params=SnapshotParams(kind="backup", incremental=True),
            previous_backup=True,
        ),
        create(
            content=replace(C, kind="backup"),
            kind="backup",
            incremental=True,
            then=poll(replace(C, kind="backup"), "creating"),
        ),
    ),
    (
        "backup, incremental class, first backup: full",
        seen(replace(C, kind="backup"), volume=vol(), params=SnapshotParams(kind="backup", incremental=True)),
        create(
            content=replace(C, kind="backup"), kind="backup", then=poll(replace(C, kind="backup"), "creating")
        ),
    ),
    (
        "backup error carries Cinder's fail reason",
        seen(replace(C, kind="backup"), cuts=(replace(cut("error"), kind="backup", fail_reason="No space"),)),
        failed(
            replace(C, kind="backup"),
            "snapshot_error",
            "Cinder backup s1 of volume v1 went to status error: No space",
        ),
    ),
    # deletion
    ("deleted, our finalizer gone already", seen(replace(GONE, finalizers=(COMMON,))), Done()),
    (
        "deleted, Retain: let it go, keep the snapshot",
        seen(replace(GONE, policy="Retain", being_deleted=False)),
        Release(content=replace(GONE, policy="Retain", being_deleted=False), deleted=False),
    ),
    (
        "deleted while its VolumeSnapshot lives (no being-deleted): wait",
        seen(replace(GONE, being_deleted=False)),
        Done(),
    ),
    (
        "unbound pre-provisioned content deleted: due",
        seen(replace(PRE, deleting=True, ref_uid=""), cuts=(cut(sid="s9"),)),
        Delete(
            content=replace(PRE, deleting=True, ref_uid=""),
            cloud="default",
            ids=("s9",),
            again=False,
            then=poll(replace(PRE, deleting=True, ref_uid=""), "deleting"),
        ),
    ),
    (
        "being deleted: delete every snapshot of the content",
        seen(GONE, cuts=(cut("available", "s1"), cut("error", "s2"))),
        Delete(content=GONE, cloud="default", ids=("s1", "s2"), again=False, then=poll(GONE, "deleting")),
    ),
    (
        "Cinder kept it after our delete (dependents): again, slowly",
        seen(GONE, cuts=(cut(),), delete_sent=True),
        Delete(content=GONE, cloud="default", ids=("s1",), again=True, then=poll(GONE, "deleting")),
    ),
    (
        "the persisted cloud is used for deletion",
        seen(replace(GONE, cloud="east"), cuts=(cut(),), cloud="default"),
        Delete(
            content=replace(GONE, cloud="east"),
            cloud="east",
            ids=("s1",),
            again=False,
            then=poll(replace(GONE, cloud="east"), "deleting"),
        ),
    ),
    (
        "still creating: Cinder cannot delete it yet",
        seen(GONE, cuts=(cut("creating"),)),
        poll(GONE, "creating_before_delete"),
    ),
    ("deleting in Cinder: poll", seen(GONE, cuts=(cut("deleting"),)), poll(GONE, "deleting")),
    ("gone from Cinder (404 / no tag): release", seen(GONE, cuts=()), Release(content=GONE, deleted=True)),
    (
        "delete lookup failed",
        seen(GONE, failure=UNAVAILABLE),
        Failed(
            content=GONE,
            cause=Fail(
                reason="CinderUnavailable",
                message=f"deleting the Cinder snapshot: {UNAVAILABLE}",
                event=SNAPSHOT_DELETE_FAILED,
            ),
        ),
    ),
    (
        "delete: cloud held",
        seen(GONE, cloud_wait=2.0, looked=False),
        Wait(delay=2.0, reason="rate_limited", poll=False),
    ),
]


@pytest.mark.parametrize(("observed", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(observed: Observed, expected: Any) -> None:
    assert expected == decide(observed, cluster="cluster-a", claim="data", identity="replica-0")


def test_create_without_claim_or_identity_tags_only_what_is_known() -> None:
    step = decide(seen(volume=vol()), cluster="cluster-a")
    assert isinstance(step, Create)
    assert {
        k: v for k, v in TAGS.items() if k not in (names.META_PVC_NAME, names.META_CREATED_BY)
    } == step.metadata


# --- content facts -------------------------------------------------------------------------------------


def test_content_facts_reads_what_the_flow_needs() -> None:
    obj = {
        "metadata": {
            "name": "snapcontent-u1",
            "uid": "c-uid",
            "resourceVersion": "5",
            "finalizers": [COMMON, OURS],
            "deletionTimestamp": "2026-01-01T00:00:10Z",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {
                ANN_BEING_DELETED: "yes",
                names.ANN_SNAPSHOT_KIND: "backup",
                names.ANN_CLOUD: "east",
            },
        },
        "spec": {
            "driver": names.CSI_DRIVER_NAME,
            "deletionPolicy": "Retain",
            "source": {"volumeHandle": "v1"},
            "volumeSnapshotClassName": "cinder",
            "volumeSnapshotRef": {"name": "snap", "namespace": "ns", "uid": "u1"},
        },
        "status": {"snapshotHandle": "s1", "readyToUse": True, "error": {"message": "boom"}},
    }
    expected = replace(
        C,
        policy="Retain",
        deleting=True,
        being_deleted=True,
        status_handle="s1",
        ready=True,
        error_message="boom",
        kind="backup",
        cloud="east",
        created_at=1767225600.0,
        deleted_at=1767225610.0,
    )
    assert expected == content_facts(obj)


# --- class parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, SnapshotParams()),
        ({}, SnapshotParams()),
        ({"type": "Backup", "incremental": "true"}, SnapshotParams(kind="backup", incremental=True)),
        ({"force-create": "True", "cloud": " east "}, SnapshotParams(force=True, cloud="east")),
        ({"csi.storage.k8s.io/snapshotter-secret-name": "s"}, SnapshotParams()),
    ],
)
def test_parameters(raw: Any, expected: SnapshotParams) -> None:
    assert expected == parse_snapshot_parameters(raw)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"type": "tape"}, "parameters.type", "must be snapshot or backup, not 'tape'"),
        ({"force-create": "maybe"}, "parameters.force-create", "must be true or false, not 'maybe'"),
        ({"incremental": "true"}, "parameters.incremental", "only backups (type: backup) can be incremental"),
        (
            {"forceCreate": "true"},
            "parameters.forceCreate",
            "unknown parameter; known: cloud, force-create, incremental, type",
        ),
        ({"cloud": " "}, "parameters.cloud", "must be a configured cloud name, not ' '"),
    ],
)
def test_parameters_refused_naming_the_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_snapshot_parameters(raw)
    assert (field, message) == (e.value.field, e.value.message)


# --- the example classes ---------------------------------------------------------------------------------


def test_example_snapshot_classes_are_ours_parse_and_match_the_manifests() -> None:
    """config/volumesnapshotclass-*.yaml: our driver, a valid policy, parameters the flow accepts; the
    manifests/base/snapshotclasses copies are the same files."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3]
    found = {}
    for path in sorted((root / "config").glob("volumesnapshotclass-*.yaml")):
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass", names.CSI_DRIVER_NAME) == (
            obj["apiVersion"],
            obj["kind"],
            obj["driver"],
        )
        assert obj["deletionPolicy"] in ("Delete", "Retain")
        found[obj["metadata"]["name"]] = parse_snapshot_parameters(obj.get("parameters")).kind
        copy = root / "manifests" / "base" / "snapshotclasses" / path.name
        assert path.read_text(encoding="utf-8") == copy.read_text(encoding="utf-8")
    assert {"cinder-snapshots": "snapshot", "cinder-backups": "backup"} == found
