"""A real iSCSI target: the controller's PV and Secret reach a tgtd LUN, with CHAP on (tox -e cinder-real).

Real Cinder's ``iscsi-tgt`` backend exports each volume through a real ``tgtd`` with Cinder's own TgtAdm
(a random CHAP account per volume, made when the controller's attachment is completed); libiscsi's
userspace initiator then logs in with exactly what the controller wrote — the PV's portal, IQN, LUN and
initiator name, the Secret's CHAP user and password — and reads the LUN's capacity and serial number.
Wrong CHAP is refused by the target; deleting the claim removes the target.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioner import csi_contract
from provisioner.adapters.kube import KubeAdapter
from provisioner.domain import names
from provisioner.testworld import objects
from provisioner.testworld.kube_sim import KubeSimulator
from provisioner.testworld.real_cinder import tgt
from tests.e2e.ceph_world import require
from tests.e2e.world import World, assert_written_objects_valid, config_for, wait_for

pytestmark = pytest.mark.cinder_real

#: The cluster-wide initiator the controller sends to Cinder (``connector.initiator``).
INITIATOR = "iqn.2024-01.io.netvol:e2e-nodes"
_GIB = 1024**3


@dataclass
class TgtCinder:
    target: tgt.TgtHandle
    cinder: Any  # RealCinderHandle
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def tgt_cinder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TgtCinder]:
    """A real tgtd and real Cinder whose only backend (``iscsi-tgt``) exports through it."""
    require(tgt.missing_tools(), "the real iSCSI target")
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    root: Path = tmp_path_factory.mktemp("tgt-cinder")
    with ExitStack() as stack:
        started = time.monotonic()
        target = stack.enter_context(tgt.start_tgtd(root / "tgt"))
        timings = {"tgtd_seconds": time.monotonic() - started}
        started = time.monotonic()
        cinder = stack.enter_context(
            start_real_cinder(
                root / "cinder", backends=(tgt.PROFILE,), extra_config=target.cinder_backend_config()
            )
        )
        timings["cinder_seconds"] = time.monotonic() - started
        print(f"\nreal tgtd + Cinder (TgtAdm) started: {timings}")
        yield TgtCinder(target=target, cinder=cinder, timings=timings)


@pytest.fixture
def world(tgt_cinder: TgtCinder) -> Iterator[World]:
    """Simulator + real Cinder on tgtd, a replica leading with our cluster-wide initiator."""
    cinder = tgt_cinder.cinder
    with ExitStack() as stack:
        sim = stack.enter_context(KubeSimulator())
        kube = KubeAdapter(sim.configuration(), qps=500, burst=500)
        stack.callback(kube.close)
        cloud = {"auth_type": "noauth", "auth": {"endpoint": cinder.url, "token": cinder.token}}
        w = World(sim=sim, cloud=cloud, kube=kube, stack=stack)
        w.start_replica(config=config_for(cloud, connector={"initiator": INITIATOR}))
        yield w
        w.stop_replicas()
        assert_written_objects_valid(sim)


@dataclass(frozen=True)
class Login:
    """Everything an initiator needs, read from the PV and its Secret only."""

    portal: str
    iqn: str
    lun: int
    initiator: str
    chap: tgt.Chap
    volume_id: str
    pv: dict[str, Any]


def _login_from_pv(world: World, claim: str) -> Login:
    pv = world.pv_of(claim)
    assert pv is not None
    spec = pv["spec"]
    if "iscsi" in spec:
        src = spec["iscsi"]
        assert src["chapAuthSession"] is True
        portal, iqn, lun, initiator = src["targetPortal"], src["iqn"], int(src["lun"]), src["initiatorName"]
        ref = src["secretRef"]
    else:
        target = csi_contract.decode(spec["csi"]["volumeAttributes"])
        assert isinstance(target, csi_contract.IscsiTarget)
        assert target.chap_session is True
        assert 1 == len(target.paths)
        path = target.paths[0]
        portal, iqn, lun, initiator = path.portal, path.iqn, path.lun, target.initiator_name
        ref = spec["csi"]["nodeStageSecretRef"]
    secret = world.sim.get("secrets", ref["namespace"], ref["name"])
    assert secret is not None
    assert names.SECRET_TYPE_ISCSI_CHAP == secret["type"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return Login(
        portal=portal,
        iqn=iqn,
        lun=lun,
        initiator=initiator,
        chap=tgt.chap_from_secret(data),
        volume_id=pv["metadata"]["annotations"][names.ANN_VOLUME_ID],
        pv=pv,
    )


def _provision(world: World, claim: str, sc_name: str) -> Login:
    world.create_pvc(claim, sc_name, size="1500Mi")
    world.wait_bound(claim, timeout=60)
    return _login_from_pv(world, claim)


def _no_secret_in(result: tgt.InitiatorResult, password: str) -> None:
    assert password not in result.stdout + result.stderr + repr(result)


@pytest.mark.parametrize("volume_source", ["in-tree", "csi"])
def test_initiator_logs_in_with_exactly_the_pv_and_secret(
    world: World, tgt_cinder: TgtCinder, volume_source: str
) -> None:
    """The PV's portal/IQN/LUN and the Secret's CHAP reach the LUN (size, serial); wrong CHAP is refused."""
    target = tgt_cinder.target
    world.create_class("tgt", {"type": tgt.PROFILE, "volumeSource": volume_source})
    login = _provision(world, "data", "tgt")

    # the PV names the real target: our tgtd's portal, the IQN it exports, Cinder's TgtAdm LUN (1)
    assert target.portal == login.portal
    assert login.iqn in target.target_names()
    assert f"{INITIATOR}" == login.initiator
    assert 1 == login.lun
    assert {"storage": "2Gi"} == login.pv["spec"]["capacity"]
    assert login.chap.password not in json.dumps(login.pv)  # the password is in the Secret only

    size, result = tgt.read_capacity(
        login.portal, login.iqn, login.lun, initiator=login.initiator, chap=login.chap
    )
    assert (0, 2 * _GIB) == (result.returncode, size), result.stderr
    _no_secret_in(result, login.chap.password)
    serial, result = tgt.unit_serial_number(
        login.portal, login.iqn, login.lun, initiator=login.initiator, chap=login.chap
    )
    assert serial is not None, result.stderr
    # TgtAdm sets the LUN's serial to the export's "volume-<id>" (tgtd keeps its first 36 characters)
    assert len(serial) >= 30
    assert f"volume-{login.volume_id}".startswith(serial)

    wrong_password = tgt.Chap(username=login.chap.username, password=login.chap.password[::-1] + "x")
    wrong_user = tgt.Chap(username=login.chap.username + "x", password=login.chap.password)
    for chap in (wrong_password, wrong_user, None):
        size, result = tgt.read_capacity(
            login.portal, login.iqn, login.lun, initiator=login.initiator, chap=chap
        )
        assert (None, True) == (size, result.auth_failed), (chap, result.returncode, result.stderr)
        assert 0 != result.returncode
        _no_secret_in(result, login.chap.password)

    # the secret is in neither daemon's log (tgtd's, and Cinder's at its tier log level)
    for log in (target.log_path, tgt_cinder.cinder.log_path):
        assert login.chap.password not in log.read_text(errors="replace"), log

    # deleting the claim deletes the attachment: Cinder's TgtAdm removes the target, then the volume goes
    world.kube.delete("persistentvolumeclaims", "data", namespace="default")
    wait_for(
        lambda: world.sim.get("persistentvolumes", "", login.pv["metadata"]["name"]) is None, 30, "PV gone"
    )
    wait_for(lambda: not world.our_volumes(), 30, "Cinder volume gone")
    assert login.iqn not in target.target_names()
    size, result = tgt.read_capacity(
        login.portal, login.iqn, login.lun, initiator=login.initiator, chap=login.chap
    )
    assert (None, False) == (size, result.auth_failed)  # refused: no such target any more
    assert 0 != result.returncode


def test_chap_accounts_are_per_volume(world: World, tgt_cinder: TgtCinder) -> None:
    """Each volume's target takes its own Secret's CHAP and refuses the other claim's."""
    world.create_class("tgt", {"type": tgt.PROFILE, "volumeSource": "csi"})
    first = _provision(world, "first", "tgt")
    second = _provision(world, "second", "tgt")
    assert first.iqn != second.iqn
    assert first.chap.username != second.chap.username
    assert first.chap.password != second.chap.password
    assert {first.iqn, second.iqn} <= set(tgt_cinder.target.target_names())

    for mine, other in ((first, second), (second, first)):
        size, result = tgt.read_capacity(
            mine.portal, mine.iqn, mine.lun, initiator=mine.initiator, chap=mine.chap
        )
        assert (0, 2 * _GIB) == (result.returncode, size), result.stderr
        size, result = tgt.read_capacity(
            mine.portal, mine.iqn, mine.lun, initiator=mine.initiator, chap=other.chap
        )
        assert (None, True) == (size, result.auth_failed)

    for claim in ("first", "second"):
        world.kube.delete("persistentvolumeclaims", claim, namespace="default")
    wait_for(lambda: not world.our_volumes(), 30, "Cinder volumes gone")
    assert not {first.iqn, second.iqn} & set(tgt_cinder.target.target_names())


