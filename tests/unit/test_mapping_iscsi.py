"""Cinder iscsi connection info → in-tree ``spec.iscsi`` / CSI attributes, CHAP Secrets, refusals."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from provisioner import csi_contract
from provisioner.domain import names
from provisioner.domain.errors import InvalidInput
from provisioner.mapping.build import MappedObjects
from provisioner.mapping.iscsi import parse_iscsi
from tests.k8s_schema import assert_valid
from tests.mapping_samples import INITIATOR, PV_NAME, SECRET_NAMESPACE, build, claim, iscsi_data, volume

INTREE = {"volumeSource": "in-tree"}
IQN = "iqn.2010-10.org.openstack:volume-3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23"
SESSION = {"auth_method": "chap", "auth_username": "sessionuser", "auth_password": "S3ssionSecret"}
DISCOVERY = {
    "discovery_auth_method": "CHAP",
    "discovery_auth_username": "discuser",
    "discovery_auth_password": "D1scoverySecret",
}
MULTIPATH = {
    "target_portals": ["192.168.10.5:3260", "192.168.20.5:3260", "192.168.30.5:3260"],
    "target_iqns": [IQN, IQN, IQN],
    "target_luns": [1, 1, 1],
}


def mapped(data: dict[str, Any], **kw: Any) -> MappedObjects:
    """Build and schema-check every object produced."""
    result = build("iscsi", data, **kw)
    assert_valid(result.pv)
    if result.secret is not None:
        assert_valid(result.secret)
    return result


def refusal(data: dict[str, Any], **kw: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        build("iscsi", data, **kw)
    return info.value


def secret_values(result: MappedObjects) -> dict[str, str]:
    assert result.secret is not None
    return {k: base64.b64decode(v).decode() for k, v in result.secret["data"].items()}


def test_single_portal_in_tree() -> None:
    """One portal: targetPortal/iqn/lun, the connector's initiator, iscsiInterface default, no Secret."""
    result = mapped(iscsi_data(), parameters=INTREE)
    expected = {
        "targetPortal": "192.168.10.5:3260",
        "iqn": IQN,
        "lun": 1,
        "iscsiInterface": "default",
        "initiatorName": INITIATOR,
        "fsType": "ext4",
    }
    assert expected == result.pv["spec"]["iscsi"]
    assert None is result.secret


def test_single_portal_csi() -> None:
    """The csi attributes carry the one path and the initiator."""
    attrs = mapped(iscsi_data()).pv["spec"]["csi"]["volumeAttributes"]
    expected = {
        "type": "iscsi",
        "portals": "192.168.10.5:3260",
        "iqns": IQN,
        "luns": "1",
        "iscsiInterface": "default",
        "chapAuthSession": "false",
        "chapAuthDiscovery": "false",
        "initiatorName": INITIATOR,
        "contentSource": "empty",
        "growFs": "false",
    }
    assert expected == attrs


def test_multipath_portals_in_tree() -> None:
    """target_portals → portals: every portal but the primary, in order."""
    iscsi = mapped(iscsi_data(**MULTIPATH), parameters=INTREE).pv["spec"]["iscsi"]
    assert ("192.168.10.5:3260", ["192.168.20.5:3260", "192.168.30.5:3260"]) == (
        iscsi["targetPortal"],
        iscsi["portals"],
    )


def test_multipath_lists_without_primary_fields() -> None:
    """Drivers that send only the lists: the first entry is the primary."""
    data = iscsi_data(target_portal=None, target_iqn=None, target_lun=None, **MULTIPATH)
    iscsi = mapped(data, parameters=INTREE).pv["spec"]["iscsi"]
    assert ("192.168.10.5:3260", IQN, 1) == (iscsi["targetPortal"], iscsi["iqn"], iscsi["lun"])


def test_portal_list_alone_shares_the_primary_iqn_and_lun() -> None:
    """target_portals without target_iqns/target_luns reuse the primary's IQN and LUN."""
    attrs = mapped(iscsi_data(target_portals=["192.168.10.5:3260", "192.168.20.5:3260"])).pv["spec"]["csi"][
        "volumeAttributes"
    ]
    assert (f"{IQN},{IQN}", "1,1") == (attrs["iqns"], attrs["luns"])


