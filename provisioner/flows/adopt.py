"""Adopting an existing Cinder volume for a claim (DESIGN.md "Restore, clone, adopt").

An admin puts ``netvol.io/adopt-volume: <cinder volume id>`` on a claim whose StorageClass says
``allowAdoption: "true"``; the controller then binds that volume instead of creating one. Adoption hands a
tenant somebody's existing data, so it is refused — finally, with a Warning naming the field — unless the
volume is plainly free: ``available``, unattached, not tagged for another claim or another cluster, big
enough for the request, and of the class's volume type when the class names one.

Shape (STYLE.md "Decide, then act"):

* ``check_claim`` (pure) — the checks that need no Cinder call: no data source or restore annotation next to
  the adopt annotation (ambiguous), the class allows adoption, the id looks like a Cinder id. Run it before
  ``get_volume`` so a class without ``allowAdoption`` never lets a tenant probe volume ids.
* ``check_adoption`` (pure) — the whole decision, ``check_claim`` included, over what Cinder answered for the
  id (``None`` = 404): ``Adopt`` (with the tags still to set) or ``Refuse`` (field, message, reason).
* ``adopt`` (executor) — one fenced Cinder call: tag the volume as this claim's, exactly the metadata a
  create sets (``adoption_metadata``).

Crash safety: the tags go on the volume before the PV is created. A volume already tagged with our cluster
and this claim's uid is this claim's adoption from an earlier round (a crash, a new leader): ``Adopt`` with
no tags left to set, whatever its export state, so the next reconcile carries on idempotently. Its name is
not ``pvc-<uid>``, so the name + cluster-tag lookup cannot find it: the flow re-reads the annotation's id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import structlog

from provisioner.domain import names
from provisioner.domain.errors import InvalidInput
from provisioner.domain.model import AVAILABLE, Volume
from provisioner.flows.claims import EXPORTABLE
from provisioner.flows.context import Context, Obj
from provisioner.ports import CinderPort

log = structlog.get_logger(__name__)

ADOPT_FIELD: Final = f"metadata.annotations[{names.ANN_ADOPT_VOLUME}]"
ALLOW_FIELD: Final = "parameters.allowAdoption"
RESTORE_FIELD: Final = f"metadata.annotations[{names.ANN_RESTORE_FROM_SNAPSHOT}]"

#: The requirement every refusal of a volume ends with.
_ONLY_FREE: Final = "only available, unattached volumes can be adopted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Adopt:
    """Adopt ``volume``: set ``tags`` on it (empty = it already carries them: an earlier round's adoption)."""

    volume: Volume
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Do not adopt: a final failure whose Warning is ``<field>: <message>``; ``reason`` is for metrics."""

    field: str
    message: str
    reason: str

    def error(self) -> InvalidInput:
        """The refusal as our error (final; ``str()`` is the Warning text)."""
        return InvalidInput(self.field, self.message)


def adopt_volume_id(pvc: Obj) -> object | None:
    """The claim's ``netvol.io/adopt-volume`` annotation, raw (None = the claim adopts nothing)."""
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    return annotations.get(names.ANN_ADOPT_VOLUME) if isinstance(annotations, Mapping) else None


def adoption_metadata(
    *,
    cluster_id: str,
    claim_namespace: str,
    claim_name: str,
    claim_uid: str,
    storage_class: str,
    identity: str = "",
) -> dict[str, str]:
    """The Cinder metadata that marks a volume as this claim's: the same keys a create sets."""
    tags = {
        names.META_CLUSTER: cluster_id,
        names.META_PVC_NAMESPACE: claim_namespace,
        names.META_PVC_NAME: claim_name,
        names.META_PVC_UID: claim_uid,
        names.META_PV_NAME: names.pv_name_for(claim_uid),
        names.META_STORAGE_CLASS: storage_class,
    }
    if identity:
        tags[names.META_CREATED_BY] = identity
    return tags


def check_claim(
    *,
    adopt_id: object,
    allow: bool,
    storage_class: str,
    has_data_source: bool = False,
    has_restore: bool = False,
) -> Refuse | None:
    """The Kubernetes-side checks of an adoption (no Cinder call needed); None = ask Cinder for the id."""
    if has_data_source:
        return Refuse(
            field=ADOPT_FIELD,
            message="cannot be combined with spec.dataSource: adopt an existing volume or create one from a "
            "source, not both",
            reason="adoption_ambiguous",
        )
    if has_restore:
        return Refuse(
            field=ADOPT_FIELD,
            message=f"cannot be combined with {RESTORE_FIELD}: adopt an existing volume or restore a "
            "snapshot, not both",
            reason="adoption_ambiguous",
        )
    if not allow:
        return Refuse(
            field=ALLOW_FIELD,
            message=f"StorageClass {storage_class!r} does not allow adoption ({ADOPT_FIELD} is set); "
            'set allowAdoption: "true" on the class or remove the annotation',
            reason="adoption_not_allowed",
        )
    if not names.is_cinder_id(adopt_id):
        return Refuse(
            field=ADOPT_FIELD,
            message=f"{str(adopt_id)[:80]!r} is not a Cinder volume id",
            reason="adoption_invalid_id",
        )
    return None


def check_adoption(
    *,
    adopt_id: object,
    volume: Volume | None,
    claim_uid: str,
    claim_namespace: str,
    claim_name: str,
    cluster_id: str,
    requested_gib: int,
    class_type: str | None,
    allow: bool,
    storage_class: str,
    has_data_source: bool = False,
    has_restore: bool = False,
    identity: str = "",
    cloud: str | None = None,
) -> Adopt | Refuse:
    """Adopt ``volume`` (what Cinder answered for ``adopt_id``; None = 404) for the claim, or say why not."""
    refused = check_claim(
        adopt_id=adopt_id,
        allow=allow,
        storage_class=storage_class,
        has_data_source=has_data_source,
        has_restore=has_restore,
    )
    if refused is not None:
        return refused
    where = f" in cloud {cloud!r}" if cloud else ""
    if volume is None:
        return Refuse(
            field=ADOPT_FIELD,
            message=f"Cinder volume {adopt_id!r} does not exist{where}",
            reason="adoption_not_found",
        )
    vid = volume.id
    wanted = adoption_metadata(
        cluster_id=cluster_id,
        claim_namespace=claim_namespace,
        claim_name=claim_name,
        claim_uid=claim_uid,
        storage_class=storage_class,
        identity=identity,
    )
    md = volume.metadata
    tagged_cluster = md.get(names.META_CLUSTER)
    tagged_claim = md.get(names.META_PVC_UID)
    if tagged_cluster == cluster_id and tagged_claim == claim_uid:
        # Ours from an earlier round (tagged, maybe exported, then a crash or a leader change): carry on.
        if volume.status not in EXPORTABLE:
            return Refuse(
                field=ADOPT_FIELD,
                message=f"volume {vid!r}, adopted by this claim, is {volume.status}; an adopted volume is "
                "never replaced or recreated: repair it in Cinder",
                reason="adoption_volume_unusable",
            )
        # Who tagged it first does not matter; any other tag missing (edited in Cinder) is set again.
        stale = any(md.get(k) != v for k, v in wanted.items() if k != names.META_CREATED_BY)
        return Adopt(volume=volume, tags=wanted if stale else {})
    if tagged_cluster and tagged_cluster != cluster_id:
        return Refuse(
            field=ADOPT_FIELD,
            message=f"volume {vid!r} is tagged for another cluster ({names.META_CLUSTER}); "
            "only volumes of no cluster or of this one can be adopted",
            reason="adoption_other_cluster",
        )
    if tagged_claim:
        return Refuse(
            field=ADOPT_FIELD,
            message=f"volume {vid!r} belongs to another claim ({names.META_PVC_UID}); "
            "only volumes that no claim owns can be adopted",
            reason="adoption_other_claim",
        )
    if volume.status != AVAILABLE or volume.attachment_ids:
        attached = (
            f" (attached to attachments {', '.join(volume.attachment_ids)})" if volume.attachment_ids else ""
        )
        state = volume.status if volume.status != AVAILABLE else "available but attached"
        return Refuse(
            field=ADOPT_FIELD,
            message=f"volume {vid!r} is {state}{attached}; {_ONLY_FREE}",
            reason="adoption_volume_busy",
        )
    if class_type is not None and volume.volume_type != class_type:
        return Refuse(
            field=ADOPT_FIELD,
            message=f"volume {vid!r} has volume type {volume.volume_type!r}, but the class's parameters.type "
            f"is {class_type!r}",
            reason="adoption_type_mismatch",
        )
    if volume.size_gib < requested_gib:
        return Refuse(
            field=ADOPT_FIELD,
            message=f"volume {vid!r} has {volume.size_gib} GiB, less than the {requested_gib} GiB the claim "
            "requests (spec.resources.requests.storage)",
            reason="adoption_too_small",
        )
    return Adopt(volume=volume, tags=wanted)


def adopt(ctx: Context, cinder: CinderPort, step: Adopt) -> Volume:
    """Tag the volume as the claim's (one fenced Cinder call); the volume as Cinder now has it."""
    if not step.tags:
        return step.volume
    cinder.set_volume_metadata(step.volume.id, step.tags)
    ctx.checkpoint("after_adoption_tag")
    log.info(
        "volume_adopted",
        pvc=f"{step.tags.get(names.META_PVC_NAMESPACE)}/{step.tags.get(names.META_PVC_NAME)}",
        volume_id=step.volume.id,
        size_gib=step.volume.size_gib,
    )
    return replace(step.volume, metadata={**step.volume.metadata, **step.tags})
