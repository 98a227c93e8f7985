"""The Cinder emulator on the wire: what real clients see (raw HTTP and python-cinderclient).

These pin the emulator's own behaviour (timing, faults, shapes); the contract suite checks that it agrees
with real Cinder.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from provisioner.testworld.cinder_emulator.emulator import CinderEmulator, IscsiProfile, Quota, RbdProfile


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(
    emu: CinderEmulator, method: str, path: str, body: Any = None, *, version: str | None = "3.71"
) -> tuple[int, dict[str, str], Any]:
    """One raw request to the emulator (noauth token); returns status, headers, JSON body."""
    url = path if path.startswith("http") else f"{emu.cinder_url}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - local http URL
    req.add_header("X-Auth-Token", emu.noauth_token)
    req.add_header("Content-Type", "application/json")
    if version:
        req.add_header("OpenStack-API-Version", f"volume {version}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local http URL
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        with e:
            raw, status, headers = e.read(), e.code, dict(e.headers)
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw) if raw else None


@pytest.fixture
def clock() -> Clock:
    """Test-controlled time."""
    return Clock()


@pytest.fixture
def emu(clock: Clock) -> Iterator[CinderEmulator]:
    """Emulator with 10 s create / 5 s delete on a fake clock."""
    with CinderEmulator(create_seconds=10, delete_seconds=5, extend_seconds=2, clock=clock) as e:
        yield e


def create(emu: CinderEmulator, name: str = "v", size: int = 1, **extra: Any) -> dict[str, Any]:
    """POST /volumes; returns the volume."""
    status, _, body = call(emu, "POST", "/volumes", {"volume": {"name": name, "size": size, **extra}})
    assert 202 == status
    volume: dict[str, Any] = body["volume"]
    return volume


def status_of(emu: CinderEmulator, volume_id: str) -> str:
    """The volume's status as GET shows it."""
    return str(call(emu, "GET", f"/volumes/{volume_id}")[2]["volume"]["status"])


def test_version_discovery_is_300_with_range(emu: CinderEmulator) -> None:
    """GET / lists v3 with min 3.0 and the configured max, like Cinder (300 Multiple Choices)."""
    status, _, body = call(emu, "GET", emu.base_url + "/", version=None)
    v = body["versions"][0]
    assert (300, "3.0", "3.71") == (status, v["min_version"], v["version"])


def test_microversion_is_echoed_and_too_high_is_406(emu: CinderEmulator) -> None:
    """The response names the served microversion; one above max → 406."""
    _, headers, _ = call(emu, "GET", "/volumes", version="3.50")
    status, _, _ = call(emu, "GET", "/volumes", version="3.99")
    assert ("volume 3.50", 406) == (headers["openstack-api-version"], status)


def test_every_response_has_a_request_id(emu: CinderEmulator) -> None:
    """Success and error responses both carry x-openstack-request-id: req-<uuid>."""
    ok = call(emu, "GET", "/volumes")[1]["x-openstack-request-id"]
    missing = call(emu, "GET", "/volumes/nope")[1]["x-openstack-request-id"]
    assert (True, True) == (ok.startswith("req-"), missing.startswith("req-"))


def test_bad_token_is_401(emu: CinderEmulator) -> None:
    """Block Storage refuses requests without a valid token."""
    req = urllib.request.Request(f"{emu.cinder_url}/volumes")  # noqa: S310 - local http URL
    req.add_header("X-Auth-Token", "forged")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)  # noqa: S310 - local http URL
    info.value.close()
    assert 401 == info.value.code


def test_status_follows_the_clock(emu: CinderEmulator, clock: Clock) -> None:
    """creating until create_seconds pass, then available; deleting until delete_seconds, then 404."""
    vid = create(emu)["id"]
    before = status_of(emu, vid)
    clock.now += 10
    after = status_of(emu, vid)
    call(emu, "DELETE", f"/volumes/{vid}")
    deleting = status_of(emu, vid)
    clock.now += 5
    gone = call(emu, "GET", f"/volumes/{vid}")[0]
    assert ("creating", "available", "deleting", 404) == (before, after, deleting, gone)


