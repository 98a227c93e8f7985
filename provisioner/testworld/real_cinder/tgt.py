"""A real userspace iSCSI target (Debian ``tgt``: ``tgtd``) for the real-Cinder tier, and its initiator.

Why: the node agent has only met a fake ``iscsiadm``; only a real target proves that the portal, IQN, LUN
and CHAP credentials the controller writes into a PV (and its Secret) reach the LUN. ``start_tgtd`` runs
one ``tgtd`` in the foreground on its own control port and iSCSI portal (free ports, so it never meets
another ``tgtd`` on the machine), writes the ``targets.conf`` that includes the directory where Cinder's
own target helper (``cinder.volume.targets.tgt.TgtAdm``) keeps one persistence file per export, and puts
``tgt-admin`` / ``tgtadm`` wrappers in a ``bin`` directory that pin both to this daemon. The Cinder
backend ``iscsi-tgt`` (``tgt_driver.TgtFileVolumeDriver``, imported only inside the Cinder subprocess)
prepends that directory to its ``PATH``: Cinder's TgtAdm then runs unmodified — it generates the
per-volume CHAP account, writes the target, runs ``tgt-admin --update`` on export (attachment) and
``tgt-admin --delete`` on remove_export (attachment deleted). The backend also restricts each target to the
initiators of its connections and can demand discovery CHAP (``tgt_driver``); ``TgtHandle.acl`` and
``TgtHandle.discovery_accounts`` show what tgtd enforces.

The initiator is libiscsi's (Debian ``libiscsi-bin``): ``iscsi-readcapacity16`` / ``iscsi-inq`` with an
``iscsi://host:port/iqn/lun`` URL, ``iscsi-ls`` for a SendTargets discovery of ``iscsi://host:port``; each
with the initiator name given (``-i``). CHAP credentials travel in the environment
(``LIBISCSI_CHAP_USERNAME`` / ``LIBISCSI_CHAP_PASSWORD``), never in argv, and no result or error of this
module carries them.

``tgtd`` ignores SIGTERM; it is stopped with ``tgtadm --op delete --mode system`` (SIGKILL after a
deadline), and its control socket files are removed so that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.domain.errors import ProvisionerError

#: Debian packages that provide the target and the initiator (installed by ``.ci/run``).
DEBIAN_PACKAGES = ("tgt", "libiscsi-bin")
#: The launcher's backend profile that exports through this target.
PROFILE = "iscsi-tgt"
#: Where tgtd keeps its control sockets (``socket.<control port>`` and ``.lock``).
CONTROL_SOCKET_DIR = Path("/var/run/tgtd")
_TOOLS = ("tgtd", "tgtadm", "tgt-admin", "iscsi-readcapacity16", "iscsi-inq", "iscsi-ls", "iscsi-perf")
_LOCAL = "127.0.0.1"


class TgtError(ProvisionerError):
    """tgtd did not start or stop, or a tool is missing; the message ends with the daemon's log tail."""


