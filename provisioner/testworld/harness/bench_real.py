"""P5: ``cinder-provisioner run`` against real OpenStack Cinder vs calling that Cinder directly.

One real Cinder (``real_cinder.launcher``: API + scheduler + volume in one subprocess, the file-backed
``rbd`` backend) serves both contenders in the same run, one after the other:

- **direct**: C threads in this process, each taking the next of N volumes through create → poll
  ``GET /volumes/{id}`` every ``poll_s`` until ``available`` → ``POST /attachments`` with the connector the
  provisioner would send → ``os-complete``: the Cinder work of a claim with no Kubernetes around it, over
  plain keep-alive HTTP (no client library), the same size, type and number of metadata keys as ours;
- **ours**: one ``cinder-provisioner run`` process (the console script, shipped defaults except
  ``cinder_max_in_flight`` = C) against the Kubernetes simulator in the world server process, already
  running and leading; N claims are written into the store at once and timed until the last is Bound.

``ratio`` = Σ ours / Σ direct over the rounds (each round runs both; the order alternates, so a Cinder
that slows or warms over the run does not favour one side). Process start is not inside ours: P1 measures
it; here the question is what the provisioner adds to Cinder's own time per claim. Between runs every
volume is deleted (ours: the claims are deleted and the delete flow gives the volumes back; a volume left
in Cinder afterwards is a leak and breaks the benchmark).

Real Cinder here is one CPU-bound eventlet process: a burst's wall time is mostly Cinder's CPU (its API
answers take seconds under C concurrent requests), so polls cost Cinder time for both contenders alike.
"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from provisioner.config.settings import ConnectorConfig
from provisioner.testworld.harness import bench_stats as st
from provisioner.testworld.harness.bench_burst import BenchError
from provisioner.testworld.harness.bench_process import CLASS, Limits, RunProcess, WorldProcess

#: The volume type (and backend profile) both contenders create.
VOLUME_TYPE = "rbd"
#: Highest microversion we ask for: python-cinderclient 9.10's maximum, as the adapter negotiates it.
MICROVERSION_CAP = (3, 71)
#: Metadata keys a create of ours sets (cluster, namespace, name, uid, PV, class, created-by).
_OUR_METADATA_KEYS = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class RealSpec:
    """One P5 run: N claims (and N direct volumes) per round at C in flight."""

    n: int = 100
    in_flight: int = 16
    rounds: int = 2
    poll_s: float = 0.25
    warmup: int = 4
    log_level: str = "info"
    timeout_s: float = 900.0


class DirectCinder:
    """A minimal Cinder v3 client: one keep-alive ``http.client`` connection per thread, calls counted."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self._host, self._port, self._path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self._root = f"{parts.scheme}://{self._host}:{self._port}/"
        self._token = token
        self._local = threading.local()
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.microversion = "3.0"

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        return conn

    def request(self, operation: str, method: str, path: str, body: Any = None, *, root: bool = False) -> Any:
        headers = {
            "X-Auth-Token": self._token,
            "Accept": "application/json",
            "OpenStack-API-Version": f"volume {self.microversion}",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._conn()
        try:
            conn.request(method, ("/" if root else self._path) + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        with self._lock:
            self.calls[operation] += 1
        if resp.status >= 400:
            raise BenchError(f"direct {operation}: HTTP {resp.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def negotiate(self) -> str:
        """The highest v3 microversion Cinder and ``MICROVERSION_CAP`` allow (like the adapter)."""
        versions = self.request("discover", "GET", "", root=True)["versions"]
        v3 = next(v for v in versions if v["id"].startswith("v3"))
        major, minor = (int(x) for x in v3["version"].split("."))
        self.microversion = "{}.{}".format(*min((major, minor), MICROVERSION_CAP))
        return self.microversion

    def volumes(self) -> list[dict[str, Any]]:
        return list(self.request("list_volumes", "GET", "/volumes/detail?limit=1000")["volumes"])


def _one(client: DirectCinder, name: str, poll_s: float, deadline: float) -> tuple[float, str, str]:
    """create → available → attachment create + complete; (seconds, volume id, attachment id)."""
    started = time.monotonic()
    metadata = {f"bench/key-{i}": name for i in range(_OUR_METADATA_KEYS)}
    body = {"volume": {"size": 1, "name": name, "volume_type": VOLUME_TYPE, "metadata": metadata}}
    volume = client.request("create_volume", "POST", "/volumes", body)["volume"]
    status = volume["status"]
    while status != "available":
        if status == "error" or time.monotonic() > deadline:
            raise BenchError(f"direct: volume {volume['id']} is {status}")
        time.sleep(poll_s)
        status = client.request("get_volume", "GET", f"/volumes/{volume['id']}")["volume"]["status"]
    connector = ConnectorConfig().to_connector().to_wire()
    attach = {"attachment": {"volume_uuid": volume["id"], "connector": connector}}
    if tuple(int(x) for x in client.microversion.split(".")) >= (3, 54):
        attach["attachment"]["mode"] = "rw"
    attachment = client.request("create_attachment", "POST", "/attachments", attach)["attachment"]
    client.request(
        "complete_attachment", "POST", f"/attachments/{attachment['id']}/action", {"os-complete": None}
    )
    return time.monotonic() - started, str(volume["id"]), str(attachment["id"])


def direct_burst(client: DirectCinder, *, n: int, prefix: str, spec: RealSpec) -> dict[str, Any]:
    """N volumes through create → available → export at ``spec.in_flight``; then all deleted again."""
    client.calls.clear()
    deadline = time.monotonic() + spec.timeout_s
    started = time.monotonic()
    with ThreadPoolExecutor(spec.in_flight, thread_name_prefix="direct") as pool:
        done = list(pool.map(lambda i: _one(client, f"{prefix}{i:05d}", spec.poll_s, deadline), range(n)))
    wall = time.monotonic() - started
    calls = dict(client.calls)
    for _seconds, volume_id, attachment_id in done:
        client.request("delete_attachment", "DELETE", f"/attachments/{attachment_id}")
        client.request("delete_volume", "DELETE", f"/volumes/{volume_id}")
    _wait_no_volumes(client, spec.timeout_s, "direct cleanup")
    each = sorted(d[0] for d in done)
    return {
        "wall_s": round(wall, 3),
        "per_volume_median_s": round(statistics.median(each), 3),
        "per_volume_max_s": round(each[-1], 3),
        "cinder_calls_per_pvc": round(sum(calls.values()) / n, 3),
        "cinder_by_operation_per_pvc": st.per_claim_by_key(Counter(calls), n),
    }


def _wait_no_volumes(client: DirectCinder, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        left = client.volumes()
        if not left:
            return
        if time.monotonic() > deadline:
            states = Counter(v["status"] for v in left)
            raise BenchError(f"{what}: {len(left)} volume(s) still in Cinder: {dict(states)}")
        time.sleep(0.25)


def ours_burst(
    world: WorldProcess,
    run: RunProcess,
    client: DirectCinder,
    *,
    n: int,
    prefix: str,
    bound_before: int,
    spec: RealSpec,
) -> dict[str, Any]:
    """N claims at once into the store; time to the last Bound; then delete them and wait for Cinder."""
    world.post("/clear-logs", {})
    metrics_before = run.metrics()
    calls_before = st.cinder_calls_from_metrics(metrics_before)
    usage_before = run.usage()
    started = time.monotonic()
    world.post("/claims", {"prefix": prefix, "count": n, "class": CLASS})
    done = world.wait("bound", bound_before + n, spec.timeout_s)
    usage_after = run.usage()
    if not done["ok"]:
        got = done.get("bound", 0) - bound_before
        raise BenchError(f"P5: only {got} of {n} claims bound\n{run.log_tail()}")
    metrics_after = run.metrics()
    calls = st.cinder_calls_from_metrics(metrics_after) - calls_before
    slots = st.slot_use_since(
        st.slot_use_from_metrics(metrics_after), st.slot_use_from_metrics(metrics_before)
    )
    logs = world.logs()
    kube = st.within(logs.kube, started, done["at"])
    bound_at = world.get("/moments")["bound_at"]
    each = sorted(at - started for name, at in bound_at.items() if name.startswith(prefix))
    world.post("/delete-claims", {"prefix": prefix})
    gone = world.wait("pvs_gone", 0, spec.timeout_s)
    if not gone["ok"]:
        raise BenchError(f"P5: PVs left after deleting the claims: {gone}\n{run.log_tail()}")
    _wait_no_volumes(client, spec.timeout_s, "P5 delete (a volume of ours left in Cinder)")
    return {
        "wall_s": round(done["at"] - started, 3),
        "per_claim_median_s": round(statistics.median(each), 3) if each else None,
        "per_claim_max_s": round(each[-1], 3) if each else None,
        "cpu_ms_per_pvc": round(st.cpu_ms_per_claim(usage_after.cpu_s - usage_before.cpu_s, n), 3),
        "peak_rss_mib": round(usage_after.hwm_kib / 1024, 1),
        "kube_requests_per_pvc": round(len(kube) / n, 3),
        "kube_by_verb_per_pvc": st.per_claim_by_key(st.kube_counts(kube), n),
        "cinder_calls_per_pvc": round(sum(calls.values()) / n, 3),
        "cinder_by_operation_per_pvc": st.per_claim_by_key(calls, n),
        **st.slot_report(slots, spec.in_flight, n),
    }


def run_real(spec: RealSpec) -> dict[str, Any]:
    """P5 (see the module docstring): the figures of every round and the ratio."""
    from provisioner.testworld.real_cinder.launcher import start_real_cinder

    with tempfile.TemporaryDirectory(prefix="bench-p5-") as tmp:
        root = Path(tmp)
        cinder_started = time.monotonic()
        with (
            start_real_cinder(root / "cinder", backends=(VOLUME_TYPE,)) as cinder,
            WorldProcess(root, create_latency=0.0) as world,
        ):
            cinder_start_s = time.monotonic() - cinder_started
            client = DirectCinder(cinder.url, cinder.token)
            microversion = client.negotiate()
            if spec.warmup:  # Cinder's first creates pay for its caches: neither side should
                direct_burst(client, n=spec.warmup, prefix="warm-", spec=spec)
            world.post("/class", {"name": CLASS, "parameters": {"type": VOLUME_TYPE}})
            cloud = {"auth_type": "noauth", "auth": {"endpoint": cinder.url, "token": cinder.token}}
            limits = Limits(cinder_max_in_flight=spec.in_flight)
            run = RunProcess(world, limits, identity="bench-a", log_level=spec.log_level, cloud=cloud)
            try:
                ready_s = run.wait_ready(spec.timeout_s)
                _await_leader(world, run, spec.timeout_s)
                rounds = _rounds(world, run, client, spec)
            finally:
                run.stop()
            if run.exit_code != 0:
                raise BenchError(f"the provisioner exited {run.exit_code} after SIGTERM\n{run.log_tail()}")
    ours_s = sum(r["ours"]["wall_s"] for r in rounds)
    direct_s = sum(r["direct"]["wall_s"] for r in rounds)
    ratio = ours_s / direct_s if direct_s > 0 else float("inf")
    return {
        "n": spec.n,
        "in_flight": spec.in_flight,
        "rounds": rounds,
        "poll_s": spec.poll_s,
        "microversion": microversion,
        "cinder_start_s": round(cinder_start_s, 2),
        "process_ready_s": round(ready_s, 3),
        "ours_s": round(ours_s, 3),
        "direct_s": round(direct_s, 3),
        "ratio": round(ratio, 4),
        "notes": (
            f"N={spec.n}, C={spec.in_flight}, {len(rounds)} round(s): ours {ours_s:.2f} s vs direct "
            f"{direct_s:.2f} s (claims created → last Bound vs first create → last export)"
        ),
    }


def _rounds(
    world: WorldProcess, run: RunProcess, client: DirectCinder, spec: RealSpec
) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = []
    for k in range(spec.rounds):
        figures: dict[str, Any] = {"order": "direct, ours" if k % 2 == 0 else "ours, direct"}
        for side in ("direct", "ours") if k % 2 == 0 else ("ours", "direct"):
            if side == "direct":
                figures[side] = direct_burst(client, n=spec.n, prefix=f"direct{k}-", spec=spec)
            else:
                figures[side] = ours_burst(
                    world, run, client, n=spec.n, prefix=f"p5r{k}-", bound_before=k * spec.n, spec=spec
                )
        figures["ratio"] = round(figures["ours"]["wall_s"] / figures["direct"]["wall_s"], 4)
        rounds.append(figures)
    return rounds


def _await_leader(world: WorldProcess, run: RunProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while world.get("/state")["lease_holder"] != "bench-a":
        if run.proc.poll() is not None:
            raise BenchError(f"the provisioner exited ({run.proc.returncode})\n{run.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError("P5: the provisioner never took the Lease")
        time.sleep(0.02)
