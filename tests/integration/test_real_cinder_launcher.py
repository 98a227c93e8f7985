"""Real OpenStack Cinder (PyPI ``cinder``) started by ``start_real_cinder``, driven by the real cinderclient.

Proves the launcher and our file-backed driver give the contract suite a working Cinder: volumes of the
rbd and iscsi types land on their backends, the legacy export and the v3 attachments API return the
connection info shapes of reference/connection-info.md, extend/snapshot/clone/delete really touch the
backing files, and no process outlives the context manager.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cinderclient import client as cinder_client
from cinderclient import exceptions as cinder_exc
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from provisioner.testworld.real_cinder import launcher as real_cinder
from provisioner.testworld.real_cinder.launcher import RealCinderError, RealCinderHandle, start_real_cinder

pytestmark = [
    pytest.mark.cinder_real,
    pytest.mark.skipif(importlib.util.find_spec("cinder") is None, reason="needs tox -e cinder-real"),
]

GIB = 1024**3
CONNECTOR = {
    "platform": "x86_64",
    "os_type": "linux",
    "host": "k8s-provisioner",
    "ip": "127.0.0.1",
    "initiator": "iqn.2026-01.io.netvol:provisioner",
    "multipath": False,
    "do_local_attach": False,
}
COMMON_DATA = {"qos_specs": None, "access_mode": "rw", "encrypted": False, "cacheable": False}


def _client(handle: RealCinderHandle) -> Any:
    sess = ks_session.Session(auth=token_endpoint.Token(handle.url, handle.token))
    return cinder_client.Client("3.60", session=sess)


def _wait(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_status(client: Any, volume_id: str, status: str) -> Any:
    def probe() -> Any:
        volume = client.volumes.get(volume_id)
        assert volume.status not in {"error", "error_extending"}, volume.status
        return volume if volume.status == status else None

    return _wait(probe, f"volume {volume_id} {status}")


def _gone(client: Any, volume_id: str) -> bool:
    try:
        client.volumes.get(volume_id)
    except cinder_exc.NotFound:
        return True
    return False


def _file(workdir: Path, backend: str, name: str) -> Path:
    return workdir / "volumes" / backend / name


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-cinder")


@pytest.fixture(scope="module")
def cinder(workdir: Path) -> Iterator[RealCinderHandle]:
    with start_real_cinder(workdir) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(cinder: RealCinderHandle) -> Any:
    return _client(cinder)


def test_handle_describes_the_endpoint(cinder: RealCinderHandle) -> None:
    """The handle carries a hex project id, the noauth token for it and one volume type per backend."""
    assert 32 == len(cinder.project_id)
    int(cinder.project_id, 16)
    assert f"admin:{cinder.project_id}" == cinder.token
    assert cinder.url.endswith(f"/v3/{cinder.project_id}")
    assert ["iscsi", "rbd"] == sorted(cinder.volume_types)
    assert cinder.log_path.is_file()


def test_volume_types_route_to_their_backends(cinder: RealCinderHandle, client: Any) -> None:
    """A volume of type rbd lands on the rbd backend, one of type iscsi on the iscsi backend."""
    for type_name in ("rbd", "iscsi"):
        volume = client.volumes.create(1, name=f"route-{type_name}", volume_type=type_name)
        volume = _wait_status(client, volume.id, "available")
        assert f"cinder-real@{type_name}#{type_name}" == getattr(volume, "os-vol-host-attr:host")
        assert type_name == volume.volume_type
        assert cinder.volume_types[type_name] == client.volume_types.find(name=type_name).id


def test_rbd_legacy_export_returns_rbd_connection_info(client: Any) -> None:
    """reserve + initialize_connection on rbd return the rbd shape; terminate + unreserve undo it."""
    volume = client.volumes.create(1, name="legacy-rbd", volume_type="rbd")
    _wait_status(client, volume.id, "available")
    client.volumes.reserve(volume)
    info = client.volumes.initialize_connection(volume, CONNECTOR)
    expected = {
        "driver_volume_type": "rbd",
        "data": {
            "name": f"volumes/volume-{volume.id}",
            "hosts": ["127.0.0.1"],
            "ports": ["6789"],
            "cluster_name": "ceph",
            "auth_enabled": False,
            "auth_username": None,
            "secret_type": "ceph",
            "secret_uuid": None,
            "volume_id": volume.id,
            "discard": True,
            "enforce_multipath": False,
            **COMMON_DATA,
        },
        "enforce_multipath": False,  # Cinder 29 repeats it outside "data" on the legacy call
    }
    assert expected == info
    client.volumes.terminate_connection(volume, CONNECTOR)
    client.volumes.unreserve(volume)
    assert "available" == client.volumes.get(volume.id).status


def test_iscsi_attachment_create_complete_delete(client: Any) -> None:
    """The v3 attachments API exports an iscsi volume (in-use after complete) and releases it on delete."""
    volume = client.volumes.create(1, name="attach-iscsi", volume_type="iscsi")
    _wait_status(client, volume.id, "available")
    attachment = client.attachments.create(volume.id, CONNECTOR, mode="rw")
    # The attachments API flattens connection info: the driver's "data" keys sit next to
    # driver_volume_type (no "data" key), plus attachment_id and enforce_multipath.
    expected = {
        "driver_volume_type": "iscsi",
        "target_discovered": False,
        "target_portal": "127.0.0.1:3260",
        "target_iqn": f"iqn.2010-10.org.openstack:volume-{volume.id}",
        "target_lun": 0,
        "volume_id": volume.id,
        "discard": False,
        "enforce_multipath": False,
        "attachment_id": attachment["id"],
        **COMMON_DATA,
    }
    assert expected == attachment["connection_info"]
    assert "attaching" == client.volumes.get(volume.id).status
    client.attachments.complete(attachment["id"])
    assert "in-use" == client.volumes.get(volume.id).status
    assert "attached" == client.attachments.show(attachment["id"]).status
    client.attachments.delete(attachment["id"])
    assert "available" == client.volumes.get(volume.id).status
    with pytest.raises(cinder_exc.NotFound):
        client.attachments.show(attachment["id"])


def test_rbd_attachment_carries_rbd_connection_info(client: Any) -> None:
    """An attachment on an rbd volume carries the rbd image spec and monitors (flattened, no "data")."""
    volume = client.volumes.create(1, name="attach-rbd", volume_type="rbd")
    _wait_status(client, volume.id, "available")
    attachment = client.attachments.create(volume.id, CONNECTOR)
    info = attachment["connection_info"]
    assert ("rbd", f"volumes/volume-{volume.id}", ["127.0.0.1"], ["6789"]) == (
        info["driver_volume_type"],
        info["name"],
        info["hosts"],
        info["ports"],
    )
    client.attachments.delete(attachment["id"])
    assert "available" == client.volumes.get(volume.id).status


def test_extend_grows_the_backing_file(workdir: Path, client: Any) -> None:
    """extend reaches the driver: the volume reports the new size and its file has grown."""
    volume = client.volumes.create(1, name="extend", volume_type="rbd")
    _wait_status(client, volume.id, "available")
    assert 1 * GIB == _file(workdir, "rbd", f"volume-{volume.id}").stat().st_size
    client.volumes.extend(volume, 3)
    volume = _wait(lambda: (v := client.volumes.get(volume.id)).size == 3 and v, "size 3")
    assert "available" == volume.status
    assert 3 * GIB == _file(workdir, "rbd", f"volume-{volume.id}").stat().st_size


def test_snapshot_restore_and_clone_copy_the_data(workdir: Path, client: Any) -> None:
    """A snapshot and a clone carry the source's bytes; a volume from a snapshot may be larger."""
    source = client.volumes.create(1, name="source", volume_type="rbd")
    _wait_status(client, source.id, "available")
    marker = b"netvol-data-marker"
    with _file(workdir, "rbd", f"volume-{source.id}").open("r+b") as f:
        f.seek(5 * 1024 * 1024)
        f.write(marker)

    snapshot = client.volume_snapshots.create(source.id, name="snap")
    _wait(lambda: client.volume_snapshots.get(snapshot.id).status == "available", "snapshot available")
    restored = client.volumes.create(2, name="restored", snapshot_id=snapshot.id, volume_type="rbd")
    restored = _wait_status(client, restored.id, "available")
    clone = client.volumes.create(1, name="clone", source_volid=source.id, volume_type="rbd")
    clone = _wait_status(client, clone.id, "available")

    assert (snapshot.id, 2) == (restored.snapshot_id, restored.size)
    assert source.id == clone.source_volid
    for volume_id, size in ((restored.id, 2), (clone.id, 1)):
        path = _file(workdir, "rbd", f"volume-{volume_id}")
        with path.open("rb") as f:
            f.seek(5 * 1024 * 1024)
            assert marker == f.read(len(marker))
        assert size * GIB == path.stat().st_size


