"""The benchmark's arithmetic, kept pure so it can be tested line by line.

Nothing here starts a process or opens a socket: it parses what ``/proc`` and ``wait4`` say about the
controller process, names the Kubernetes request and Cinder call each log line is, attributes them to the
claim they served (or to the process's fixed cost: lists, watches, the Lease), and turns wall time into
efficiency against the physical bound ``N·T/C`` (no provisioner can bind N claims faster when Cinder takes
T seconds per create and C creates may be in flight).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

MIB = 1024 * 1024


# --- the controller process: CPU and memory ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcUsage:
    """CPU seconds (user, system) and memory (KiB) of one process at one moment."""

    user_s: float
    system_s: float
    rss_kib: int = 0
    hwm_kib: int = 0  # peak resident set size so far

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds."""
        return self.user_s + self.system_s


def parse_proc_stat(text: str, clock_ticks: int) -> tuple[float, float]:
    """(utime, stime) in seconds from ``/proc/<pid>/stat``.

    The second field is the command name in parentheses and may itself hold spaces and ``)``, so fields
    are counted from the *last* ``)``; utime and stime are fields 14 and 15 (1-based), in clock ticks.
    """
    close = text.rfind(")")
    if close < 0:
        raise ValueError("not a /proc/<pid>/stat line: no ')' after the command name")
    rest = text[close + 1 :].split()
    # rest[0] is field 3 (state): field k is rest[k - 3]
    if len(rest) < 13:
        raise ValueError(f"/proc/<pid>/stat has {len(rest) + 2} fields, expected at least 15")
    return int(rest[11]) / clock_ticks, int(rest[12]) / clock_ticks


def parse_proc_status(text: str) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (KiB) from ``/proc/<pid>/status``; a missing line is left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("VmRSS", "VmHWM"):
            number, _, unit = value.strip().partition(" ")
            if unit.strip() not in ("kB", ""):
                raise ValueError(f"{key} in unexpected unit {unit!r}")
            out[key] = int(number)
    return out


def usage_from_proc(stat: str, status: str, clock_ticks: int) -> ProcUsage:
    """A :class:`ProcUsage` from the texts of ``/proc/<pid>/stat`` and ``/proc/<pid>/status``."""
    user, system = parse_proc_stat(stat, clock_ticks)
    mem = parse_proc_status(status)
    return ProcUsage(user_s=user, system_s=system, rss_kib=mem.get("VmRSS", 0), hwm_kib=mem.get("VmHWM", 0))


#: the columns of the ``cpu`` line of ``/proc/stat`` (proc(5)), in clock ticks since boot
HOST_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_host_cpu(text: str) -> dict[str, int]:
    """The whole machine's CPU ticks by column from ``/proc/stat`` (its first line, ``cpu …``)."""
    first = text.split("\n", 1)[0].split()
    if not first or first[0] != "cpu" or len(first) < 1 + len(HOST_COLUMNS):
        raise ValueError("not /proc/stat: its first line is not 'cpu' and 8 columns")
    return {name: int(v) for name, v in zip(HOST_COLUMNS, first[1:], strict=False)}


