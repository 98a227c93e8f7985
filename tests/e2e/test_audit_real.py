"""The audit against real OpenStack Cinder (tox -e cinder-real): real volumes, real tags, real request ids.

An orphan and a size drift are made on purpose next to a healthy claim; the audit reports exactly those,
and ``--fix orphan-volume --yes`` deletes the orphan (and only it), logging Cinder's own request id.
"""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest
from tests.e2e.test_audit import DAY, bound_volume, found, run_audit, tagged
from tests.e2e.test_real_cinder_e2e import real_cinder, real_world  # noqa: F401 - fixtures
from tests.e2e.world import World, config_for, wait_for

pytestmark = pytest.mark.cinder_real


def test_audit_finds_an_orphan_and_a_size_drift_on_real_cinder(real_world: World) -> None:  # noqa: F811
    """Healthy claim clean; orphan + size drift reported; --fix deletes the orphan (Cinder's request id)."""
    w = real_world
    # A connector host other than this machine: the file driver gives the in-process cinder-backup "local".
    w.start_replica(config=config_for(w.cloud, cluster_id="e2e", connector={"host": "k8s-provisioner"}))
    w.create_class("fast", {"type": "rbd", "volumeSource": "csi"})
    w.create_pvc("fine", "fast")
    w.create_pvc("drift", "fast")
    bound_volume(w, "fine")
    drift_pv, drift = bound_volume(w, "drift")
    wait_for(
        lambda: all(
            names.PVC_PROVISIONING_FINALIZER not in (w.pvc(n) or {})["metadata"].get("finalizers", [])
            for n in ("fine", "drift")
        ),
        20,
        "intent finalizers removed",
    )
    code, out, err = run_audit(w, "-o", "json")
    assert (0, "") == (code, err), out
    assert set() == found(out)

    orphan = w.cinder.create_volume(
        CreateVolumeRequest(name="pvc-real-orphan", size_gib=1, metadata=tagged("real-uid"))
    )
    wait_for(lambda: w.cinder.get_volume(orphan.id).status == "available", 60, "orphan available")
    w.kube.patch(
        "persistentvolumes", drift_pv["metadata"]["name"], {"spec": {"capacity": {"storage": "5Gi"}}}
    )

    code, out, err = run_audit(w, "-o", "json")
    assert (1, "") == (code, err)
    assert {("orphan-volume", orphan.id), ("size-drift", drift)} == found(out)

    with capture_logs() as logs:
        code, out, _ = run_audit(
            w, "-o", "json", "--kind", "orphan-volume", "--fix", "orphan-volume", "--yes", wall_offset=2 * DAY
        )
    (result,) = json.loads(out)["fix"]
    assert (orphan.id, "deleted") == (result["cinder_id"], result["action"])
    assert str(result["request_id"]).startswith("req-")
    assert [result["request_id"]] == [e["request_id"] for e in logs if e["event"] == "audit_fix_deleted"]
    wait_for(lambda: orphan.id not in {v.id for v in w.our_volumes()}, 60, "orphan deleted")
    assert drift in {v.id for v in w.our_volumes()}
