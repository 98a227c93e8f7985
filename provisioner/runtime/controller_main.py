"""``cinder-provisioner run``: the controller as deployed (in-cluster config, or a kubeconfig).

Exit codes: 0 after SIGTERM/SIGINT (work drained, lease released); 1 when leadership was lost (the pod
restarts and rejoins as a standby); 2 on bad configuration (one line naming the setting).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from provisioner.domain.errors import ConfigError


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
    from provisioner.telemetry import logs

    try:
        config = load_config(args.config, overrides=parse_set_overrides(args.set))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    from provisioner.adapters.kube import load_client_configuration
    from provisioner.runtime.replica import Replica

    identity = (
        args.identity
        or "_".join(x for x in (os.environ.get("POD_NAME"), os.environ.get("POD_UID")) if x)
        or None
    )
    client_config = load_client_configuration(args.kubeconfig)
    lease_config = load_client_configuration(args.kubeconfig)
    replica = Replica(
        config,
        client_configuration=client_config,
        lease_client_configuration=lease_config,
        identity=identity,
        health_address=config.metrics_bind_address,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        replica.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    replica.start()
    while not replica.wait(1.0):
        pass
    return replica.exit_code
