"""Adoption: ``check_adoption`` as a table (one case per branch), the tags, and the executor on the fakes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import NotLeader
from provisioner.domain.model import AttachmentId, Volume, VolumeId
from provisioner.flows.adopt import (
    ADOPT_FIELD,
    ALLOW_FIELD,
    Adopt,
    Refuse,
    adopt,
    adopt_volume_id,
    adoption_metadata,
    check_adoption,
    check_claim,
)
from tests.fakes.ports import make_context

UID, CLUSTER, VID = "u-1", "cluster-a", "vol-1"
TAGS = {
    names.META_CLUSTER: CLUSTER,
    names.META_PVC_NAMESPACE: "ns",
    names.META_PVC_NAME: "data",
    names.META_PVC_UID: UID,
    names.META_PV_NAME: f"pvc-{UID}",
    names.META_STORAGE_CLASS: "gold",
}
FREE = Volume(id=VolumeId(VID), name="legacy-db", size_gib=5, status="available", volume_type="rbd")
OURS = replace(FREE, metadata={**TAGS, names.META_CREATED_BY: "replica-9"})
BUSY = " only available, unattached volumes can be adopted"


def vol(**changes: Any) -> Volume:
    return replace(FREE, **changes)


def refuse(reason: str, message: str, field: str = ADOPT_FIELD) -> Refuse:
    return Refuse(field=field, message=message, reason=reason)


#: (case, check_adoption arguments over the defaults, expected)
CASES: list[tuple[str, dict[str, Any], Adopt | Refuse]] = [
    ("free volume of the class's type: adopt, set the tags", {}, Adopt(volume=FREE, tags=TAGS)),
    ("exactly the requested size", {"requested_gib": 5}, Adopt(volume=FREE, tags=TAGS)),
    ("class names no type: any type", {"class_type": None, "volume": vol(volume_type="ssd")},
     Adopt(volume=vol(volume_type="ssd"), tags=TAGS)),
    ("our cluster tag but no claim's: adopt", {"volume": vol(metadata={names.META_CLUSTER: CLUSTER})},
     Adopt(volume=vol(metadata={names.META_CLUSTER: CLUSTER}), tags=TAGS)),
    ("replica identity goes into created-by", {"identity": "replica-0"},
     Adopt(volume=FREE, tags={**TAGS, names.META_CREATED_BY: "replica-0"})),
    ("already ours (earlier round) and exported: nothing to set", {"volume": replace(OURS, status="in-use",
     attachment_ids=(AttachmentId("a1"),))},
     Adopt(volume=replace(OURS, status="in-use", attachment_ids=(AttachmentId("a1"),)))),
    ("already ours but a tag was edited: set them again", {"volume": replace(OURS, metadata={**TAGS,
     names.META_PVC_NAME: "x"})}, Adopt(volume=replace(OURS, metadata={**TAGS, names.META_PVC_NAME: "x"}),
     tags=TAGS)),
    ("already ours but in error: never replaced", {"volume": replace(OURS, status="error")},
     refuse("adoption_volume_unusable", "volume 'vol-1', adopted by this claim, is error; an adopted volume "
            "is never replaced or recreated: repair it in Cinder")),
    ("with spec.dataSource: ambiguous", {"has_data_source": True},
     refuse("adoption_ambiguous", "cannot be combined with spec.dataSource: adopt an existing volume or "
            "create one from a source, not both")),
    ("with a restore annotation: ambiguous", {"has_restore": True},
     refuse("adoption_ambiguous", "cannot be combined with metadata.annotations[netvol.io/restore-from-"
            "snapshot]: adopt an existing volume or restore a snapshot, not both")),
    ("class does not allow it", {"allow": False},
     refuse("adoption_not_allowed", "StorageClass 'gold' does not allow adoption (metadata.annotations"
            "[netvol.io/adopt-volume] is set); set allowAdoption: \"true\" on the class or remove the "
            "annotation", field=ALLOW_FIELD)),
    ("not a Cinder id", {"adopt_id": "../snapshots/x"},
     refuse("adoption_invalid_id", "'../snapshots/x' is not a Cinder volume id")),
    ("Cinder says 404", {"volume": None, "cloud": "east"},
     refuse("adoption_not_found", "Cinder volume 'vol-1' does not exist in cloud 'east'")),
    ("another cluster's volume", {"volume": vol(metadata={names.META_CLUSTER: "cluster-b"})},
     refuse("adoption_other_cluster", "volume 'vol-1' is tagged for another cluster (netvol.io/cluster); "
            "only volumes of no cluster or of this one can be adopted")),
    ("another claim's volume", {"volume": vol(metadata={names.META_CLUSTER: CLUSTER,
     names.META_PVC_UID: "u-2"})},
     refuse("adoption_other_claim", "volume 'vol-1' belongs to another claim (netvol.io/pvc-uid); only "
            "volumes that no claim owns can be adopted")),
    ("in-use", {"volume": vol(status="in-use", attachment_ids=(AttachmentId("a1"), AttachmentId("a2")))},
     refuse("adoption_volume_busy", "volume 'vol-1' is in-use (attached to attachments a1, a2);" + BUSY)),
    ("available but attached (multiattach)", {"volume": vol(attachment_ids=(AttachmentId("a1"),))},
     refuse("adoption_volume_busy", "volume 'vol-1' is available but attached (attached to attachments "
            "a1);" + BUSY)),
    ("not available yet", {"volume": vol(status="creating")},
     refuse("adoption_volume_busy", "volume 'vol-1' is creating;" + BUSY)),
    ("other volume type", {"volume": vol(volume_type="ssd")},
     refuse("adoption_type_mismatch", "volume 'vol-1' has volume type 'ssd', but the class's parameters.type "
            "is 'rbd'")),
    ("too small", {"requested_gib": 6},
     refuse("adoption_too_small", "volume 'vol-1' has 5 GiB, less than the 6 GiB the claim requests "
            "(spec.resources.requests.storage)")),
]  # fmt: skip


def decide(**overrides: Any) -> Adopt | Refuse:
    args: dict[str, Any] = {
        "adopt_id": VID,
        "volume": FREE,
        "claim_uid": UID,
        "claim_namespace": "ns",
        "claim_name": "data",
        "cluster_id": CLUSTER,
        "requested_gib": 2,
        "class_type": "rbd",
        "allow": True,
        "storage_class": "gold",
    }
    args.update(overrides)
    return check_adoption(**args)


@pytest.mark.parametrize(("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_adoption(overrides: dict[str, Any], expected: Adopt | Refuse) -> None:
    assert expected == decide(**overrides)


def test_claim_checks_come_before_cinder() -> None:
    """check_claim alone says "ask Cinder" (None) only when the claim and class allow an adoption."""
    args: dict[str, Any] = {"adopt_id": VID, "allow": True, "storage_class": "gold"}
    assert (None, "adoption_not_allowed") == (
        check_claim(**args),
        getattr(check_claim(**{**args, "allow": False}), "reason", None),
    )


def test_refusal_is_a_final_invalid_input_naming_the_field() -> None:
    """Refuse.error() is the Warning text `<field>: <message>` and is final."""
    refused = decide(allow=False)
    assert isinstance(refused, Refuse)
    err = refused.error()
    assert (ALLOW_FIELD, True, True) == (err.field, err.final, str(err).startswith(f"{ALLOW_FIELD}: "))


def test_adoption_metadata_is_what_a_create_sets() -> None:
    """The tags: cluster, claim namespace/name/uid, PV name, class (+ created-by with an identity)."""
    common = {"cluster_id": CLUSTER, "claim_namespace": "ns", "claim_name": "data", "claim_uid": UID}
    assert (TAGS, {**TAGS, names.META_CREATED_BY: "r"}) == (
        adoption_metadata(**common, storage_class="gold"),
        adoption_metadata(**common, storage_class="gold", identity="r"),
    )


def test_adopt_volume_id_reads_the_annotation() -> None:
    """The annotation's raw value, or None without one."""
    claim = {"metadata": {"annotations": {names.ANN_ADOPT_VOLUME: VID}}}
    assert (VID, None) == (adopt_volume_id(claim), adopt_volume_id({"metadata": {}}))


def test_adopt_tags_the_volume_once() -> None:
    """The executor sets the tags with one call and returns the tagged volume; no tags left → no call."""
    world = make_context()
    world.cinder.add_volume(VID, size_gib=5, name="legacy-db", metadata={"owner": "dba"})
    volume = world.cinder.volumes[VID]
    tagged = adopt(world.ctx, world.cinder, Adopt(volume=volume, tags=TAGS))
    again = adopt(world.ctx, world.cinder, Adopt(volume=tagged))
    expected = {"owner": "dba", **TAGS}
    assert [("set_volume_metadata", VID, TAGS)] == world.cinder.calls
    assert (expected, expected, tagged) == (
        dict(world.cinder.volumes[VID].metadata),
        dict(tagged.metadata),
        again,
    )


def test_adopt_is_fenced() -> None:
    """Without the lease the tags are never sent (the step raises NotLeader)."""
    world = make_context()
    world.cinder.add_volume(VID)
    world.leader[0] = False
    with pytest.raises(NotLeader):
        adopt(world.ctx, world.ctx.cinder(None), Adopt(volume=world.cinder.volumes[VID], tags=TAGS))
    assert [] == world.cinder.calls
