"""CHAP secrets into open-iscsi's node database without putting them on any command line.

``iscsiadm --op update -n node.session.auth.password -v <secret>`` would show the secret in
``/proc/<pid>/cmdline`` to every process on the node, and iscsiadm has no other way to take a value. But
iscsiadm keeps each record as a plain file that it re-reads on every command (``idbm_rec_read``):

- node records ``<root>/nodes/<iqn>/<ip>,<port>,<tpgt>/<iface>`` (the pre-iface layout, a *file*
  ``<root>/nodes/<iqn>/<ip>,<port>``, is honoured too), and
- sendtargets discovery records ``<root>/send_targets/<ip>,<port>/st_config``,

with ``name = value`` lines (the value runs to the end of the line, so it must not hold a newline: the
validator refuses those). The agent creates the record with iscsiadm as usual (no secret involved), sets
the non-secret settings through argv, and writes the password line itself: read the record, replace or
add the line, write a temp file 0600 in the same directory, fsync, rename over the record, fsync the
directory. The ``*_length`` fields are derived by iscsiadm from the value when it reads the file. The
caller holds the per-target lock, so no other iscsiadm run of ours races the rewrite.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from attach.errors import RetryableAttachError
from attach.iscsi_iface import normalize_portal

END_RECORD = "# END RECORD"


def split_portal(portal: str) -> tuple[str, str]:
    """``ip[:port]`` / ``[v6][:port]`` → (address as idbm stores it, port)."""
    host, _, port = normalize_portal(portal).rpartition(":")
    return host.strip("[]"), port


class NodeDb:
    """The files of open-iscsi's database under ``root`` (``/etc/iscsi`` on a node)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def node_records(self, iqn: str, portal: str, iface: str) -> list[Path]:
        """Every record file of ``iqn`` at ``portal`` for ``iface`` (one per target portal group)."""
        ip, port = split_portal(portal)
        target_dir = self._root / "nodes" / iqn
        old_style = target_dir / f"{ip},{port}"
        if old_style.is_file():
            return [old_style] if iface == "default" else []
        try:
            names = sorted(os.listdir(target_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        prefix = f"{ip},{port},"
        return [
            target_dir / name / iface
            for name in names
            if name.startswith(prefix) and (target_dir / name / iface).is_file()
        ]

    def discovery_record(self, portal: str) -> Path:
        ip, port = split_portal(portal)
        return self._root / "send_targets" / f"{ip},{port}" / "st_config"

    def set_node_secret(self, *, iqn: str, portal: str, iface: str, name: str, value: str) -> int:
        """Write ``name = value`` into every matching node record; how many were written (≥ 1)."""
        paths = self.node_records(iqn, portal, iface)
        if not paths:
            raise RetryableAttachError(
                f"no open-iscsi node record for {iqn} at {normalize_portal(portal)} via {iface} "
                f"under {self._root / 'nodes'} (is iscsi_root the host's /etc/iscsi?)"
            )
        for path in paths:
            _set_line(path, name, value)
        return len(paths)

    def set_discovery_secret(self, *, portal: str, name: str, value: str) -> None:
        """Write ``name = value`` into the sendtargets discovery record of ``portal``."""
        path = self.discovery_record(portal)
        if not path.is_file():
            raise RetryableAttachError(
                f"no open-iscsi discovery record for {normalize_portal(portal)} under "
                f"{self._root / 'send_targets'} (is iscsi_root the host's /etc/iscsi?)"
            )
        _set_line(path, name, value)


def _set_line(path: Path, name: str, value: str) -> None:
    if "\n" in value or "\r" in value or "\n" in name:
        raise ValueError("record values are single lines")  # refused earlier by node_input; belt and braces
    lines = [line for line in path.read_text().split("\n") if line.split("=", 1)[0].strip() != name]
    while lines and not lines[-1]:
        lines.pop()
    entry = f"{name} = {value}"
    if END_RECORD in lines:
        lines.insert(lines.index(END_RECORD), entry)
    else:
        lines.append(entry)
    _write_atomic(path, "\n".join(lines) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
