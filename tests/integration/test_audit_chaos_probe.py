"""The chaos harness's audit probe: what it plants is found, nothing else is reported, and it cleans up."""

from __future__ import annotations

import io

from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.harness.chaos_audit import AuditProbe
from provisioner.testworld.kube_sim import KubeSimulator


def test_planted_leaks_are_found_and_removed() -> None:
    """Two orphan volumes, an orphan snapshot, a PV without its volume: found exactly, gone after finish."""
    with KubeSimulator() as sim, CinderEmulator(create_seconds=0.01, delete_seconds=0.01) as emu:
        out = io.StringIO()
        probe = AuditProbe(sim, emu, out, cluster_id="chaos")
        probe.plant()
        report = probe.audit_once()
        assert report is not None
        assert probe.planted == {(f.kind, f.cinder_id) for f in report.findings}
        assert 4 == len(probe.planted)
        summary = probe.finish()
        assert {
            "audit_passes": 2,
            "audit_failed_passes": 0,
            "audit_planted": 4,
            "audit_planted_missed": 0,
            "audit_false_positives": 0,
            "audit_failed_because": {},
        } == summary
        assert [] == [v for v in emu.volumes() if v["status"] != "deleting"]
        assert [] == sim.list("persistentvolumes")
        assert "" == out.getvalue()


def test_a_finding_nobody_planted_is_a_false_positive() -> None:
    """An orphan the probe did not plant is counted and printed as a false positive."""
    with KubeSimulator() as sim, CinderEmulator() as emu:
        out = io.StringIO()
        probe = AuditProbe(sim, emu, out, cluster_id="chaos")
        emu._store.create_volume({"name": "pvc-x", "size": 1, "metadata": {"netvol.io/cluster": "chaos"}})
        probe.audit_once()
        assert 1 == len(probe.false_positives)
        assert "AUDIT FALSE POSITIVE orphan-volume" in out.getvalue()
        probe.kube.close()


def test_a_pass_that_cannot_list_is_failed_and_says_why() -> None:
    """A volume list that fails past the probe's retries fails the pass (absences prove nothing then):
    counted by what could not be read, the first of its kind printed with the error."""
    with KubeSimulator() as sim, CinderEmulator() as emu:
        out = io.StringIO()
        probe = AuditProbe(sim, emu, out, cluster_id="chaos")
        emu.faults.fail_next("list_volumes", status=503, count=2)
        assert None is probe.audit_once()
        assert None is not probe.audit_once()
        assert (1, 1, {"list volumes": 1}) == (probe.passes, probe.failed_passes, dict(probe.failed_because))
        assert "audit pass failed: cloud default: cannot list volumes:" in out.getvalue()
        probe.kube.close()
