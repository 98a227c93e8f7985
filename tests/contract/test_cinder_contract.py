"""The CinderPort contract: the same tests against the emulator and against real OpenStack Cinder.

A test that passes on one backend and fails on the other is an emulator bug (or an adapter assumption
that only holds for one of them).
"""

from __future__ import annotations

import pytest

from provisioner.domain import names
from provisioner.domain.errors import CinderAmbiguous, CinderBadRequest, CinderConflict, CinderNotFound
from provisioner.domain.model import (
    AttachmentId,
    Connector,
    CreateVolumeRequest,
    SnapshotId,
    Volume,
    VolumeId,
)
from tests.contract.conftest import CinderWorld

CONNECTOR = Connector(host="k8s-provisioner", ip="127.0.0.1", initiator="iqn.2024-01.io.netvol:contract")


def _create(
    cinder: CinderWorld,
    *,
    volume_type: str = "rbd",
    size: int = 1,
    name: str | None = None,
    metadata: dict[str, str] | None = None,
    snapshot_id: SnapshotId | None = None,
    source_volid: VolumeId | None = None,
) -> Volume:
    request = CreateVolumeRequest(
        name=name or cinder.unique(),
        size_gib=size,
        volume_type=volume_type,
        metadata={names.META_CLUSTER: cinder.cluster, **(metadata or {})},
        snapshot_id=snapshot_id,
        source_volid=source_volid,
    )
    volume = cinder.adapter.create_volume(request)
    return cinder.wait_status(volume.id, "available")


def test_capabilities_allow_the_attachments_api(cinder: CinderWorld) -> None:
    """Both backends negotiate a microversion with attachments, name filters and in-use extend."""
    caps = cinder.adapter.capabilities
    assert (True, True, True) == (caps.attachments, caps.name_filter, caps.inuse_extend)


def test_create_becomes_available_with_our_fields(cinder: CinderWorld) -> None:
    """A new volume reports the name, size, type and metadata it was created with."""
    name = cinder.unique()
    created = cinder.adapter.create_volume(
        CreateVolumeRequest(
            name=name,
            size_gib=2,
            volume_type="iscsi",
            metadata={names.META_CLUSTER: cinder.cluster, "k": "v"},
        )
    )
    volume = cinder.wait_status(created.id, "available")
    expected = (name, 2, "iscsi", {names.META_CLUSTER: cinder.cluster, "k": "v"})
    assert expected == (volume.name, volume.size_gib, volume.volume_type, dict(volume.metadata))


def test_get_missing_volume_is_not_found(cinder: CinderWorld) -> None:
    """get_volume of an unknown id raises CinderNotFound carrying a request id."""
    with pytest.raises(CinderNotFound) as info:
        cinder.adapter.get_volume(VolumeId("00000000-0000-4000-8000-000000000000"))
    assert (404, True) == (info.value.status_code, bool(info.value.request_id))


def test_delete_missing_volume_is_success(cinder: CinderWorld) -> None:
    """Deleting a volume that does not exist returns normally (404 = success)."""
    missing = VolumeId("00000000-0000-4000-8000-000000000001")
    cinder.adapter.delete_volume(missing)
    with pytest.raises(CinderNotFound):
        cinder.adapter.get_volume(missing)


def test_delete_volume_goes_away(cinder: CinderWorld) -> None:
    """A deleted volume eventually 404s, and deleting it again is still success."""
    volume = _create(cinder)
    cinder.adapter.delete_volume(volume.id)
    cinder.wait_gone(volume.id)
    cinder.adapter.delete_volume(volume.id)


def test_find_by_name_and_cluster_tag(cinder: CinderWorld) -> None:
    """find_volume matches name and cluster tag; another cluster's tag or name finds nothing."""
    volume = _create(cinder)
    found = cinder.adapter.find_volume(name=volume.name, cluster=cinder.cluster)
    other_cluster = cinder.adapter.find_volume(name=volume.name, cluster="someone-else")
    other_name = cinder.adapter.find_volume(name=cinder.unique(), cluster=cinder.cluster)
    assert (volume.id, None, None) == (found.id if found else None, other_cluster, other_name)


def test_find_with_two_matches_is_ambiguous(cinder: CinderWorld) -> None:
    """Two volumes with one name and our tag: CinderAmbiguous, never a silent pick."""
    name = cinder.unique()
    _create(cinder, name=name)
    _create(cinder, name=name)
    with pytest.raises(CinderAmbiguous):
        cinder.adapter.find_volume(name=name, cluster=cinder.cluster)


