"""A leaked volume's story: its Cinder calls, its claim's API requests and the harness's own actions."""

from __future__ import annotations

import io

from provisioner.domain import names
from provisioner.testworld.cinder_emulator.http import CallRecord
from provisioner.testworld.harness import chaos
from provisioner.testworld.kube_sim.faults import RequestRecord

VID = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
PVCS = "/api/v1/namespaces/default/persistentvolumeclaims"


def test_story_is_in_time_order_and_only_about_the_volume() -> None:
    """Calls naming the volume, requests on its claim, and harness actions near them, oldest first."""
    volume = {"id": VID, "name": "pvc-u1", "metadata": {names.META_PVC_NAME: "claim-1"}}

    def call(line: str, status: int, rid: str, at: float, **kw: object) -> CallRecord:
        method, path, op = line.split()
        return CallRecord(
            method=method, path=path, operation=op, microversion="3.71", status=status, request_id=rid, at=at,
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    calls = [
        call("POST /v3/p/volumes create_volume", 202, "req-1", 10.0, body={"volume": {"name": "pvc-u1"}},
             result_id=VID),
        call("GET /v3/p/volumes/other get_volume", 200, "req-2", 11.0),
        call(f"POST /v3/p/attachments?volume={VID} create_attachment", 200, "req-3", 12.0),
    ]  # fmt: skip
    requests = [
        RequestRecord(method="PATCH", path=f"{PVCS}/claim-1", query="", status=200, at=9.5),
        RequestRecord(method="GET", path=PVCS, query="watch=1", status=200, watch=True, at=9.6),
        RequestRecord(method="PATCH", path=f"{PVCS}/claim-2", query="", status=200, at=9.7),
    ]
    timeline = [(11.5, "chaos replica-1 killed"), (100.0, "chaos replica-9 killed")]
    out = io.StringIO()
    chaos._forensics(out, volume, calls, requests, timeline)
    lines = [line.split(None, 1)[1] for line in out.getvalue().splitlines()]
    assert [
        "kube PATCH /api/v1/namespaces/default/persistentvolumeclaims/claim-1? -> 200",
        "cinder POST /v3/p/volumes create_volume -> 202 req-1",
        "chaos replica-1 killed",
        f"cinder POST /v3/p/attachments?volume={VID} create_attachment -> 200 req-3",
    ] == lines


def test_forensics_is_defined_before_the_module_runs_as_a_script() -> None:
    """``python -m …chaos`` runs main() at the ``__main__`` guard: everything it calls must come first."""
    source = chaos.__file__
    with open(source, encoding="utf-8") as f:
        text = f.read()
    assert text.index("def _forensics(") < text.index('if __name__ == "__main__":')
