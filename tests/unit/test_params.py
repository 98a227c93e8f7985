"""StorageClass parameters and class-level fields: defaults, every key, and refusals naming the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from provisioner.domain.errors import InvalidInput
from provisioner.domain.params import (
    PARAMETER_KEYS,
    ClassFields,
    ClassParams,
    parse_class_fields,
    parse_class_parameters,
)
from tests.k8s_schema import assert_valid

DOCS = Path(__file__).parents[2] / "docs" / "storageclass-parameters.md"


def parse(parameters: dict[str, Any] | None) -> ClassParams:
    return parse_class_parameters(parameters, default_secret_namespace="cinder-provisioner")


def test_defaults_when_no_parameters() -> None:
    """A class without parameters gets csi, ext4, the configured Secret namespace and everything off."""
    expected = ClassParams(secret_namespace="cinder-provisioner")
    assert expected == parse(None)
    assert expected == parse({})
    assert "csi" == expected.volume_source
    assert "ext4" == expected.fs_type


def test_every_parameter_is_parsed() -> None:
    """Each documented key lands in its typed field."""
    parameters = {
        "type": "ceph-ssd",
        "availability": "nova",
        "fsType": "xfs",
        "cloud": "east",
        "volumeSource": "in-tree",
        "secretNamespace": "storage-secrets",
        "cephxSecretName": "ceph-client.kube",
        "cephxUser": "client.kube",
        "allowRawSnapshotRestore": "true",
        "restoreFromNamespaces": "team-a, team-b,team-a",
        "allowAdoption": "True",
        "cascadeDelete": "FALSE",
        "multiattach": "true",
        "zoneTopologyKey": "topology.kubernetes.io/zone",
    }
    expected = ClassParams(
        volume_type="ceph-ssd",
        availability_zone="nova",
        fs_type="xfs",
        cloud="east",
        volume_source="in-tree",
        secret_namespace="storage-secrets",
        cephx_secret_name="ceph-client.kube",
        cephx_user="kube",
        allow_raw_snapshot_restore=True,
        restore_from_namespaces=("team-a", "team-b"),
        allow_adoption=True,
        cascade_delete=False,
        multiattach=True,
        zone_topology_key="topology.kubernetes.io/zone",
    )
    assert expected == parse(parameters)
    assert set(parameters) == set(PARAMETER_KEYS)


def test_unknown_key_is_refused_with_a_suggestion() -> None:
    """A typo fails loudly, naming the key and the likely intended one."""
    with pytest.raises(InvalidInput) as info:
        parse({"fstype": "xfs"})
    assert "parameters.fstype" == info.value.field
    assert "did you mean 'fsType'" in info.value.message
    assert info.value.final


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"fsType": "ntfs"}, "parameters.fsType"),
        ({"volumeSource": "flex"}, "parameters.volumeSource"),
        ({"secretNamespace": "Bad_NS"}, "parameters.secretNamespace"),
        ({"secretNamespace": "a" * 64}, "parameters.secretNamespace"),
        ({"cephxSecretName": "UPPER"}, "parameters.cephxSecretName"),
        ({"cephxSecretName": "s", "cephxUser": "bad user"}, "parameters.cephxUser"),
        ({"cephxUser": "kube"}, "parameters.cephxUser"),
        ({"allowAdoption": "yes"}, "parameters.allowAdoption"),
        ({"multiattach": True}, "parameters.multiattach"),
        ({"cascadeDelete": ""}, "parameters.cascadeDelete"),
        ({"zoneTopologyKey": "bad key!"}, "parameters.zoneTopologyKey"),
        ({"zoneTopologyKey": "Bad_Prefix/zone"}, "parameters.zoneTopologyKey"),
        ({"zoneTopologyKey": "x/" + "z" * 64}, "parameters.zoneTopologyKey"),
        ({"type": ""}, "parameters.type"),
        ({"type": "  "}, "parameters.type"),
        ({"availability": 3}, "parameters.availability"),
        ({"cloud": None}, "parameters.cloud"),
    ],
)
def test_bad_values_name_the_parameter(parameters: dict[str, Any], field: str) -> None:
    """Every malformed value raises InvalidInput naming parameters.<key>."""
    with pytest.raises(InvalidInput) as info:
        parse(parameters)
    assert field == info.value.field


def test_parameters_must_be_a_map() -> None:
    """A list where a map belongs is refused."""
    with pytest.raises(InvalidInput) as info:
        parse_class_parameters(["type"], default_secret_namespace="ns")  # type: ignore[arg-type]
    assert "parameters" == info.value.field


@given(st.dictionaries(st.text(max_size=30), st.one_of(st.text(max_size=40), st.booleans(), st.none())))
def test_arbitrary_parameters_never_crash(parameters: dict[str, Any]) -> None:
    """Any map parses or raises our InvalidInput naming a parameters.* field."""
    try:
        parse(parameters)
    except InvalidInput as e:
        error: InvalidInput | None = e
    else:
        error = None
    assert error is None or error.field.startswith("parameters")


def test_docs_list_every_parameter() -> None:
    """docs/storageclass-parameters.md documents each accepted key (the code and docs stay in step)."""
    table = DOCS.read_text(encoding="utf-8").split("## Class fields")[0]
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", table, re.MULTILINE))
    assert set(PARAMETER_KEYS) == documented


def sc(**fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": "fast"}, "provisioner": "netvol.io/cinder", **fields}


def test_class_fields_defaults() -> None:
    """reclaimPolicy defaults to Delete (the class default, not the PV's Retain); binding Immediate."""
    expected = ClassFields(name="fast", provisioner="netvol.io/cinder")
    assert expected == parse_class_fields(sc())
    assert "Delete" == expected.reclaim_policy


def test_class_fields_copied() -> None:
    """Retain, mount options, WaitForFirstConsumer and expansion are read from the class."""
    expected = ClassFields(
        name="fast",
        provisioner="netvol.io/cinder",
        reclaim_policy="Retain",
        mount_options=("discard", "noatime"),
        volume_binding_mode="WaitForFirstConsumer",
        allow_volume_expansion=True,
    )
    actual = parse_class_fields(
        sc(
            reclaimPolicy="Retain",
            mountOptions=["discard", "noatime"],
            volumeBindingMode="WaitForFirstConsumer",
            allowVolumeExpansion=True,
        )
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("storage_class", "field"),
    [
        (sc(reclaimPolicy="Recycle"), "reclaimPolicy"),
        (sc(mountOptions="discard"), "mountOptions"),
        (sc(mountOptions=[""]), "mountOptions"),
        (sc(volumeBindingMode="Later"), "volumeBindingMode"),
        (sc(allowVolumeExpansion="true"), "allowVolumeExpansion"),
        ({"provisioner": "netvol.io/cinder"}, "metadata.name"),
        ({"metadata": {"name": "x"}}, "provisioner"),
    ],
)
def test_class_field_refusals(storage_class: dict[str, Any], field: str) -> None:
    """Malformed class-level fields raise InvalidInput naming the field."""
    with pytest.raises(InvalidInput) as info:
        parse_class_fields(storage_class)
    assert field == info.value.field


@pytest.mark.parametrize(
    "name", ["storageclass-rbd.yaml", "storageclass-iscsi.yaml", "storageclass-rbd-intree.yaml"]
)
def test_example_classes_are_valid(name: str) -> None:
    """The example classes in config/ pass the API schema and our own parameter validation."""
    sc = yaml.safe_load((Path(__file__).parents[2] / "config" / name).read_text(encoding="utf-8"))
    assert_valid(sc)
    assert "netvol.io/cinder" == parse_class_fields(sc).provisioner
    assert ClassParams is type(parse(sc["parameters"]))


@pytest.mark.parametrize(
    "value", ["", "team-a,,team-b", "Team-A", "a b", ",".join(f"n{i}" for i in range(65))]
)
def test_restore_from_namespaces_refusals_name_the_key(value: str) -> None:
    """Only a list of namespace names, at most 64."""
    with pytest.raises(InvalidInput) as raised:
        parse({"restoreFromNamespaces": value})
    assert "parameters.restoreFromNamespaces" == raised.value.field
