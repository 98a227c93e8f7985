"""Lists: label and field selectors, limit/continue pagination, collection resourceVersion."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner.testworld.kube_sim import KubeSimulator


@pytest.fixture
def labelled(core: client.CoreV1Api) -> None:
    """Three secrets: prod-db, dev, bare."""
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "prod-db", "labels": {"env": "prod", "tier": "db"}}}
    )
    core.create_namespaced_secret("default", {"metadata": {"name": "dev", "labels": {"env": "dev"}}})
    core.create_namespaced_secret("default", {"metadata": {"name": "bare"}})


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", ["prod-db"]),
        ("env==dev", ["dev"]),
        ("env!=prod", ["bare", "dev"]),
        ("env in (prod, dev)", ["dev", "prod-db"]),
        ("env notin (prod)", ["bare", "dev"]),
        ("tier", ["prod-db"]),
        ("!tier", ["bare", "dev"]),
        ("env=prod,tier=db", ["prod-db"]),
        ("env,!tier", ["dev"]),
    ],
)
def test_label_selectors(core: client.CoreV1Api, labelled: None, selector: str, expected: list[str]) -> None:
    """Equality and set-based label selector operators."""
    items = core.list_namespaced_secret("default", label_selector=selector).items
    assert expected == [i.metadata.name for i in items]


def test_bad_label_selector_is_400(core: client.CoreV1Api) -> None:
    """An unparseable label selector is 400."""
    with pytest.raises(ApiException) as e:
        core.list_namespaced_secret("default", label_selector="env in prod")
    assert 400 == e.value.status


def test_field_selectors(core: client.CoreV1Api, labelled: None) -> None:
    """metadata.name and metadata.namespace field selectors, including !=."""
    by_name = core.list_namespaced_secret("default", field_selector="metadata.name=dev").items
    not_name = core.list_namespaced_secret("default", field_selector="metadata.name!=dev").items
    other_ns = core.list_secret_for_all_namespaces(field_selector="metadata.namespace=kube-system").items
    assert (["dev"], ["bare", "prod-db"], []) == (
        [i.metadata.name for i in by_name],
        [i.metadata.name for i in not_name],
        other_ns,
    )


def test_event_involved_object_field_selector(core: client.CoreV1Api) -> None:
    """Events can be selected by involvedObject fields and reason."""
    for name, obj in (("e1", "claim-a"), ("e2", "claim-b")):
        core.create_namespaced_event(
            "default",
            {
                "metadata": {"name": name},
                "reason": "Provisioning",
                "involvedObject": {"kind": "PersistentVolumeClaim", "name": obj, "namespace": "default"},
            },
        )
    items = core.list_namespaced_event(
        "default",
        field_selector="involvedObject.name=claim-b,involvedObject.kind=PersistentVolumeClaim,reason=Provisioning",
    ).items
    assert ["e2"] == [i.metadata.name for i in items]


def test_unsupported_field_selector_is_400(core: client.CoreV1Api) -> None:
    """A field the kind does not index is 400."""
    with pytest.raises(ApiException) as e:
        core.list_namespaced_secret("default", field_selector="data.x=y")
    assert 400 == e.value.status


def test_pagination_with_limit_and_continue(core: client.CoreV1Api) -> None:
    """limit + continue walks the collection in order with one collection resourceVersion."""
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    names = [i.metadata.name for i in first.items]
    token, rvs = first.metadata._continue, {first.metadata.resource_version}
    remaining = first.metadata.remaining_item_count
    while token:
        page = core.list_namespaced_config_map("default", limit=2, _continue=token)
        names += [i.metadata.name for i in page.items]
        token, rvs = page.metadata._continue, rvs | {page.metadata.resource_version}
    assert ([f"cm{i}" for i in range(5)], 1, 3) == (names, len(rvs), remaining)


def test_expired_continue_token_is_410(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """A continue token older than the retained history is 410 Expired."""
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
    token = core.list_namespaced_config_map("default", limit=1).metadata._continue
    core.create_namespaced_config_map("default", {"metadata": {"name": "later"}})
    sim.faults.compact_history()
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map("default", limit=1, _continue=token)
    assert (410, "Expired") == (e.value.status, json.loads(e.value.body)["reason"])


def test_list_resource_version_is_current(sim: KubeSimulator, core: client.CoreV1Api) -> None:
    """The list's metadata.resourceVersion is the revision it reflects."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    sim.wait_idle()
    assert str(sim.resource_version) == core.list_namespaced_config_map("default").metadata.resource_version


def test_list_items_of_builtin_kinds_omit_kind(core: client.CoreV1Api) -> None:
    """Like the real server, items of built-in lists carry no kind/apiVersion (the list does)."""
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    raw = json.loads(core.list_namespaced_config_map("default", _preload_content=False).data)
    assert ("ConfigMapList", None) == (raw["kind"], raw["items"][0].get("kind"))
