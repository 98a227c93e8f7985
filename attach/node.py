"""The node operations behind the CSI Node service and the ``cinder-attach stage|unstage`` commands.

Everything a request carries is validated first (``attach.validate``: ids, paths under the kubelet
directory, every volume attribute, secrets, fsType and mount flags), before the stash is written or a
command runs. Ownership: the stash is the source of truth for what this agent staged where. A volume is
staged at exactly one path per node (kubelet derives it from the PV; CSI has no access mode that stages
one volume twice on a node, MULTI_NODE_* modes are about *other* nodes), so a second path is refused
(FAILED_PRECONDITION), as is a path or an image/LUN another staged volume already uses. Unstage touches
only the mount the stash records for *that* volume id and path: an unknown id is a no-op success, and the
device is unmapped / logged out only when no other staged volume uses it.

Stage: lock the volume, write the stash, attach (rbd map / iSCSI login), make sure a filesystem exists
(mkfs only on a blank device of a *new* volume), mount it on the staging path, grow it when the provisioner
asked, mark the stash staged. Every step first checks whether it is already done, so a retried stage after
a crash or a node reboot (stash present, mapping gone) simply continues. Unstage reverses it using only the
stash. Publish/unpublish bind-mount the staged volume into the pod's target path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from attach import validate
from attach.devices import DEFAULT_FS, Devices, size_bytes
from attach.errors import FinalAttachError, InvalidRequest, NotFound
from attach.iscsi import Iscsi
from attach.iscsi_iface import check_names, normalize_portal
from attach.mount import Mounter
from attach.rbd import Rbd, image_spec
from attach.stash import PHASE_STAGED, Locks, StashRecord, StashStore
from provisioner.csi_contract import SECRET_CEPHX_KEY, IscsiTarget, RbdTarget, Target, decode
from provisioner.domain.errors import InvalidInput

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRequest:
    """NodeStageVolume, stripped of gRPC."""

    volume_id: str
    staging_path: str
    attributes: Mapping[str, str]
    secrets: Mapping[str, str]
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()
    block: bool = False
    readonly: bool = False

    def __repr__(self) -> str:  # never print secrets, whoever logs this object
        return f"StageRequest(volume_id={self.volume_id!r}, staging_path={self.staging_path!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeStats:
    """Usage of a published or staged volume; inode numbers are 0 for Block volumes."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int = 0
    free_inodes: int = 0
    used_inodes: int = 0
    block: bool = False


def _require(value: str, name: str) -> str:
    if not value:
        raise InvalidRequest(f"{name} is required")
    return value


def _decode(attributes: Mapping[str, str]) -> Target:
    try:
        target = decode(attributes)
    except InvalidInput as e:
        raise InvalidRequest(f"volume context: {e}") from None
    validate.target(target)
    return target


def _identity(target: Target) -> set[str]:
    """What two staged volumes must never share: the RBD image, or an iSCSI (portal, IQN, LUN)."""
    if isinstance(target, RbdTarget):
        return {f"rbd:{image_spec(target)}"}
    return {f"iscsi:{normalize_portal(p.portal)},{p.iqn},{p.lun}" for p in target.paths}


def _stashed_identity(record: StashRecord) -> set[str]:
    try:
        return _identity(_decode(record.attributes))
    except InvalidRequest:
        return set()


