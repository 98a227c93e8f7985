"""Serve the Kubernetes simulator and the Cinder emulator from their own process.

The benchmark runs the controller in one process and the test world in this one, so the controller's CPU
time and memory can be measured alone (``getrusage`` of the benchmark process). Prints one JSON line with
the endpoints, then serves until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys

from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from provisioner.testworld.kube_sim import KubeSimulator


def main() -> int:
    """Entry point: ``python -m provisioner.testworld.harness.world_server [--create-latency S]``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--create-latency", type=float, default=0.0, help="seconds each create call takes")
    parser.add_argument("--create-seconds", type=float, default=0.0, help="creating → available delay")
    args = parser.parse_args()
    with (
        KubeSimulator(history_limit=200_000) as sim,
        CinderEmulator(create_seconds=args.create_seconds) as emu,
    ):
        if args.create_latency:
            emu.faults.set_latency("create_volume", args.create_latency)
        print(
            json.dumps(
                {
                    "kube": sim.url,
                    "keystone": emu.keystone_url,
                    "username": emu.username,
                    "password": emu.password,
                    "project_id": emu.project_id,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the parent closes our stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
