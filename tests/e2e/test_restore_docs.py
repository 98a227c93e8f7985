"""docs/restore.md's walkthroughs, run command by command as written, against a sandbox-like world.

The Kubernetes simulator with its common snapshot controller, the Cinder emulator with a backup service,
the real controller (which cuts the Cinder snapshots and backups for our driver's contents), and the
example VolumeSnapshotClasses from ``config/``. A walkthrough that drifts from the commands fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from provisioner.domain import names
from tests.e2e.world import World

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "restore.md"


def walkthrough(title: str) -> list[str]:
    """The ``cinder-provisioner`` commands of one walkthrough section, in order."""
    text = DOC.read_text()
    start = text.index(f"## Walkthrough: {title}")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else len(text)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    assert commands, f"no commands in walkthrough {title!r}"
    assert all(c.startswith("cinder-provisioner ") for c in commands), commands
    return commands


def execute(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = command.split()[1:]
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", *argv],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env}, check=False,
    )  # fmt: skip


def prepared(world: World, tmp_path: Path) -> dict[str, str]:
    """The controller, a class, the example VolumeSnapshotClasses, a bound claim; the CLI's environment."""
    world.start_replica()
    world.create_class("fast", {})
    for path in sorted((ROOT / "config").glob("volumesnapshotclass-*.yaml")):
        world.kube.create("volumesnapshotclasses", yaml.safe_load(path.read_text()))
    world.create_pvc("data", "fast", size="1Gi")
    world.wait_bound("data")
    config = tmp_path / "provisioner.yaml"
    config.write_text(yaml.safe_dump({"cluster_id": "e2e", "clouds": {"default": world.cloud}}))
    kubeconfig = world.sim.write_kubeconfig(tmp_path / "kubeconfig")
    return {"KUBECONFIG": str(kubeconfig), "CINDER_PROVISIONER_CONFIG": str(config)}


def test_walkthrough_restore_a_snapshot(world: World, tmp_path: Path) -> None:
    """Snapshot create --wait, list, restore --from --wait: every command exits 0; the copy is Bound."""
    env = prepared(world, tmp_path)
    outputs = []
    for command in walkthrough("restore a snapshot"):
        done = execute(command, env)
        assert 0 == done.returncode, f"{command}\n{done.stderr}"
        outputs.append(done.stdout)
    listed = outputs[1].splitlines()
    assert "default/data-before-upgrade" in listed[1]  # the newest row is the snapshot just taken
    pvc = world.pvc("data-restored")
    assert pvc is not None
    assert "Bound" == pvc["status"]["phase"]
    assert "data-before-upgrade" == pvc["spec"]["dataSource"]["name"]
    pv = world.pv_of("data-restored")
    assert pv is not None
    volume = world.cinder.get_volume(pv["metadata"]["annotations"][names.ANN_VOLUME_ID])
    assert volume.snapshot_id is not None
    assert volume.snapshot_id in outputs[1]


def test_walkthrough_restore_a_backup(world: World, tmp_path: Path) -> None:
    """Backup create --wait, list as JSON, restore --backup <its id> --wait: the claim is Bound."""
    env = prepared(world, tmp_path)
    backup_id = ""
    for command in walkthrough("restore a backup"):
        done = execute(command.replace("BACKUP_ID", backup_id or "BACKUP_ID"), env)
        assert 0 == done.returncode, f"{command}\n{done.stderr}"
        if " -o json" in command:
            rows = json.loads(done.stdout)
            backups = [r for r in rows if r["kind"] == "backup"]
            assert ["default/data-nightly"] == [r["volumesnapshot"] for r in backups]
            backup_id = backups[0]["id"]
    pvc = world.pvc("data-from-backup")
    assert pvc is not None
    assert "Bound" == pvc["status"]["phase"]
    assert backup_id == pvc["metadata"]["annotations"][names.ANN_RESTORE_FROM_BACKUP]