class NodeOps:
    """Stage / unstage / publish / unpublish / stats / expand on this node."""

    def __init__(
        self,
        *,
        stash: StashStore,
        locks: Locks,
        rbd: Rbd,
        iscsi: Iscsi,
        devices: Devices,
        mounter: Mounter,
        kubelet_dir: Path = Path("/var/lib/kubelet"),
    ) -> None:
        self._kubelet_dir = kubelet_dir
        self._stash = stash
        self._locks = locks
        self._rbd = rbd
        self._iscsi = iscsi
        self._devices = devices
        self._mounter = mounter

    # --- stage -----------------------------------------------------------------------------------------

    def _path(self, value: str, field: str) -> str:
        _require(value, field)
        return validate.node_path(value, field=field, kubelet_dir=self._kubelet_dir)

    def _volume_id(self, value: str) -> str:
        return validate.volume_id(_require(value, "volume_id"))

    def stage(self, req: StageRequest) -> StashRecord:
        """Attach, format if blank and new, mount; idempotent."""
        self._volume_id(req.volume_id)
        self._path(req.staging_path, "staging_target_path")
        target = _decode(req.attributes)
        if isinstance(target, IscsiTarget):
            check_names(target)  # an unusable initiator/iface name is refused before anything is stashed
        validate.secrets(target, req.secrets)
        if not req.block:
            validate.filesystem(req.fs_type, req.mount_flags)
        with self._locks.volume(req.volume_id):
            record = self._stash.read(req.volume_id)
            self._check_ownership(req, target, record)
            if (
                record is not None
                and record.phase == PHASE_STAGED
                and record.staging_path == req.staging_path
                and self._stage_intact(record)
            ):
                log.info("stage_already_done", volume_id=req.volume_id)
                return record
            record = StashRecord(
                volume_id=req.volume_id,
                staging_path=req.staging_path,
                attributes=dict(req.attributes),
                fs_type=req.fs_type,
                mount_flags=req.mount_flags,
                block=req.block,
                readonly=req.readonly,
            )
            self._stash.write(record)  # before any side effect: unstage can always find what we did
            record = self._attach(record, target, req.secrets)
            self._stash.write(record)
            if not req.block:
                record = self._mount_staging(record, target)
            record = dataclasses.replace(record, phase=PHASE_STAGED)
            self._stash.write(record)
            log.info("staged", volume_id=req.volume_id, device=record.device, block=req.block)
            return record

    def _check_ownership(self, req: StageRequest, target: Target, record: StashRecord | None) -> None:
        """Refuse a second path for this volume, and a path or image/LUN another staged volume uses."""
        if record is not None and record.staging_path != req.staging_path:
            raise FinalAttachError(
                f"volume {req.volume_id} is already staged on this node at another staging path; "
                "a volume is staged at one path per node (unstage it there first)"
            )
        mine = _identity(target)
        for other in self._stash.all():
            if other.volume_id == req.volume_id:
                continue
            if other.staging_path == req.staging_path:
                raise FinalAttachError(
                    f"staging_target_path is already used by volume {other.volume_id} on this node"
                )
            if mine & _stashed_identity(other):
                raise FinalAttachError(
                    f"the same device is already staged for volume {other.volume_id} on this node"
                )

    def _stage_intact(self, record: StashRecord) -> bool:
        if not record.device or not os.path.exists(record.device):
            return False
        if record.block:
            return True
        return self._mounter.mounted_from(record.staging_path, record.device)

    def _attach(self, record: StashRecord, target: Target, secrets: Mapping[str, str]) -> StashRecord:
        if isinstance(target, RbdTarget):
            mapping = self._rbd.map(target, key=secrets.get(SECRET_CEPHX_KEY, ""), readonly=record.readonly)
            return dataclasses.replace(record, device=mapping.device, rbd_id=mapping.dev_id)
        attachment = self._iscsi.attach(target, secrets)
        return dataclasses.replace(
            record,
            device=attachment.device,
            scsi_devices=attachment.scsi_devices,
            multipath_device=attachment.multipath_device,
        )

    def _mount_staging(self, record: StashRecord, target: Target) -> StashRecord:
        path = record.staging_path
        os.makedirs(path, exist_ok=True)
        if self._mounter.mounted_from(path, record.device):
            entry = self._mounter.find(path)
            fs_type = record.fs_type or (entry.fs_type if entry is not None else DEFAULT_FS)
        else:
            if self._mounter.find(path) is not None:
                raise FinalAttachError(f"{path} is already mounted from another device")
            fs_type = self._devices.ensure_filesystem(
                record.device,
                fs_type=record.fs_type or DEFAULT_FS,
                new_volume=target.content_source == "empty",
            )
            if record.fs_type and fs_type != record.fs_type:
                log.warning("fs_type_differs", found=fs_type, wanted=record.fs_type)
            options = ["_netdev", *record.mount_flags]
            if record.readonly:
                options.append("ro")
            self._mounter.mount(record.device, path, fs_type, options)
        if target.grow_fs and not record.readonly:
            self._devices.grow(device=record.device, mount_path=path, fs_type=fs_type)
        return dataclasses.replace(record, fs_type=fs_type)

    # --- unstage ---------------------------------------------------------------------------------------

    def unstage(self, volume_id: str, staging_path: str) -> None:
        """Unmount, detach, forget what the stash records for this volume id and path; idempotent.

        An id the stash does not know is a no-op success that touches no mount (the path may be another
        volume's). A path other than the stashed one, or a mount there from a device this volume did not
        stage, is refused without touching anything.
        """
        self._volume_id(volume_id)
        self._path(staging_path, "staging_target_path")
        with self._locks.volume(volume_id):
            record = self._stash.read(volume_id)
            if record is None:
                log.info("unstage_nothing_stashed", volume_id=volume_id)
                return
            if record.staging_path != staging_path:
                raise FinalAttachError(
                    f"volume {volume_id} is staged at another staging path on this node; "
                    "refusing to touch this one"
                )
            if self._mounter.find(staging_path) is not None:
                if not record.device or not self._mounter.mounted_from(staging_path, record.device):
                    raise FinalAttachError(
                        f"staging_target_path is mounted from a device volume {volume_id} did not stage"
                    )
                self._mounter.umount(staging_path)
            target = _decode(record.attributes)
            shared = _identity(target) & set().union(
                *(_stashed_identity(o) for o in self._stash.all() if o.volume_id != volume_id)
            )
            if shared:
                log.warning("unstage_device_kept_in_use", volume_id=volume_id)
            elif isinstance(target, RbdTarget):
                self._rbd.unmap(target)
            else:
                self._detach_iscsi(record, target)
            self._stash.delete(volume_id)
            log.info("unstaged", volume_id=volume_id)

    def _detach_iscsi(self, record: StashRecord, target: IscsiTarget) -> None:
        def others() -> list[IscsiTarget]:
            """The other stashed iSCSI volumes, read afresh each time (called under iscsi's locks)."""
            found = []
            for other in self._stash.all():
                if other.volume_id == record.volume_id:
                    continue
                try:
                    other_target = decode(other.attributes)
                except InvalidInput:
                    continue
                if isinstance(other_target, IscsiTarget):
                    found.append(other_target)
            return found

        self._iscsi.detach(
            target,
            scsi_devices=record.scsi_devices,
            multipath_device=record.multipath_device,
            others=others,
        )

    # --- publish ---------------------------------------------------------------------------------------

    def publish(
        self, *, volume_id: str, staging_path: str, target_path: str, readonly: bool, block: bool
    ) -> None:
        """Bind-mount the staged filesystem (or the device, for Block) onto the pod's target path."""
        self._volume_id(volume_id)
        self._path(staging_path, "staging_target_path")
        self._path(target_path, "target_path")
        if target_path == staging_path:
            raise InvalidRequest("target_path: must differ from staging_target_path")
        with self._locks.volume(volume_id):
            record = self._stash.read(volume_id)
            if record is None or record.phase != PHASE_STAGED:
                raise FinalAttachError(f"volume {volume_id} is not staged on this node")
            if record.staging_path != staging_path:
                raise FinalAttachError(f"volume {volume_id} is staged at another staging path on this node")
            if self._mounter.find(target_path) is not None:
                if not self._owns_mount(record, target_path):
                    raise FinalAttachError(
                        f"target_path is mounted from a device volume {volume_id} does not use"
                    )
                return
            if block:
                Path(target_path).parent.mkdir(parents=True, exist_ok=True)
                Path(target_path).touch(exist_ok=True)
                self._mounter.bind(record.device, target_path, readonly=readonly)
            else:
                if not self._mounter.mounted_from(staging_path, record.device):
                    raise FinalAttachError(f"staging path {staging_path} is not mounted")
                os.makedirs(target_path, exist_ok=True)
                self._mounter.bind(staging_path, target_path, readonly=readonly)
            log.info("published", volume_id=volume_id, block=block, readonly=readonly)

    def _owns_mount(self, record: StashRecord, path: str) -> bool:
        """A mount on ``path`` is this volume's: from its device (a Block bind of a device node shows the
        device file system in mountinfo, not the device, so Block volumes are matched by the stash alone)."""
        return record.block or self._mounter.mounted_from(path, record.device)

    def unpublish(self, *, volume_id: str, target_path: str) -> None:
        """Unmount and remove the target path; success when it is already gone.

        Only a mount of this volume's device is touched: with no stash record the call is a no-op success
        that leaves any mount alone; a mount from another device is refused.
        """
        self._volume_id(volume_id)
        self._path(target_path, "target_path")
        with self._locks.volume(volume_id):
            record = self._stash.read(volume_id)
            if self._mounter.find(target_path) is not None:
                if record is None:
                    log.warning("unpublish_unknown_volume_left_alone", volume_id=volume_id)
                    return
                if not self._owns_mount(record, target_path):
                    raise FinalAttachError(
                        f"target_path is mounted from a device volume {volume_id} does not use"
                    )
            self._mounter.umount(target_path)
            p = Path(target_path)
            if p.is_dir():
                p.rmdir()
            elif p.exists():
                p.unlink()
            log.info("unpublished", volume_id=volume_id)

    # --- stats / expand --------------------------------------------------------------------------------

    def stats(self, *, volume_id: str, volume_path: str) -> VolumeStats:
        """statvfs of a filesystem volume; device size of a Block volume."""
        self._volume_id(volume_id)
        self._path(volume_path, "volume_path")
        if not os.path.exists(volume_path):
            raise NotFound(f"volume path {volume_path} does not exist")
        if not os.path.isdir(volume_path):
            record = self._stash.read(volume_id)
            device = record.device if record is not None else volume_path
            total = size_bytes(device)
            return VolumeStats(total_bytes=total, available_bytes=0, used_bytes=0, block=True)
        st = os.statvfs(volume_path)
        total = st.f_blocks * st.f_frsize
        available = st.f_bavail * st.f_frsize
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        return VolumeStats(
            total_bytes=total,
            available_bytes=available,
            used_bytes=used,
            total_inodes=st.f_files,
            free_inodes=st.f_ffree,
            used_inodes=st.f_files - st.f_ffree,
        )

    def expand(self, *, volume_id: str, volume_path: str) -> int:
        """Make the kernel see the new size, grow the filesystem; return the device size in bytes."""
        self._volume_id(volume_id)
        self._path(volume_path, "volume_path")
        with self._locks.volume(volume_id):
            record = self._stash.read(volume_id)
            if record is None or record.phase != PHASE_STAGED:
                raise NotFound(f"volume {volume_id} is not staged on this node")
            target = _decode(record.attributes)
            if isinstance(target, RbdTarget):
                mapping = self._rbd.find(target)
                if mapping is None:
                    raise NotFound(f"volume {volume_id} is not mapped")
                self._rbd.refresh(mapping)
            else:
                self._iscsi.rescan_sessions(target)
            if not record.block:
                self._devices.grow(
                    device=record.device, mount_path=record.staging_path, fs_type=record.fs_type
                )
            return size_bytes(record.device)
