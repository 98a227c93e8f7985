"""A throwaway single-node Ceph cluster (Debian's ``ceph-mon`` + ``ceph-osd``) for the real-Cinder tier.

Why: Cinder's own RBD driver (``cinder.volume.drivers.rbd.RBDDriver``) only proves something when it talks
to a real cluster: real images, real snapshots and clones, real ``rbd`` connection info (the monitors it
reads with ``ceph mon dump``).  One monitor and one OSD with ``osd_objectstore = memstore`` (data in RAM,
gone when the OSD stops), ``auth_* = none`` and pool size 1 start in seconds in a temp dir.  There is no
ceph-mgr, so nothing here may call a mgr command (``ceph pg stat`` and friends block forever); ``ceph df``
answers from the monitor, with no per-pool stats.

Usage::

    with start_ceph(tmp_path / "ceph") as ceph:
        ceph.rbd("create", f"{ceph.pool}/img", "--size", "64M")
        assert ceph.image_size(ceph.pool, "img") == 64 << 20

The daemons run in the foreground as children in their own session and are stopped (TERM, then KILL) on
exit; ``cinder_backend_options`` gives the cinder.conf backend section for the cluster and
``bindings_dir`` a directory that makes Debian's ``rados`` / ``rbd`` modules (and only those) importable
in another interpreter of the same Python version (the Cinder child's ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.domain.errors import ProvisionerError

#: Debian packages the cluster (and the RBD driver inside Cinder) needs; ``.ci/run`` installs them.
DEBIAN_PACKAGES = ("ceph-mon", "ceph-osd", "ceph-common", "python3-rados", "python3-rbd")
#: The executables this module runs.
TOOLS = ("ceph-mon", "ceph-osd", "monmaptool", "ceph", "rbd")
#: Where Debian installs the Python bindings of librados / librbd.
DEBIAN_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
_BINDINGS = ("rados", "rbd")
_LOCAL = "127.0.0.1"


class CephError(ProvisionerError):
    """The throwaway cluster did not start or a ``ceph`` / ``rbd`` command failed (message: its stderr)."""


def missing_parts() -> list[str]:
    """What this machine lacks to run the cluster (tools, Python bindings); empty when all is there."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    for module in _BINDINGS:
        if not list(DEBIAN_DIST_PACKAGES.glob(f"{module}.{tag}-*.so")):
            missing.append(f"{DEBIAN_DIST_PACKAGES}/{module}.{tag}-*.so (python3-{module})")
    return missing


def bindings_dir(workdir: Path) -> Path:
    """A directory holding links to Debian's ``rados`` / ``rbd`` extension modules, nothing else.

    Putting all of dist-packages on the path would shadow the venv's packages with Debian's; these two
    are compiled for the same CPython (3.11 on Debian 12 and here), so links are enough.
    """
    target = workdir / "ceph-bindings"
    target.mkdir(parents=True, exist_ok=True)
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    for module in _BINDINGS:
        found = sorted(DEBIAN_DIST_PACKAGES.glob(f"{module}.{tag}-*.so"))
        if not found:
            raise CephError(f"python3-{module} is not installed (no {module}.{tag}-*.so)")
        link = target / found[0].name
        if not link.exists():
            link.symlink_to(found[0])
    return target


@dataclass(frozen=True, slots=True, kw_only=True)
class CephCluster:
    """How to reach the running cluster: its config file (monitors, auth none) and its pool."""

    conf: Path
    fsid: str
    pool: str
    mon_v1: str
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, tool: str, *args: str, timeout: float = 30.0) -> str:
        """Run ``ceph`` / ``rbd`` against the cluster; stdout, or ``CephError`` with stderr."""
        argv = [tool, "-c", str(self.conf), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise CephError(f"{' '.join(argv)} timed out after {timeout:g}s") from e
        if done.returncode != 0:
            raise CephError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def rbd(self, *args: str, timeout: float = 30.0) -> str:
        return self.run("rbd", *args, timeout=timeout)

    def images(self, pool: str) -> list[str]:
        """Image names in ``pool`` (``rbd ls``)."""
        names: list[str] = json.loads(self.rbd("ls", "--format", "json", pool) or "[]")
        return sorted(names)

    def image_info(self, pool: str, image: str) -> dict[str, Any] | None:
        """``rbd info --format json`` of ``pool/image``; None when there is no such image."""
        try:
            info: dict[str, Any] = json.loads(self.rbd("info", "--format", "json", f"{pool}/{image}"))
        except CephError as e:
            if "No such file or directory" in str(e):
                return None
            raise
        return info

    def snapshots(self, pool: str, image: str) -> list[dict[str, Any]]:
        """``rbd snap ls --format json`` of ``pool/image``."""
        snaps: list[dict[str, Any]] = json.loads(
            self.rbd("snap", "ls", "--format", "json", f"{pool}/{image}") or "[]"
        )
        return snaps


def cinder_backend_options(cluster: CephCluster, backend_name: str) -> dict[str, str]:
    """The cinder.conf section of a backend that is Cinder's own RBD driver on ``cluster``."""
    return {
        "volume_driver": "cinder.volume.drivers.rbd.RBDDriver",
        "volume_backend_name": backend_name,
        "rbd_ceph_conf": str(cluster.conf),
        "rbd_pool": cluster.pool,
        "rbd_cluster_name": "ceph",
        # clones of snapshots stay copy-on-write children, as in most deployments
        "rbd_flatten_volume_from_snapshot": "false",
        "rados_connect_timeout": "10",
        "rados_connection_retries": "1",
        "rados_connection_interval": "1",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOCAL, 0))
        port: int = s.getsockname()[1]
        return port