def host_cpu_report(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """Shares of the machine's CPU time between two readings: busy (not idle or iowait) and **steal**
    (time a virtual machine's CPUs were runnable but the hypervisor ran someone else: the same code
    measures slower then, and the benchmark's CPU figures grow with it)."""
    delta = {k: after[k] - before[k] for k in HOST_COLUMNS}
    total = sum(delta.values())
    if total <= 0:
        return {"host_busy_pct": 0.0, "host_steal_pct": 0.0}
    busy = total - delta["idle"] - delta["iowait"] - delta["steal"]
    return {
        "host_busy_pct": round(100 * busy / total, 1),
        "host_steal_pct": round(100 * delta["steal"] / total, 1),
    }


def usage_from_rusage(rusage: Any) -> ProcUsage:
    """A :class:`ProcUsage` from ``os.wait4``'s ``resource.struct_rusage`` (Linux: ``ru_maxrss`` in KiB)."""
    return ProcUsage(
        user_s=float(rusage.ru_utime),
        system_s=float(rusage.ru_stime),
        hwm_kib=int(rusage.ru_maxrss),
    )


# --- naming requests -----------------------------------------------------------------------------------

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeRequest:
    """One line of the simulator's request log."""

    method: str
    path: str
    query: str = ""
    status: int = 200
    watch: bool = False
    at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CinderCall:
    """One line of the emulator's call log; ``volume`` is a volume id, or a name (``pvc-<uid>``)."""

    operation: str
    path: str
    status: int = 200
    at: float = 0.0
    result_id: str | None = None
    volume: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where a request went: verb, resource (with subresource), namespace and object name ('' for none)."""

    verb: str
    resource: str
    namespace: str = ""
    name: str = ""

    @property
    def key(self) -> str:
        """``verb resource``, e.g. ``patch persistentvolumeclaims``, ``create events``."""
        return f"{self.verb} {self.resource}"


def kube_target(req: KubeRequest) -> Target:
    """Name a request like the API server's audit log does: verb + resource (+ subresource).

    ``/api/v1/namespaces/ns/persistentvolumeclaims/c1/status`` PUT → ``update persistentvolumeclaims/status``
    on ``ns/c1``; a GET without a name is ``list`` (``watch`` when it is a watch).
    """
    parts = [p for p in req.path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]  # api, v1
    elif parts[:1] == ["apis"]:
        parts = parts[3:]  # apis, group, version
    else:
        return Target(verb=req.method.lower(), resource=req.path)
    namespace = ""
    if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) != 2:
        namespace, parts = parts[1], parts[2:]
    resource = parts[0] if parts else ""
    name = parts[1] if len(parts) > 1 else ""
    if len(parts) > 2:
        resource = f"{resource}/{parts[2]}"
    if req.method == "GET":
        verb = "watch" if req.watch or "watch=true" in req.query.lower() else ("get" if name else "list")
    else:
        verb = _VERBS.get(req.method, req.method.lower())
    return Target(verb=verb, resource=resource, namespace=namespace, name=name)


# --- attribution ---------------------------------------------------------------------------------------

_PV_NAME = re.compile(r"^pvc-([0-9a-f-]{36})$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Requests that are per-claim work even though their path names no claim: creates are POSTed to the
#: collection (the object's name is only in the body, which the log does not keep).
PER_CLAIM_UNNAMED = frozenset({"create events", "create persistentvolumes", "create secrets"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribution:
    """Requests per claim (by key), per-claim creates whose claim the log cannot name, and what no
    claim caused (start-up lists, watches, the Lease)."""

    per_claim: Mapping[str, Counter[str]] = field(default_factory=dict)
    unnamed_per_claim_work: Counter[str] = field(default_factory=Counter)
    fixed: Counter[str] = field(default_factory=Counter)

    def claims_over(self, limit: float) -> list[str]:
        """Claims whose own requests exceed ``limit`` (the unnamed creates shared out evenly)."""
        n = max(len(self.per_claim), 1)
        shared = sum(self.unnamed_per_claim_work.values()) / n
        return sorted(c for c, k in self.per_claim.items() if sum(k.values()) + shared > limit)


def attribute_kube(requests: Iterable[KubeRequest], claims: Mapping[str, str]) -> Attribution:
    """Attribute each request to the claim it served.

    ``claims`` maps claim uid → claim name. A request names a claim by its path (the claim itself, or the
    PV ``pvc-<uid>`` provisioned for it); creates of Events, PVs and Secrets go to
    ``unnamed_per_claim_work``; everything else
    (lists, watches, the Lease, other objects) is the process's ``fixed`` cost.
    """
    names = set(claims.values())
    per: dict[str, Counter[str]] = {name: Counter() for name in names}
    unnamed: Counter[str] = Counter()
    fixed: Counter[str] = Counter()
    for req in requests:
        t = kube_target(req)
        owner: str | None = None
        base = t.resource.split("/")[0]
        if base == "persistentvolumeclaims" and t.name in names:
            owner = t.name
        elif base == "persistentvolumes":
            m = _PV_NAME.match(t.name)
            owner = claims.get(m.group(1)) if m else None
        if owner is not None:
            per[owner][t.key] += 1
        elif t.key in PER_CLAIM_UNNAMED:
            unnamed[t.key] += 1
        else:
            fixed[t.key] += 1
    return Attribution(per_claim=per, unnamed_per_claim_work=unnamed, fixed=fixed)


def attribute_cinder(
    calls: Iterable[CinderCall], claims: Mapping[str, str], *, since: float = float("-inf")
) -> Attribution:
    """Attribute Cinder calls (in log order) to claims.

    A call names its claim by the volume name ``pvc-<uid>`` (a create's body, a lookup's name or uid
    filter in the query) or by the id of something already attributed (``/volumes/<id>``, an attachment's
    ``volume_uuid``, ``/attachments/<id>/action``): every answered id (``result_id``) is remembered for its
    claim. Keystone, version discovery and unfiltered lists are ``fixed``. Only calls at or after ``since``
    are counted; earlier ones still teach which id belongs to which claim (a delete burst's calls name
    volumes created long before).
    """
    names = set(claims.values())
    per: dict[str, Counter[str]] = {name: Counter() for name in names}
    owners: dict[str, str] = {}  # volume / attachment id → claim name
    fixed: Counter[str] = Counter()
    for call in calls:
        owner = _cinder_owner(call, claims, owners)
        if owner is not None and call.result_id:
            owners[call.result_id] = owner
        if call.at < since:
            continue
        if owner is None:
            fixed[call.operation] += 1
        else:
            per[owner][call.operation] += 1
    return Attribution(per_claim=per, fixed=fixed)


def _cinder_owner(call: CinderCall, claims: Mapping[str, str], owners: Mapping[str, str]) -> str | None:
    m = _PV_NAME.match(call.volume or "")
    if m:
        return claims.get(m.group(1))
    if call.volume is not None and call.volume in owners:
        return owners[call.volume]
    path = unquote(call.path)
    for segment in re.split(r"[/?&=,:\"' {}]", path):
        if segment in owners:
            return owners[segment]
    for uid in _UUID.findall(path):  # a lookup by the claim's uid (metadata filter) or PV name
        if uid in claims:
            return claims[uid]
    return None


def per_claim_by_key(counts: Counter[str], n: int) -> dict[str, float]:
    """Every count divided by the number of claims, sorted by key (for the table and JSON)."""
    return {k: round(v / n, 3) for k, v in sorted(counts.items())} if n else {}


def kube_counts(requests: Iterable[KubeRequest]) -> Counter[str]:
    """Requests by ``verb resource``."""
    return Counter(kube_target(r).key for r in requests)


_CINDER_COUNT = re.compile(r"^cinder_provisioner_cinder_request_seconds_count\{([^}]*)\}\s+(\S+)$", re.M)
_OPERATION = re.compile(r'(?:^|,)operation="([^"]*)"')


def cinder_calls_from_metrics(text: str) -> Counter[str]:
    """Cinder calls by operation from the provisioner's ``/metrics`` text (the latency histogram's
    ``_count`` samples, every status summed: one per attempt, as the adapter observes them)."""
    out: Counter[str] = Counter()
    for labels, value in _CINDER_COUNT.findall(text):
        op = _OPERATION.search(labels)
        if op:
            out[op.group(1)] += int(float(value))
    return out


_SLOT_HELD = re.compile(r"^cinder_provisioner_cinder_slot_seconds_total\{([^}]*)\}\s+(\S+)$", re.M)
_SLOT_WAIT = re.compile(r"^cinder_provisioner_cinder_slot_wait_seconds_(sum|count)\{([^}]*)\}\s+(\S+)$", re.M)


@dataclass(frozen=True, slots=True)
class SlotUse:
    """One operation's use of the in-flight cap, every cloud summed: slot-seconds held, attempts, and
    the seconds they waited for a slot."""

    held_s: float
    attempts: int
    waited_s: float


def slot_use_from_metrics(text: str) -> dict[str, SlotUse]:
    """The in-flight cap's use by operation from the provisioner's ``/metrics`` text."""
    held: dict[str, float] = defaultdict(float)
    waited: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for labels, value in _SLOT_HELD.findall(text):
        if op := _OPERATION.search(labels):
            held[op.group(1)] += float(value)
    for kind, labels, value in _SLOT_WAIT.findall(text):
        if op := _OPERATION.search(labels):
            if kind == "count":
                count[op.group(1)] += int(float(value))
            else:
                waited[op.group(1)] += float(value)
    return {
        op: SlotUse(held_s=held[op], attempts=count[op], waited_s=waited[op])
        for op in sorted(set(held) | set(count))
    }


def slot_use_since(after: Mapping[str, SlotUse], before: Mapping[str, SlotUse]) -> dict[str, SlotUse]:
    """The slot use between two readings of the (cumulative) metrics."""
    zero = SlotUse(held_s=0.0, attempts=0, waited_s=0.0)
    out = {}
    for op, a in after.items():
        b = before.get(op, zero)
        if a.attempts > b.attempts:
            out[op] = SlotUse(
                held_s=a.held_s - b.held_s, attempts=a.attempts - b.attempts, waited_s=a.waited_s - b.waited_s
            )
    return out


def slot_report(use: Mapping[str, SlotUse], in_flight: int, n: int) -> dict[str, Any]:
    """Where the cap's slot-seconds went: per operation (total, and per attempt in ms), their sum over C
    (the wall time the cap was full for that work alone) and the mean wait of a create for its slot."""
    total = sum(u.held_s for u in use.values())
    create = use.get("create_volume")
    return {
        "slot_seconds_by_operation": {op: round(u.held_s, 2) for op, u in use.items()},
        "slot_ms_per_attempt": {
            op: round(1000 * u.held_s / u.attempts, 1) for op, u in use.items() if u.attempts
        },
        "slot_seconds_per_pvc": round(total / n, 4) if n else None,
        "slot_busy_s": round(total / in_flight, 3),
        "create_slot_wait_mean_s": round(create.waited_s / create.attempts, 3)
        if create and create.attempts
        else None,
    }


def within(records: Iterable[Any], start: float, end: float) -> list[Any]:
    """Records whose ``at`` lies in ``[start, end]``."""
    return [r for r in records if start <= r.at <= end]


# --- efficiency ---------------------------------------------------------------------------------------


def physical_bound(n: int, latency_s: float, in_flight: int) -> float:
    """``N·T/C``: the least wall time for N creates of T seconds, C at a time (seconds)."""
    if n < 0 or latency_s < 0 or in_flight < 1:
        raise ValueError("N ≥ 0, T ≥ 0 and C ≥ 1 are required")
    return n * latency_s / in_flight


def efficiency(bound_s: float, wall_s: float) -> float:
    """bound / wall (1.0 = as fast as physics allows); a wall of 0 with work to do is an error."""
    if wall_s <= 0:
        raise ValueError("wall time must be positive")
    return bound_s / wall_s


def cpu_ms_per_claim(cpu_s: float, n: int) -> float:
    """Milliseconds of CPU per claim."""
    if n <= 0:
        raise ValueError("at least one claim is required")
    return cpu_s * 1000.0 / n


def bytes_per_object(rss_kib: int, baseline_rss_kib: int, objects: int) -> float:
    """Resident memory the objects added, per object (bytes): (RSS - RSS of an empty cluster) / objects."""
    if objects <= 0:
        raise ValueError("at least one object is required")
    return (rss_kib - baseline_rss_kib) * 1024.0 / objects


# --- the result ---------------------------------------------------------------------------------------

#: The JSON keys of issue 13, in order, each with its target (None: no target of its own) and direction.
TARGETS: dict[str, tuple[float | None, str]] = {
    "p1_efficiency": (0.95, ">="),
    "p1_cpu_ms_per_pvc": (2.0, "<="),
    "p1_peak_rss_mib": (80.0, "<="),
    "p1_kube_requests_per_pvc": (4.0, "<="),
    "p1_cinder_calls_per_pvc": (3.0, "<="),
    "p1_defaults_efficiency": (0.85, ">="),
    "p2_bytes_per_object": (10 * 1024.0, "<="),
    "p2_ready_s": (5.0, "<="),
    "p3_failover_s": (None, "<="),  # lease duration + 2 s: depends on the lease timing used
    "p3_failover_tuned_s": (5.0, "<="),
    "p4_overhead_ms": (50.0, "<="),
    "p4_recovery_s": (1.0, "<="),
    "p5_ratio": (1.2, "<="),
}


def meets(value: float | None, target: float | None, direction: str) -> bool | None:
    """Whether ``value`` meets ``target`` (None when either is unknown)."""
    if value is None or target is None:
        return None
    return value >= target if direction == ">=" else value <= target


def summary_line(values: Mapping[str, float | None]) -> dict[str, float | None]:
    """Exactly the issue's keys, in its order; a part not run is null. Unknown keys are refused."""
    unknown = set(values) - set(TARGETS)
    if unknown:
        raise KeyError(f"not a benchmark key: {', '.join(sorted(unknown))}")
    return {
        k: (round(float(v), 3) if v is not None else None) for k, v in ((k, values.get(k)) for k in TARGETS)
    }


def render_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """A plain text table: measure, value, target, bound/notes."""
    header = ("measure", "value", "target", "bound / notes")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
