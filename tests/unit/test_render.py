"""``cinder-provisioner render`` through the real console entry: output, same builder, refusals (exit 2)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.cli import main as cli
from provisioner.cli.render import PLACEHOLDER_PVC_UID, PLACEHOLDER_VOLUME_ID
from provisioner.domain import names
from provisioner.domain.model import ConnectionInfo
from provisioner.domain.params import parse_class_parameters
from provisioner.mapping.build import ProvisionedVolume, build_objects
from tests.k8s_schema import assert_valid
from tests.mapping_samples import SAMPLES, load_sample

VOLUME_ID = "3f1c2a9e-5b7d-4e2a-9c41-0d8e6f7a1b23"
PV_NAME = "pvc-6d3c1c3e-8d0a-4d87-9d1b-0b8d3f3e2a11"


def render(
    capsys: pytest.CaptureFixture[str], ci: str, sc: str, pvc: str, *extra: str
) -> tuple[int, str, str]:
    """Run ``cinder-provisioner render`` in-process; paths are sample names or absolute paths."""
    args = [
        "render",
        "--connection-info",
        str(SAMPLES / ci),
        "--storage-class",
        str(SAMPLES / sc),
        "--pvc",
        str(SAMPLES / pvc),
        *extra,
    ]
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def items(
    capsys: pytest.CaptureFixture[str], ci: str, sc: str, pvc: str, *extra: str
) -> list[dict[str, Any]]:
    """Render successfully, check the List envelope and every item's schema, return the items."""
    code, out, err = render(capsys, ci, sc, pvc, *extra)
    assert (0, "") == (code, err)
    document = json.loads(out) if "json" in extra else yaml.safe_load(out)
    assert ("v1", "List") == (document["apiVersion"], document["kind"])
    assert_valid(document)
    result: list[dict[str, Any]] = document["items"]
    return result


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def write(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def test_rbd_without_cephx(capsys: pytest.CaptureFixture[str]) -> None:
    """Real Cinder's rbd export → one csi PV, no Secret, the class's fsType/affinity/mountOptions."""
    [pv] = items(capsys, "ci-rbd-real.json", "sc-rbd-csi.yaml", "pvc.yaml")
    assert (PV_NAME, VOLUME_ID, "xfs", ["discard"]) == (
        pv["metadata"]["name"],
        pv["spec"]["csi"]["volumeHandle"],
        pv["spec"]["csi"]["fsType"],
        pv["spec"]["mountOptions"],
    )
    assert "nodeStageSecretRef" not in pv["spec"]["csi"]
    assert "2Gi" == pv["spec"]["capacity"]["storage"]  # 1500M rounded up


def test_rbd_with_cephx_keyring_in_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """A keyring in the (wrapped) connection info → in-tree rbd PV + kubernetes.io/rbd Secret with the key."""
    pv, secret = items(capsys, "ci-rbd-cephx-keyring.json", "sc-rbd-intree.yaml", "pvc.yaml")
    ref = {"name": f"{PV_NAME}-secret", "namespace": "cinder-provisioner"}
    assert (ref, "cinder", "Retain") == (
        pv["spec"]["rbd"]["secretRef"],
        pv["spec"]["rbd"]["user"],
        pv["spec"]["persistentVolumeReclaimPolicy"],
    )
    assert (names.SECRET_TYPE_RBD, {"key": "AQBsampleSAMPLEsampleSAMPLEsample0123456=="}) == (
        secret["type"],
        secret_values(secret),
    )


def test_rbd_admin_secret_ipv6_and_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    """cephx without key + cephxSecretName: admin Secret referenced; IPv6 monitors; rados namespace; ro."""
    [pv] = items(capsys, "ci-rbd-cephx-nokey-ipv6-ns.json", "sc-rbd-cephx.yaml", "pvc.yaml")
    csi = pv["spec"]["csi"]
    attrs = csi["volumeAttributes"]
    assert "[fd00:10::11]:3300,[fd00:10::12]:6789,ceph-mon3.example.org:6789" == attrs["monitors"]
    assert ("tenant-a", "kube", True) == (attrs["radosNamespace"], attrs["user"], csi["readOnly"])
    assert {"name": "ceph-client-kube", "namespace": "cinder-provisioner"} == csi["nodeStageSecretRef"]


def test_iscsi_single_portal(capsys: pytest.CaptureFixture[str]) -> None:
    """One portal → in-tree iscsi with the default initiator name and no Secret."""
    [pv] = items(
        capsys,
        "ci-iscsi-single.json",
        "sc-iscsi-intree.yaml",
        "pvc.yaml",
        "--initiator-name",
        "iqn.2024-02.org.example:node",
    )
    iscsi = pv["spec"]["iscsi"]
    assert ("192.168.10.5:3260", 1, "iqn.2024-02.org.example:node", "default") == (
        iscsi["targetPortal"],
        iscsi["lun"],
        iscsi["initiatorName"],
        iscsi["iscsiInterface"],
    )
    assert "portals" not in iscsi


def test_iscsi_multipath_with_both_chaps(capsys: pytest.CaptureFixture[str]) -> None:
    """Multipath + session and discovery CHAP → portals, both flags, one iscsi-chap Secret with four keys."""
    pv, secret = items(
        capsys, "ci-iscsi-multipath-chap.json", "sc-iscsi-intree.yaml", "pvc.yaml", "-o", "json"
    )
    iscsi = pv["spec"]["iscsi"]
    assert (["192.168.20.5:3260"], True, True) == (
        iscsi["portals"],
        iscsi["chapAuthSession"],
        iscsi["chapAuthDiscovery"],
    )
    expected = {
        "node.session.auth.username": "sessionuser",
        "node.session.auth.password": "S3ssionSecretValue",
        "discovery.sendtargets.auth.username": "discuser",
        "discovery.sendtargets.auth.password": "D1scoverySecretValue",
    }
    assert (names.SECRET_TYPE_ISCSI_CHAP, expected) == (secret["type"], secret_values(secret))


@pytest.mark.parametrize(
    ("drop", "keys"),
    [
        ("discovery_", {"node.session.auth.username", "node.session.auth.password"}),
        ("auth_", {"discovery.sendtargets.auth.username", "discovery.sendtargets.auth.password"}),
    ],
)
def test_iscsi_session_or_discovery_chap_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, drop: str, keys: set[str]
) -> None:
    """Session CHAP alone or discovery CHAP alone → only that flag and those Secret keys."""
    ci = load_sample("ci-iscsi-multipath-chap.json")
    ci["data"] = {k: v for k, v in ci["data"].items() if not k.startswith(drop)}
    pv, secret = items(capsys, write(tmp_path, "ci.json", ci), "sc-iscsi-intree.yaml", "pvc.yaml")
    iscsi = pv["spec"]["iscsi"]
    session, discovery = iscsi.get("chapAuthSession", False), iscsi.get("chapAuthDiscovery", False)
    assert (drop == "discovery_", drop == "auth_") == (session, discovery)
    assert keys == set(secret["data"])


