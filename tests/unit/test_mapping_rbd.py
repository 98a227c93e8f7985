"""Cinder rbd connection info → in-tree ``spec.rbd`` / CSI attributes, cephx Secret handling, refusals."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.domain.errors import InvalidInput
from provisioner.mapping.build import MappedObjects
from provisioner.mapping.rbd import extract_cephx_key, parse_rbd
from tests.k8s_schema import assert_valid
from tests.mapping_samples import PV_NAME, SECRET_NAMESPACE, build, claim, load_sample, rbd_data

KEY = "AQBsampleSAMPLEsampleSAMPLEsample0123456=="
KEYRING = f'[client.cinder]\n\tkey = {KEY}\n\tcaps mon = "profile rbd"\n'
INTREE = {"volumeSource": "in-tree"}


def mapped(data: dict[str, Any], **kw: Any) -> MappedObjects:
    """Build and schema-check every object produced."""
    result = build("rbd", data, **kw)
    assert_valid(result.pv)
    if result.secret is not None:
        assert_valid(result.secret)
    return result


def refusal(data: dict[str, Any], **kw: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        build("rbd", data, **kw)
    return info.value


def test_real_cinder_rbd_in_tree() -> None:
    """The connection info real Cinder returned maps to spec.rbd without a Secret (cephx off)."""
    result = mapped(rbd_data(), parameters=INTREE)
    expected = {
        "monitors": ["127.0.0.1:6789"],
        "pool": "volumes",
        "image": "volume-3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23",
        "user": "admin",
        "fsType": "ext4",
    }
    assert expected == result.pv["spec"]["rbd"]
    assert None is result.secret


def test_real_cinder_rbd_csi() -> None:
    """The same export on the csi path: attributes for the node agent, no stage Secret."""
    csi = mapped(rbd_data()).pv["spec"]["csi"]
    expected = {
        "type": "rbd",
        "monitors": "127.0.0.1:6789",
        "pool": "volumes",
        "image": "volume-3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23",
        "user": "admin",
        "contentSource": "empty",
        "growFs": "false",
    }
    assert expected == csi["volumeAttributes"]
    assert "nodeStageSecretRef" not in csi


def test_ipv6_monitors_are_bracketed() -> None:
    """IPv6 hosts get brackets (already bracketed ones are kept), ports may be ints or strings."""
    data = rbd_data(
        hosts=["fd00::1", "[fd00::2]", "mon3.example.org", "10.0.0.4"], ports=["6789", 3300, "6789", 6789]
    )
    expected = ["[fd00::1]:6789", "[fd00::2]:3300", "mon3.example.org:6789", "10.0.0.4:6789"]
    assert expected == mapped(data, parameters=INTREE).pv["spec"]["rbd"]["monitors"]
    assert ",".join(expected) == mapped(data).pv["spec"]["csi"]["volumeAttributes"]["monitors"]


def test_rados_namespace_on_csi() -> None:
    """pool/namespace/image splits into pool, radosNamespace and image."""
    attrs = mapped(rbd_data(name="volumes/tenant-a/volume-1")).pv["spec"]["csi"]["volumeAttributes"]
    assert ("volumes", "tenant-a", "volume-1") == (attrs["pool"], attrs["radosNamespace"], attrs["image"])


def test_rados_namespace_refused_in_tree() -> None:
    """In-tree rbd has no namespace field: refused naming data.name, pointing at csi."""
    error = refusal(rbd_data(name="volumes/tenant-a/volume-1"), parameters=INTREE)
    assert "data.name" == error.field
    assert "csi" in error.message


@pytest.mark.parametrize(
    "name", ["volume-1", "a//b", "/a/b", "a/b/", "a/b/c/d", "a/b@snap", "a b/c", 7, None]
)
def test_bad_image_names(name: Any) -> None:
    """Anything but pool/image or pool/namespace/image is refused naming data.name."""
    assert "data.name" == refusal(rbd_data(name=name)).field  # None removes the key


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hosts": None}, "data.hosts"),
        ({"hosts": []}, "data.hosts"),
        ({"hosts": "127.0.0.1"}, "data.hosts"),
        ({"ports": None}, "data.ports"),
        ({"ports": ["6789", "6789"]}, "data.ports"),
        ({"ports": ["abc"]}, "data.ports[0]"),
        ({"ports": [0]}, "data.ports[0]"),
        ({"ports": [True]}, "data.ports[0]"),
        ({"hosts": ["10.0.0.1:6789"]}, "data.hosts[0]"),
        ({"hosts": ["bad host"]}, "data.hosts[0]"),
        ({"hosts": [7]}, "data.hosts[0]"),
        ({"auth_enabled": "yes"}, "data.auth_enabled"),
        ({"auth_username": "bad user"}, "data.auth_username"),
        ({"access_mode": "rx"}, "data.access_mode"),
        ({"keyring": 42}, "data.keyring"),
    ],
)
def test_malformed_data_names_the_field(overrides: dict[str, Any], field: str) -> None:
    """Malformed rbd data raises InvalidInput naming the data.* field."""
    assert field == refusal(rbd_data(**overrides)).field


def test_encrypted_volumes_are_refused_finally() -> None:
    """Cinder front-end encryption is a clear, final refusal."""
    error = refusal(rbd_data(encrypted=True))
    assert ("data.encrypted", True) == (error.field, error.final)


def test_read_only_export() -> None:
    """access_mode ro → readOnly on both PV flavours."""
    assert True is mapped(rbd_data(access_mode="ro"), parameters=INTREE).pv["spec"]["rbd"]["readOnly"]
    assert True is mapped(rbd_data(access_mode="ro")).pv["spec"]["csi"]["readOnly"]


def test_keyring_becomes_provisioner_owned_secret() -> None:
    """A keyring in connection info → kubernetes.io/rbd Secret with `key`, referenced with its namespace."""
    result = mapped(
        rbd_data(auth_enabled=True, auth_username="client.cinder", keyring=KEYRING), parameters=INTREE
    )
    ref = {"name": f"{PV_NAME}-secret", "namespace": SECRET_NAMESPACE}
    assert ref == result.pv["spec"]["rbd"]["secretRef"]
    assert "cinder" == result.pv["spec"]["rbd"]["user"]
    assert result.secret is not None
    expected_meta = {
        "name": f"{PV_NAME}-secret",
        "namespace": SECRET_NAMESPACE,
        "labels": {names.LABEL_PV: PV_NAME, names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE},
    }
    assert expected_meta == result.secret["metadata"]
    assert names.SECRET_TYPE_RBD == result.secret["type"]
    assert {"key": KEY} == {k: base64.b64decode(v).decode() for k, v in result.secret["data"].items()}


def test_keyring_secret_on_csi_is_the_stage_secret() -> None:
    """On the csi path the same Secret is the nodeStageSecretRef, in the class's secretNamespace."""
    data = rbd_data(auth_enabled=True, auth_username="cinder", keyring=KEYRING)
    result = mapped(data, parameters={"secretNamespace": "ceph-keys"})
    assert {"name": f"{PV_NAME}-secret", "namespace": "ceph-keys"} == result.pv["spec"]["csi"][
        "nodeStageSecretRef"
    ]
    assert result.secret is not None
    assert "ceph-keys" == result.secret["metadata"]["namespace"]