def test_several_iqns_only_on_csi() -> None:
    """Distinct IQNs per path: refused in-tree naming data.target_iqns, expressed on csi."""
    data = iscsi_data(
        target_portal="[fd00:20::5]:3260",
        target_iqn="iqn.2001-05.com.array:ctrl-a",
        target_lun=7,
        target_portals=["[fd00:20::5]:3260", "[fd00:20::6]:3260"],
        target_iqns=["iqn.2001-05.com.array:ctrl-a", "iqn.2001-05.com.array:ctrl-b"],
        target_luns=[7, 9],
    )
    assert "data.target_iqns" == refusal(data, parameters=INTREE).field
    attrs = mapped(data).pv["spec"]["csi"]["volumeAttributes"]
    expected = (
        "[fd00:20::5]:3260,[fd00:20::6]:3260",
        "iqn.2001-05.com.array:ctrl-a,iqn.2001-05.com.array:ctrl-b",
        "7,9",
    )
    assert expected == (attrs["portals"], attrs["iqns"], attrs["luns"])


def test_several_luns_only_on_csi() -> None:
    """Same IQN but different LUNs per path: refused in-tree naming data.target_luns."""
    data = iscsi_data(target_portals=["192.168.10.5:3260", "192.168.20.5:3260"], target_luns=[1, 2])
    assert "data.target_luns" == refusal(data, parameters=INTREE).field


@pytest.mark.parametrize("method", ["CHAP", "chap", "Chap"])
def test_session_chap_any_case(method: str) -> None:
    """auth_method CHAP in any case → chapAuthSession and an iscsi-chap Secret with the session keys."""
    result = mapped(iscsi_data(**{**SESSION, "auth_method": method}), parameters=INTREE)
    iscsi = result.pv["spec"]["iscsi"]
    assert (True, None) == (iscsi["chapAuthSession"], iscsi.get("chapAuthDiscovery"))
    assert {"name": f"{PV_NAME}-secret", "namespace": SECRET_NAMESPACE} == iscsi["secretRef"]
    assert result.secret is not None
    assert names.SECRET_TYPE_ISCSI_CHAP == result.secret["type"]
    expected = {"node.session.auth.username": "sessionuser", "node.session.auth.password": "S3ssionSecret"}
    assert expected == secret_values(result)


def test_discovery_chap() -> None:
    """discovery_auth_method CHAP → chapAuthDiscovery and the sendtargets keys."""
    result = mapped(iscsi_data(**DISCOVERY), parameters=INTREE)
    assert (None, True) == (
        result.pv["spec"]["iscsi"].get("chapAuthSession"),
        result.pv["spec"]["iscsi"]["chapAuthDiscovery"],
    )
    expected = {
        "discovery.sendtargets.auth.username": "discuser",
        "discovery.sendtargets.auth.password": "D1scoverySecret",
    }
    assert expected == secret_values(result)


def test_both_chaps_on_csi_use_the_contract_keys() -> None:
    """On csi both flags are set and the stage Secret holds all four csi_contract keys."""
    result = mapped(iscsi_data(**SESSION, **DISCOVERY), parameters={"secretNamespace": "iscsi-chap"})
    csi = result.pv["spec"]["csi"]
    assert ("true", "true") == (
        csi["volumeAttributes"]["chapAuthSession"],
        csi["volumeAttributes"]["chapAuthDiscovery"],
    )
    assert {"name": f"{PV_NAME}-secret", "namespace": "iscsi-chap"} == csi["nodeStageSecretRef"]
    expected = {
        csi_contract.SECRET_SESSION_USER: "sessionuser",
        csi_contract.SECRET_SESSION_PASSWORD: "S3ssionSecret",
        csi_contract.SECRET_DISCOVERY_USER: "discuser",
        csi_contract.SECRET_DISCOVERY_PASSWORD: "D1scoverySecret",
    }
    assert expected == secret_values(result)