def test_csi_output_for_several_iqns(capsys: pytest.CaptureFixture[str]) -> None:
    """Several IQNs (only csi can say it), RWX Block on a multiattach class, no fsType for Block."""
    [pv] = items(capsys, "ci-iscsi-multi-iqn.json", "sc-iscsi-csi.yaml", "pvc-block-rwx.yaml")
    csi = pv["spec"]["csi"]
    assert (names.CSI_DRIVER_NAME, "7,9", ["ReadWriteMany"], "Block") == (
        csi["driver"],
        csi["volumeAttributes"]["luns"],
        pv["spec"]["accessModes"],
        pv["spec"]["volumeMode"],
    )
    assert "fsType" not in csi


def test_yaml_and_json_agree(capsys: pytest.CaptureFixture[str]) -> None:
    """-o yaml and -o json print the same objects."""
    as_yaml = items(capsys, "ci-iscsi-multipath-chap.json", "sc-iscsi-intree.yaml", "pvc.yaml", "-o", "yaml")
    as_json = items(capsys, "ci-iscsi-multipath-chap.json", "sc-iscsi-intree.yaml", "pvc.yaml", "-o", "json")
    assert as_yaml == as_json


def test_render_is_the_controller_builder(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed objects equal build_objects() on the same inputs (one code path)."""
    printed = items(
        capsys, "ci-rbd-cephx-keyring.json", "sc-rbd-csi.yaml", "pvc.yaml", "--attachment-id", "att-9"
    )
    sc = load_sample("sc-rbd-csi.yaml")
    params = parse_class_parameters(sc["parameters"], default_secret_namespace="cinder-provisioner")
    mapped = build_objects(
        connection_info=ConnectionInfo.from_wire(load_sample("ci-rbd-cephx-keyring.json")),
        storage_class=sc,
        pvc=load_sample("pvc.yaml"),
        params=params,
        volume=ProvisionedVolume(
            volume_id=VOLUME_ID,
            size_gib=2,
            cloud="default",
            attachment_id="att-9",
            export_mode="attachment",
            initiator_name="iqn.2024-01.io.netvol:provisioner",
            availability_zone="nova",
        ),
        provisioner_name="netvol.io/cinder",
    )
    assert [mapped.pv, mapped.secret] == printed


def test_volume_id_sources(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--volume-id wins; else data.volume_id; else the placeholder."""
    [pv] = items(capsys, "ci-rbd-real.json", "sc-rbd-csi.yaml", "pvc.yaml", "--volume-id", "vol-given")
    assert "vol-given" == pv["metadata"]["annotations"][names.ANN_VOLUME_ID]
    ci = load_sample("ci-rbd-real.json")
    del ci["data"]["volume_id"]
    [pv] = items(capsys, write(tmp_path, "ci.json", ci), "sc-rbd-csi.yaml", "pvc.yaml")
    assert PLACEHOLDER_VOLUME_ID == pv["spec"]["csi"]["volumeHandle"]


def test_hand_written_claim_gets_placeholders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A claim without uid/namespace renders with a placeholder uid in namespace default; --size-gib wins."""
    pvc = load_sample("pvc.yaml")
    del pvc["metadata"]["uid"], pvc["metadata"]["namespace"]
    [pv] = items(
        capsys, "ci-rbd-real.json", "sc-rbd-csi.yaml", write(tmp_path, "pvc.json", pvc), "--size-gib", "9"
    )
    ref = pv["spec"]["claimRef"]
    assert (PLACEHOLDER_PVC_UID, "default", "9Gi") == (
        ref["uid"],
        ref["namespace"],
        pv["spec"]["capacity"]["storage"],
    )


def test_attachment_export_annotations(capsys: pytest.CaptureFixture[str]) -> None:
    """--attachment-id records the attachment export; without it the export is legacy."""
    [pv] = items(capsys, "ci-rbd-real.json", "sc-rbd-csi.yaml", "pvc.yaml", "--attachment-id", "att-1")
    annotations = pv["metadata"]["annotations"]
    assert ("attachment", "att-1") == (
        annotations[names.ANN_EXPORT_MODE],
        annotations[names.ANN_ATTACHMENT_ID],
    )


@pytest.mark.parametrize(
    ("files", "extra", "field"),
    [
        (("ci-fc.json", "sc-rbd-csi.yaml", "pvc.yaml"), (), "driver_volume_type"),
        (
            ("ci-rbd-cephx-nokey-ipv6-ns.json", "sc-rbd-csi.yaml", "pvc.yaml"),
            (),
            "parameters.cephxSecretName",
        ),
        (("ci-iscsi-multi-iqn.json", "sc-iscsi-intree.yaml", "pvc.yaml"), (), "data.target_iqns"),
        (("ci-iscsi-multi-iqn.json", "sc-rbd-csi.yaml", "pvc-block-rwx.yaml"), (), "spec.accessModes"),
        (
            ("ci-rbd-real.json", "sc-rbd-csi.yaml", "pvc.yaml"),
            ("--provisioner-name", "other.io/x"),
            "provisioner",
        ),
        (("ci-rbd-real.json", "sc-rbd-csi.yaml", "pvc.yaml"), ("--size-gib", "0"), "--size-gib"),
        (("ci-rbd-real.json", "sc-rbd-csi.yaml", "missing.yaml"), (), "--pvc"),
        (("ci-rbd-real.json", "pvc.yaml", "pvc.yaml"), (), "kind"),
        (("sc-rbd-csi.yaml", "sc-rbd-csi.yaml", "pvc.yaml"), (), "driver_volume_type"),
    ],
)
def test_refusals(
    capsys: pytest.CaptureFixture[str], files: tuple[str, str, str], extra: tuple[str, ...], field: str
) -> None:
    """Bad input: exit 2, nothing on stdout, exactly one stderr line naming the field."""
    code, out, err = render(capsys, *files, *extra)
    assert (2, "") == (code, out)
    assert 1 == len(err.splitlines())
    assert err.startswith(f"error: {field}: ")


SC_HEAD = "kind: StorageClass\nmetadata: {name: x}\nprovisioner: netvol.io/cinder\n"
RBD_NS = {"driver_volume_type": "rbd", "data": {"name": "p/ns/i", "hosts": ["h"], "ports": ["1"]}}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (
            {
                "ci.json": {
                    "driver_volume_type": "rbd",
                    "data": {"name": "p/i", "hosts": ["a b"], "ports": ["1"]},
                }
            },
            "data.hosts[0]",
        ),
        ({"ci.json": [1, 2]}, "--connection-info"),
        ({"ci.json": "{not json"}, "--connection-info"),
        ({"ci.json": {"data": {}}}, "driver_volume_type"),
        ({"ci.json": RBD_NS, "sc.yaml": SC_HEAD + "parameters: {volumeSource: in-tree}\n"}, "data.name"),
        ({"sc.yaml": SC_HEAD + "parameters: {fstype: xfs}\n"}, "parameters.fstype"),
        ({"sc.yaml": SC_HEAD + "parameters: {multiattach: true}\n"}, "parameters.multiattach"),
        ({"sc.yaml": "a: [\n"}, "--storage-class"),
    ],
)
def test_refusals_of_malformed_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    """Malformed files and values: exit 2, one stderr line naming the field or the option."""
    files = {"ci.json": "ci-rbd-real.json", "sc.yaml": "sc-rbd-csi.yaml"}
    files.update({name: write(tmp_path, name, content) for name, content in overrides.items()})
    code, out, err = render(capsys, files["ci.json"], files["sc.yaml"], "pvc.yaml")
    assert (2, "", 1) == (code, out, len(err.splitlines()))
    assert err.startswith(f"error: {field}: ")


def test_refusal_never_prints_secrets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A refused CHAP export does not echo its password or keyring on stderr."""
    ci = load_sample("ci-iscsi-multipath-chap.json")
    ci["data"]["auth_method"] = "kerberos"
    code, out, err = render(capsys, write(tmp_path, "ci.json", ci), "sc-iscsi-intree.yaml", "pvc.yaml")
    assert (2, "") == (code, out)
    assert "S3ssionSecretValue" not in err
    assert "D1scoverySecretValue" not in err


def test_console_script(tmp_path: Path) -> None:
    """The installed `cinder-provisioner render` works end to end, and refuses with exit 2."""
    exe = Path(sys.executable).parent / "cinder-provisioner"
    base = [
        str(exe),
        "render",
        "--storage-class",
        str(SAMPLES / "sc-rbd-intree.yaml"),
        "--pvc",
        str(SAMPLES / "pvc.yaml"),
    ]
    ok = subprocess.run(
        [*base, "--connection-info", str(SAMPLES / "ci-rbd-cephx-keyring.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (0, "") == (ok.returncode, ok.stderr)
    document = yaml.safe_load(ok.stdout)
    assert ["PersistentVolume", "Secret"] == [item["kind"] for item in document["items"]]
    assert_valid(document)
    bad = subprocess.run(
        [*base, "--connection-info", str(SAMPLES / "ci-fc.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (2, "") == (bad.returncode, bad.stdout)
    assert [
        "error: driver_volume_type: 'fibre_channel' is not supported (supported: rbd, iscsi)"
    ] == bad.stderr.splitlines()


# --- adoption: the controller's decision (flows.adopt.check_adoption), never "adopted" on a guess --------

ADOPT_ID = "9a8b7c6d-0000-4000-8000-00000000ad0b"
ADOPT_FIELD = f"metadata.annotations[{names.ANN_ADOPT_VOLUME}]"


def adoption_files(
    tmp_path: Path, *, allow: bool = True, claim: dict[str, Any] | None = None
) -> tuple[str, str]:
    """A copy of sc-rbd-csi.yaml (type ceph-ssd) with allowAdoption, and pvc.yaml adopting ADOPT_ID."""
    sc = load_sample("sc-rbd-csi.yaml")
    if allow:
        sc["parameters"]["allowAdoption"] = "true"
    pvc = load_sample("pvc.yaml")
    pvc["metadata"]["annotations"] = {names.ANN_ADOPT_VOLUME: ADOPT_ID}
    for key, value in (claim or {}).items():
        pvc[key] = {**pvc.get(key, {}), **value}
    return write(tmp_path, "sc.json", sc), write(tmp_path, "pvc.json", pvc)


def cinder_volume(**fields: Any) -> dict[str, Any]:
    """The API's GET /volumes/{id} answer for the volume to adopt (free, 5 GiB, type ceph-ssd)."""
    volume = {
        "id": ADOPT_ID,
        "name": "legacy-db",
        "size": 5,
        "status": "available",
        "volume_type": "ceph-ssd",
        "availability_zone": "nova-2",
        "metadata": {},
        "attachments": [],
        "multiattach": False,
    }
    return {"volume": {**volume, **fields}}


def test_adoption_with_a_free_volume(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--volume free and big enough → the PV of that volume: its id, its size, contentSource adopted."""
    sc, pvc = adoption_files(tmp_path)
    volume = write(tmp_path, "vol.json", cinder_volume())
    [pv] = items(capsys, "ci-rbd-real.json", sc, pvc, "--volume", volume, "--cluster-id", "c1")
    csi = pv["spec"]["csi"]
    assert (ADOPT_ID, "5Gi", "adopted") == (
        csi["volumeHandle"],
        pv["spec"]["capacity"]["storage"],
        csi["volumeAttributes"]["contentSource"],
    )


def test_adoption_without_volume_info_says_what_it_needs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No --volume: the PV as it would be, and a note with the conditions the volume must meet."""
    sc, pvc = adoption_files(tmp_path)
    code, out, err = render(capsys, "ci-rbd-real.json", sc, pvc)
    [pv] = yaml.safe_load(out)["items"]
    assert (0, "adopted", ADOPT_ID) == (
        code,
        pv["spec"]["csi"]["volumeAttributes"]["contentSource"],
        pv["spec"]["csi"]["volumeHandle"],
    )
    assert [
        f"note: would adopt volume {ADOPT_ID} if it is available, unattached, untagged, of volume type "
        "'ceph-ssd' and ≥ 2 GiB (the PV gets the volume's size); pass --volume to check it"
    ] == err.splitlines()


@pytest.mark.parametrize(
    ("allow", "claim", "volume", "expected"),
    [
        (False, None, None, "error: parameters.allowAdoption: StorageClass 'cinder-rbd' does not allow "
         f"adoption ({ADOPT_FIELD} is set); set allowAdoption: \"true\" on the class or remove the "
         "annotation"),
        (True, {"spec": {"dataSource": {"kind": "VolumeSnapshot", "name": "s"}}}, None,
         f"error: {ADOPT_FIELD}: cannot be combined with spec.dataSource: adopt an existing volume or create "
         "one from a source, not both"),
        (True, {"metadata": {"annotations": {names.ANN_ADOPT_VOLUME: ADOPT_ID,
                                             names.ANN_RESTORE_FROM_SNAPSHOT: "snap-1"}}}, None,
         f"error: {ADOPT_FIELD}: cannot be combined with metadata.annotations["
         f"{names.ANN_RESTORE_FROM_SNAPSHOT}]: adopt an existing volume or restore a snapshot, not both"),
        (True, None, cinder_volume(status="in-use", attachments=[{"attachment_id": "a1"}]),
         f"error: {ADOPT_FIELD}: volume '{ADOPT_ID}' is in-use (attached to attachments a1); only available, "
         "unattached volumes can be adopted"),
        (True, None, cinder_volume(size=1),
         f"error: {ADOPT_FIELD}: volume '{ADOPT_ID}' has 1 GiB, less than the 2 GiB the claim requests "
         "(spec.resources.requests.storage)"),
        (True, None, {"id": ADOPT_ID, "size": 5, "status": "available", "type": "ceph-ssd",
                      "properties": {names.META_PVC_UID: "someone-else"}},
         f"error: {ADOPT_FIELD}: volume '{ADOPT_ID}' belongs to another claim ({names.META_PVC_UID}); only "
         "volumes that no claim owns can be adopted"),
        (True, None, cinder_volume(volume_type="slow"),
         f"error: {ADOPT_FIELD}: volume '{ADOPT_ID}' has volume type 'slow', but the class's parameters.type "
         "is 'ceph-ssd'"),
        (True, None, cinder_volume(id="another"),
         f"error: --volume: holds volume 'another', the claim adopts '{ADOPT_ID}'"),
    ],
    ids=["not allowed", "with dataSource", "with restore", "in-use", "too small", "another claim's",
         "other type", "another volume"],
)  # fmt: skip
def test_adoption_refusals(  # noqa: PLR0917 - pytest passes parametrized arguments by name
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    allow: bool,
    claim: dict[str, Any] | None,
    volume: dict[str, Any] | None,
    expected: str,
) -> None:
    """Whatever the controller would refuse: exit 2, nothing on stdout, the Warning's text on stderr."""
    sc, pvc = adoption_files(tmp_path, allow=allow, claim=claim)
    extra = () if volume is None else ("--volume", write(tmp_path, "vol.json", volume), "--cluster-id", "c1")
    code, out, err = render(capsys, "ci-rbd-real.json", sc, pvc, *extra)
    assert (2, "", [expected]) == (code, out, err.splitlines())


def test_adoption_with_volume_needs_the_cluster_id(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--volume without --cluster-id: refused (another cluster's tags could not be recognised)."""
    sc, pvc = adoption_files(tmp_path)
    code, out, err = render(
        capsys, "ci-rbd-real.json", sc, pvc, "--volume", write(tmp_path, "v.json", cinder_volume())
    )
    assert (2, "") == (code, out)
    assert err.startswith("error: --cluster-id: ")


def test_claim_without_adoption_is_never_adopted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without the annotation a class allowing adoption still renders a new, empty volume."""
    sc, _ = adoption_files(tmp_path)
    [pv] = items(capsys, "ci-rbd-real.json", sc, "pvc.yaml")
    assert "empty" == pv["spec"]["csi"]["volumeAttributes"]["contentSource"]
