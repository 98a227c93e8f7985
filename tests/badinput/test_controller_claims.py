"""Hostile claims and classes against the real controller: simulator + Cinder emulator over real HTTP.

Every case is a claim (and often its own class) a careless or malicious user can create. The controller
must answer each with a Warning Event on the claim that names the offending field, and create nothing:
no Cinder volume (no create call carrying the claim's uid), no PV, no Secret. One world serves the whole
module: all claims are created up front and the controller works them in parallel, then each case is
checked on its own. The simulator refuses over-long or malformed object names like the real API server,
so an Event whose generated name is invalid would simply be missing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from provisioner.domain import names
from provisioner.testworld import objects
from tests.e2e.world import World, emulator_world, wait_for

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
STORAGE = "spec.resources.requests.storage"
LONG = "a" * 253  # the longest name the API server accepts for a claim


@dataclass(frozen=True)
class Case:
    """One hostile claim: its name, its class's parameters, what the Warning must name."""

    id: str
    claim: str
    field: str
    parameters: dict[str, str] = dataclasses.field(default_factory=lambda: {"type": "rbd"})
    size: Any = "1Gi"
    access: str = "ReadWriteOnce"
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    mount_options: list[str] | None = None
    #: the claim reaches Cinder, which refuses it (the Warning still names the user's field)
    reaches_cinder: bool = False


CASES = [
    # Requests Kubernetes itself requires to be positive.
    Case(id="storage-zero", claim="zero", field=STORAGE, size="0"),
    Case(id="storage-zero-gi", claim="zero-gi", field=STORAGE, size="0Gi"),
    Case(id="storage-zero-decimal", claim="zero-dec", field=STORAGE, size="0.0"),
    Case(id="storage-negative", claim="negative", field=STORAGE, size="-1Gi"),
    Case(id="storage-zero-exponent", claim="zero-exp", field=STORAGE, size="0e9"),
    Case(id="storage-beyond-1eib", claim="huge", field=STORAGE, size="2Ei"),
    Case(id="storage-absurd-exponent", claim="exp", field=STORAGE, size="1e999"),
    # Long names: the Event's generated name must still be valid.
    Case(id="long-name-zero-storage", claim=LONG, field=STORAGE, size="0"),
    Case(
        id="long-name-bad-class",
        claim="b" * 252 + "c",
        field="parameters.colour",
        parameters={"type": "rbd", "colour": "red"},
    ),
    Case(
        id="long-dotted-name-bad-class",
        claim="d" * 235 + "." + "e" * 17,  # a plain cut at 236 would leave "d….-" / "..": invalid names
        field="parameters.fsType",
        parameters={"type": "rbd", "fsType": "ntfs"},
    ),
    Case(
        id="long-name-type-cinder-lacks",
        claim="f" * 240 + "-" + "g" * 12,
        field="parameters.type",
        parameters={"type": "no-such-type"},
        reaches_cinder=True,
    ),
    # Class parameters.
    Case(
        id="unknown-parameter",
        claim="unknown-param",
        field="parameters.fstype",
        parameters={"fstype": "ext4"},
    ),
    Case(
        id="fstype-not-allowed", claim="fstype", field="parameters.fsType", parameters={"fsType": "ext4 -O x"}
    ),
    Case(
        id="volume-source-bogus",
        claim="vsource",
        field="parameters.volumeSource",
        parameters={"volumeSource": "--privileged"},
    ),
    Case(
        id="secret-namespace-invalid",
        claim="secret-ns",
        field="parameters.secretNamespace",
        parameters={"secretNamespace": "../kube-system"},
    ),
    Case(
        id="boolean-not-boolean",
        claim="multiattach",
        field="parameters.multiattach",
        parameters={"multiattach": "yes please"},
    ),
    # Claim fields.
    Case(id="rwx-filesystem", claim="rwx", field="spec.accessModes", access="ReadWriteMany"),
    Case(
        id="restore-path-traversal",
        claim="restore",
        field=names.ANN_RESTORE_FROM_SNAPSHOT,
        annotations={names.ANN_RESTORE_FROM_SNAPSHOT: "../volumes/00000000-0000-0000-0000-000000000000"},
    ),
    Case(
        id="adopt-not-allowed",
        claim="adopt",
        field=names.ANN_ADOPT_VOLUME,
        annotations={names.ANN_ADOPT_VOLUME: "00000000-0000-0000-0000-00000000000a"},
    ),
]


