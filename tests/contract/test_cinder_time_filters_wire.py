"""How Cinder reads the ``created_at`` list filter on the wire, on the emulator and on real OpenStack Cinder.

``test_cinder_time_filters`` pins what the adapter's ``list_volumes(created_since=)`` gets (one
``gte:<whole second>`` unit at 3.60+); this file pins the filter itself, through python-cinderclient at a
chosen microversion, so the emulator cannot drift from Cinder where the adapter does not look. What real
Cinder (29.0) does, read from ``cinder/api/v3/volumes.py`` and ``cinder/db/api.py`` and checked here:

- the filter is honoured from 3.31 (generalized resource filtering passes every filter through; the
  ``_MV_ADDED_FILTERS`` pop runs only below it), although the API reference dates it 3.60; below 3.31 it is
  dropped silently. The adapter still asks for 3.60, as documented;
- comma-separated units are alternatives (``_filter_time_comparison`` ORs them), so ``gt:A,lt:B`` is not a
  range; a repeated operator keeps its last time (the units become a dict keyed by operator);
- times compare to the microsecond; an offset (or ``Z``) is converted to UTC;
- a bad unit is 400 ``Invalid <operator> operator`` or ``Invalid <time> value``; a unit without ``:`` is
  read as both operator and time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cinderclient import exceptions as cinder_exceptions

from provisioner.adapters.cinder.session import make_client, make_session
from provisioner.domain import names
from provisioner.domain.model import CreateVolumeRequest, Volume
from tests.contract.conftest import CinderWorld

Wire = Callable[[str], Any]


def _create(cinder: CinderWorld, tag: dict[str, str]) -> Volume:
    request = CreateVolumeRequest(
        name=cinder.unique(),
        size_gib=1,
        volume_type="rbd",
        metadata={names.META_CLUSTER: cinder.cluster, **tag},
    )
    return cinder.wait_status(cinder.adapter.create_volume(request).id, "available")


def _batch(cinder: CinderWorld) -> dict[str, str]:
    return {"contract/batch": cinder.unique("batch")}


@pytest.fixture
def wire(cinder: CinderWorld) -> Iterator[Wire]:
    """A python-cinderclient for the backend at a given microversion (sessions closed afterwards)."""
    sessions: list[Any] = []

    def client(version: str) -> Any:
        sess = make_session(cinder.cloud, pool_size=1)
        sessions.append(sess)
        return make_client(sess, cinder.cloud, version)

    yield client
    for sess in sessions:
        sess.session.close()


def _stamp(wire: Wire, volume: Volume) -> str:
    """The volume's created_at exactly as Cinder shows it (microseconds, UTC, no offset)."""
    return str(wire("3.71").volumes.get(volume.id).created_at)


def _listed(wire: Wire, tag: dict[str, str], created_at: str, version: str = "3.71") -> set[str]:
    found = wire(version).volumes.list(search_opts={"metadata": tag, "created_at": created_at})
    return {str(v.id) for v in found}


def test_wire_the_filter_is_dropped_below_3_31_and_honoured_from_it(cinder: CinderWorld, wire: Wire) -> None:
    """``created_at=gt:<a minute after>``: ignored at 3.30 (listed), applied at 3.31, 3.59, 3.60."""
    tag = _batch(cinder)
    volume = _create(cinder, tag)
    when = datetime.fromisoformat(_stamp(wire, volume)) + timedelta(minutes=1)
    later = "gt:" + when.strftime("%Y-%m-%dT%H:%M:%S")
    seen = {version: _listed(wire, tag, later, version) for version in ("3.30", "3.31", "3.59", "3.60")}
    assert {"3.30": {volume.id}, "3.31": set(), "3.59": set(), "3.60": set()} == seen


