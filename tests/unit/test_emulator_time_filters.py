"""The emulator's ``created_at`` list filter, as real Cinder parses and applies it (3.31+; dropped below).

Real Cinder's API reference dates the filter 3.60, but Cinder 29 honours it from 3.31 and ORs comma-separated
units; tests/contract/test_cinder_time_filters_wire.py checks both backends agree on what is pinned here.
"""

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
        pytest.param("gt:2026-12-02T06:59:00,lt:2026-12-02T07:00:01", True, id="both-units-hold"),
        pytest.param("gt:2026-12-02T07:00:01,lt:2026-12-02T07:00:02", True, id="or-not-a-range"),
        pytest.param("lt:2026-12-02T07:00:00,gt:2026-12-02T07:00:01", False, id="neither-unit-holds"),
        pytest.param("gt:2026-12-02T08:00:00,gt:2026-12-02T06:00:00", True, id="repeated-op-last-wins"),
        pytest.param("gt:2026-12-02T06:00:00,gt:2026-12-02T08:00:00", False, id="repeated-op-last-loses"),
        pytest.param("gte:2026-12-02T08:00:00+01:00", True, id="offset-to-utc"),
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
        pytest.param("GTE:2026-12-02T07:00:00", "Invalid GTE operator", id="case-sensitive"),
        pytest.param("gte:2026-12-02T07:00:00,", "Invalid  operator", id="trailing-comma"),
        pytest.param("2026", "Invalid 2026 operator", id="no-colon-is-the-operator"),
        pytest.param("gte", "Invalid gte value", id="no-colon-is-also-the-time"),
    ],
)
def test_a_bad_comparison_is_cinders_400(raw: str, message: str) -> None:
    with pytest.raises(ApiError) as e:
        time_comparisons(raw)
    assert (400, "badRequest", message) == (e.value.status, e.value.kind, e.value.message)


def test_below_3_31_the_route_drops_the_filter_like_cinder() -> None:
    """Cinder's ``_MV_ADDED_FILTERS`` pop runs only before 3.31 (generalized filtering): an older request's
    ``created_at`` is removed, not refused; from 3.31 (3.59 included) it applies."""
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

    seen = [names_listed(v) for v in ((3, 30), (3, 31), (3, 59), (3, 60))]
    assert [["pvc-1"], [], [], []] == seen


def test_the_parsed_time_is_utc() -> None:
    parsed = time_comparisons("gte:2026-12-02T07:00:00,lt:2026-12-02T09:00:00+01:00")
    assert {"gte": datetime(2026, 12, 2, 7, tzinfo=UTC), "lt": datetime(2026, 12, 2, 8, tzinfo=UTC)} == parsed
