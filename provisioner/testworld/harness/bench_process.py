"""Drive what users run: ``cinder-provisioner run`` processes against a test world in another process.

``WorldProcess`` starts :mod:`world_server` (Kubernetes simulator + Cinder emulator) and talks to its
control endpoint; ``RunProcess`` starts the provisioner exactly as deployed — the console script with a
config file and a kubeconfig — and reads its CPU and memory from ``/proc/<pid>`` while it runs and from
``os.wait4`` when it ends. The parts P1-P3 of the benchmark (``bench.py``) are built from these two.
"""

from __future__ import annotations

import compileall
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

import provisioner
from provisioner.testworld.harness import bench_stats as st
from provisioner.testworld.objects import emulator_cloud

CLASS = "bench"


def _http(method: str, url: str, doc: Any = None, timeout: float = 60.0) -> Any:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310 - loopback URL we built
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL we built
        return json.loads(resp.read())


@dataclass(frozen=True, slots=True, kw_only=True)
class Logs:
    """What the world server logged: Kubernetes requests, Cinder calls, and claim uid → name."""

    kube: list[st.KubeRequest]
    cinder: list[st.CinderCall]
    claims: dict[str, str]


class WorldProcess:
    """The test world in its own process (``python -m …world_server``); a context manager."""

    def __init__(self, workdir: Path, *, create_latency: float) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self._stderr = (workdir / "world.log").open("wb")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "provisioner.testworld.harness.world_server",
                "--create-latency",
                str(create_latency),
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # the servers' own complaints (a killed client's broken pipe) go to a file, not the table
            stderr=self._stderr,
            env=installed_env(),
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the world server exited before printing its endpoints")
        self.endpoints: dict[str, str] = json.loads(line)
        self.control = self.endpoints["control"]

    def get(self, path: str, timeout: float = 60.0) -> Any:
        return _http("GET", self.control + path, timeout=timeout)

    def post(self, path: str, doc: Mapping[str, Any], timeout: float = 600.0) -> Any:
        return _http("POST", self.control + path, dict(doc), timeout=timeout)

    def wait(self, what: str, count: int, timeout: float) -> dict[str, Any]:
        doc: dict[str, Any] = self.get(f"/wait?what={what}&count={count}&timeout={timeout}", timeout + 30)
        return doc

    def cloud(self) -> dict[str, Any]:
        ep = self.endpoints
        return emulator_cloud(ep["keystone"], ep["username"], ep["password"], ep["project_id"])

    def logs(self) -> Logs:
        """Both request logs and the claims (uid → name) as the world holds them now."""
        doc = self.get("/log")
        kube = [
            st.KubeRequest(method=m, path=p, query=q, status=s, watch=w, at=at)
            for m, p, q, s, w, at in doc["kube"]
        ]
        cinder = [
            st.CinderCall(operation=op, path=p, status=s, at=at, result_id=rid, volume=hint)
            for _m, p, op, s, at, rid, hint in doc["cinder"]
        ]
        return Logs(kube=kube, cinder=cinder, claims=dict(doc["claims"]))

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> WorldProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def free_port() -> int:
    """An unused loopback TCP port (for the provisioner's /metrics /healthz /readyz)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def installed_env() -> dict[str, str]:
    """The environment of the processes the benchmark starts (the measured ``run`` processes and the
    test world): our modules byte-compiled, as in an installed package.

    ``pip install .`` (how the image is built, docs/deployment.md) byte-compiles every module at install
    time, so a deployed process starts from bytecode. The test environments set
    ``PYTHONDONTWRITEBYTECODE`` and install the package editable, so a process started from them would
    compile each of our modules from source at every start (~0.2 s of CPU per start, measured) — a cost no
    deployment pays. Compile the package once (into its ``__pycache__``, as any first import does) and let
    the measured processes read it.
    """
    package = Path(provisioner.__file__).parent
    if not compileall.compile_dir(str(package), quiet=1, workers=1):
        raise RuntimeError(f"byte-compiling {package} failed")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def provisioner_command() -> list[str]:
    """The ``cinder-provisioner`` console script next to this interpreter (as installed), else ``-m``."""
    script = Path(sys.executable).parent / "cinder-provisioner"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "provisioner.cli.main"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The settings a run overrides; None keeps the shipped default."""

    workers: int | None = None
    cinder_max_in_flight: int | None = None
    kube_qps: float | None = None
    kube_burst: int | None = None
    lease_duration: float | None = None
    renew_deadline: float | None = None
    retry_period: float | None = None

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("workers", "cinder_max_in_flight", "kube_qps", "kube_burst"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        le = {
            k: getattr(self, k)
            for k in ("lease_duration", "renew_deadline", "retry_period")
            if getattr(self, k) is not None
        }
        if le:
            out["leader_election"] = le
        return out


class RunProcess:
    """One ``cinder-provisioner run`` process; ``started`` is ``time.monotonic()`` just before exec."""

    def __init__(
        self,
        world: WorldProcess,
        limits: Limits,
        *,
        identity: str,
        log_level: str,
        cloud: Mapping[str, Any] | None = None,
    ) -> None:
        """``cloud``: the ``clouds.default`` entry (default: the world's Cinder emulator)."""
        self.port = free_port()
        config = {
            "cluster_id": "bench",
            "clouds": {"default": dict(cloud) if cloud is not None else world.cloud()},
            "default_cloud": "default",
            "namespace": "kube-system",
            "secret_namespace": "kube-system",
            "metrics_bind_address": f"127.0.0.1:{self.port}",
            "log_level": log_level,
            **limits.settings(),
        }
        path = world.workdir / f"config-{identity}.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)  # it holds the emulator's password, like a real deployment's Secret
        self.log_path = world.workdir / f"run-{identity}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        env = installed_env()  # before the clock starts: compiling is not the process's start-up
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                *provisioner_command(),
                "run",
                "--config",
                str(path),
                "--kubeconfig",
                str(world.kubeconfig),
                "--identity",
                identity,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.pid = self.proc.pid
        self.final: st.ProcUsage | None = None
        self.exit_code: int | None = None

    def usage(self) -> st.ProcUsage:
        """CPU and memory now, from ``/proc/<pid>``."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        status = Path(f"/proc/{self.pid}/status").read_text()
        return st.usage_from_proc(stat, status, os.sysconf("SC_CLK_TCK"))

    def metrics(self) -> str:
        """The process's ``/metrics`` text (Prometheus exposition format)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return int(r.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float, poll: float = 0.01) -> float:
        """Seconds from process start until ``/readyz`` answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the provisioner exited with {self.proc.returncode}; see {self.log_path}")
            if self.ready():
                return time.monotonic() - self.started
            time.sleep(poll)
        raise TimeoutError(f"not ready after {timeout:g} s; see {self.log_path}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> st.ProcUsage:
        """Signal, reap with ``os.wait4`` and keep its rusage (whole life of the process)."""
        if self.final is not None:
            return self.final
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                pid, status, rusage = os.wait4(self.pid, 0)
                break
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by us, tell Popen
        self.exit_code = self.proc.returncode
        self.final = st.usage_from_rusage(rusage)
        self._log.close()
        return self.final

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