def test_wire_comma_separated_units_are_alternatives(cinder: CinderWorld, wire: Wire) -> None:
    """``gt:A,lt:B`` lists both A and B (either unit holds), ``lt:A,gt:B`` neither: not a range."""
    tag = _batch(cinder)
    first, second = _create(cinder, tag), _create(cinder, tag)
    a, b = _stamp(wire, first), _stamp(wire, second)
    assert a < b
    seen = (_listed(wire, tag, f"gt:{a},lt:{b}"), _listed(wire, tag, f"lt:{a},gt:{b}"))
    assert ({first.id, second.id}, set()) == seen


def test_wire_a_repeated_operator_keeps_its_last_time(cinder: CinderWorld, wire: Wire) -> None:
    """``gt:B,gt:A`` is ``gt:A`` (B listed) and ``gt:A,gt:B`` is ``gt:B`` (nothing)."""
    tag = _batch(cinder)
    first, second = _create(cinder, tag), _create(cinder, tag)
    a, b = _stamp(wire, first), _stamp(wire, second)
    seen = (_listed(wire, tag, f"gt:{b},gt:{a}"), _listed(wire, tag, f"gt:{a},gt:{b}"))
    assert ({second.id}, set()) == seen


def test_wire_times_compare_to_the_microsecond(cinder: CinderWorld, wire: Wire) -> None:
    """eq/gte/gt/lte/lt/neq against the exact created_at; eq of its whole second matches nothing."""
    tag = _batch(cinder)
    volume = _create(cinder, tag)
    exact = _stamp(wire, volume)
    assert "." in exact  # Cinder keeps microseconds
    ops = ("eq", "gte", "lte", "gt", "lt", "neq")
    seen = {op: _listed(wire, tag, f"{op}:{exact}") == {volume.id} for op in ops}
    seen["eq-whole-second"] = _listed(wire, tag, "eq:" + exact.split(".")[0]) == {volume.id}
    expected = {"eq": True, "gte": True, "lte": True, "gt": False, "lt": False, "neq": False}
    assert {**expected, "eq-whole-second": False} == seen


def test_wire_an_offset_is_converted_to_utc(cinder: CinderWorld, wire: Wire) -> None:
    """The volume's floored second written at +01:00 (or with Z) lists it; a minute later at +01:00 not."""
    tag = _batch(cinder)
    volume = _create(cinder, tag)
    second = datetime.fromisoformat(_stamp(wire, volume).split(".")[0]).replace(tzinfo=UTC)
    plus_one = timezone(timedelta(hours=1))
    at = second.astimezone(plus_one).isoformat()
    later = (second + timedelta(minutes=1)).astimezone(plus_one).isoformat()
    zulu = second.strftime("%Y-%m-%dT%H:%M:%SZ")
    seen = [_listed(wire, tag, f"gte:{t}") for t in (at, zulu, later)]
    assert [{volume.id}, {volume.id}, set()] == seen


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo:2026-12-02T07:00:00", "Invalid foo operator"),
        ("GTE:2026-12-02T07:00:00", "Invalid GTE operator"),
        ("gte:yesterday", "Invalid yesterday value"),
        ("gte:2026-12-02T07:00:00,lt:soon", "Invalid soon value"),
        ("gte:2026-12-02T07:00:00,", "Invalid  operator"),
        ("2026-12-02", "Invalid 2026-12-02 operator"),  # no ':': the whole unit is the operator …
        ("gte", "Invalid gte value"),  # … and the time
    ],
)
def test_wire_a_bad_unit_is_400_in_cinders_words(
    cinder: CinderWorld, wire: Wire, value: str, message: str
) -> None:
    """A bad operator or time: 400 badRequest with Cinder's message, at 3.31 and at 3.71."""
    seen = []
    for version in ("3.31", "3.71"):
        with pytest.raises(cinder_exceptions.BadRequest) as info:
            wire(version).volumes.list(search_opts={"created_at": value})
        seen.append((info.value.code, info.value.message))
    assert [(400, message), (400, message)] == seen
