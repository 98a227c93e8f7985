"""A real iSCSI target: the controller's PV and Secret reach a tgtd LUN, with CHAP on (tox -e cinder-real).

Real Cinder's ``iscsi-tgt`` backend exports each volume through a real ``tgtd`` with Cinder's own TgtAdm
(a random CHAP account per volume, made when the controller's attachment is completed), admits only the
initiators of the volume's connections (LIO's model, ``tgt_driver``) and demands discovery CHAP. libiscsi's
userspace initiator then logs in with exactly what the controller wrote — the PV's portal, IQN, LUN and
initiator name, the Secret's session and discovery CHAP — reads the LUN's capacity and serial number and
discovers the target with SendTargets. Wrong CHAP (session or discovery) and another initiator name are
refused by the target; deleting the claim removes the target, its ACL and the volume's file, and when the
module ends tgtd is gone with nothing left behind.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cinderclient import client as cinder_client
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

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
#: An initiator the controller never names: the targets must refuse it, whatever CHAP it has.
STRANGER = "iqn.2024-01.io.netvol:stranger"
_GIB = 1024**3


@dataclass
class TgtCinder:
    target: tgt.TgtHandle
    cinder: Any  # RealCinderHandle
    discovery: tgt.Chap  # the backend's discovery CHAP (configured on tgtd and handed out by Cinder)
    volumes_dir: Path  # the file driver's volume files
    timings: dict[str, float] = field(default_factory=dict)

    def leftovers(self) -> dict[str, list[str]]:
        """Targets, persistence files, ACL records and volume files still there (all empty when clean)."""
        files = sorted(p.name for p in self.volumes_dir.iterdir()) if self.volumes_dir.exists() else []
        return {**self.target.leftovers(), "volume files": files}


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def tgt_cinder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TgtCinder]:
    """A real tgtd and real Cinder whose only backend (``iscsi-tgt``) exports through it, with discovery
    CHAP; on teardown: no target, ACL record or volume file left, tgtd gone, its portal closed."""
    require(tgt.missing_tools(), "the real iSCSI target")
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    root: Path = tmp_path_factory.mktemp("tgt-cinder")
    discovery = tgt.Chap(username="discovery-e2e", password=secrets.token_hex(12))
    with ExitStack() as stack:
        started = time.monotonic()
        target = stack.enter_context(tgt.start_tgtd(root / "tgt"))
        timings = {"tgtd_seconds": time.monotonic() - started}
        started = time.monotonic()
        cinder = stack.enter_context(
            start_real_cinder(
                root / "cinder",
                backends=(tgt.PROFILE,),
                extra_config=target.cinder_backend_config(discovery_chap=discovery),
            )
        )
        timings["cinder_seconds"] = time.monotonic() - started
        print(f"\nreal tgtd + Cinder (TgtAdm) started: {timings}")
        world = TgtCinder(
            target=target,
            cinder=cinder,
            discovery=discovery,
            volumes_dir=root / "cinder" / "volumes" / tgt.PROFILE,
            timings=timings,
        )
        yield world
        left = world.leftovers()
    assert not _alive(target.pid), "tgtd outlived the module"
    assert not _portal_open(target.host, target.port)
    assert not (tgt.CONTROL_SOCKET_DIR / f"socket.{target.control_port}").exists()
    assert {"targets": [], "persistence files": [], "acl records": [], "volume files": []} == left


def _portal_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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
    discovery_chap: tgt.Chap | None  # only when the PV asks for discovery CHAP
    volume_id: str
    pv: dict[str, Any]


def _login_from_pv(world: World, claim: str) -> Login:
    pv = world.pv_of(claim)
    assert pv is not None
    spec = pv["spec"]
    if "iscsi" in spec:
        src = spec["iscsi"]
        assert src["chapAuthSession"] is True
        wants_discovery_chap = src.get("chapAuthDiscovery", False)
        portal, iqn, lun, initiator = src["targetPortal"], src["iqn"], int(src["lun"]), src["initiatorName"]
        ref = src["secretRef"]
    else:
        target = csi_contract.decode(spec["csi"]["volumeAttributes"])
        assert isinstance(target, csi_contract.IscsiTarget)
        assert target.chap_session is True
        wants_discovery_chap = target.chap_discovery
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
        discovery_chap=tgt.discovery_chap_from_secret(data) if wants_discovery_chap else None,
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
    """The PV's portal/IQN/LUN/initiator and the Secret's CHAP reach the LUN (size, serial) and discover
    it; wrong session or discovery CHAP and another initiator name are refused; deleting the claim leaves
    nothing behind."""
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
    # the target admits the PV's initiator only (plus the address no peer has, see tgt_driver)
    assert sorted([INITIATOR, "0.0.0.0/32"]) == sorted(target.acl(login.iqn))

    started = time.monotonic()
    size, result = tgt.read_capacity(
        login.portal, login.iqn, login.lun, initiator=login.initiator, chap=login.chap
    )
    login_seconds = time.monotonic() - started
    assert (0, 2 * _GIB) == (result.returncode, size), result.stderr
    _no_secret_in(result, login.chap.password)
    print(f"\nlogin + READ CAPACITY(16) with the PV's CHAP: {login_seconds * 1000:.1f} ms")
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
    # the right CHAP under another initiator name: the target is not there for it
    size, result = tgt.read_capacity(login.portal, login.iqn, login.lun, initiator=STRANGER, chap=login.chap)
    assert (None, True, False) == (size, result.target_not_found, result.auth_failed), result.stderr

    # discovery: the PV asks for discovery CHAP, the Secret carries the backend's, tgtd demands it
    assert tgt_cinder.discovery == login.discovery_chap
    assert [tgt_cinder.discovery.username] == target.discovery_accounts()
    started = time.monotonic()
    found, result = tgt.send_targets(login.portal, initiator=login.initiator, chap=login.discovery_chap)
    discovery_seconds = time.monotonic() - started
    assert [(login.iqn, login.portal)] == found, result.stderr
    print(f"SendTargets discovery with the Secret's discovery CHAP: {discovery_seconds * 1000:.1f} ms")
    wrong_discovery = tgt.Chap(username=tgt_cinder.discovery.username, password="not-the-password-0")
    for chap in (wrong_discovery, login.chap, None):
        found, result = tgt.send_targets(login.portal, initiator=login.initiator, chap=chap)
        assert (None, True) == (found, result.auth_failed), (chap, result.stderr)
    found, result = tgt.send_targets(login.portal, initiator=STRANGER, chap=login.discovery_chap)
    assert [] == found, result.stderr  # discovery logs in, but the ACL hides the target from a stranger

    # no secret is in either daemon's log (tgtd's, and Cinder's at its tier log level)
    for log in (target.log_path, tgt_cinder.cinder.log_path):
        text = log.read_text(errors="replace")
        assert login.chap.password not in text, log
        assert tgt_cinder.discovery.password not in text, log

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
    assert {"targets": [], "persistence files": [], "acl records": [], "volume files": []} == (
        tgt_cinder.leftovers()
    )


def test_chap_accounts_are_per_volume(world: World, tgt_cinder: TgtCinder) -> None:
    """Each volume's target takes its own Secret's CHAP and refuses the other claim's."""
    world.create_class("tgt", {"type": tgt.PROFILE, "volumeSource": "csi"})
    first = _provision(world, "first", "tgt")
    second = _provision(world, "second", "tgt")
    assert first.iqn != second.iqn
    assert first.chap.username != second.chap.username
    assert first.chap.password != second.chap.password
    assert {first.iqn, second.iqn} <= set(tgt_cinder.target.target_names())
    for login in (first, second):
        assert sorted([INITIATOR, "0.0.0.0/32"]) == sorted(tgt_cinder.target.acl(login.iqn))
    found, _ = tgt.send_targets(first.portal, initiator=INITIATOR, chap=tgt_cinder.discovery)
    assert {(first.iqn, first.portal), (second.iqn, second.portal)} == set(found or [])

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
    assert {"targets": [], "persistence files": [], "acl records": [], "volume files": []} == (
        tgt_cinder.leftovers()
    )