def test_error_on_create_by_name_pattern(emu: CinderEmulator, clock: Clock) -> None:
    """Volumes whose name matches the pattern end in error; others become available."""
    emu.faults.error_on_create(count=None, name_pattern="bad-*")
    bad, good = create(emu, "bad-1")["id"], create(emu, "good-1")["id"]
    clock.now += 10
    assert ("error", "available") == (status_of(emu, bad), status_of(emu, good))


def test_stuck_creating_never_finishes(emu: CinderEmulator, clock: Clock) -> None:
    """stuck_creating keeps the next create in creating forever."""
    emu.faults.stuck_creating()
    vid = create(emu)["id"]
    clock.now += 10_000
    assert "creating" == status_of(emu, vid)


def test_fail_next_429_sends_retry_after(emu: CinderEmulator) -> None:
    """An injected 429 carries Retry-After and Cinder's overLimit body, once."""
    emu.faults.fail_next("list_volumes", status=429, retry_after=4)
    status, headers, body = call(emu, "GET", "/volumes/detail")
    again = call(emu, "GET", "/volumes/detail")[0]
    assert (429, "4", 429, 200) == (status, headers["retry-after"], body["overLimit"]["code"], again)


def test_quota_on_gigabytes_is_413(clock: Clock) -> None:
    """Creating past the gigabytes quota → 413 overLimit."""
    with CinderEmulator(quota=Quota(gigabytes=3), clock=clock) as emu:
        create(emu, size=2)
        status, _, body = call(emu, "POST", "/volumes", {"volume": {"name": "x", "size": 2}})
    assert (413, True) == (status, "gigabytes" in body["overLimit"]["message"])


def test_pagination_links_and_metadata_filter(emu: CinderEmulator) -> None:
    """limit/marker pages with a next link; the metadata filter matches a subset of metadata."""
    for i in range(5):
        create(emu, f"v{i}", metadata={"team": "a" if i % 2 == 0 else "b", "i": str(i)})
    query = "/volumes/detail?limit=2&metadata=" + urllib.parse.quote(str({"team": "a"}))
    _, _, first = call(emu, "GET", query)
    _, _, second = call(emu, "GET", first["volumes_links"][0]["href"])
    names = [v["name"] for v in first["volumes"] + second["volumes"]]
    assert (["v4", "v2", "v0"], False) == (names, "volumes_links" in second)


def test_unknown_volume_type_is_404(emu: CinderEmulator) -> None:
    """A type name the emulator does not have is refused like Cinder does."""
    status, _, _ = call(emu, "POST", "/volumes", {"volume": {"size": 1, "volume_type": "gold"}})
    assert 404 == status


def test_delete_refused_with_snapshots_unless_cascade(emu: CinderEmulator, clock: Clock) -> None:
    """'has snapshots' → 400 Invalid volume; cascade deletes volume and snapshots."""
    vid = create(emu)["id"]
    clock.now += 10
    call(emu, "POST", "/snapshots", {"snapshot": {"volume_id": vid, "name": "s"}})
    refused, _, body = call(emu, "DELETE", f"/volumes/{vid}")
    cascade = call(emu, "DELETE", f"/volumes/{vid}?cascade=True")[0]
    clock.now += 5
    assert (400, True, 202, [], []) == (
        refused,
        "have snapshots" in body["badRequest"]["message"],
        cascade,
        emu.volumes(),
        emu.snapshots(),
    )


