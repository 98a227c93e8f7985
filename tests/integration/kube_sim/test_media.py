"""Content negotiation over raw HTTP: 415 for bodies the simulator cannot decode, 406 for Accept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioner.testworld.kube_sim import KubeSimulator
from tests.integration.kube_sim.rawhttp import request

CM = "/api/v1/namespaces/default/configmaps"
PROTOBUF = "application/vnd.kubernetes.protobuf"
BODY = json.dumps({"metadata": {"name": "a"}}).encode()
BUILTIN_PATCHES = (
    "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
)


def _415(accepted: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the body of the request was in an unknown format - accepted media types include: "
        + accepted,
        "reason": "UnsupportedMediaType",
        "code": 415,
    }


@pytest.mark.parametrize("content_type", [PROTOBUF, "application/yaml", "text/plain", "application/cbor"])
def test_create_with_undecodable_body_is_415(sim: KubeSimulator, content_type: str) -> None:
    """POST with a body type other than JSON: 415 UnsupportedMediaType, nothing created."""
    status, _, body = request(sim, "POST", CM, b"\x0a\x02k8s", {"Content-Type": content_type})
    assert (415, _415("application/json"), None) == (status, body, sim.get("configmaps", "default", "a"))


def test_update_with_protobuf_body_is_415(sim: KubeSimulator) -> None:
    """PUT with protobuf: 415 before the object is read (even a missing one)."""
    status, _, body = request(sim, "PUT", f"{CM}/missing", b"\x0a", {"Content-Type": PROTOBUF})
    assert (415, _415("application/json")) == (status, body)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", None]
)
def test_json_or_no_content_type_is_decoded(sim: KubeSimulator, content_type: str | None) -> None:
    """JSON with parameters or in any case, or no Content-Type at all (the server's default), creates."""
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, body = request(sim, "POST", CM, BODY, headers)
    assert (201, "a") == (status, body["metadata"]["name"])


@pytest.mark.parametrize(
    "content_type", [PROTOBUF, "application/json", "application/apply-patch+yaml", "application/yaml"]
)
def test_patch_with_unsupported_patch_type_is_415(sim: KubeSimulator, content_type: str) -> None:
    """PATCH accepts only patch types; anything else is 415 listing them, and the object is unchanged."""
    sim.create("configmaps", {"metadata": {"name": "a"}, "data": {"k": "v"}}, "default")
    before = sim.get("configmaps", "default", "a")
    status, _, body = request(
        sim, "PATCH", f"{CM}/a", b'{"data": {"k": "w"}}', {"Content-Type": content_type}
    )
    assert (415, _415(BUILTIN_PATCHES)) == (status, body)
    assert before == sim.get("configmaps", "default", "a")


def test_strategic_merge_on_custom_resource_lists_custom_patch_types(sim: KubeSimulator) -> None:
    """Custom resources accept no strategic merge: the 415 lists only JSON and merge patch."""
    path = "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/missing"
    status, _, body = request(
        sim, "PATCH", path, b"{}", {"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert (415, _415("application/json-patch+json, application/merge-patch+json")) == (status, body)


def test_delete_with_protobuf_options_is_415(sim: KubeSimulator) -> None:
    """DELETE with a DeleteOptions body in protobuf: 415, the object stays."""
    sim.create("configmaps", {"metadata": {"name": "a"}}, "default")
    status, _, body = request(sim, "DELETE", f"{CM}/a", b"\x0a", {"Content-Type": PROTOBUF})
    assert (415, _415("application/json")) == (status, body)
    assert sim.get("configmaps", "default", "a") is not None


@pytest.mark.parametrize(
    "accept", [PROTOBUF, f"{PROTOBUF};stream=watch", "application/yaml", "application/json;q=0"]
)
def test_accept_without_json_is_406(sim: KubeSimulator, accept: str) -> None:
    """A client that accepts only what the simulator cannot produce gets 406 NotAcceptable."""
    status, _, body = request(sim, "GET", CM, headers={"Accept": accept})
    assert 406 == status
    assert {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "only the following media types are accepted: application/json",
        "reason": "NotAcceptable",
        "code": 406,
    } == body


@pytest.mark.parametrize(
    "accept",
    [
        f"{PROTOBUF}, application/json",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        "*/*",
        "application/*",
        "",
    ],
)
def test_accept_admitting_json_gets_json(sim: KubeSimulator, accept: str) -> None:
    """Any Accept that admits JSON (as client-go's protobuf-with-fallback and kubectl send) is served."""
    status, headers, body = request(sim, "GET", CM, headers={"Accept": accept})
    assert (200, "application/json", "ConfigMapList") == (status, headers["content-type"], body["kind"])