def test_online_expand_reaches_the_lun(world: World, tgt_cinder: TgtCinder) -> None:
    """1 Gi → 3 Gi while exported and logged in: Cinder extends in use, TgtAdm re-creates the target with
    the same ACL, the LUN says 3 GiB; deleting the claim under a stale session still removes the target."""
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

    # a node has the LUN staged (a session is logged in) while Cinder extends: TgtAdm's forced update
    # re-creates the target under it
    with tgt.held_session(
        tgt_cinder.target, login.iqn, login.lun, initiator=login.initiator, chap=login.chap
    ):
        world.kube.patch(
            "persistentvolumeclaims",
            "data",
            {"spec": {"resources": {"requests": {"storage": "3Gi"}}}},
            namespace="default",
        )
        wait_for(
            lambda: (world.pv_of("data") or {})["spec"]["capacity"] == {"storage": "3Gi"}, 30, "PV at 3Gi"
        )
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
    # TgtAdm re-created the target (tgt-admin --force --update): with the same ACL, not ALL
    assert sorted([INITIATOR, "0.0.0.0/32"]) == sorted(tgt_cinder.target.acl(again.iqn))
    size, result = tgt.read_capacity(again.portal, again.iqn, again.lun, initiator=STRANGER, chap=again.chap)
    assert (None, True) == (size, result.target_not_found), result.stderr

    # a node still logged in when the claim goes (a stale session) does not keep the target alive
    with tgt.held_session(
        tgt_cinder.target, again.iqn, again.lun, initiator=again.initiator, chap=again.chap
    ):
        world.kube.delete("persistentvolumeclaims", "data", namespace="default")
        wait_for(lambda: not world.our_volumes(), 30, "Cinder volume gone")
    assert login.iqn not in tgt_cinder.target.target_names()
    assert {"targets": [], "persistence files": [], "acl records": [], "volume files": []} == (
        tgt_cinder.leftovers()
    )