def _snapshot_gone(client: Any, snapshot_id: str) -> bool:
    try:
        client.volume_snapshots.get(snapshot_id)
    except cinder_exc.NotFound:
        return True
    return False


def test_delete_removes_volume_and_refuses_while_snapshots_exist(workdir: Path, client: Any) -> None:
    """delete is refused while a snapshot exists, then removes the volume (404) and its file."""
    volume = client.volumes.create(1, name="doomed", volume_type="iscsi")
    _wait_status(client, volume.id, "available")
    snapshot = client.volume_snapshots.create(volume.id)
    _wait(lambda: client.volume_snapshots.get(snapshot.id).status == "available", "snapshot available")
    with pytest.raises(cinder_exc.BadRequest):
        client.volumes.delete(volume)
    client.volume_snapshots.delete(snapshot)
    _wait(lambda: not _file(workdir, "iscsi", f"snapshot-{snapshot.id}").exists(), "snapshot file gone")
    # the driver removes the file before Cinder destroys the snapshot's record: until that 404, the volume
    # still "has snapshots" and its delete is refused
    _wait(lambda: _snapshot_gone(client, snapshot.id), "snapshot record gone")
    _wait(lambda: client.volumes.get(volume.id).status == "available", "volume available again")
    client.volumes.delete(volume)
    _wait(lambda: _gone(client, volume.id), "volume gone")
    assert not _file(workdir, "iscsi", f"volume-{volume.id}").exists()