def test_cephx_without_key_needs_admin_secret() -> None:
    """cephx on, no keyring, no cephxSecretName → refused naming parameters.cephxSecretName."""
    assert "parameters.cephxSecretName" == refusal(rbd_data(auth_enabled=True, auth_username="cinder")).field


def test_admin_secret_is_referenced_not_copied() -> None:
    """cephxSecretName wins over a keyring: referenced in secretNamespace, no own Secret, cephxUser used."""
    data = rbd_data(auth_enabled=True, auth_username="cinder", keyring=KEYRING)
    params = {"cephxSecretName": "ceph-client-kube", "cephxUser": "kube", "volumeSource": "in-tree"}
    result = mapped(data, parameters=params)
    assert None is result.secret
    rbd = result.pv["spec"]["rbd"]
    assert ({"name": "ceph-client-kube", "namespace": SECRET_NAMESPACE}, "kube") == (
        rbd["secretRef"],
        rbd["user"],
    )


def test_admin_secret_keeps_cinder_user_without_cephx_user() -> None:
    """Without cephxUser the user Cinder reported stays."""
    data = rbd_data(auth_enabled=True, auth_username="cinder")
    attrs = mapped(data, parameters={"cephxSecretName": "ceph-key"}).pv["spec"]["csi"]["volumeAttributes"]
    assert "cinder" == attrs["user"]


def test_block_volume_has_no_fs_type() -> None:
    """volumeMode Block: no fsType on the source."""
    result = mapped(rbd_data(), parameters=INTREE, pvc=claim(volume_mode="Block"))
    assert "fsType" not in result.pv["spec"]["rbd"]


def test_keyring_with_several_sections_picks_the_user() -> None:
    """The section for client.<user> wins; comments are skipped."""
    keyring = "# comment\n[client.admin]\nkey = AQAadmin==\n\n[client.cinder]\n    key=AQBcinder==\n"
    assert "AQBcinder==" == extract_cephx_key(keyring, user="cinder")


def test_bare_key_is_accepted() -> None:
    """A keyring that is just the base64 key works too."""
    assert KEY == extract_cephx_key(f"  {KEY}\n", user="cinder")


@pytest.mark.parametrize(
    "keyring",
    [
        "[client.cinder]\ncaps mon = x\n",
        "[client.a]\nkey = AQA==\n[client.b]\nkey = AQB==\n",
        "[client.cinder]\nkey = not-base64!\n",
        "[client.cinder]\nkey =\n",
    ],
)
def test_bad_keyrings_never_echo_their_content(keyring: str) -> None:
    """Unusable keyrings are refused naming data.keyring, without quoting the keyring."""
    with pytest.raises(InvalidInput) as info:
        extract_cephx_key(keyring, user="cinder")
    assert "data.keyring" == info.value.field
    assert "AQ" not in str(info.value)
    assert "base64!" not in str(info.value)


def test_key_is_hidden_from_repr() -> None:
    """Neither the parsed source nor the mapped objects print the cephx key."""
    data = rbd_data(auth_enabled=True, auth_username="cinder", keyring=KEYRING)
    assert KEY not in repr(parse_rbd(data))
    result = build("rbd", data)
    assert KEY not in repr(result)
    assert base64.b64encode(KEY.encode()).decode() not in repr(result)


def test_sample_with_wrapper_and_three_monitors() -> None:
    """The wrapped sample (connection_info: {...}) maps with all three monitors."""
    from provisioner.domain.model import ConnectionInfo

    ci = ConnectionInfo.from_wire(load_sample("ci-rbd-cephx-keyring.json"))
    result = mapped(dict(ci.data))
    assert (
        "10.0.0.11:6789,10.0.0.12:6789,10.0.0.13:6789"
        == result.pv["spec"]["csi"]["volumeAttributes"]["monitors"]
    )
