"""The audit's decision, one situation per line: what Cinder and Kubernetes hold in, findings out."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.audit.decide import KubeInventory, Observed, Options, audit, claim_in_progress
from provisioner.audit.model import Kind
from provisioner.domain import names
from tests.unit.audit.builders import (
    CLUSTER,
    DAY,
    FakeBackup,
    observed,
    options,
    pv,
    pvc,
    snap,
    tags,
    vol,
    vsc,
)

K = Kind
HEALTHY = [pv("u1", "v1", attachment="a1")], [pvc("u1")]

#: (id, observed, options, expected {(kind, cinder id or k8s name)})
CASES: list[tuple[str, Observed, Options, set[tuple[Kind, str]]]] = [
    (
        "bound claim with its volume, attachment and size: clean",
        observed([vol("v1", "u1", attachments=("a1",))], pvs=HEALTHY[0], pvcs=HEALTHY[1]),
        options(),
        set(),
    ),
    (
        "tagged volume, no PV, claim gone: orphan",
        observed([vol("v1", "u1", status="available")]),
        options(),
        {(K.ORPHAN_VOLUME, "v1")},
    ),
    (
        "provisioning in flight (intent finalizer, unbound): not an orphan",
        observed([vol("v1", "u1", status="creating", age=5)], pvcs=[pvc("u1", bound=False, intent=True)]),
        options(),
        set(),
    ),
    (
        "exported before the PV exists (intent on the claim): neither orphan nor attachment drift",
        observed([vol("v1", "u1", attachments=("a1",))], pvcs=[pvc("u1", bound=False, intent=True)]),
        options(),
        set(),
    ),
    (
        "claim being deleted with our intent on it (abandon in flight): not an orphan",
        observed([vol("v1", "u1", status="available")], pvcs=[pvc("u1", intent=True, deleting=True)]),
        options(),
        set(),
    ),
    (
        "volume deleting, PV already gone (delete in flight): nothing",
        observed([vol("v1", "u1", status="deleting", age=DAY, since=3)]),
        options(),
        set(),
    ),
    (
        "Released PV with Delete and its volume gone (delete in flight): nothing",
        observed([], pvs=[pv("u1", "v1", phase="Released")]),
        options(),
        set(),
    ),
    (
        "PV with a deletionTimestamp and its volume deleting: nothing",
        observed([vol("v1", "u1", status="deleting", since=1)], pvs=[pv("u1", "v1", deleting=True)]),
        options(),
        set(),
    ),
    (
        "bound PV whose volume is gone: missing-volume",
        observed([], pvs=[pv("u1", "v1")], pvcs=[pvc("u1")]),
        options(),
        {(K.MISSING_VOLUME, "v1")},
    ),
    (
        "bound PV whose volume is being deleted: missing-volume",
        observed([vol("v1", "u1", status="deleting", since=1)], pvs=[pv("u1", "v1")], pvcs=[pvc("u1")]),
        options(),
        {(K.MISSING_VOLUME, "v1")},
    ),
    (
        "PV on a cloud that could not be listed: no conclusion",
        observed([], pvs=[pv("u1", "v1")], pvcs=[pvc("u1")], complete=False),
        options(),
        set(),
    ),
    (
        "PV's volume tagged for another claim: wrong-volume",
        observed([vol("v1", "u-other")], pvs=[pv("u1", "v1")], pvcs=[pvc("u1")]),
        options(),
        {(K.WRONG_VOLUME, "v1")},
    ),
    (
        "PV's volume tagged for another cluster: wrong-volume",
        observed([vol("v1", "u1", cluster="c2")], pvs=[pv("u1", "v1")], pvcs=[pvc("u1")]),
        options(),
        {(K.WRONG_VOLUME, "v1")},
    ),
    (
        "two volumes of a bound claim, the PV uses one: duplicate (the other)",
        observed(
            [vol("v1", "u1"), vol("v2", "u1", status="available")], pvs=[pv("u1", "v1")], pvcs=[pvc("u1")]
        ),
        options(),
        {(K.DUPLICATE, "v2")},
    ),
    (
        "two volumes of a claim still provisioning: the flow resolves it, nothing",
        observed(
            [vol("v1", "u1", status="available"), vol("v2", "u1", status="available")],
            pvcs=[pvc("u1", bound=False, intent=True)],
        ),
        options(),
        set(),
    ),
    (
        "creating for two hours: stuck",
        observed([vol("v1", "u1", status="creating", age=7200)], pvcs=[pvc("u1", bound=False, intent=True)]),
        options(),
        {(K.STUCK, "v1")},
    ),
    (
        "creating for ten minutes: not yet stuck",
        observed([vol("v1", "u1", status="creating", age=600)], pvcs=[pvc("u1", bound=False, intent=True)]),
        options(),
        set(),
    ),
    (
        "extending since two hours (updated_at): stuck even though created long ago",
        observed(
            [vol("v1", "u1", status="extending", since=7200, attachments=("a1",))],
            pvs=[pv("u1", "v1", attachment="a1")],
            pvcs=[pvc("u1")],
        ),
        options(),
        {(K.STUCK, "v1")},
    ),
    (
        "error with no claim: stuck and orphan",
        observed([vol("v1", "u1", status="error")]),
        options(),
        {(K.STUCK, "v1"), (K.ORPHAN_VOLUME, "v1")},
    ),
    (
        "error while its claim provisions (the flow replaces it): nothing yet",
        observed([vol("v1", "u1", status="error", age=30)], pvcs=[pvc("u1", bound=False, intent=True)]),
        options(),
        set(),
    ),
    (
        "PV says 2Gi, Cinder 1 GiB: size-drift",
        observed(
            [vol("v1", "u1", attachments=("a1",))], pvs=[pv("u1", "v1", capacity="2Gi", attachment="a1")]
        ),
        options(),
        {(K.SIZE_DRIFT, "v1")},
    ),
    (
        "extending (for a moment): no size-drift",
        observed(
            [vol("v1", "u1", size=2, status="extending", since=5, attachments=("a1",))],
            pvs=[pv("u1", "v1", capacity="1Gi", attachment="a1")],
            pvcs=[pvc("u1")],
        ),
        options(),
        set(),
    ),
    (
        "claim grown, Cinder extended, PV not yet (expansion in flight): no size-drift",
        observed(
            [vol("v1", "u1", size=2, attachments=("a1",))],
            pvs=[pv("u1", "v1", capacity="1Gi", attachment="a1")],
            pvcs=[
                {**pvc("u1"), "spec": {"volumeName": "pvc-u1", "resources": {"requests": {"storage": "2Gi"}}}}
            ],
        ),
        options(),
        set(),
    ),
    (
        "PV's recorded attachment gone from Cinder: attachment-drift",
        observed(
            [vol("v1", "u1", status="available")], pvs=[pv("u1", "v1", attachment="a1")], pvcs=[pvc("u1")]
        ),
        options(),
        {(K.ATTACHMENT_DRIFT, "v1")},
    ),
    (
        "a Cinder attachment no PV references: attachment-drift",
        observed(
            [vol("v1", "u1", attachments=("a1", "a9"))],
            pvs=[pv("u1", "v1", attachment="a1")],
            pvcs=[pvc("u1")],
        ),
        options(),
        {(K.ATTACHMENT_DRIFT, "v1")},
    ),
    (
        "Released PV kept by Retain: released-retained",
        observed(
            [vol("v1", "u1", size=5, attachments=("a1",))],
            pvs=[pv("u1", "v1", phase="Released", reclaim="Retain", capacity="5Gi", attachment="a1")],
        ),
        options(),
        {(K.RELEASED_RETAINED, "v1")},
    ),
    (
        "another cluster's volume: ignored by default",
        observed([vol("v1", "u1", cluster="c2", status="available")]),
        options(),
        set(),
    ),
    (
        "another cluster's volume with --all-clusters: orphan (of that cluster)",
        observed([vol("v1", "u1", cluster="c2", status="available")]),
        options(all_clusters=True),
        {(K.ORPHAN_VOLUME, "v1")},
    ),
    (
        "untagged pvc-* volume: ignored by default",
        observed([vol("v1", status="available", metadata={}, name="pvc-1234")]),
        options(),
        set(),
    ),
    (
        "untagged pvc-* volume with --untagged: orphan; other names never",
        observed(
            [
                vol("v1", status="available", metadata={}, name="pvc-1234"),
                vol("v2", status="available", metadata={}, name="database"),
            ]
        ),
        options(untagged=True),
        {(K.ORPHAN_VOLUME, "v1")},
    ),
    (
        "snapshot no content references: orphan-snapshot",
        observed(snapshots=[snap("s1", content="snapcontent-1")]),
        options(),
        {(K.ORPHAN_SNAPSHOT, "s1")},
    ),
    (
        "snapshot whose content exists but has no handle yet (snapshot in flight): nothing",
        observed(
            snapshots=[snap("s1", content="snapcontent-1", status="creating", age=3)],
            contents=[vsc("snapcontent-1", None)],
        ),
        options(),
        set(),
    ),
    (
        "snapshot referenced by its content's handle: nothing",
        observed(snapshots=[snap("s1", content="snapcontent-1")], contents=[vsc("snapcontent-1", "s1")]),
        options(),
        set(),
    ),
    (
        "content whose snapshot is gone: missing-snapshot",
        observed(contents=[vsc("snapcontent-1", "s1")]),
        options(),
        {(K.MISSING_SNAPSHOT, "s1")},
    ),
    (
        "content being deleted whose snapshot is gone: nothing",
        observed(contents=[vsc("snapcontent-1", "s1", deleting=True)]),
        options(),
        set(),
    ),
    (
        "pre-provisioned content naming a backup: not missing",
        observed(
            contents=[vsc("pre-1", "b1", pre=True)],
            backups=[
                FakeBackup(
                    id="b1",
                    metadata={"netvol.io/cluster": CLUSTER, "netvol.io/volumesnapshotcontent-name": "pre-1"},
                )
            ],
        ),
        options(),
        set(),
    ),
    (
        "tagged backup no content references: orphan-backup",
        observed(backups=[FakeBackup(id="b1", metadata={"netvol.io/cluster": CLUSTER})]),
        options(),
        {(K.ORPHAN_BACKUP, "b1")},
    ),
]


@pytest.mark.parametrize(
    ("observed_", "options_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decision_table(observed_: Observed, options_: Options, expected: set[tuple[Kind, str]]) -> None:
    """Each situation yields exactly these findings (kind, Cinder id)."""
    report = audit(observed_, options_)
    assert expected == {(f.kind, f.cinder_id or f.k8s_name) for f in report.findings}


def test_every_kind_is_in_the_table() -> None:
    """The table builds every finding kind at least once."""
    built = {kind for case in CASES for kind, _ in case[3]}
    assert set(Kind) == built


def _looks(earlier: dict[str, Any], later: dict[str, Any]) -> KubeInventory:
    return KubeInventory(**later, earlier=KubeInventory(**earlier))


def test_volume_deleted_with_its_pv_between_the_looks_is_not_an_orphan() -> None:
    """The earlier look saw the PV, Cinder still listed the volume, the later look shows neither."""
    kube = _looks({"pvs": [pv("u1", "v1")], "pvcs": [pvc("u1")]}, {"pvs": [], "pvcs": []})
    report = audit(
        Observed(clouds=observed([vol("v1", "u1", status="available")]).clouds, kube=kube), options()
    )
    assert [] == list(report.findings)


def test_claim_created_between_the_looks_owns_its_new_volume() -> None:
    """Cinder listed a new volume whose claim only the later look shows (intent on it)."""
    kube = _looks({"pvcs": []}, {"pvcs": [pvc("u1", bound=False, intent=True)]})
    report = audit(
        Observed(clouds=observed([vol("v1", "u1", status="creating", age=1)]).clouds, kube=kube), options()
    )
    assert [] == list(report.findings)


def test_pv_created_after_the_cinder_list_is_not_missing_its_volume() -> None:
    """A PV only the later look shows was not compared with a list older than its volume."""
    kube = _looks(
        {"pvs": [], "pvcs": [pvc("u1", bound=False, intent=True)]},
        {"pvs": [pv("u1", "v1")], "pvcs": [pvc("u1")]},
    )
    report = audit(Observed(clouds=observed([]).clouds, kube=kube), options())
    assert [] == list(report.findings)


def test_finding_fields_name_the_objects_and_the_action() -> None:
    """A missing-volume finding names the PV, the volume id, the class, the size and what to do."""
    report = audit(observed([], pvs=[pv("u1", "v1", capacity="3Gi")], pvcs=[pvc("u1")]), options())
    (f,) = report.findings
    assert (Kind.MISSING_VOLUME, "v1", "PersistentVolume", "pvc-u1", 3, "fast") == (
        f.kind,
        f.cinder_id,
        f.k8s_kind,
        f.k8s_name,
        f.size_gib,
        f.storage_class,
    )
    assert "gone" in f.detail
    assert f.action.startswith("the PV's data is gone")


def test_orphan_age_and_tags_come_from_cinder() -> None:
    """An orphan carries its age (from created_at), cluster tag, claim and attachment count."""
    report = audit(observed([vol("v1", "u1", status="available", age=3 * DAY, size=7)]), options())
    (f,) = report.findings
    assert (3 * DAY, CLUSTER, "default", "data", 7, 0) == (
        f.age_seconds,
        f.cluster,
        f.k8s_namespace,
        f.k8s_name,
        f.size_gib,
        f.attachments,
    )


def test_summary_per_kind_class_and_type() -> None:
    """The summary counts findings and their GiB per kind, StorageClass and volume type."""
    report = audit(
        observed([vol("v1", "u1", status="available", size=2), vol("v2", "u2", status="available", size=3)]),
        options(),
    )
    s = report.summary.to_json()
    assert {"orphan-volume": {"count": 2, "gib": 5}} == s["by_kind"]
    assert {"fast": {"count": 2, "gib": 5}} == s["by_storage_class"]
    assert {"rbd": {"count": 2, "gib": 5}} == s["by_volume_type"]


def test_other_cluster_tags_are_never_ours() -> None:
    """tags() for c2 is not our cluster: the orphan reports that cluster."""
    report = audit(observed([vol("v1", "u1", cluster="c2", status="available")]), options(all_clusters=True))
    (f,) = report.findings
    assert "c2" == f.cluster
    assert "tagged for cluster c2" in f.detail
    assert tags("u1")["netvol.io/cluster"] == CLUSTER


def test_pv_resized_between_the_looks_is_not_a_size_drift() -> None:
    """Cinder listed the volume before its extend; the PV grew (the flow's last step) between the looks."""
    grown = {**pvc("u1"), "spec": {"volumeName": "pvc-u1", "resources": {"requests": {"storage": "2Gi"}}}}
    kube = _looks(
        {"pvs": [pv("u1", "v1", capacity="1Gi", attachment="a1")], "pvcs": [grown]},
        {"pvs": [pv("u1", "v1", capacity="2Gi", attachment="a1")], "pvcs": [grown]},
    )
    cinder = observed([vol("v1", "u1", size=1, attachments=("a1",))]).clouds
    assert [] == list(audit(Observed(clouds=cinder, kube=kube), options()).findings)
    # the same PV at 2Gi in both looks against a 1 GiB volume is a drift
    steady = _looks(
        {"pvs": [pv("u1", "v1", capacity="2Gi", attachment="a1")], "pvcs": [grown]},
        {"pvs": [pv("u1", "v1", capacity="2Gi", attachment="a1")], "pvcs": [grown]},
    )
    kinds = [f.kind for f in audit(Observed(clouds=cinder, kube=steady), options()).findings]
    assert [K.SIZE_DRIFT] == kinds


@pytest.mark.parametrize(
    ("meta", "spec", "expected"),
    [
        pytest.param(
            {"finalizers": [names.PVC_PROVISIONING_FINALIZER]}, {"volumeName": "pv"}, True, id="intent"
        ),
        pytest.param({}, {}, True, id="unbound"),
        pytest.param({}, {"volumeName": "pv"}, False, id="bound"),
        # the create mark stays after the release: a bound claim carrying it is not in progress
        pytest.param(
            {"annotations": {names.ANN_CREATE_ATTEMPT: "replica-0 1.0"}},
            {"volumeName": "pv"},
            False,
            id="marked",
        ),
        pytest.param({"deletionTimestamp": "2026-01-01T00:00:00Z"}, {}, False, id="deleted"),
    ],
)
def test_claim_in_progress(meta: dict[str, Any], spec: dict[str, Any], expected: bool) -> None:
    assert expected == claim_in_progress({"metadata": {"uid": "u", **meta}, "spec": spec})
