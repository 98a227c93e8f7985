"""The Cinder emulator's outage fault (``fail_for``) and what its call log keeps for attribution."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from provisioner.testworld.cinder_emulator.emulator import CinderEmulator


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(emu: CinderEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One raw request (noauth token, microversion 3.71); returns status and JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{emu.cinder_url}{path}", data=data, method=method)  # noqa: S310 - local
    req.add_header("X-Auth-Token", emu.noauth_token)
    req.add_header("Content-Type", "application/json")
    req.add_header("OpenStack-API-Version", "volume 3.71")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local http URL
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        with e:
            raw, status = e.read(), e.code
    return status, json.loads(raw) if raw else None


def test_storm_fails_every_call_until_its_deadline() -> None:
    """``fail_for("*")`` answers 503 to every operation for its seconds, then the emulator serves again."""
    clock = Clock()
    with CinderEmulator(clock=clock) as emu:
        emu.faults.fail_for("*", seconds=60, status=503)
        assert emu.faults.storming()
        statuses = [
            call(emu, "GET", "/volumes/detail")[0],
            call(emu, "POST", "/volumes", {"volume": {"size": 1}})[0],
        ]
        assert [503, 503] == statuses
        clock.now += 60
        assert not emu.faults.storming()
        assert 200 == call(emu, "GET", "/volumes/detail")[0]


def test_clear_ends_a_storm() -> None:
    """``clear()`` forgets an outage like every other fault."""
    with CinderEmulator() as emu:
        emu.faults.fail_for("get_volume", seconds=600)
        emu.faults.clear()
        assert 200 == call(emu, "GET", "/volumes/detail")[0]


def test_call_log_keeps_the_request_body_and_the_created_id() -> None:
    """A create's record has the body it was sent and the new volume's id; a failed create has no id."""
    with CinderEmulator() as emu:
        emu.clear_calls()
        body = {"volume": {"size": 1, "name": "pvc-x", "metadata": {"k": "v"}}}
        _, out = call(emu, "POST", "/volumes", body)
        call(emu, "POST", "/volumes", {"volume": {"size": 1, "volume_type": "no-such-type"}})
        ok, missing = emu.calls()
    assert (body, out["volume"]["id"]) == (ok.body, ok.result_id)
    assert (404, None) == (missing.status, missing.result_id)
