"""``cinder-provisioner run`` as deployed: a subprocess with a kubeconfig and a config file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.e2e.world import World, wait_for


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_provisions_serves_health_and_exits_0_on_sigterm(world: World, tmp_path: Path) -> None:
    """The real entry point provisions a claim, serves /metrics /healthz /readyz, drains on SIGTERM."""
    kubeconfig = world.sim.write_kubeconfig(tmp_path / "kubeconfig")
    port = free_port()
    config = {
        "cluster_id": "e2e",
        "clouds": {"default": world.cloud},
        "default_cloud": "default",
        "namespace": "kube-system",
        "secret_namespace": "kube-system",
        "metrics_bind_address": f"127.0.0.1:{port}",
        "leader_election": {"lease_duration": 4, "renew_deadline": 3, "retry_period": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    world.create_class("rbd", {"type": "rbd"})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioner.cli.main",
            "run",
            "--config",
            str(tmp_path / "config.yaml"),
            "--kubeconfig",
            str(kubeconfig),
            "--identity",
            "pod-a",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        world.create_pvc("data", "rbd")
        world.wait_bound("data", timeout=30)

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, ""

        wait_for(lambda: get("/readyz")[0] == 200, 10, "ready")
        assert 200 == get("/healthz")[0]
        success = 'cinder_provisioner_provision_total{outcome="success",reason="",storage_class="rbd"} 1.0'
        wait_for(lambda: success in get("/metrics")[1], 10, "success counted")
        status, metrics = get("/metrics")
        assert 200 == status
        assert "cinder_provisioner_pvc_bound_seconds_bucket" in metrics
        assert (
            'cinder_provisioner_cinder_request_seconds_count{operation="create_volume",status="ok"}'
            in metrics
        )
        assert "cinder_provisioner_leader 1.0" in metrics
        slot = 'cinder_provisioner_cinder_slot_seconds_total{cloud="default",operation="create_volume"}'
        assert slot in metrics
        wait = 'cinder_provisioner_cinder_slot_wait_seconds_count{cloud="default",operation="create_volume"}'
        assert wait in metrics
        proc.send_signal(signal.SIGTERM)
        assert 0 == proc.wait(20)
        lease = world.sim.get("leases", "kube-system", "cinder-provisioner")
        assert lease is not None
        assert "" == lease["spec"]["holderIdentity"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        _, err = proc.communicate() if proc.stderr and not proc.stderr.closed else ("", b"")
    del err


def test_run_bad_config_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    """Contradictory leader-election timing: exit 2 and one stderr line naming the setting."""
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "cluster_id": "x",
                "clouds": {
                    "default": {
                        "auth_type": "noauth",
                        "auth": {"endpoint": "http://127.0.0.1:1/v3/ab", "token": "a:b"},
                    }
                },
                "default_cloud": "default",
                "leader_election": {"lease_duration": 5, "renew_deadline": 10},
            }
        )
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", "run", "--config", str(tmp_path / "c.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 2 == result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert "leader_election" in lines[0]
    assert time.monotonic() - started < 30
