"""The PV around the source: identity, claimRef, class fields, access modes, topology, csi source; and the
property that any connection-info-shaped input yields a schema-valid object or our own error."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from provisioner import csi_contract
from provisioner.domain import names
from provisioner.domain.errors import InvalidInput, UnsupportedConnectionType
from provisioner.mapping.build import MappedObjects, ProvisionedVolume
from tests.k8s_schema import assert_valid
from tests.mapping_samples import (
    PROVISIONER,
    PV_NAME,
    PVC_UID,
    VOLUME_ID,
    build,
    claim,
    iscsi_data,
    rbd_data,
    storage_class,
    volume,
)

INTREE = {"volumeSource": "in-tree"}


def mapped(**kw: Any) -> MappedObjects:
    result = build(kw.pop("kind", "rbd"), kw.pop("data", None) or rbd_data(), **kw)
    assert_valid(result.pv)
    if result.secret is not None:
        assert_valid(result.secret)
    return result


def refusal(**kw: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        build(kw.pop("kind", "rbd"), kw.pop("data", None) or rbd_data(), **kw)
    return info.value


def test_pv_identity_and_claim_ref() -> None:
    """Name pvc-<uid>, pre-bound claimRef, capacity from the volume, class name, finalizer, annotations."""
    pv = mapped(vol=volume(size_gib=3)).pv
    expected_meta = {
        "name": PV_NAME,
        "annotations": {
            names.ANN_PROVISIONED_BY: PROVISIONER,
            names.ANN_VOLUME_ID: VOLUME_ID,
            names.ANN_EXPORT_MODE: "attachment",
            names.ANN_CLOUD: "default",
            names.ANN_ATTACHMENT_ID: "att-1",
        },
        "finalizers": [names.PV_VOLUME_FINALIZER],
    }
    assert expected_meta == pv["metadata"]
    claim_ref = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "shop",
        "name": "data",
        "uid": PVC_UID,
    }
    assert claim_ref == pv["spec"]["claimRef"]
    assert ({"storage": "3Gi"}, "cinder", ["ReadWriteOnce"], "Filesystem") == (
        pv["spec"]["capacity"],
        pv["spec"]["storageClassName"],
        pv["spec"]["accessModes"],
        pv["spec"]["volumeMode"],
    )


def test_legacy_export_has_no_attachment_annotation() -> None:
    """Legacy export: export annotation 'legacy', no attachment id."""
    annotations = mapped(vol=volume(export_mode="legacy", attachment_id=None)).pv["metadata"]["annotations"]
    assert ("legacy", False) == (annotations[names.ANN_EXPORT_MODE], names.ANN_ATTACHMENT_ID in annotations)


def test_reclaim_policy_is_copied_explicitly() -> None:
    """Class default Delete is written (the PV default would be Retain); Retain is copied."""
    assert "Delete" == mapped().pv["spec"]["persistentVolumeReclaimPolicy"]
    retain = storage_class(reclaimPolicy="Retain")
    assert "Retain" == mapped(sc=retain).pv["spec"]["persistentVolumeReclaimPolicy"]


def test_mount_options_are_copied() -> None:
    """mountOptions come from the class, and are absent when the class has none."""
    assert ["discard", "noatime"] == mapped(sc=storage_class(mountOptions=["discard", "noatime"])).pv["spec"][
        "mountOptions"
    ]
    assert "mountOptions" not in mapped().pv["spec"]


def affinity(zone: str) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}]}
    return {"required": {"nodeSelectorTerms": [term]}}


def test_zone_affinity_uses_the_volume_zone() -> None:
    """zoneTopologyKey + the volume's AZ (preferred over the class's) → required node affinity."""
    params = {"zoneTopologyKey": "topology.kubernetes.io/zone", "availability": "az-class"}
    assert (
        affinity("az-real")
        == mapped(parameters=params, vol=volume(availability_zone="az-real")).pv["spec"]["nodeAffinity"]
    )
    assert affinity("az-class") == mapped(parameters=params).pv["spec"]["nodeAffinity"]


def test_no_affinity_without_key_or_zone() -> None:
    """No zoneTopologyKey, or no known AZ → no nodeAffinity."""
    assert "nodeAffinity" not in mapped(vol=volume(availability_zone="nova")).pv["spec"]
    assert "nodeAffinity" not in mapped(parameters={"zoneTopologyKey": "zone"}).pv["spec"]


@pytest.mark.parametrize(
    ("modes", "volume_mode", "multiattach", "parameters", "ok"),
    [
        (("ReadWriteOnce",), None, False, {}, True),
        (("ReadOnlyMany",), None, False, {}, True),
        (("ReadWriteOnce", "ReadOnlyMany"), "Block", False, {}, True),
        (("ReadWriteOncePod",), None, False, {}, True),
        (("ReadWriteOncePod",), None, False, INTREE, False),
        (("ReadWriteMany",), "Block", True, {}, True),
        (("ReadWriteMany",), "Block", True, INTREE, True),
        (("ReadWriteMany",), "Block", False, {}, False),
        (("ReadWriteMany",), "Filesystem", True, {}, False),
        (("ReadWriteMany",), None, True, {}, False),
        ((), None, False, {}, False),
        (("ReadWriteSometimes",), None, False, {}, False),
    ],
)
def test_access_modes(
    modes: tuple[str, ...], volume_mode: str | None, multiattach: bool, parameters: dict[str, str], ok: bool
) -> None:
    """RWO/ROX always; RWOP on csi; RWX only for Block on a multiattach volume; else spec.accessModes."""
    kw: dict[str, Any] = {
        "pvc": claim(access_modes=modes, volume_mode=volume_mode),
        "parameters": parameters,
        "vol": volume(multiattach=multiattach),
    }
    if ok:
        assert list(modes) == mapped(**kw).pv["spec"]["accessModes"]
    else:
        assert "spec.accessModes" == refusal(**kw).field


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c["spec"].update(volumeMode="Raw"), "spec.volumeMode"),
        (lambda c: c["metadata"].pop("uid"), "metadata.uid"),
        (lambda c: c["metadata"].pop("namespace"), "metadata.namespace"),
        (lambda c: c["metadata"].update(name=""), "metadata.name"),
        (lambda c: c["metadata"].update(uid="Not A Uid"), "metadata.uid"),
        (lambda c: c["spec"].update(accessModes="ReadWriteOnce"), "spec.accessModes"),
        (lambda c: c.pop("spec"), "spec"),
        (lambda c: c.pop("metadata"), "metadata"),
    ],
)
def test_claim_refusals(mutate: Any, field: str) -> None:
    """A claim the PV cannot be built from is refused naming the field."""
    pvc = claim()
    mutate(pvc)
    assert field == refusal(pvc=pvc).field


def test_csi_source() -> None:
    """Our driver, the Cinder volume id as handle, the class fsType, no readOnly when rw."""
    csi = mapped(parameters={"fsType": "xfs"}).pv["spec"]["csi"]
    assert (names.CSI_DRIVER_NAME, VOLUME_ID, "xfs", None) == (
        csi["driver"],
        csi["volumeHandle"],
        csi["fsType"],
        csi.get("readOnly"),
    )


def test_csi_attributes_decode_back() -> None:
    """The mapping's volumeAttributes are the contract's encoding: decode() recovers the target."""
    attrs = mapped(vol=volume(content_source="snapshot", grow_fs=True)).pv["spec"]["csi"]["volumeAttributes"]
    expected = csi_contract.RbdTarget(
        monitors=("127.0.0.1:6789",),
        pool="volumes",
        image="volume-3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23",
        user="admin",
        content_source="snapshot",
        grow_fs=True,
    )
    assert expected == csi_contract.decode(attrs)


def test_grow_fs_needs_csi() -> None:
    """Node-side filesystem grow exists only on the csi path."""
    assert "parameters.volumeSource" == refusal(parameters=INTREE, vol=volume(grow_fs=True)).field


@pytest.mark.parametrize("kind", ["fibre_channel", "nvmeof", "scaleio", "", "rbd2"])
def test_unsupported_connection_type(kind: str) -> None:
    """Unknown driver_volume_type → final UnsupportedConnectionType naming driver_volume_type."""
    with pytest.raises(UnsupportedConnectionType) as info:
        build(kind, {"target_lun": 1})
    assert ("driver_volume_type", True) == (info.value.field, info.value.final)


def test_connection_type_is_case_insensitive() -> None:
    """'RBD' / 'ISCSI' (os-brick's spelling) map like the lower-case names."""
    assert "rbd" == mapped(kind="RBD").pv["spec"]["csi"]["volumeAttributes"]["type"]
    assert "iscsi" == mapped(kind="ISCSI", data=iscsi_data()).pv["spec"]["csi"]["volumeAttributes"]["type"]


@pytest.mark.parametrize(
    ("vol", "field"),
    [
        (volume(attachment_id=None), "volume.attachment_id"),
        (volume(export_mode="legacy"), "volume.attachment_id"),
        (volume(size_gib=0), "volume.size_gib"),
        (volume(volume_id=""), "volume.volume_id"),
        (volume(content_source="backup"), "volume.content_source"),
        (volume(export_mode="magic"), "volume.export_mode"),
    ],
)
def test_inconsistent_volume_is_refused(vol: ProvisionedVolume, field: str) -> None:
    """A ProvisionedVolume that contradicts itself is refused naming the field (a controller bug)."""
    assert field == refusal(vol=vol).field


def test_secret_has_no_owner_reference() -> None:
    """The controller adds the PV owner after creating the PV: the mapping writes none."""
    data = rbd_data(auth_enabled=True, auth_username="cinder", keyring="[client.cinder]\nkey = AQB==\n")
    secret = mapped(data=data).secret
    assert secret is not None
    assert "ownerReferences" not in secret["metadata"]


# --- property: never crash ------------------------------------------------------------------------------

RBD_KEYS = ["name", "hosts", "ports", "auth_enabled", "auth_username", "keyring", "access_mode", "encrypted"]
ISCSI_KEYS = [
    "target_portal",
    "target_iqn",
    "target_lun",
    "target_portals",
    "target_iqns",
    "target_luns",
    "auth_method",
    "auth_username",
    "auth_password",
    "discovery_auth_method",
    "discovery_auth_username",
    "discovery_auth_password",
    "access_mode",
    "encrypted",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-70000, max_value=70000),
    st.floats(allow_nan=True),
    st.text(max_size=24),
    st.sampled_from(
        [
            "127.0.0.1",
            "::1",
            "[fd00::2]",
            "mon.example.org",
            "6789",
            "pool/image",
            "pool/ns/image",
            "CHAP",
            "ro",
            "10.0.0.1:3260",
            "[fd00::5]:3260",
            "iqn.2010-10.org.openstack:v",
            "eui.0123456789abcdef",
            "[client.x]\nkey = AQB==",
        ]
    ),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2)
)
PARAMS = st.sampled_from(
    [{}, INTREE, {"cephxSecretName": "ceph-key"}, {"volumeSource": "in-tree", "fsType": "xfs"}]
)
CLAIMS = st.sampled_from(
    [
        claim(),
        claim(access_modes=("ReadWriteMany",), volume_mode="Block"),
        claim(access_modes=("ReadWriteOncePod",)),
        claim(volume_mode="Block"),
    ]
)


