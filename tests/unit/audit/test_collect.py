"""Collection through the ports (fakes): Kubernetes twice around Cinder, lists not gets, errors kept."""

from __future__ import annotations

from typing import Any

from provisioner.audit.collect import collect
from provisioner.audit.decide import audit
from provisioner.domain import names
from provisioner.domain.errors import CinderUnavailable, KubeNotFound
from tests.fakes.ports import FakeCinder
from tests.unit.audit.builders import CLUSTER, options, pv, pvc, tags


class Lister:
    """A KubeLister over fixed objects that logs the order of everything asked (shared with Cinder)."""

    def __init__(self, log: list[str], objects: dict[str, list[dict[str, Any]]]) -> None:
        self.log, self.objects = log, objects

    def list(self, resource: str) -> tuple[list[dict[str, Any]], str]:
        self.log.append(f"kube {resource}")
        if resource not in self.objects:
            raise KubeNotFound("no such resource")
        return self.objects[resource], "1"


class LoggingCinder(FakeCinder):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def _call(self, method: str, *args: Any) -> None:
        self.log.append(f"cinder {method}")
        super()._call(method, *args)


def test_kube_is_listed_before_and_after_cinder_and_lists_carry_the_tag() -> None:
    """PVs, claims, contents; then Cinder's tag-filtered lists; then PVs, claims, contents again."""
    log: list[str] = []
    cinder = LoggingCinder(log)
    cinder.add_volume("v1", status="in-use", metadata=tags("u1"))
    kube = Lister(log, {"persistentvolumes": [pv("u1", "v1")], "persistentvolumeclaims": [pvc("u1")]})
    observed = collect(clouds={"default": cinder}, kube=kube, options=options())
    looks = ["kube persistentvolumes", "kube persistentvolumeclaims", "kube volumesnapshotcontents"]
    assert [
        *looks,
        "cinder list_volumes",
        "cinder list_snapshots",
        "cinder has_backup_service",
        "cinder list_backups",
        *looks,
    ] == log
    assert ("list_volumes", {names.META_CLUSTER: CLUSTER}) == cinder.calls[0]
    assert observed.kube.earlier is not None
    assert [] == list(audit(observed, options()).findings)


def test_only_referenced_volumes_the_list_missed_are_read_one_by_one() -> None:
    """A PV's volume tagged for another cluster is fetched (wrong-volume); a gone one is missing-volume."""
    log: list[str] = []
    cinder = LoggingCinder(log)
    cinder.add_volume("v2", status="in-use", metadata=tags("u2", cluster="c2"))
    kube = Lister(
        log,
        {
            "persistentvolumes": [pv("u2", "v2"), pv("u3", "v3")],
            "persistentvolumeclaims": [pvc("u2"), pvc("u3")],
        },
    )
    observed = collect(clouds={"default": cinder}, kube=kube, options=options())
    assert ["v2", "v3"] == sorted(c[1] for c in cinder.calls if c[0] == "get_volume")
    kinds = {(f.kind.value, f.cinder_id) for f in audit(observed, options()).findings}
    assert {("wrong-volume", "v2"), ("missing-volume", "v3")} == kinds


def test_a_failed_list_is_an_error_and_proves_no_absence() -> None:
    """Cinder unavailable for volumes: the error is reported, and the PV is not called missing."""
    cinder = FakeCinder()
    cinder.fail("list_volumes", CinderUnavailable("503", operation="list_volumes"))
    kube = Lister([], {"persistentvolumes": [pv("u1", "v1")], "persistentvolumeclaims": [pvc("u1")]})
    observed = collect(clouds={"default": cinder}, kube=kube, options=options())
    report = audit(observed, options())
    assert [] == list(report.findings)
    assert 1 == len(report.errors)
    assert report.errors[0].startswith("cloud default: cannot list volumes")
