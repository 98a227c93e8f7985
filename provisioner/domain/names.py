"""The product's names, in one place.

Every annotation, label, finalizer and metadata key the provisioner reads or writes is defined here, so a
rename is one edit and a grep finds every use.
"""

from __future__ import annotations

import re
from typing import Final

PREFIX: Final = "netvol.io/"

#: Default StorageClass ``provisioner`` value (configurable).
DEFAULT_PROVISIONER_NAME: Final = "netvol.io/cinder"
#: The CSI driver name written into ``spec.csi.driver`` and served by the node agent.
CSI_DRIVER_NAME: Final = "cinder.netvol.io"

# Finalizers
PVC_PROVISIONING_FINALIZER: Final = PREFIX + "provisioning"
PV_VOLUME_FINALIZER: Final = PREFIX + "cinder-volume"
#: On VolumeSnapshotContents of our driver, before any Cinder snapshot / backup is made for them.
CONTENT_SNAPSHOT_FINALIZER: Final = PREFIX + "cinder-snapshot"

# Annotations we write
ANN_VOLUME_ID: Final = PREFIX + "cinder-volume-id"
ANN_ATTACHMENT_ID: Final = PREFIX + "attachment-id"
ANN_EXPORT_MODE: Final = PREFIX + "export"  # "attachment" | "legacy"
ANN_CLOUD: Final = PREFIX + "cloud"
ANN_PROVISIONING_STEP: Final = PREFIX + "provisioning-step"
ANN_LEASE_HOLDER: Final = PREFIX + "lease-holder"
#: "<replica identity> <unix time>" of the latest Cinder create attempt for the claim (fencing aid)
ANN_CREATE_ATTEMPT: Final = PREFIX + "create-attempt"
#: "<wall time of the failure> <wall time of the slow retry or -> <shape>": a final failure remembered on
#: the claim, so a new leader does not retry it before it is due (unless the claim or class changed).
ANN_FINAL_FAILURE: Final = PREFIX + "final-failure"
#: On VolumeSnapshotContents: what their handle is ("snapshot" | "backup"), written with our finalizer
ANN_SNAPSHOT_KIND: Final = PREFIX + "snapshot-kind"

# Labels we write
LABEL_PV: Final = PREFIX + "pv"  # on provisioner-owned Secrets: the PV they belong to
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "cinder-provisioner"

# Annotations users / admins write
ANN_RESTORE_FROM_SNAPSHOT: Final = PREFIX + "restore-from-snapshot"
ANN_RESTORE_FROM_BACKUP: Final = PREFIX + "restore-from-backup"
ANN_ADOPT_VOLUME: Final = PREFIX + "adopt-volume"

# Kubernetes' own annotations
ANN_PROVISIONED_BY: Final = "pv.kubernetes.io/provisioned-by"
ANN_STORAGE_PROVISIONER: Final = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER: Final = "volume.beta.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_CLASS: Final = "volume.beta.kubernetes.io/storage-class"
ANN_SELECTED_NODE: Final = "volume.kubernetes.io/selected-node"
ANN_BIND_COMPLETED: Final = "pv.kubernetes.io/bind-completed"

# Cinder metadata keys on volumes and snapshots we create
META_CLUSTER: Final = PREFIX + "cluster"
META_PVC_NAMESPACE: Final = PREFIX + "pvc-namespace"
META_PVC_NAME: Final = PREFIX + "pvc-name"
META_PVC_UID: Final = PREFIX + "pvc-uid"
META_PV_NAME: Final = PREFIX + "pv-name"
META_STORAGE_CLASS: Final = PREFIX + "storage-class"
META_CREATED_BY: Final = PREFIX + "created-by"  # lease holder identity (fencing record)
META_RESTORED_FROM_BACKUP: Final = PREFIX + "restored-from-backup"  # the backup id a volume holds
META_RESTORE_STATE: Final = PREFIX + "restore-state"  # "pending" until the restore call was accepted
# … and on the snapshots / backups we cut for VolumeSnapshots (META_PVC_NAMESPACE = the snapshot's namespace)
META_SNAPSHOT_NAME: Final = PREFIX + "volumesnapshot-name"
META_SNAPSHOT_UID: Final = PREFIX + "volumesnapshot-uid"
META_CONTENT_NAME: Final = PREFIX + "volumesnapshotcontent-name"

# Secret types and keys (in-tree conventions)
SECRET_TYPE_RBD: Final = "kubernetes.io/rbd"  # noqa: S105 - a Secret type name
SECRET_TYPE_ISCSI_CHAP: Final = "kubernetes.io/iscsi-chap"  # noqa: S105 - a Secret type name


def pv_name_for(pvc_uid: str) -> str:
    """PV name and Cinder volume name for a claim: ``pvc-<uid>``."""
    return f"pvc-{pvc_uid}"


#: A Cinder id as it may appear in a URL path (UUIDs in practice): no "/", ".", "?", "%" or spaces, so a
#: value such as ``../volumes/<id>`` can never address another resource.
CINDER_ID_PATTERN: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")


def is_cinder_id(value: object) -> bool:
    """True when ``value`` can be sent to Cinder as a volume / snapshot / attachment id."""
    return isinstance(value, str) and CINDER_ID_PATTERN.fullmatch(value) is not None
