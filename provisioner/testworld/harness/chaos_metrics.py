"""What the servers saw, per claim: the chaos harness's behaviour counters and bounds.

Why separate from the harness: the counters must come from the simulators' request logs, not from the
controller's own metrics (a controller that miscounts its calls must not pass), and attributing a request
to a claim is fiddly enough to need its own tests (``tests/unit/test_chaos_metrics.py`` feeds synthetic
logs). Everything here is a pure function of the logs, the Events and the claims the harness created.

Attribution of a Cinder call: every UUID in its path, query and body is looked up — a claim's uid (the
volume name ``pvc-<uid>``, the ``pvc-uid`` metadata, a ``name=`` filter) wins over the id of an object a
claim's earlier call created (volume, snapshot, attachment: learned from ``result_id``) and over ids the
harness declared for a claim (the bad restore target). A call naming no claim, or two, is "unattributed".
"""

from __future__ import annotations

import json
import re
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from provisioner.testworld.cinder_emulator.http import CallRecord
from provisioner.testworld.kube_sim.faults import RequestRecord

ClaimKind = Literal["healthy", "bad_type", "bad_restore"]
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PVC_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/persistentvolumeclaims/([^/]+)(?:/status)?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A claim the harness created: who it is, when, and what it was meant to exercise."""

    namespace: str
    name: str
    uid: str
    created_at: float  # time.monotonic() just before the create
    kind: ClaimKind = "healthy"
    ids: frozenset[str] = frozenset()  # Cinder ids only this claim's requests mention (bad restore target)


@dataclass(slots=True)
class Seen:
    """One claim's counters: when Cinder and the API server saw it, and its Events."""

    cinder: list[float] = field(default_factory=list)  # call times, sorted
    writes: list[float] = field(default_factory=list)  # PATCH/PUT times on the claim, sorted
    event_objects: int = 0
    event_count: int = 0  # sum of Event.count
    event_duplicates: int = 0  # Event objects beyond one per (type, reason, message): not aggregated
    event_reasons: int = 0  # distinct reasons (objects > reasons: the same reason was not aggregated)
    event_instances: int = 0  # distinct reportingInstance: each new leader starts its own Event objects
    #: when each Event object was first written (monotonic, from firstTimestamp: 1 s resolution), sorted
    event_first: list[float] = field(default_factory=list)
    event_messages: list[str] = field(default_factory=list)  # "reason: message" of each object, sorted


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What a claim that can never succeed may cost (over its first ``window_seconds``)."""

    window_seconds: float = 60.0
    bad_calls: int = 12
    bad_writes: int = 12
    bad_events: int = 6  # Event objects in the window (one per distinct type/reason/message, count rising)
    bad_event_duplicates: int = 0  # the rule: one Event per (claim, reason, message), never more
    calls_per_second: int | None = None  # any one claim; None = report only


def _uuids(call: CallRecord) -> set[str]:
    text = unquote_plus(call.path)
    if call.body is not None:
        text += " " + json.dumps(call.body)
    return {m.lower() for m in _UUID.findall(text)}


def _claim_of(found: set[str], uids: set[str], ids: Mapping[str, str]) -> str | None:
    """The one claim a request names (its uid first, else the ids of its objects); None if none or two."""
    named = found & uids
    if not named:
        named = {ids[i] for i in found if i in ids}
    return next(iter(named)) if len(named) == 1 else None


def attribute_cinder(
    calls: Sequence[CallRecord], claims: Iterable[Claim]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """(claim uid → times of the Cinder calls made for it, operation → calls naming no single claim)."""
    uids = set()
    ids: dict[str, str] = {}
    for c in claims:
        uids.add(c.uid.lower())
        ids.update({i.lower(): c.uid.lower() for i in c.ids})
    found = [_uuids(call) for call in calls]
    for call, seen in zip(calls, found, strict=True):  # first pass: learn which claim created which id
        if call.result_id is not None:
            owner = _claim_of(seen, uids, ids)
            if owner is not None:
                ids.setdefault(call.result_id.lower(), owner)
    out: dict[str, list[float]] = {u: [] for u in uids}
    unattributed: dict[str, int] = {}
    for call, seen in zip(calls, found, strict=True):
        owner = _claim_of(seen, uids, ids)
        if owner is None:
            unattributed[call.operation] = unattributed.get(call.operation, 0) + 1
        else:
            out[owner].append(call.at)
    for times in out.values():
        times.sort()
    return out, unattributed


def volumes_created(calls: Sequence[CallRecord], claims: Iterable[Claim]) -> set[str]:
    """Ids of the volumes Cinder created for any of ``claims`` (successful creates naming one of them)."""
    uids = {c.uid.lower() for c in claims}
    return {
        call.result_id
        for call in calls
        if call.operation == "create_volume" and call.result_id is not None and _uuids(call) & uids
    }


def claim_writes(requests: Sequence[RequestRecord], claims: Iterable[Claim]) -> dict[str, list[float]]:
    """Claim uid → times of the PATCH/PUT requests on it (object or status)."""
    by_name = {(c.namespace, c.name): c.uid.lower() for c in claims}
    out: dict[str, list[float]] = {u: [] for u in by_name.values()}
    for r in requests:
        if r.method not in ("PATCH", "PUT"):
            continue
        m = _PVC_PATH.match(r.path)
        uid = by_name.get((m.group(1), m.group(2))) if m else None
        if uid is not None:
            out[uid].append(r.at)
    for times in out.values():
        times.sort()
    return out


def claim_events(events: Iterable[Mapping[str, Any]], claims: Iterable[Claim]) -> dict[str, Seen]:
    """Claim uid → the Event part of :class:`Seen` (objects, sum of ``count``, distinct reasons)."""
    by_name = {(c.namespace, c.name): c.uid.lower() for c in claims}
    uids = set(by_name.values())
    out: dict[str, Seen] = {}
    reasons: dict[str, set[str]] = {}
    instances: dict[str, set[str]] = {}
    keys: dict[str, set[tuple[str, str, str]]] = {}
    for e in events:
        obj = e.get("involvedObject") or {}
        if obj.get("kind") not in (None, "PersistentVolumeClaim"):
            continue
        uid = str(obj.get("uid") or "").lower()
        if uid not in uids:
            found = by_name.get((str(obj.get("namespace") or ""), str(obj.get("name") or "")))
            if found is None:
                continue
            uid = found
        s = out.setdefault(uid, Seen())
        s.event_objects += 1
        s.event_count += int(e.get("count") or 1)
        first = _monotonic_of(e.get("firstTimestamp"))
        if first is not None:
            insort(s.event_first, first)
        insort(s.event_messages, f"{e.get('reason')}: {str(e.get('message') or '')[:120]}")
        reasons.setdefault(uid, set()).add(str(e.get("reason") or ""))
        s.event_reasons = len(reasons[uid])
        keys.setdefault(uid, set()).add(
            (str(e.get("type") or ""), str(e.get("reason") or ""), str(e.get("message") or ""))
        )
        s.event_duplicates = s.event_objects - len(keys[uid])
        instances.setdefault(uid, set()).add(str(e.get("reportingInstance") or ""))
        s.event_instances = len(instances[uid])
    return out


def collect(
    claims: Sequence[Claim],
    calls: Sequence[CallRecord],
    requests: Sequence[RequestRecord],
    events: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, Seen], dict[str, int]]:
    """(claim uid → what the servers saw of it, operation → unattributed Cinder calls)."""
    cinder, unattributed = attribute_cinder(calls, claims)
    writes = claim_writes(requests, claims)
    evs = claim_events(events, claims)
    seen: dict[str, Seen] = {}
    for c in claims:
        uid = c.uid.lower()
        ev = evs.get(uid, Seen())
        seen[uid] = Seen(
            cinder=cinder[uid],
            writes=writes[uid],
            event_objects=ev.event_objects,
            event_count=ev.event_count,
            event_reasons=ev.event_reasons,
            event_duplicates=ev.event_duplicates,
            event_instances=ev.event_instances,
            event_first=ev.event_first,
            event_messages=ev.event_messages,
        )
    return seen, unattributed


def _monotonic_of(stamp: Any) -> float | None:
    """An RFC 3339 timestamp of this process's wall clock as a ``time.monotonic()`` reading."""
    if not stamp:
        return None
    try:
        wall = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return wall - (time.time() - time.monotonic())


