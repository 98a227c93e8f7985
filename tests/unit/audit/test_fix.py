"""--fix's pure plan and re-check: every reason to leave an object alone, one line each."""

from __future__ import annotations

from dataclasses import replace

import pytest

from provisioner.audit.fix import Delete, FixOptions, Fresh, Skip, plan, recheck
from provisioner.audit.model import Finding, Kind
from tests.unit.audit.builders import CLUSTER, DAY, NOW, pvc, snap, vol

OPTS = FixOptions(kinds=frozenset({Kind.ORPHAN_VOLUME, Kind.ORPHAN_SNAPSHOT}), cluster_id=CLUSTER, now=NOW)
ORPHAN = Finding(
    kind=Kind.ORPHAN_VOLUME, cloud="default", cinder_id="v1", cluster=CLUSTER, age_seconds=2 * DAY
)


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        (ORPHAN, None),
        (replace(ORPHAN, cluster=""), "not tagged for this cluster (no cluster tag)"),
        (replace(ORPHAN, cluster="c2"), "not tagged for this cluster (cluster c2)"),
        (replace(ORPHAN, age_seconds=3600.0), "younger than the grace period (3600 s < 86400 s)"),
        (replace(ORPHAN, age_seconds=None), "age unknown (Cinder reported no created_at)"),
        (replace(ORPHAN, attachments=1), "attached"),
    ],
    ids=["old-tagged-free", "untagged", "other-cluster", "young", "age-unknown", "attached"],
)
def test_plan(finding: Finding, expected: str | None) -> None:
    """Only old, tagged, unattached orphans are planned for deletion; the rest say why not."""
    (item,) = plan([finding], OPTS)
    assert (Delete(finding=finding) if expected is None else Skip(finding=finding, reason=expected)) == item


def test_plan_takes_only_the_kinds_asked_for() -> None:
    """Kinds not asked for (and non-orphan kinds) are not in the plan at all."""
    others = [
        replace(ORPHAN, kind=Kind.ORPHAN_BACKUP, cinder_kind="backup"),
        replace(ORPHAN, kind=Kind.MISSING_VOLUME),
        replace(ORPHAN, kind=Kind.DUPLICATE),
    ]
    assert [] == plan(others, OPTS)


def fresh(obj: object, **over: object) -> Fresh:
    base = {
        "obj": obj,
        "pv_names": frozenset(),
        "claim": None,
        "content_exists": False,
        "handle_referenced": False,
    }
    return Fresh(**{**base, **over})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (fresh(vol("v1", "u1", status="available")), None),
        (fresh(None), "already gone"),
        (fresh(vol("v1", "u1", status="available", cluster="c2")), "no longer tagged for this cluster"),
        (fresh(vol("v1", "u1", status="available", age=60)), "younger than the grace period"),
        (fresh(vol("v1", "u1", status="available", attachments=("a1",))), "attached (available)"),
        (fresh(vol("v1", "u1", status="reserved")), "attached (reserved)"),
        (fresh(vol("v1", "u1", status="creating")), "status creating"),
        (
            fresh(vol("v1", "u1", status="available"), pv_names=frozenset({"pvc-u1"})),
            "PV pvc-u1 references it",
        ),
        (
            fresh(vol("v1", "u1", status="available"), claim=pvc("u1", bound=False, intent=True)),
            "its claim is being provisioned",
        ),
        (fresh(vol("v1", "u1", status="available"), claim=pvc("u1")), "its claim exists"),
        (fresh(vol("v1", "u1", status="available"), claim=pvc("another-uid")), None),
    ],
    ids=[
        "still-orphan",
        "gone",
        "retagged",
        "young",
        "attached",
        "reserved",
        "creating",
        "pv-appeared",
        "claim-provisioning",
        "claim-exists",
        "same-name-other-claim",
    ],
)
def test_recheck_volume(now: Fresh, expected: str | None) -> None:
    """Right before the delete, the volume must still be an old, tagged, unused orphan."""
    assert expected == recheck(ORPHAN, now, OPTS)


def test_recheck_snapshot() -> None:
    """A snapshot stays when a content references it or its content exists again."""
    f = replace(ORPHAN, kind=Kind.ORPHAN_SNAPSHOT, cinder_kind="snapshot", cinder_id="s1")
    s = snap("s1", content="c1")
    assert None is recheck(f, fresh(s), OPTS)
    assert "a VolumeSnapshotContent references it" == recheck(f, fresh(s, handle_referenced=True), OPTS)
    assert "its VolumeSnapshotContent exists" == recheck(f, fresh(s, content_exists=True), OPTS)
    assert "status creating" == recheck(f, fresh(snap("s1", status="creating")), OPTS)
