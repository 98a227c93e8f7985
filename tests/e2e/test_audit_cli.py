"""``cinder-provisioner audit`` as admins run it: a subprocess with a config file and a kubeconfig."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from provisioner.domain.model import CreateVolumeRequest
from tests.e2e.test_audit import tagged
from tests.e2e.world import World, wait_for


def audit(world: World, tmp_path: Path, *argv: str, **config: object) -> subprocess.CompletedProcess[str]:
    kubeconfig = world.sim.write_kubeconfig(tmp_path / "kubeconfig")
    doc = {"cluster_id": "e2e", "clouds": {"default": world.cloud}, "default_cloud": "default", **config}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner.cli.main",
            "audit",
            "--config",
            str(tmp_path / "config.yaml"),
            "--kubeconfig",
            str(kubeconfig),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_exit_codes_cloud_choice_and_no_progress_off_a_terminal(world: World, tmp_path: Path) -> None:
    """0 clean, 1 with findings, 2 for an unknown --cloud (named); no progress line when not a TTY."""
    world.start_replica()
    clean = audit(world, tmp_path, "-o", "json")
    assert 0 == clean.returncode, clean.stderr
    assert [] == json.loads(clean.stdout)["findings"]
    assert "reading:" not in clean.stderr
    cinder = world.cinder
    vid = cinder.create_volume(CreateVolumeRequest(name="pvc-o", size_gib=1, metadata=tagged("u-o"))).id
    wait_for(lambda: cinder.get_volume(vid).status == "available", 5, "available")
    dirty = audit(world, tmp_path, "--cloud", "default")
    assert 1 == dirty.returncode
    assert vid in dirty.stdout
    bad = audit(world, tmp_path, "--cloud", "nope")
    assert 2 == bad.returncode
    assert "error: cloud: no cloud named 'nope' (known: default)" == bad.stderr.strip()
    assert "Traceback" not in bad.stderr


def test_fix_honours_the_concurrency_cap(world: World, tmp_path: Path) -> None:
    """--concurrency 1: never more than one Cinder request in flight while three orphans are deleted."""
    world.start_replica()
    cinder = world.cinder
    ids = [
        cinder.create_volume(CreateVolumeRequest(name=f"pvc-o{i}", size_gib=1, metadata=tagged(f"u{i}"))).id
        for i in range(3)
    ]
    wait_for(lambda: all(cinder.get_volume(v).status == "available" for v in ids), 5, "available")
    world.emu.clear_calls()
    done = audit(
        world,
        tmp_path,
        "-o",
        "json",
        "--fix",
        "orphan-volume",
        "--yes",
        "--grace",
        "0s",
        "--concurrency",
        "1",
    )
    assert 1 == done.returncode, done.stderr
    assert {(v, "deleted") for v in ids} == {
        (r["cinder_id"], r["action"]) for r in json.loads(done.stdout)["fix"]
    }
    assert 1 == world.emu.max_in_flight_seen
    assert sorted(ids) == sorted(
        c.path.rsplit("/", 1)[-1] for c in world.emu.calls() if c.operation == "delete_volume"
    )


def test_bad_config_is_exit_2_one_line(world: World, tmp_path: Path) -> None:
    """A configuration error is exit 2 with one line naming the setting."""
    result = audit(world, tmp_path, workers="many")
    assert 2 == result.returncode
    assert 1 == len(result.stderr.strip().splitlines())
    assert result.stderr.startswith("error: workers")
