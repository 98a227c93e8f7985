"""Hostile Cinder connection info: refused by the mapping and by ``cinder-provisioner render`` before any PV.

Each case is one connection-info value that would otherwise reach ``rbd`` / ``iscsiadm`` argv or a node
record on every node (issue 9). Asserted twice: the pure builder raises ``InvalidInput`` naming the
field, and ``render`` exits 2 with nothing on stdout and exactly one stderr line naming that field, with
no planted secret anywhere in the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provisioner.cli import main as cli
from provisioner.domain.errors import InvalidInput
from tests.mapping_samples import SAMPLES, build, iscsi_data, rbd_data

PASSWORD = "PlantedChapSecret9"
DPASSWORD = "PlantedDiscSecret9"
KEY = "AQBPlantedCephxKeyForRender00000000000=="


def chap(**extra: Any) -> dict[str, Any]:
    return {"auth_method": "CHAP", "auth_username": "user", "auth_password": PASSWORD} | extra


RBD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("pool --id=admin", {"name": "--id=admin/img1"}, "data.name (pool)"),
    ("pool starting with -", {"name": "-p/img1"}, "data.name (pool)"),
    ("pool starting with .", {"name": ".p/img1"}, "data.name (pool)"),
    ("pool with ..", {"name": "a..b/img1"}, "data.name (pool)"),
    ("image --keyring", {"name": "volumes/--keyring=x"}, "data.name (image)"),
    ("image -o", {"name": "volumes/-o"}, "data.name (image)"),
    ("image with ..", {"name": "volumes/..img"}, "data.name (image)"),
    ("image too long", {"name": "volumes/" + "i" * 256}, "data.name (image)"),
    ("namespace --option", {"name": "volumes/--ns/img"}, "data.name (namespace)"),
    ("name with newline", {"name": "volumes/img\n-x"}, "data.name"),
    ("name with space", {"name": "volumes/img x"}, "data.name"),
    ("name 4 parts", {"name": "a/b/c/d"}, "data.name"),
    ("user --id", {"auth_username": "--id"}, "data.auth_username"),
    (
        "user --keyring",
        {"auth_username": "--keyring=/etc/ceph/ceph.client.admin.keyring"},
        "data.auth_username",
    ),
    ("user too long", {"auth_username": "u" * 65}, "data.auth_username"),
    ("user with ..", {"auth_username": "a..b"}, "data.auth_username"),
    ("monitor --keyring", {"hosts": ["--keyring=/x"], "ports": ["6789"]}, "data.hosts[0]"),
    ("monitor -m", {"hosts": ["-m"], "ports": ["6789"]}, "data.hosts[0]"),
    ("monitor with comma", {"hosts": ["10.0.0.1,10.0.0.2"], "ports": ["6789"]}, "data.hosts[0]"),
    ("monitor with space", {"hosts": ["10.0.0.1 -x"], "ports": ["6789"]}, "data.hosts[0]"),
    ("monitor bad label", {"hosts": ["-mon.example"], "ports": ["6789"]}, "data.hosts[0]"),
    ("monitor bad v6", {"hosts": ["[fd00::zz::1]"], "ports": ["6789"]}, "data.hosts[0]"),
    ("monitor port 0", {"hosts": ["10.0.0.1"], "ports": ["0"]}, "data.ports[0]"),
    ("monitor port huge", {"hosts": ["10.0.0.1"], "ports": [70000]}, "data.ports[0]"),
    ("monitor port text", {"hosts": ["10.0.0.1"], "ports": ["--6789"]}, "data.ports[0]"),
    ("too many monitors", {"hosts": ["10.0.0.1"] * 33, "ports": ["6789"] * 33}, "data.hosts"),
]

ISCSI_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("iqn starting with -", {"target_iqn": "-iqn.2010-10.org.openstack:v"}, "data.target_iqn"),
    ("iqn --targetname", {"target_iqn": "--targetname=x"}, "data.target_iqn"),
    ("iqn with ../", {"target_iqn": "iqn.2010-10.org.openstack:../../etc/x"}, "data.target_iqn"),
    ("iqn with /", {"target_iqn": "iqn.2010-10.org.openstack:a/b"}, "data.target_iqn"),
    ("iqn without date", {"target_iqn": "iqn.openstack:volume-1"}, "data.target_iqn"),
    ("iqn too long", {"target_iqn": "iqn.2010-10.org.openstack:" + "v" * 200}, "data.target_iqn"),
    (
        "iqn newline",
        {"target_iqn": "iqn.2010-10.org.openstack:v\nnode.startup = automatic"},
        "data.target_iqn",
    ),
    ("eui short", {"target_iqn": "eui.1234"}, "data.target_iqn"),
    ("naa odd", {"target_iqn": "naa.123456789012345"}, "data.target_iqn"),
    ("portal --interface", {"target_portal": "--interface=evil"}, "data.target_portal"),
    ("portal -p", {"target_portal": "-p"}, "data.target_portal"),
    ("portal with ..", {"target_portal": "a..b:3260"}, "data.target_portal"),
    ("portal port 0", {"target_portal": "10.0.0.1:0"}, "data.target_portal"),
    ("portal bad v6", {"target_portal": "[fd00::zz]:3260"}, "data.target_portal"),
    (
        "portals list entry",
        {"target_portals": ["10.0.0.1:3260", "--interface=x"], "target_iqns": None, "target_luns": None},
        "data.target_portals[1]",
    ),
    (
        "iqns list entry",
        {
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260"],
            "target_iqns": ["iqn.2010-10.org.openstack:v", "-iqn.x"],
            "target_luns": [1, 1],
        },
        "data.target_iqns[1]",
    ),
    ("lun negative", {"target_lun": -1}, "data.target_lun"),
    ("lun too big", {"target_lun": 16384}, "data.target_lun"),
    ("lun text", {"target_lun": "1; reboot"}, "data.target_lun"),
    ("lun bool", {"target_lun": True}, "data.target_lun"),
    (
        "chap password newline",
        chap(auth_password=PASSWORD + "\nnode.startup = automatic"),
        "data.auth_password",
    ),
    ("chap password space", chap(auth_password=PASSWORD + " x"), "data.auth_password"),
    ("chap password dash", chap(auth_password="-" + PASSWORD), "data.auth_password"),
    ("chap password too long", chap(auth_password=PASSWORD * 20), "data.auth_password"),
    ("chap password non-ascii", chap(auth_password=PASSWORD + "é"), "data.auth_password"),
    ("chap password NUL", chap(auth_password=PASSWORD + "\x00"), "data.auth_password"),
    ("chap user --option", chap(auth_username="--op=delete"), "data.auth_username"),
    ("chap user space", chap(auth_username="us er"), "data.auth_username"),
    (
        "discovery password newline",
        chap(
            discovery_auth_method="CHAP",
            discovery_auth_username="duser",
            discovery_auth_password=DPASSWORD + "\r\nx = y",
        ),
        "data.discovery_auth_password",
    ),
    (
        "discovery user dash",
        chap(discovery_auth_method="CHAP", discovery_auth_username="-u", discovery_auth_password=DPASSWORD),
        "data.discovery_auth_username",
    ),
]

CASES = [("rbd", *c) for c in RBD_CASES] + [("iscsi", *c) for c in ISCSI_CASES]
SECRETS = (PASSWORD, DPASSWORD, KEY)


def data_for(kind: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return rbd_data(**overrides) if kind == "rbd" else iscsi_data(**overrides)


@pytest.mark.parametrize(("kind", "name", "overrides", "field"), CASES, ids=[c[1] for c in CASES])
def test_builder_refuses_naming_the_field(
    kind: str, name: str, overrides: dict[str, Any], field: str
) -> None:
    """The mapping refuses the value with InvalidInput naming the field; no secret in the message."""
    with pytest.raises(InvalidInput) as err:
        build(kind, data_for(kind, overrides), parameters={"volumeSource": "csi"})
    assert field == err.value.field
    message = str(err.value)
    assert "\n" not in message
    assert not any(s in message for s in SECRETS)


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_render_exits_2_with_one_line(
    case: tuple[str, str, dict[str, Any], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``render``: exit 2, nothing on stdout (no PV), one stderr line naming the field, no secret."""
    kind, _, overrides, field = case
    ci = tmp_path / "ci.json"
    ci.write_text(json.dumps({"driver_volume_type": kind, "data": data_for(kind, overrides)}))
    sc = SAMPLES / ("sc-rbd-csi.yaml" if kind == "rbd" else "sc-iscsi-csi.yaml")
    code = cli.main(
        [
            "render",
            "--connection-info",
            str(ci),
            "--storage-class",
            str(sc),
            "--pvc",
            str(SAMPLES / "pvc.yaml"),
        ]
    )
    out, err = capsys.readouterr()
    assert (2, "", 1) == (code, out, len(err.splitlines()))
    assert err.startswith(f"error: {field}: ")
    assert "Traceback" not in err
    assert not any(s in err for s in SECRETS)


def test_a_clean_export_still_renders() -> None:
    """The same builders accept the samples' real values (the grammar is strict, not paranoid)."""
    objects = build("iscsi", iscsi_data(**chap()), parameters={"volumeSource": "csi"})
    attrs = objects.pv["spec"]["csi"]["volumeAttributes"]
    assert ("iscsi", "true") == (attrs["type"], attrs["chapAuthSession"])
    assert PASSWORD not in json.dumps(objects.pv)