def write_conf(workdir: Path, *, fsid: str, v2_port: int, v1_port: int) -> Path:
    """ceph.conf of a one-monitor, one-memstore-OSD cluster without authentication, rooted in workdir."""
    for sub in ("run", "log", "mon", "osd"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    mon_host = f"[v2:{_LOCAL}:{v2_port},v1:{_LOCAL}:{v1_port}]"
    text = f"""\
[global]
fsid = {fsid}
mon_host = {mon_host}
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = /dev/null
osd_objectstore = memstore
memstore_device_bytes = {2 << 30}
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
run_dir = {workdir}/run
log_file = {workdir}/log/$name.log
mon_data = {workdir}/mon/$cluster-$id
osd_data = {workdir}/osd/$cluster-$id
rados_mon_op_timeout = 15
rados_osd_op_timeout = 30
[mon]
admin_socket = {workdir}/run/$name.asok
[osd]
admin_socket = {workdir}/run/$name.asok
[client]
admin_socket =
log_file = {workdir}/log/client.log
"""
    conf = workdir / "ceph.conf"
    conf.write_text(text)
    return conf


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _checked(argv: Sequence[str], what: str, timeout: float = 30.0) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise CephError(f"{what}: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def start_ceph(workdir: Path, *, pool: str = "volumes", timeout: float = 60.0) -> Iterator[CephCluster]:
    """Bootstrap mon + OSD + an rbd pool in ``workdir``; stop both daemons on exit (data goes with them)."""
    if missing := missing_parts():
        raise CephError(f"cannot start Ceph, missing: {', '.join(missing)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    v2_port, v1_port = _free_port(), _free_port()
    conf = write_conf(workdir, fsid=fsid, v2_port=v2_port, v1_port=v1_port)
    c = ("-c", str(conf))
    timings: dict[str, float] = {}
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        monmap = workdir / "monmap"
        addrs = f"[v2:{_LOCAL}:{v2_port},v1:{_LOCAL}:{v1_port}]"
        _checked(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", addrs, str(monmap)], "monmap")
        _checked(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", str(monmap)], "mon mkfs")
        procs.append(_daemon(["ceph-mon", *c, "-f", "-i", "a"], workdir / "log" / "mon.out"))
        cluster = CephCluster(
            conf=conf, fsid=fsid, pool=pool, mon_v1=f"{_LOCAL}:{v1_port}", workdir=workdir, timings=timings
        )
        cluster.run("ceph", "mon", "stat", timeout=timeout)
        timings["mon_seconds"] = time.monotonic() - started
        osd_uuid = str(uuid.uuid4())
        osd_id = cluster.run("ceph", "osd", "new", osd_uuid).strip()
        (workdir / "osd" / f"ceph-{osd_id}").mkdir(parents=True, exist_ok=True)
        _checked(["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], "osd mkfs")
        procs.append(_daemon(["ceph-osd", *c, "-f", "-i", osd_id], workdir / "log" / "osd.out"))
        _wait_osd_up(cluster, procs, time.monotonic() + timeout)
        timings["osd_seconds"] = time.monotonic() - started - timings["mon_seconds"]
        cluster.run("ceph", "osd", "pool", "create", pool, "8", "8")
        cluster.run("ceph", "osd", "pool", "set", pool, "size", "1", "--yes-i-really-mean-it")
        cluster.rbd("pool", "init", pool, timeout=timeout)
        timings["start_seconds"] = time.monotonic() - started
        yield cluster
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _daemon(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_osd_up(cluster: CephCluster, procs: Sequence[subprocess.Popen[bytes]], deadline: float) -> None:
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise CephError(f"{proc.args!r} exited with {proc.returncode}; logs in {cluster.workdir}/log")
        stat = json.loads(cluster.run("ceph", "osd", "stat", "--format", "json"))
        if int(stat.get("num_up_osds", 0)) >= 1 and int(stat.get("num_in_osds", 0)) >= 1:
            return
        time.sleep(0.2)
    raise CephError(f"the OSD did not come up in time; logs in {cluster.workdir}/log")


def rbd_image_spec(spec: str) -> tuple[str, str]:
    """``pool/image`` (as in Cinder's rbd connection info ``data.name``) → (pool, image)."""
    pool, sep, image = spec.partition("/")
    if not sep or not pool or not image or "/" in image:
        raise ValueError(f"not a pool/image spec: {spec!r}")
    return pool, image