@dataclass
class Ran:
    world: World
    claims: dict[str, dict[str, Any]]  # case id → the created claim


@pytest.fixture(scope="module")
def ran() -> Iterator[Ran]:
    """Create every hostile class and claim, run the controller until each claim has its Warning."""
    with emulator_world() as world:
        world.start_replica()
        claims: dict[str, dict[str, Any]] = {}
        for i, case in enumerate(CASES):
            sc = f"bad-{i}"
            body = objects.storage_class(sc, case.parameters, mount_options=case.mount_options)
            world.kube.create("storageclasses", body)
            pvc = objects.claim(
                case.claim, sc, size=case.size, access=case.access, annotations=case.annotations
            )
            claims[case.id] = world.kube.create("persistentvolumeclaims", pvc, namespace="default")
        try:  # each case asserts its own Warning: a missing one fails that case, not the module
            wait_for(lambda: all(_warnings(world, claims[c.id]) for c in CASES), 30, "a Warning per claim")
        except AssertionError:
            pass
        world.sim.wait_idle()
        yield Ran(world=world, claims=claims)


def _warnings(world: World, claim: dict[str, Any]) -> list[dict[str, Any]]:
    uid = claim["metadata"]["uid"]
    return [
        e
        for e in world.sim.list("events")
        if e["involvedObject"].get("uid") == uid and e.get("type") == "Warning"
    ]


def _creates_for(world: World, uid: str) -> list[Any]:
    out = []
    for call in world.emu.calls():
        body = call.body if isinstance(call.body, dict) else {}
        metadata = (body.get("volume") or {}).get("metadata") or {}
        if call.method == "POST" and metadata.get(names.META_PVC_UID) == uid:
            out.append(call)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_claim_gets_a_warning_naming_the_field_and_nothing_is_created(ran: Ran, case: Case) -> None:
    """One Warning names the field; no volume, no PV, no Secret; the claim stays Pending."""
    world, claim = ran.world, ran.claims[case.id]
    uid = claim["metadata"]["uid"]
    warnings = _warnings(world, claim)
    assert [] != [e for e in warnings if case.field in e["message"]], [e["message"] for e in warnings]
    for event in warnings:
        name = event["metadata"]["name"]
        assert (True, True, 1) == (
            len(name) <= 253,
            bool(SUBDOMAIN.match(name)),
            event["message"].count("\n") + 1,
        )
    pv_name = names.pv_name_for(uid)
    assert (None, None) == (
        world.sim.get("persistentvolumes", "", pv_name),
        world.sim.get("secrets", "kube-system", pv_name + "-secret"),
    )
    volumes = [v for v in world.our_volumes() if (v.metadata or {}).get(names.META_PVC_UID) == uid]
    assert [] == volumes
    creates = _creates_for(world, uid)
    if case.reaches_cinder:
        assert [] != creates
        assert [] == [c for c in creates if c.status < 400], "Cinder refused every create"
    else:
        assert [] == creates
    assert "Bound" != ((world.pvc(claim["metadata"]["name"]) or {}).get("status") or {}).get("phase")


def test_one_event_per_claim_and_message(ran: Ran) -> None:
    """Retries bump counts: no claim has two Events with the same message."""
    for case in CASES:
        messages = [e["message"] for e in _warnings(ran.world, ran.claims[case.id])]
        assert len(messages) == len(set(messages)), case.id