def test_metadata_and_name_filters(client: Any) -> None:
    """Name and metadata filters work (the shipped resource_filters.json is configured)."""
    volume = client.volumes.create(1, name="findme", volume_type="rbd", metadata={"netvol.io/cluster": "c1"})
    _wait_status(client, volume.id, "available")
    by_name = client.volumes.list(search_opts={"name": "findme"})
    by_meta = client.volumes.list(search_opts={"metadata": {"netvol.io/cluster": "c1"}})
    assert [volume.id] == [v.id for v in by_name]
    assert [volume.id] == [v.id for v in by_meta]


def test_special_profiles_return_cephx_chap_and_multipath(tmp_path: Path) -> None:
    """rbd-cephx, iscsi-chap and iscsi-multipath backends return keyring, CHAP and multipath fields."""
    with start_real_cinder(tmp_path, backends=("rbd-cephx", "iscsi-chap", "iscsi-multipath")) as handle:
        client = _client(handle)
        infos: dict[str, dict[str, Any]] = {}
        for type_name in handle.volume_types:
            volume = client.volumes.create(1, volume_type=type_name)
            _wait_status(client, volume.id, "available")
            attachment = client.attachments.create(volume.id, {**CONNECTOR, "multipath": True})
            infos[type_name] = attachment["connection_info"]
    cephx = infos["rbd-cephx"]
    assert (True, real_cinder.CEPHX_USER) == (cephx["auth_enabled"], cephx["auth_username"])
    assert f"[client.cinder]\n\tkey = {real_cinder.CEPHX_KEY}\n" == cephx["keyring"]
    chap = infos["iscsi-chap"]
    assert ("CHAP", real_cinder.CHAP_USERNAME, real_cinder.CHAP_PASSWORD) == (
        chap["auth_method"],
        chap["auth_username"],
        chap["auth_password"],
    )
    assert ("CHAP", real_cinder.DISCOVERY_CHAP_USERNAME, real_cinder.DISCOVERY_CHAP_PASSWORD) == (
        chap["discovery_auth_method"],
        chap["discovery_auth_username"],
        chap["discovery_auth_password"],
    )
    multi = infos["iscsi-multipath"]
    assert (["127.0.0.1:3260", "127.0.0.2:3260"], [0, 0]) == (multi["target_portals"], multi["target_luns"])
    assert 2 * [multi["target_iqn"]] == multi["target_iqns"]


def test_no_process_survives_the_context(tmp_path: Path) -> None:
    """After the context exits the Cinder process is gone."""
    with start_real_cinder(tmp_path, backends=("rbd",)) as handle:
        os.kill(handle.pid, 0)  # alive while in use
        pid = handle.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_every_service_keeps_its_own_heartbeat(tmp_path: Path) -> None:
    """Past service_down_time every volume service and the scheduler are still up (service_id trap)."""
    fast = {"DEFAULT": {"report_interval": "1", "service_down_time": "3"}}
    with start_real_cinder(tmp_path, backends=("rbd", "iscsi"), extra_config=fast) as handle:
        client = _client(handle)
        started = time.monotonic()
        _wait(lambda: time.monotonic() - started > 5, "service_down_time to pass", timeout=10)
        states = {(s.binary, s.host): s.state for s in client.services.list()}
    expected = {
        ("cinder-scheduler", "cinder-real"): "up",
        ("cinder-volume", "cinder-real@rbd"): "up",
        ("cinder-volume", "cinder-real@iscsi"): "up",
        ("cinder-backup", "cinder-real"): "up",  # cinder-backup (posix driver) runs in the same process
    }
    assert expected == states


def test_startup_failure_raises_with_log_tail(tmp_path: Path) -> None:
    """When Cinder cannot start (API port taken) the error says so and quotes the log."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with (
            pytest.raises(RealCinderError, match="exited with status") as caught,
            start_real_cinder(tmp_path, backends=("rbd",), port=port),
        ):
            pass
    assert "Address already in use" in str(caught.value)


def test_unknown_backend_profile_is_refused(tmp_path: Path) -> None:
    """An unknown backend profile fails before any process starts."""
    with (
        pytest.raises(ValueError, match="unknown real-Cinder backend 'nfs'"),
        start_real_cinder(tmp_path, backends=("nfs",)),
    ):
        pass