def check_total(
    kind: Any, data: Any, parameters: dict[str, str], pvc: dict[str, Any], multiattach: bool
) -> None:
    """Either a schema-valid PV (+Secret) or InvalidInput naming a field; nothing else escapes."""
    try:
        result: MappedObjects | InvalidInput = build(
            kind, data, parameters=parameters, pvc=pvc, vol=volume(multiattach=multiattach)
        )
    except InvalidInput as e:
        result = e
    if isinstance(result, InvalidInput):
        event("refused")
        assert result.field
        return
    event("mapped")
    assert_valid(result.pv)
    if result.secret is not None:
        assert_valid(result.secret)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["rbd", "iscsi", "RBD", "fibre_channel", ""]),
    data=st.one_of(
        st.dictionaries(st.sampled_from(RBD_KEYS + ISCSI_KEYS), VALUES, max_size=10),
        st.lists(SCALARS, max_size=2),
    ),
    parameters=PARAMS,
    pvc=CLAIMS,
    multiattach=st.booleans(),
)
def test_arbitrary_input_never_crashes(
    kind: str, data: Any, parameters: dict[str, str], pvc: dict[str, Any], multiattach: bool
) -> None:
    """Random connection-info-shaped input: a valid object or our error, never a crash."""
    check_total(kind, data, parameters, pvc, multiattach)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(["rbd", "iscsi"]),
    mutations=st.dictionaries(
        st.sampled_from(RBD_KEYS + ISCSI_KEYS), st.one_of(VALUES, st.just("__delete__")), max_size=3
    ),
    parameters=PARAMS,
    pvc=CLAIMS,
    multiattach=st.booleans(),
)
def test_mutated_valid_input_never_crashes(
    base: str, mutations: dict[str, Any], parameters: dict[str, str], pvc: dict[str, Any], multiattach: bool
) -> None:
    """Valid exports with a few fields replaced or removed: a valid object or our error."""
    data = copy.deepcopy(
        rbd_data() if base == "rbd" else iscsi_data(auth_method="CHAP", auth_username="u", auth_password="p")
    )
    for key, value in mutations.items():
        if value == "__delete__":
            data.pop(key, None)
        else:
            data[key] = value
    check_total(base, data, parameters, pvc, multiattach)
