"""``audit --fix``: deletes only old, tagged, unattached, unclaimed orphans, and only with ``--yes``.

Against the simulator and the emulator through the real clients; each refusal has its own test, and the
delete is logged with the request id Cinder answered it with.
"""

from __future__ import annotations

import json
import uuid

import pytest
from structlog.testing import capture_logs

from provisioner.audit import fix as fixing
from provisioner.audit.decide import Options
from provisioner.audit.model import Finding, Kind
from provisioner.domain import names
from provisioner.domain.model import Connector, CreateVolumeRequest
from tests.e2e.test_audit import DAY, run_audit, tagged
from tests.e2e.world import World, wait_for


@pytest.fixture
def running(world: World) -> World:
    world.start_replica()
    world.create_class("fast", {"type": "rbd", "volumeSource": "csi"})
    return world


def orphan(world: World, name: str = "pvc-orphan", **meta: str) -> str:
    volume = world.cinder.create_volume(
        CreateVolumeRequest(name=name, size_gib=1, metadata={**tagged(str(uuid.uuid4())), **meta})
    )
    wait_for(lambda: running_status(world, str(volume.id)) == "available", 5, "volume available")
    return str(volume.id)


def running_status(world: World, vid: str) -> str:
    return str(world.cinder.get_volume(vid).status)


def live_ids(world: World) -> set[str]:
    return {v["id"] for v in world.emu.volumes() if v["status"] != "deleting"}


def fixes(stdout: str) -> dict[str, tuple[str, str | None]]:
    return {r["cinder_id"]: (r["action"], r["reason"]) for r in json.loads(stdout)["fix"]}


def test_without_yes_it_is_a_dry_run(running: World) -> None:
    """--fix without --yes deletes nothing and says what it would delete."""
    vid = orphan(running)
    code, out, _ = run_audit(running, "-o", "json", "--fix", "orphan-volume", wall_offset=2 * DAY)
    assert 1 == code
    assert {vid: ("would-delete", "dry run (add --yes to delete)")} == fixes(out)
    assert vid in live_ids(running)
    assert [] == [c for c in running.emu.calls() if c.operation == "delete_volume"]


def test_with_yes_it_deletes_and_logs_the_request_id(running: World) -> None:
    """An old, tagged, unattached orphan is deleted once; the log line carries Cinder's request id."""
    vid = orphan(running)
    with capture_logs() as logs:
        code, out, _ = run_audit(
            running, "-o", "json", "--fix", "orphan-volume", "--yes", wall_offset=2 * DAY
        )
    assert 1 == code
    deletes = [c for c in running.emu.calls() if c.operation == "delete_volume"]
    assert [vid] == [c.path.rsplit("/", 1)[-1] for c in deletes]
    (line,) = [e for e in logs if e["event"] == "audit_fix_deleted"]
    assert (vid, deletes[0].request_id) == (line["cinder_id"], line["request_id"])
    assert {vid: ("deleted", None)} == fixes(out)


def test_never_younger_than_the_grace_period(running: World) -> None:
    """An orphan created an hour ago is left alone with the default 24 h grace (taken with --grace 30m)."""
    vid = orphan(running)
    code, out, _ = run_audit(running, "-o", "json", "--fix", "orphan-volume", "--yes", wall_offset=3600)
    assert 1 == code
    assert "skipped" == fixes(out)[vid][0]
    assert "younger than the grace period" in str(fixes(out)[vid][1])
    assert vid in live_ids(running)
    _, out, _ = run_audit(
        running, "-o", "json", "--fix", "orphan-volume", "--yes", "--grace", "30m", wall_offset=3600
    )
    assert "deleted" == fixes(out)[vid][0]


def test_never_an_attached_volume(running: World) -> None:
    """An orphan with a Cinder attachment is never deleted."""
    vid = orphan(running)
    running.cinder.create_attachment(
        vid, Connector(host="elsewhere", ip="10.0.0.9", initiator="iqn.2020-01.x:y")
    )
    _, out, _ = run_audit(running, "-o", "json", "--fix", "orphan-volume", "--yes", wall_offset=2 * DAY)
    assert ("skipped", "attached") == fixes(out)[vid]
    assert vid in live_ids(running)


def test_never_one_without_our_tag(running: World) -> None:
    """--untagged lists pvc-* volumes without tags; --fix never deletes them (nor another cluster's)."""
    untagged = str(running.cinder.create_volume(CreateVolumeRequest(name="pvc-legacy", size_gib=1)).id)
    wait_for(lambda: running_status(running, untagged) == "available", 5, "volume available")
    foreign = orphan(running, "pvc-foreign", **{names.META_CLUSTER: "other"})
    _, out, _ = run_audit(
        running,
        "-o",
        "json",
        "--untagged",
        "--all-clusters",
        "--fix",
        "orphan-volume",
        "--yes",
        wall_offset=2 * DAY,
    )
    assert ("skipped", "not tagged for this cluster (no cluster tag)") == fixes(out)[untagged]
    assert ("skipped", "not tagged for this cluster (cluster other)") == fixes(out)[foreign]
    assert {untagged, foreign} <= live_ids(running)


def test_never_a_volume_with_a_pv(running: World) -> None:
    """Re-checked right before the delete: a PV that references the volume by now keeps it."""
    running.create_pvc("data", "fast")
    running.wait_bound("data")
    pv = running.pv_of("data")
    assert pv is not None
    vid = pv["metadata"]["annotations"][names.ANN_VOLUME_ID]
    volume = running.cinder.get_volume(vid)
    running.cinder.delete_attachment(pv["metadata"]["annotations"][names.ANN_ATTACHMENT_ID])
    # The audit had (wrongly, or long ago) called it an orphan: the executor must still refuse.
    stale = Finding(
        kind=Kind.ORPHAN_VOLUME,
        cloud="default",
        cinder_id=vid,
        cinder_name=volume.name,
        cluster="e2e",
        age_seconds=2 * DAY,
    )
    fix_options = fixing.FixOptions(
        kinds=frozenset({Kind.ORPHAN_VOLUME}), cluster_id="e2e", now=volume.created_at + 2 * DAY
    )  # type: ignore[operator]
    (result,) = fixing.execute(
        fixing.plan([stale], fix_options),
        clouds=running.replicas[0].controller.ctx.clouds,
        kube=running.kube,
        fix=fix_options,
        audit=Options(cluster_id="e2e", default_cloud="default", now=fix_options.now),
        yes=True,
    )
    assert ("skipped", f"PV {pv['metadata']['name']} references it") == (result.action, result.reason)
    assert vid in live_ids(running)