def test_auth_method_none_means_no_chap() -> None:
    """auth_method 'None' (some drivers send it) is not CHAP."""
    assert None is mapped(iscsi_data(auth_method="None")).secret


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"auth_method": "CHAP", "auth_username": "u"}, "data.auth_password"),
        ({"auth_method": "CHAP", "auth_password": "p"}, "data.auth_username"),
        ({"auth_method": "kerberos"}, "data.auth_method"),
        ({"discovery_auth_method": "CHAP", "discovery_auth_username": "u"}, "data.discovery_auth_password"),
        ({"target_portal": None}, "data.target_portal"),
        ({"target_iqn": None}, "data.target_iqn"),
        ({"target_lun": None}, "data.target_lun"),
        ({"target_portal": "bad portal"}, "data.target_portal"),
        ({"target_portal": "fd00::1:3260"}, "data.target_portal"),
        ({"target_portal": "10.0.0.1:99999"}, "data.target_portal"),
        ({"target_iqn": "not-an-iqn"}, "data.target_iqn"),
        ({"target_iqn": "iqn.a,b"}, "data.target_iqn"),
        ({"target_lun": -1}, "data.target_lun"),
        ({"target_lun": "abc"}, "data.target_lun"),
        ({"target_lun": True}, "data.target_lun"),
        ({"target_lun": 1.5}, "data.target_lun"),
        ({"target_portals": ["192.168.10.5:3260"], "target_iqns": [IQN, IQN]}, "data.target_iqns"),
        ({"target_portals": ["192.168.10.5:3260"], "target_luns": [1, 1]}, "data.target_luns"),
        ({"target_iqns": [IQN]}, "data.target_portals"),
        ({"target_portals": [3260]}, "data.target_portals[0]"),
        ({"target_portals": "192.168.10.5:3260"}, "data.target_portals"),
        ({"access_mode": "rx"}, "data.access_mode"),
        ({"encrypted": True}, "data.encrypted"),
    ],
)
def test_malformed_data_names_the_field(overrides: dict[str, Any], field: str) -> None:
    """Malformed iscsi data raises InvalidInput naming the data.* field."""
    assert field == refusal(iscsi_data(**overrides)).field


def test_chap_errors_never_quote_the_secret() -> None:
    """A refusal about CHAP never contains the password."""
    error = refusal(iscsi_data(auth_method="CHAP", auth_username=None, auth_password="TopSecretPw"))
    assert "TopSecretPw" not in str(error)


def test_chap_secret_hidden_from_repr() -> None:
    """Parsed sources and mapped objects do not print CHAP passwords."""
    data = iscsi_data(**SESSION, **DISCOVERY)
    assert "S3ssionSecret" not in repr(parse_iscsi(data))
    assert "D1scoverySecret" not in repr(build("iscsi", data))


def test_string_lun_is_accepted() -> None:
    """Some drivers send the LUN as a digit string."""
    assert 3 == mapped(iscsi_data(target_lun="3"), parameters=INTREE).pv["spec"]["iscsi"]["lun"]


def test_lun_above_255_only_on_csi() -> None:
    """The API limits in-tree LUNs to 0-255; csi carries larger ones."""
    assert "data.target_lun" == refusal(iscsi_data(target_lun=300), parameters=INTREE).field
    assert "300" == mapped(iscsi_data(target_lun=300)).pv["spec"]["csi"]["volumeAttributes"]["luns"]


def test_iqn_without_colon_only_on_csi() -> None:
    """The API's in-tree IQN rule needs an ':' part; csi accepts the name."""
    data = iscsi_data(target_iqn="iqn.2004-04.com.qnap.ts-x")
    assert "data.target_iqn" == refusal(data, parameters=INTREE).field
    assert "iqn.2004-04.com.qnap.ts-x" == mapped(data).pv["spec"]["csi"]["volumeAttributes"]["iqns"]


def test_long_portal_with_initiator_refused_in_tree() -> None:
    """len('<pv name>:<portal>') > 64 with an initiatorName is refused in-tree (the API would 422)."""
    data = iscsi_data(target_portal="[fd00:1234:5678:9abc::10]:3260")
    assert "data.target_portal" == refusal(data, parameters=INTREE).field
    iscsi = mapped(data, parameters=INTREE, vol=volume(initiator_name="")).pv["spec"]["iscsi"]
    assert "initiatorName" not in iscsi


def test_bad_initiator_name() -> None:
    """An initiator name that is not an iSCSI name is refused naming initiatorName."""
    assert "initiatorName" == refusal(iscsi_data(), vol=volume(initiator_name="node1")).field
    assert (
        "initiatorName" == refusal(iscsi_data(), parameters=INTREE, vol=volume(initiator_name="node1")).field
    )


def test_read_only_and_block() -> None:
    """access_mode ro → readOnly; volumeMode Block → no fsType."""
    iscsi = mapped(iscsi_data(access_mode="ro"), parameters=INTREE, pvc=claim(volume_mode="Block")).pv[
        "spec"
    ]["iscsi"]
    assert (True, None) == (iscsi["readOnly"], iscsi.get("fsType"))