def test_attachments_need_3_27_and_complete_3_44(emu: CinderEmulator, clock: Clock) -> None:
    """Below 3.27 the attachments API does not exist; os-complete needs 3.44."""
    vid = create(emu)["id"]
    clock.now += 10
    old = call(emu, "POST", "/attachments", {"attachment": {"volume_uuid": vid}}, version="3.26")[0]
    _, _, att = call(emu, "POST", "/attachments", {"attachment": {"volume_uuid": vid}}, version="3.27")
    aid = att["attachment"]["id"]
    early = call(emu, "POST", f"/attachments/{aid}/action", {"os-complete": None}, version="3.43")[0]
    done = call(emu, "POST", f"/attachments/{aid}/action", {"os-complete": None}, version="3.44")[0]
    assert (404, 404, 204, "in-use") == (old, early, done, status_of(emu, vid))


def test_iscsi_profile_multipath_and_chap(clock: Clock) -> None:
    """An iSCSI profile with extra portals and CHAP returns target_portals and both CHAP sets."""
    profile = IscsiProfile(
        extra_portals=("10.0.0.2:3260",),
        auth_method="CHAP",
        auth_username="u",
        auth_password="p",
        discovery_auth_method="CHAP",
        discovery_auth_username="du",
        discovery_auth_password="dp",
    )
    with CinderEmulator(profiles={"gold": profile}, clock=clock) as emu:
        vid = create(emu, volume_type="gold")["id"]
        body = {"os-initialize_connection": {"connector": {"initiator": "iqn.x", "multipath": True}}}
        _, _, out = call(emu, "POST", f"/volumes/{vid}/action", body)
    data = out["connection_info"]["data"]
    expected = (["127.0.0.1:3260", "10.0.0.2:3260"], "CHAP", "p", "dp")
    assert expected == (
        data["target_portals"],
        data["auth_method"],
        data["auth_password"],
        data["discovery_auth_password"],
    )


def test_rbd_profile_namespace_and_keyring(clock: Clock) -> None:
    """An RBD profile with a rados namespace and keyring shapes name and keyring like Cinder's driver."""
    profile = RbdProfile(pool="p", rados_namespace="ns", hosts=("::1",), keyring="[client.x]\nkey = K\n")
    with CinderEmulator(profiles={"ceph": profile}, clock=clock) as emu:
        vid = create(emu, volume_type="ceph")["id"]
        body: dict[str, Any] = {"os-initialize_connection": {"connector": {}}}
        data = call(emu, "POST", f"/volumes/{vid}/action", body)[2]["connection_info"]["data"]
    assert (f"p/ns/volume-{vid}", ["::1"], True) == (
        data["name"],
        data["hosts"],
        "key = K" in data["keyring"],
    )


def test_call_log_and_inspection(emu: CinderEmulator, clock: Clock) -> None:
    """The call log names operation, microversion and status; inspection shows the attachment's connector."""
    vid = create(emu)["id"]
    clock.now += 10
    connector = {"host": "h", "initiator": "iqn.y"}
    call(emu, "POST", "/attachments", {"attachment": {"volume_uuid": vid, "connector": connector}})
    last = emu.calls()[-1]
    assert (("create_attachment", "3.71", 200), connector) == (
        (last.operation, last.microversion, last.status),
        emu.attachments()[0]["connector"],
    )


def test_latency_is_applied_per_operation(emu: CinderEmulator) -> None:
    """set_latency delays only the named operation (real time; kept tiny)."""
    emu.faults.set_latency("list_volumes", 0.2)
    t0 = time.monotonic()
    call(emu, "GET", "/volumes")
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    call(emu, "GET", "/snapshots")
    fast = time.monotonic() - t0
    assert (True, True) == (slow >= 0.2, fast < 0.2)


def test_thousand_creates_are_fast() -> None:
    """1,000 creates through the HTTP API finish well within the benchmark's budget."""
    with CinderEmulator() as emu:
        t0 = time.monotonic()
        for i in range(1000):
            create(emu, f"bulk-{i}")
        elapsed = time.monotonic() - t0
        count = len(emu.volumes())
    assert (1000, True) == (count, elapsed < 30)