def _connector(initiator: str, host: str) -> dict[str, Any]:
    return {
        "platform": "x86_64",
        "os_type": "linux",
        "host": host,
        "ip": "127.0.0.1",
        "initiator": initiator,
        "multipath": False,
        "do_local_attach": False,
    }


def test_each_connection_admits_its_initiator_until_its_attachment_goes(tgt_cinder: TgtCinder) -> None:
    """A multiattach volume attached from two initiators (Cinder's attachments API): the target admits
    both and no third; deleting one attachment takes its initiator off the ACL (LIO's terminate_connection)
    and keeps the target for the other; deleting the last removes target, ACL record and, with the volume,
    its file."""
    target, cinder = tgt_cinder.target, tgt_cinder.cinder
    client = cinder_client.Client(
        "3.60", session=ks_session.Session(auth=token_endpoint.Token(cinder.url, cinder.token))
    )
    vtype = client.volume_types.create("tgt-multiattach")
    vtype.set_keys({"volume_backend_name": tgt.PROFILE, "multiattach": "<is> True"})
    first, second = "iqn.2024-01.io.netvol:node-a", "iqn.2024-01.io.netvol:node-b"
    volume = client.volumes.create(1, name="two-initiators", volume_type=vtype.id)
    wait_for(lambda: client.volumes.get(volume.id).status == "available", 30, "volume available")
    infos = {}
    for initiator, host in ((first, "node-a"), (second, "node-b")):
        attachment = client.attachments.create(volume.id, _connector(initiator, host))
        client.attachments.complete(attachment["id"])
        infos[initiator] = (attachment["id"], attachment["connection_info"])
    data = infos[first][1]
    assert infos[second][1]["target_iqn"] == data["target_iqn"]  # one target, two ACL entries
    portal, iqn, lun = data["target_portal"], data["target_iqn"], int(data["target_lun"])
    chap = tgt.Chap(username=data["auth_username"], password=data["auth_password"])
    assert sorted([first, second, "0.0.0.0/32"]) == sorted(target.acl(iqn))

    def admitted(initiator: str) -> bool:
        size, result = tgt.read_capacity(portal, iqn, lun, initiator=initiator, chap=chap)
        assert (size is not None) or result.target_not_found, result.stderr
        return size == _GIB

    assert (True, True, False) == (admitted(first), admitted(second), admitted(STRANGER))

    client.attachments.delete(infos[first][0])
    wait_for(lambda: first not in target.acl(iqn), 30, "first initiator off the ACL")
    assert sorted([second, "0.0.0.0/32"]) == sorted(target.acl(iqn))
    assert (False, True) == (admitted(first), admitted(second))

    client.attachments.delete(infos[second][0])
    wait_for(lambda: iqn not in target.target_names(), 30, "target removed")
    client.volumes.delete(volume.id)
    wait_for(lambda: not client.volumes.list(search_opts={"name": "two-initiators"}), 30, "volume gone")
    client.volume_types.delete(vtype.id)
    assert {"targets": [], "persistence files": [], "acl records": [], "volume files": []} == (
        tgt_cinder.leftovers()
    )