def test_list_by_metadata_follows_pagination(cinder: CinderWorld) -> None:
    """list_volumes returns every tagged volume across pages smaller than the result."""
    tag = {"contract/batch": cinder.unique("batch")}
    created = {_create(cinder, metadata=tag).id for _ in range(5)}
    small_pages = cinder.make_adapter(page_size=2)
    listed = [v.id for v in small_pages.list_volumes(metadata=tag)]
    assert (created, 5) == (set(listed), len(listed))


def test_create_from_snapshot(cinder: CinderWorld) -> None:
    """A volume created from a snapshot records its source snapshot."""
    source = _create(cinder)
    snapshot = cinder.adapter.create_snapshot(source.id, name=cinder.unique("snap"), metadata={})
    cinder.wait_for(
        "snapshot available", lambda: cinder.adapter.get_snapshot(snapshot.id).status == "available"
    )
    volume = _create(cinder, snapshot_id=snapshot.id)
    assert (snapshot.id, 1) == (volume.snapshot_id, volume.size_gib)


def test_clone_from_volume(cinder: CinderWorld) -> None:
    """A clone records its source volume and may be larger."""
    source = _create(cinder)
    clone = _create(cinder, source_volid=source.id, size=2)
    assert (source.id, 2) == (clone.source_volid, clone.size_gib)


def test_attachment_lifecycle_rbd(cinder: CinderWorld) -> None:
    """rbd: attachment carries rbd connection info; complete → in-use; delete → available."""
    volume = _create(cinder, volume_type="rbd")
    attachment = cinder.adapter.create_attachment(volume.id, CONNECTOR)
    info = attachment.connection_info
    assert info is not None
    data = info.data
    pool_and_image = str(data["name"]).split("/")
    shape = (info.driver_volume_type, len(pool_and_image) >= 2, volume.id in pool_and_image[-1])
    assert ("rbd", True, True) == shape
    assert len(data["hosts"]) == len(data["ports"]) >= 1
    cinder.adapter.complete_attachment(attachment.id)
    in_use = cinder.wait_status(volume.id, "in-use")
    assert attachment.id in in_use.attachment_ids
    cinder.adapter.delete_attachment(attachment.id)
    cinder.wait_status(volume.id, "available")
    cinder.adapter.delete_attachment(attachment.id)  # gone already: success


def test_attachment_lifecycle_iscsi(cinder: CinderWorld) -> None:
    """iscsi: attachment carries portal, IQN and an integer LUN."""
    volume = _create(cinder, volume_type="iscsi")
    attachment = cinder.adapter.create_attachment(volume.id, CONNECTOR)
    info = attachment.connection_info
    assert info is not None
    data = info.data
    shape = (
        info.driver_volume_type,
        ":" in str(data["target_portal"]),
        str(data["target_iqn"]).startswith("iqn."),
        type(data["target_lun"]),
    )
    assert ("iscsi", True, True, int) == shape
    cinder.adapter.complete_attachment(attachment.id)
    cinder.wait_status(volume.id, "in-use")
    cinder.adapter.delete_attachment(attachment.id)
    cinder.wait_status(volume.id, "available")


def test_delete_missing_attachment_is_success(cinder: CinderWorld) -> None:
    """Deleting an unknown attachment returns normally, and leaves volumes alone."""
    volume = _create(cinder)
    cinder.adapter.delete_attachment(AttachmentId("00000000-0000-4000-8000-000000000002"))
    assert "available" == cinder.adapter.get_volume(volume.id).status


def test_legacy_export_round_trip(cinder: CinderWorld) -> None:
    """reserve → initialize_connection → terminate_connection → unreserve leaves the volume available."""
    volume = _create(cinder, volume_type="iscsi")
    cinder.adapter.reserve(volume.id)
    info = cinder.adapter.initialize_connection(volume.id, CONNECTOR)
    cinder.adapter.terminate_connection(volume.id, CONNECTOR)
    cinder.adapter.unreserve(volume.id)
    final = cinder.wait_status(volume.id, "available")
    assert ("iscsi", "available") == (info.driver_volume_type, final.status)


