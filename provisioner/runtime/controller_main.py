"""``cinder-provisioner run``: the controller as deployed (in-cluster config, or a kubeconfig).

Exit codes: 0 after SIGTERM/SIGINT (work drained, lease released); 1 when leadership was lost (the pod
restarts and rejoins as a standby); 2 on bad configuration (one line naming the setting, never a
traceback): the config file and settings, ``--set``, ``--kubeconfig`` (missing, unreadable, not a
kubeconfig, no usable server URL; without it: neither in a cluster nor ``~/.kube/config``) and a
``metrics_bind_address`` that cannot be listened on (in use, not an address of this host).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from provisioner.domain.errors import ConfigError

#: OSError numbers that mean "this address cannot be listened on", i.e. a bad metrics_bind_address.
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM})


def add_parser(sub: Any) -> None:
    """Register the ``run`` subcommand."""
    p = sub.add_parser("run", help="run the provisioning controller")
    p.add_argument("--config", default=os.environ.get("CINDER_PROVISIONER_CONFIG"), help="YAML config file")
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig path (default: in-cluster, then ~/.kube/config)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--identity", default=None, help="lease holder identity (default: $POD_NAME_$POD_UID)")


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM or lost leadership."""
    from provisioner.config.settings import load_config, parse_set_overrides
    from provisioner.runtime.replica import Replica
    from provisioner.telemetry import logs

    try:
        config = load_config(args.config, overrides=parse_set_overrides(args.set))
        identity = _identity(args.identity)
        client_config = _client_configuration(args.kubeconfig)
        lease_config = _client_configuration(args.kubeconfig)
    except ConfigError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    try:
        replica = Replica(
            config,
            client_configuration=client_config,
            lease_client_configuration=lease_config,
            identity=identity,
            health_address=config.metrics_bind_address,
        )
    except OSError as e:  # the health server binds here; nothing else in the constructor does I/O
        if e.errno not in _BIND_ERRNOS and type(e).__name__ != "gaierror":
            raise
        reason = e.strerror or type(e).__name__
        print(
            f"error: metrics_bind_address: cannot listen on {config.metrics_bind_address}: {reason}",
            file=sys.stderr,
        )
        return 2

    def on_signal(signum: int, _frame: Any) -> None:
        replica.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    replica.start()
    while not replica.wait(1.0):
        pass
    return replica.exit_code


def _identity(flag: str | None) -> str | None:
    """The lease holder identity: ``--identity``, else ``$POD_NAME_$POD_UID``; printable, bounded."""
    identity = (
        flag or "_".join(x for x in (os.environ.get("POD_NAME"), os.environ.get("POD_UID")) if x) or None
    )
    if identity is not None and (
        len(identity) > 253 or not identity.isprintable() or identity != identity.strip()
    ):
        raise ConfigError(
            "--identity", "must be printable, without surrounding spaces, at most 253 characters"
        )
    return identity


def _client_configuration(kubeconfig: str | None) -> Any:
    """The Kubernetes client configuration, or ``ConfigError("--kubeconfig")`` saying what is wrong.

    The file is checked with the configuration's own reader first (size, UTF-8, YAML, a mapping), so a
    broken kubeconfig never reaches the kubernetes library's parser, whose errors quote the file (a
    kubeconfig holds tokens and keys).
    """
    from provisioner.adapters.kube import load_client_configuration
    from provisioner.config.documents import load_file

    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.exists():
            raise ConfigError("--kubeconfig", f"{kubeconfig!r} does not exist")
        if not path.is_file():
            raise ConfigError("--kubeconfig", f"{kubeconfig!r} is not a file")
        doc = load_file(path, field="--kubeconfig")
        if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("contexts"):
            raise ConfigError("--kubeconfig", f"{kubeconfig!r} is not a kubeconfig (no clusters or contexts)")
    try:
        configuration = load_client_configuration(kubeconfig)
    except Exception as e:  # kubernetes raises ConfigException, OSError, TypeError …: all mean "unusable"
        what = (
            "not in a cluster and no usable ~/.kube/config"
            if kubeconfig is None
            else f"cannot use {kubeconfig!r}"
        )
        detail = " ".join(str(e).split())[:160]
        raise ConfigError(
            "--kubeconfig", f"{what}: {type(e).__name__}{': ' + detail if detail else ''}"
        ) from None
    host = str(getattr(configuration, "host", "") or "")
    try:
        parts = urlsplit(host)
        usable = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            "--kubeconfig", f"the cluster's server must be an http(s) URL with a host, not {host[:80]!r}"
        )
    return configuration
