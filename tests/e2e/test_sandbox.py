"""``cinder-provisioner sandbox``: the README's main-job command, run as a user would."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

from kubernetes.client import Configuration

from provisioner.adapters.kube import KubeAdapter, load_client_configuration


def test_sandbox_20_pvcs_json_summary() -> None:
    """--pvcs 20 --json: exit 0, every claim bound and deleted, no leaked volume, summary last."""
    result = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", "sandbox", "--pvcs", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"bound": 20, "deleted": 20, "leaked_volumes": 0} == {
        k: summary[k] for k in ("bound", "deleted", "leaked_volumes")
    }
    assert summary["seconds"] > 0
    assert "ok" == summary["snapshot_restore"]  # a VolumeSnapshot cut by our controller, restored, given back
    assert "CINDER VOLUME" in result.stdout


def test_sandbox_keep_serves_a_kubeconfig_until_interrupted() -> None:
    """--keep prints a kubeconfig and the Cinder endpoint; the cluster answers; Ctrl-C ends it with 0."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "provisioner.cli.main", "sandbox", "--pvcs", "3", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        kubeconfig = None
        for line in proc.stdout:
            if m := re.search(r"kubectl --kubeconfig (\S+)", line):
                kubeconfig = m.group(1)
                assert "Cinder: http://127.0.0.1:" in line
                break
        assert kubeconfig is not None
        config: Configuration = load_client_configuration(kubeconfig)
        kube = KubeAdapter(config)
        try:
            pvcs, _ = kube.list("persistentvolumeclaims")
        finally:
            kube.close()
        bound = {p["metadata"]["name"] for p in pvcs if p["status"]["phase"] == "Bound"}
        assert {"data-000", "data-001", "data-002", "data-000-restored"} == bound  # + the snapshot restore
        proc.send_signal(signal.SIGINT)
        assert 0 == proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