def test_extend_grows_the_volume(cinder: CinderWorld) -> None:
    """extend_volume → available again at the new size."""
    volume = _create(cinder)
    cinder.adapter.extend_volume(volume.id, 3)
    cinder.wait_for("size 3", lambda: cinder.adapter.get_volume(volume.id).size_gib == 3)
    assert 3 == cinder.wait_status(volume.id, "available").size_gib


def test_extend_to_same_size_is_refused(cinder: CinderWorld) -> None:
    """Cinder refuses to 'extend' to the current size: a final CinderBadRequest (400)."""
    volume = _create(cinder)
    with pytest.raises(CinderBadRequest) as info:
        cinder.adapter.extend_volume(volume.id, 1)
    assert (400, True) == (info.value.status_code, info.value.final)


def test_set_volume_metadata_merges(cinder: CinderWorld) -> None:
    """set_volume_metadata merges (named keys set, others kept; again = same); unknown id → CinderNotFound."""
    volume = _create(cinder, metadata={"keep": "1", "change": "old"})
    tags = {"change": "new", names.META_PVC_UID: "uid-1"}
    cinder.adapter.set_volume_metadata(volume.id, tags)
    cinder.adapter.set_volume_metadata(volume.id, tags)
    expected = {names.META_CLUSTER: cinder.cluster, "keep": "1", **tags}
    assert expected == dict(cinder.adapter.get_volume(volume.id).metadata)
    with pytest.raises(CinderNotFound):
        cinder.adapter.set_volume_metadata(VolumeId("00000000-0000-4000-8000-000000000002"), tags)


def test_snapshot_crud(cinder: CinderWorld) -> None:
    """Snapshots: create → available, get, list by volume and by metadata, delete → gone."""
    volume = _create(cinder)
    tag = {"contract/snap": cinder.unique("tag")}
    snapshot = cinder.adapter.create_snapshot(volume.id, name=cinder.unique("snap"), metadata=tag)
    cinder.wait_for(
        "snapshot available", lambda: cinder.adapter.get_snapshot(snapshot.id).status == "available"
    )
    got = cinder.adapter.get_snapshot(snapshot.id)
    by_volume = [s.id for s in cinder.adapter.list_snapshots(volume_id=volume.id)]
    by_tag = [s.id for s in cinder.adapter.list_snapshots(metadata=tag)]
    assert (volume.id, dict(tag), [snapshot.id], [snapshot.id]) == (
        got.volume_id,
        dict(got.metadata),
        by_volume,
        by_tag,
    )
    cinder.adapter.delete_snapshot(snapshot.id)

    def gone() -> bool:
        try:
            cinder.adapter.get_snapshot(snapshot.id)
        except CinderNotFound:
            return True
        return False

    cinder.wait_for("snapshot gone", gone)
    cinder.adapter.delete_snapshot(snapshot.id)


def test_get_missing_snapshot_is_not_found(cinder: CinderWorld) -> None:
    """get_snapshot of an unknown id raises CinderNotFound."""
    with pytest.raises(CinderNotFound):
        cinder.adapter.get_snapshot(SnapshotId("00000000-0000-4000-8000-000000000003"))


def test_delete_with_snapshots_needs_cascade(cinder: CinderWorld) -> None:
    """A volume with snapshots refuses plain delete (CinderConflict) and goes with cascade."""
    volume = _create(cinder)
    snapshot = cinder.adapter.create_snapshot(volume.id, name=cinder.unique("snap"), metadata={})
    cinder.wait_for(
        "snapshot available", lambda: cinder.adapter.get_snapshot(snapshot.id).status == "available"
    )
    with pytest.raises(CinderConflict):
        cinder.adapter.delete_volume(volume.id)
    cinder.adapter.delete_volume(volume.id, cascade=True)
    cinder.wait_gone(volume.id)


def test_snapshot_of_an_exported_volume(cinder: CinderWorld) -> None:
    """Provisioned volumes stay attached (in-use); snapshotting them works without force at 3.66+."""
    volume = _create(cinder, volume_type="iscsi")
    attachment = cinder.adapter.create_attachment(volume.id, CONNECTOR)
    cinder.adapter.complete_attachment(attachment.id)
    cinder.wait_status(volume.id, "in-use")
    snapshot = cinder.adapter.create_snapshot(volume.id, name=cinder.unique("snap"), metadata={})
    cinder.wait_for(
        "snapshot available", lambda: cinder.adapter.get_snapshot(snapshot.id).status == "available"
    )
    assert volume.id == cinder.adapter.get_snapshot(snapshot.id).volume_id