def missing_tools() -> list[str]:
    """The target / initiator executables not on PATH (empty when the tier can run)."""
    return [tool for tool in _TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TgtHandle:
    """A running tgtd: its portal, control port, and the files Cinder's target helper uses."""

    host: str
    port: int
    control_port: int
    targets_conf: Path
    targets_dir: Path
    acl_dir: Path
    bin_dir: Path
    log_path: Path
    pid: int

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def tgtadm(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``tgtadm`` against this daemon (never with secrets in ``args``)."""
        return subprocess.run(
            ["tgtadm", "-C", str(self.control_port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def target_names(self) -> list[str]:
        """The IQNs this daemon exports now (``tgtadm --op show --mode target``)."""
        shown = self.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")
        if shown.returncode != 0:
            raise TgtError(f"tgtadm show failed ({shown.returncode}): {shown.stderr.strip()}")
        return re.findall(r"^Target \d+: (\S+)$", shown.stdout, flags=re.MULTILINE)

    def accounts(self) -> list[str]:
        """The CHAP account user names the daemon knows (``--mode account``), for leak checks."""
        shown = self.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "account")
        if shown.returncode != 0:
            raise TgtError(f"tgtadm show account failed ({shown.returncode}): {shown.stderr.strip()}")
        return [line.strip() for line in shown.stdout.splitlines()[1:] if line.strip()]

    def discovery_accounts(self) -> list[str]:
        """The accounts bound to discovery sessions (``Account information`` of ``--mode sys``)."""
        shown = self.tgtadm("--op", "show", "--mode", "sys")
        if shown.returncode != 0:
            raise TgtError(f"tgtadm show sys failed ({shown.returncode}): {shown.stderr.strip()}")
        return shown.stdout.partition("Account information:")[2].partition("iSNS:")[0].split()

    def acl(self, iqn: str) -> list[str]:
        """The ACL of the target ``iqn`` (initiator addresses and names); ``TgtError`` if there is none."""
        shown = self.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")
        if shown.returncode != 0:
            raise TgtError(f"tgtadm show failed ({shown.returncode}): {shown.stderr.strip()}")
        for block in re.split(r"^(?=Target \d+: )", shown.stdout, flags=re.MULTILINE):
            if block.startswith("Target ") and block.splitlines()[0].split(": ", 1)[1] == iqn:
                acl = block.partition("ACL information:\n")[2]
                return [line.strip() for line in acl.splitlines() if line.strip()]
        raise TgtError(f"no target {iqn}")

    def nexus_initiators(self, iqn: str) -> list[str]:
        """The initiators logged in to ``iqn`` now (``I_T nexus information``; empty if no such target)."""
        shown = self.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target")
        for block in re.split(r"^(?=Target \d+: )", shown.stdout, flags=re.MULTILINE):
            if block.startswith("Target ") and block.splitlines()[0].split(": ", 1)[1] == iqn:
                return re.findall(r"^\s+Initiator: (\S+)", block, flags=re.MULTILINE)
        return []

    def cinder_backend_config(self, *, discovery_chap: Chap | None = None) -> dict[str, dict[str, str]]:
        """``extra_config`` for ``start_real_cinder``: the ``iscsi-tgt`` backend exports through us, each
        target admitting only its connections' initiators; ``discovery_chap`` makes the backend demand (and
        hand out) discovery CHAP."""
        options = {
            "target_helper": "tgtadm",
            "target_protocol": "iscsi",
            "target_ip_address": self.host,
            "target_port": str(self.port),
            "volumes_dir": str(self.targets_dir),
            "file_tgt_bin_dir": str(self.bin_dir),
            "file_tgt_acl_dir": str(self.acl_dir),
        }
        if discovery_chap is not None:
            options["file_discovery_chap_username"] = discovery_chap.username
            options["file_discovery_chap_password"] = discovery_chap.password
        return {PROFILE: options}

    def leftovers(self) -> dict[str, list[str]]:
        """What an export left behind: live targets, persistence files, ACL records (all empty when clean)."""
        return {
            "targets": self.target_names(),
            "persistence files": sorted(p.name for p in self.targets_dir.iterdir()),
            "acl records": sorted(p.name for p in self.acl_dir.iterdir()) if self.acl_dir.exists() else [],
        }


def _free_tcp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _free_control_port() -> int:
    """A control port no tgtd on this machine uses (its socket file is absent)."""
    rng = random.SystemRandom()
    for _ in range(1000):
        candidate = rng.randrange(1000, 32768)  # tgtd accepts -C up to 32767
        if not (CONTROL_SOCKET_DIR / f"socket.{candidate}").exists():
            return candidate
    raise TgtError(f"no free tgtd control port: {CONTROL_SOCKET_DIR} is full of sockets")


def _write_wrappers(bin_dir: Path, control_port: int, targets_conf: Path) -> None:
    """``tgt-admin`` / ``tgtadm`` on a private PATH, pinned to one daemon and one targets.conf."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrappers = {
        "tgt-admin": f'exec {shutil.which("tgt-admin")} -C {control_port} -c {targets_conf} "$@"\n',
        # tgt-admin itself calls "tgtadm -C <port> …": a later -C wins, and it is the same port
        "tgtadm": f'exec {shutil.which("tgtadm")} -C {control_port} "$@"\n',
    }
    for name, body in wrappers.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _portal_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _tgtadm(control_port: int, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tgtadm", "-C", str(control_port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _stop(proc: subprocess.Popen[bytes], control_port: int, timeout: float = 10.0) -> None:
    """Force-delete every target, then ``--op delete --mode system`` (tgtd ignores SIGTERM, and refuses
    to stop while targets exist); SIGKILL after ``timeout``; reaps and removes the control sockets."""
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            shown = _tgtadm(
                control_port, "--lld", "iscsi", "--op", "show", "--mode", "target", timeout=timeout
            )
            for tid in re.findall(r"^Target (\d+): ", shown.stdout, flags=re.MULTILINE):
                _tgtadm(
                    control_port,
                    *("--lld", "iscsi", "--op", "delete", "--force", "--mode", "target", "--tid", tid),
                    timeout=timeout,
                )
            _tgtadm(control_port, "--op", "delete", "--mode", "system", timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for suffix in ("", ".lock"):
        (CONTROL_SOCKET_DIR / f"socket.{control_port}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def start_tgtd(
    workdir: Path, *, host: str = _LOCAL, port: int = 0, startup_timeout: float = 15.0
) -> Iterator[TgtHandle]:
    """Run tgtd (foreground, own control port, portal ``host:port``; 0 picks a free port); stop on exit."""
    missing = missing_tools()
    if missing:
        raise TgtError(
            f"missing {', '.join(missing)}: install the Debian packages {' '.join(DEBIAN_PACKAGES)}"
        )
    workdir = Path(workdir)
    targets_dir = workdir / "targets"
    targets_dir.mkdir(parents=True, exist_ok=True)
    acl_dir = workdir / "acl"
    acl_dir.mkdir(parents=True, exist_ok=True)
    targets_conf = workdir / "targets.conf"
    targets_conf.write_text(f"include {targets_dir}/*\n")
    port = port or _free_tcp_port(host)
    control_port = _free_control_port()
    bin_dir = workdir / "bin"
    _write_wrappers(bin_dir, control_port, targets_conf)
    log_path = workdir / "tgtd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(control_port), "--iscsi", f"portal={host}:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = TgtHandle(
        host=host,
        port=port,
        control_port=control_port,
        targets_conf=targets_conf,
        targets_dir=targets_dir,
        acl_dir=acl_dir,
        bin_dir=bin_dir,
        log_path=log_path,
        pid=proc.pid,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise TgtError(f"tgtd exited with {proc.returncode}; log:\n{_log_tail(log_path)}")
            shown = handle.tgtadm("--op", "show", "--mode", "sys")
            if shown.returncode == 0 and "iscsi: ready" in shown.stdout and _portal_open(host, port):
                break
            if time.monotonic() > deadline:
                raise TgtError(f"tgtd not ready on {handle.portal} in time; log:\n{_log_tail(log_path)}")
            time.sleep(0.05)
        yield handle
    finally:
        _stop(proc, control_port)


# --- the userspace initiator (libiscsi) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InitiatorResult:
    """What one libiscsi tool said: exit code and output (the credentials are in neither)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def auth_failed(self) -> bool:
        return "Authentication failure" in self.stderr + self.stdout

    @property
    def target_not_found(self) -> bool:
        """tgtd's answer to a login the ACL refuses (and to a login to a target that does not exist)."""
        return "Target not found" in self.stderr + self.stdout


@dataclass(frozen=True, slots=True, kw_only=True)
class Chap:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Chap(username={self.username!r}, password=<hidden>)"


def lun_url(portal: str, iqn: str, lun: int) -> str:
    """``iscsi://host:port/iqn/lun`` without credentials (they go through the environment)."""
    return f"iscsi://{portal}/{iqn}/{int(lun)}"


def _initiator_env(chap: Chap | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBISCSI_CHAP_")}
    if chap is not None:
        env["LIBISCSI_CHAP_USERNAME"] = chap.username
        env["LIBISCSI_CHAP_PASSWORD"] = chap.password
    return env


def _run_initiator(
    tool: str, url: str, *, initiator: str, chap: Chap | None, extra: tuple[str, ...] = ()
) -> InitiatorResult:
    done = subprocess.run(
        [tool, "-i", initiator, *extra, url],
        capture_output=True,
        text=True,
        timeout=30,
        env=_initiator_env(chap),
        check=False,
    )
    return InitiatorResult(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


@contextlib.contextmanager
def held_session(
    handle: TgtHandle, iqn: str, lun: int, *, initiator: str, chap: Chap | None, timeout: float = 10.0
) -> Iterator[None]:
    """An initiator logged in to ``iqn`` for the duration (a node that has the LUN staged): ``iscsi-perf``
    logs in and is then stopped (SIGSTOP) so that it holds the session without reading; killed on exit."""
    proc = subprocess.Popen(
        ["iscsi-perf", "-i", initiator, lun_url(handle.portal, iqn, lun)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_initiator_env(chap),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while initiator not in handle.nexus_initiators(iqn):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TgtError(f"{initiator} did not log in to {iqn} (iscsi-perf exit {proc.poll()})")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def read_capacity(
    portal: str, iqn: str, lun: int, *, initiator: str, chap: Chap | None
) -> tuple[int | None, InitiatorResult]:
    """Log in and READ CAPACITY(16): the LUN's size in bytes (``None`` when the login/command failed)."""
    result = _run_initiator("iscsi-readcapacity16", lun_url(portal, iqn, lun), initiator=initiator, chap=chap)
    match = re.search(r"^Total size:(\d+)$", result.stdout, flags=re.MULTILINE)
    if result.returncode != 0 or match is None:
        return None, result
    return int(match.group(1)), result


def unit_serial_number(
    portal: str, iqn: str, lun: int, *, initiator: str, chap: Chap | None
) -> tuple[str | None, InitiatorResult]:
    """Log in and INQUIRY the Unit Serial Number VPD page (0x80); TgtAdm sets it to the volume id."""
    result = _run_initiator(
        "iscsi-inq", lun_url(portal, iqn, lun), initiator=initiator, chap=chap, extra=("-e", "1", "-c", "128")
    )
    match = re.search(r"^Unit Serial Number:\[?([^\]\s]+)\]?$", result.stdout, flags=re.MULTILINE)
    if result.returncode != 0 or match is None:
        return None, result
    return match.group(1), result


def send_targets(
    portal: str, *, initiator: str, chap: Chap | None
) -> tuple[list[tuple[str, str]] | None, InitiatorResult]:
    """A SendTargets discovery (``iscsi-ls``; ``chap`` is the *discovery* CHAP): ``(iqn, portal)`` pairs
    the target lists for ``initiator``, ``None`` when the discovery login failed."""
    result = _run_initiator("iscsi-ls", f"iscsi://{portal}", initiator=initiator, chap=chap)
    if result.returncode != 0:
        return None, result
    found = re.findall(r"^Target:(\S+) Portal:(\S+?)(?:,\d+)?$", result.stdout, flags=re.MULTILINE)
    return [(str(iqn), str(where)) for iqn, where in found], result


def chap_from_secret(data: Mapping[str, str]) -> Chap:
    """Session CHAP credentials from a ``kubernetes.io/iscsi-chap`` Secret's decoded ``data``."""
    from provisioner import csi_contract

    return Chap(
        username=data[csi_contract.SECRET_SESSION_USER], password=data[csi_contract.SECRET_SESSION_PASSWORD]
    )


def discovery_chap_from_secret(data: Mapping[str, str]) -> Chap | None:
    """Discovery CHAP credentials from the same Secret (``None`` when it has none)."""
    from provisioner import csi_contract

    if csi_contract.SECRET_DISCOVERY_USER not in data:
        return None
    return Chap(
        username=data[csi_contract.SECRET_DISCOVERY_USER],
        password=data[csi_contract.SECRET_DISCOVERY_PASSWORD],
    )