def within(times: Sequence[float], start: float, seconds: float) -> int:
    """How many of the sorted ``times`` fall in ``[start, start + seconds)``."""
    return bisect_left(times, start + seconds) - bisect_left(times, start)


def max_per_window(times: Sequence[float], seconds: float = 1.0) -> int:
    """The most sorted ``times`` inside any window of ``seconds`` (sliding)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= seconds:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def summarize(
    claims: Sequence[Claim], seen: Mapping[str, Seen], unattributed: Mapping[str, int], bounds: Bounds
) -> dict[str, Any]:
    """The behaviour keys of the chaos summary, with ``bounds_ok`` and the ``violations`` found."""
    healthy = [seen[c.uid.lower()] for c in claims if c.kind == "healthy"]
    violations: list[str] = []
    bad: dict[str, dict[str, int]] = {}
    messages: dict[str, list[str]] = {}  # bad claim → its Event objects, for the human reading a violation
    w = bounds.window_seconds
    for c in claims:
        s = seen[c.uid.lower()]
        rate = max_per_window(s.cinder)
        if bounds.calls_per_second is not None and rate > bounds.calls_per_second:
            violations.append(
                f"{c.name}: {rate} Cinder calls in one second (bound {bounds.calls_per_second})"
            )
        if c.kind == "healthy":
            continue
        row = {
            "calls_window": within(s.cinder, c.created_at, w),
            "writes_window": within(s.writes, c.created_at, w),
            "event_objects": s.event_objects,
            "event_objects_window": within(s.event_first, c.created_at - 1.0, w + 1.0),
            "events": s.event_count,
            "event_reasons": s.event_reasons,
            "event_duplicates": s.event_duplicates,
            "event_instances": s.event_instances,
            "calls_per_second_max": rate,
            "calls": len(s.cinder),
        }
        bad[c.name] = row
        messages[c.name] = s.event_messages
        for key, bound, what in (
            ("calls_window", bounds.bad_calls, f"Cinder calls in its first {w:g} s"),
            ("writes_window", bounds.bad_writes, f"claim writes in its first {w:g} s"),
            ("event_objects_window", bounds.bad_events, f"Event objects in its first {w:g} s"),
            ("event_duplicates", bounds.bad_event_duplicates, "duplicate Event objects"),
        ):
            if row[key] > bound:
                violations.append(f"{c.name} ({c.kind}): {row[key]} {what} (bound {bound})")

    def worst(key: str) -> int:
        return max((r[key] for r in bad.values()), default=0)

    calls = [len(s.cinder) for s in healthy]
    writes = [len(s.writes) for s in healthy]
    return {
        "bad_calls_window_max": worst("calls_window"),
        "bad_writes_window_max": worst("writes_window"),
        "bad_event_objects_max": worst("event_objects"),
        "bad_event_objects_window_max": worst("event_objects_window"),
        "bad_event_duplicates_max": worst("event_duplicates"),
        "bad_calls_per_second_max": worst("calls_per_second_max"),
        "healthy_calls_p50": percentile(calls, 50),
        "healthy_calls_max": max(calls, default=0),
        "healthy_writes_p50": percentile(writes, 50),
        "healthy_writes_max": max(writes, default=0),
        "healthy_event_objects_max": max((s.event_objects for s in healthy), default=0),
        "calls_per_second_max": max((max_per_window(s.cinder) for s in seen.values()), default=0),
        "cinder_calls_attributed": sum(len(s.cinder) for s in seen.values()),
        "cinder_calls_unattributed": sum(unattributed.values()),
        "cinder_unattributed_by_operation": dict(sorted(unattributed.items())),
        "bad_claims": bad,
        "bad_claim_event_messages": messages,
        "bounds_ok": not violations,
        "violations": violations,
    }


class WorkerDeaths:
    """Counts worker threads that ended while their replica was still meant to be running.

    A worker that returns because its replica stops (or hit an armed crash point, which takes the replica
    down on purpose) is not a death; one that ends while the replica runs on is a pool silently shrinking.
    """

    def __init__(self) -> None:
        self._dead: set[threading.Thread] = set()  # already counted

    def sample(self, threads: Iterable[threading.Thread], *, stopping: Callable[[], bool]) -> None:
        """Look at one replica's worker threads; ``stopping()`` says whether it is shutting down."""
        ended = [t for t in threads if not t.is_alive() and t not in self._dead]
        if ended and not stopping():  # read after is_alive(): stop flags are set before workers return
            self._dead.update(ended)

    @property
    def count(self) -> int:
        """Worker deaths seen so far."""
        return len(self._dead)
