"""``cinder-provisioner``: the admin command line. This is where objects are constructed and wired.

Subcommands live in their own modules (``render``, ``controller_main``, ``sandbox``); each exposes
``add_parser(subparsers)`` and a ``run(args) -> int``. Imports are lazy so ``render`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

#: subcommand → module exposing add_parser() and run()
_SUBCOMMANDS = {
    "render": "provisioner.cli.render",
    "audit": "provisioner.cli.audit",
    "run": "provisioner.runtime.controller_main",
    "sandbox": "provisioner.cli.sandbox",
    "snapshots": "provisioner.cli.snapshots",
    "snapshot": "provisioner.cli.snapshot",
    "restore": "provisioner.cli.restore",
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``<prog>: error: <what>``) and exit 2, like our own errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand registered); subparsers share its one-line errors."""
    parser = _OneLineParser(
        prog="cinder-provisioner",
        description="Kubernetes PersistentVolumes backed by OpenStack Cinder.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # a subcommand whose module is not built yet must not break the others
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cinder-provisioner`` console script."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(_SUBCOMMANDS[args.command])
    result: int = module.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
