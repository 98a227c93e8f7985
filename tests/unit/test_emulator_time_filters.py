"""The emulator's ``created_at`` list filter, as real Cinder parses and applies it (3.60+; dropped below)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from provisioner.testworld.cinder_emulator.routes import _filters, time_comparisons
from provisioner.testworld.cinder_emulator.state import ApiError, Rec, matches

REC = Rec(
    id="v1",
    seq=1,
    kind="volume",
    name="pvc-1",
    size=1,
    status="available",
    metadata={},
    created_at="2026-12-02T07:00:00.500000",
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("gte:2026-12-02T07:00:00", True, id="gte-floor"),
        pytest.param("gte:2026-12-02T07:00:00.500000", True, id="gte-exact"),
        pytest.param("gt:2026-12-02T07:00:00.500000", False, id="gt-exact"),
        pytest.param("gte:2026-12-02T07:00:01", False, id="after"),
        pytest.param("lt:2026-12-02T07:00:01Z", True, id="lt-with-zulu"),
        pytest.param("gt:2026-12-02T06:59:00,lt:2026-12-02T07:00:01", True, id="range"),
        pytest.param("gt:2026-12-02T07:00:01,lt:2026-12-02T07:00:02", False, id="range-outside"),
        pytest.param("neq:2026-12-02T07:00:00.500000", False, id="neq"),
    ],
)
def test_created_at_comparisons(raw: str, expected: bool) -> None:
    flt = _filters({"created_at": raw}, ("created_at",))
    assert expected is matches(REC, flt, like_filters=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("after:2026-12-02T07:00:00", "Invalid after operator", id="operator"),
        pytest.param("gte:yesterday", "Invalid yesterday value", id="time"),
        pytest.param("2026", "Invalid created_at value", id="no-operator"),
    ],
)
def test_a_bad_comparison_is_cinders_400(raw: str, message: str) -> None:
    with pytest.raises(ApiError) as e:
        time_comparisons("created_at", raw)
    assert (400, "badRequest", message) == (e.value.status, e.value.kind, e.value.message)


def test_below_3_60_the_route_drops_the_filter_like_cinder() -> None:
    """Cinder's ``_MV_ADDED_FILTERS``: an older request's ``created_at`` is removed, not refused."""
    import time

    from provisioner.testworld.cinder_emulator.emulator import DEFAULT_PROFILES
    from provisioner.testworld.cinder_emulator.faults import Faults
    from provisioner.testworld.cinder_emulator.routes import route
    from provisioner.testworld.cinder_emulator.state import Quota, Timing
    from provisioner.testworld.cinder_emulator.store import Store

    store = Store(
        project_id="p",
        profiles=DEFAULT_PROFILES,
        timing=Timing(),
        quota=Quota(),
        faults=Faults(),
        clock=time.monotonic,
    )
    store.create_volume({"name": "pvc-1", "size": 1})
    query = {"created_at": "gte:2999-01-01T00:00:00"}

    def names_listed(version: tuple[int, int]) -> list[str]:
        found = route("GET", "/v3/p/volumes/detail", None, version, query)
        assert found is not None
        _status, body = found.run(store, 1000, "http://cinder")
        return [v["name"] for v in body["volumes"]]

    assert (["pvc-1"], []) == (names_listed((3, 59)), names_listed((3, 60)))


def test_the_parsed_time_is_utc() -> None:
    ((op, when),) = time_comparisons("created_at", "gte:2026-12-02T07:00:00")
    assert ("gte", datetime(2026, 12, 2, 7, tzinfo=UTC)) == (op, when)