def test_online_expand_reaches_the_lun(world: World, tgt_cinder: TgtCinder) -> None:
    """1 Gi → 3 Gi while exported: Cinder extends in use, TgtAdm re-reads the file, the LUN says 3 GiB."""
    body = objects.storage_class("grow", {"type": tgt.PROFILE, "volumeSource": "csi"})
    body["allowVolumeExpansion"] = True
    world.kube.create("storageclasses", body)
    world.create_pvc("data", "grow", size="1Gi")
    world.wait_bound("data", timeout=60)
    login = _login_from_pv(world, "data")
    size, result = tgt.read_capacity(
        login.portal, login.iqn, login.lun, initiator=login.initiator, chap=login.chap
    )
    assert (0, 1 * _GIB) == (result.returncode, size), result.stderr

    world.kube.patch(
        "persistentvolumeclaims",
        "data",
        {"spec": {"resources": {"requests": {"storage": "3Gi"}}}},
        namespace="default",
    )
    wait_for(lambda: (world.pv_of("data") or {})["spec"]["capacity"] == {"storage": "3Gi"}, 30, "PV at 3Gi")
    volume = world.cinder.get_volume(login.volume_id)
    assert (3, "in-use") == (volume.size_gib, volume.status)
    # same PV, same Secret: the target still takes them, and now reports the new size
    again = _login_from_pv(world, "data")
    assert (login.portal, login.iqn, login.lun, login.chap) == (
        again.portal,
        again.iqn,
        again.lun,
        again.chap,
    )
    size, result = tgt.read_capacity(
        again.portal, again.iqn, again.lun, initiator=again.initiator, chap=again.chap
    )
    assert (0, 3 * _GIB) == (result.returncode, size), result.stderr

    world.kube.delete("persistentvolumeclaims", "data", namespace="default")
    wait_for(lambda: not world.our_volumes(), 30, "Cinder volume gone")
    assert login.iqn not in tgt_cinder.target.target_names()
