"""The PV ↔ node agent contract: decode(encode(t)) == t for every target, and the mapping's output decodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner import csi_contract
from provisioner.csi_contract import IscsiPath, IscsiTarget, RbdTarget, decode, encode
from provisioner.domain.errors import InvalidInput
from tests.mapping_samples import build, iscsi_data, rbd_data, volume

# Values travel comma-joined in volumeAttributes: list items never contain a comma and are never empty.
ITEM = st.text(st.characters(exclude_characters=",", codec="utf-8"), min_size=1, max_size=20)
TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
CONTENT = st.sampled_from(sorted(csi_contract.CONTENT_SOURCES))

RBD_TARGETS = st.builds(
    RbdTarget,
    monitors=st.lists(ITEM, min_size=1, max_size=4).map(tuple),
    pool=ITEM,
    image=ITEM,
    rados_namespace=TEXT,
    user=ITEM,
    content_source=CONTENT,
    grow_fs=st.booleans(),
)
ISCSI_TARGETS = st.builds(
    IscsiTarget,
    paths=st.lists(
        st.builds(IscsiPath, portal=ITEM, iqn=ITEM, lun=st.integers(min_value=0, max_value=1 << 20)),
        min_size=1,
        max_size=4,
    ).map(tuple),
    initiator_name=TEXT,
    iscsi_interface=ITEM,
    chap_session=st.booleans(),
    chap_discovery=st.booleans(),
    wwid=TEXT,
    content_source=CONTENT,
    grow_fs=st.booleans(),
)


@given(st.one_of(RBD_TARGETS, ISCSI_TARGETS))
def test_round_trip(target: RbdTarget | IscsiTarget) -> None:
    """Whatever the provisioner encodes, the node agent decodes to the same target."""
    assert target == decode(encode(target))


@given(st.one_of(RBD_TARGETS, ISCSI_TARGETS))
def test_attributes_are_strings(target: RbdTarget | IscsiTarget) -> None:
    """volumeAttributes must be a map of strings (the API requires it)."""
    attrs = encode(target)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items())


def test_mapped_rbd_decodes_back() -> None:
    """The PV the mapping builds for rbd decodes to the expected RbdTarget."""
    data = rbd_data(name="volumes/ns1/img", hosts=["::1", "10.0.0.2"], ports=["6789", "3300"])
    attrs = build("rbd", data, vol=volume(content_source="volume")).pv["spec"]["csi"]["volumeAttributes"]
    expected = RbdTarget(
        monitors=("[::1]:6789", "10.0.0.2:3300"),
        pool="volumes",
        rados_namespace="ns1",
        image="img",
        user="admin",
        content_source="volume",
    )
    assert expected == decode(attrs)


def test_mapped_iscsi_decodes_back() -> None:
    """The PV the mapping builds for multipath iscsi with CHAP decodes to the expected IscsiTarget."""
    iqn = "iqn.2010-10.org.openstack:v1"
    data = iscsi_data(
        target_portal="10.0.0.1:3260",
        target_iqn=iqn,
        target_lun=2,
        target_portals=["10.0.0.1:3260", "10.0.0.2:3260"],
        auth_method="CHAP",
        auth_username="u",
        auth_password="p",
    )
    attrs = build("iscsi", data, vol=volume(grow_fs=True, content_source="snapshot")).pv["spec"]["csi"][
        "volumeAttributes"
    ]
    expected = IscsiTarget(
        paths=(
            IscsiPath(portal="10.0.0.1:3260", iqn=iqn, lun=2),
            IscsiPath(portal="10.0.0.2:3260", iqn=iqn, lun=2),
        ),
        initiator_name="iqn.2024-01.io.netvol:provisioner",
        chap_session=True,
        content_source="snapshot",
        grow_fs=True,
    )
    assert expected == decode(attrs)


@pytest.mark.parametrize(
    ("attrs", "field"),
    [
        ({}, csi_contract.ATTR_TYPE),
        ({"type": "nfs"}, csi_contract.ATTR_TYPE),
        ({"type": "rbd", "pool": "p", "image": "i"}, csi_contract.ATTR_MONITORS),
        (
            {"type": "rbd", "monitors": "m", "pool": "p", "image": "i", "growFs": "yes"},
            csi_contract.ATTR_GROW_FS,
        ),
        ({"type": "iscsi", "portals": "a,b", "iqns": "q", "luns": "1"}, csi_contract.ATTR_PORTALS),
        ({"type": "iscsi", "portals": "a", "iqns": "q", "luns": "x"}, csi_contract.ATTR_LUNS),
        (
            {"type": "rbd", "monitors": "m", "pool": "p", "image": "i", "contentSource": "tape"},
            "contentSource",
        ),
    ],
)
def test_malformed_attributes_name_the_key(attrs: dict[str, str], field: str) -> None:
    """The node side refuses malformed attributes naming the key."""
    with pytest.raises(InvalidInput) as info:
        decode(attrs)
    assert field == info.value.field
