"""P4: what the node agent adds to a stage above the tools it runs, and how fast it gets out of the udev hang.

The agent (``cinder-attach``, which this package must not import) is run as users and kubelet's debug
path run it — ``cinder-attach stage`` / ``unstage`` processes — on a fake node: the fake ``rbd``,
``udevadm`` and filesystem tools of ``tests/fakes`` first on PATH, state in a temporary directory (the
same world ``tests/fakes/world.py`` builds; rebuilt here because the benchmark lives in the product's
package). The agent logs every command it ran with its duration (JSON lines on stderr), so:

- **overhead** of one stage = its process wall time - the wall time of a stage-less ``unstage`` process
  (interpreter start, imports, settings, the lock: the cost of any ``cinder-attach`` process, which a
  long-running ``serve`` pays once) - the tools' own time (every ``command`` line's seconds, plus the
  supervised ``rbd device map`` from its start to ``rbd_mapped``); the median over the repeats;
- **recovery** from the udev-ordering hang (the fake ``rbd`` waits for a re-sent ``add`` event) = from
  the map's start to ``rbd_mapped`` - ``udev_trigger_after``: how long after the targeted trigger is due
  the stage goes on.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from provisioner.csi_contract import RbdTarget, encode

#: tests/fakes of this checkout (the benchmark runs from the repository, like tox does)
FAKES = Path(__file__).resolve().parents[3] / "tests" / "fakes"
KEY = "AQBbenchPlantedKey0000000000000000000000=="
#: the agent's timing settings on the fake node (the integration tests' values)
SETTINGS = {
    "udev_trigger_after": "0.5",
    "udev_broad_trigger_after": "0.3",
    "map_timeout": "5",
    "kill_grace": "0.3",
    "command_timeout": "10",
    "unmap_retries": "3",
    "unmap_backoff": "0.05",
    "poll_interval": "0.02",
}


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def tool_seconds(log_lines: list[dict[str, Any]]) -> tuple[float, float | None]:
    """(the tools' own seconds, the supervised map's seconds or None) from the agent's JSON log lines.

    ``command`` lines carry their own ``seconds``; the supervised ``rbd device map`` is logged when it
    starts (``command_started``) and when its device is recorded (``rbd_mapped``).
    """
    total = 0.0
    map_started: float | None = None
    map_s: float | None = None
    for line in log_lines:
        event = line.get("event")
        if event == "command":
            total += float(line.get("seconds", 0.0))
        elif event == "command_started" and "map" in (line.get("argv") or []):
            map_started = _timestamp(line["timestamp"])
        elif event in ("rbd_mapped", "rbd_map_timeout_adopted") and map_started is not None:
            map_s = _timestamp(line["timestamp"]) - map_started
    return total + (map_s or 0.0), map_s


class FakeNode:
    """A fake node in ``root``: fake sysfs/dev, the fakes' config, PATH and CINDER_ATTACH_* settings."""

    def __init__(self, root: Path, *, udev: str, noudev: bool) -> None:
        self.root = root
        world, sysfs, dev, state = (root / d for d in ("world", "sys", "dev", "state"))
        for d in (world, sysfs, dev, state):
            d.mkdir(parents=True, exist_ok=True)
        shim = root / "shim"
        shim.mkdir()
        (shim / "python3").symlink_to(sys.executable)
        (root / "mountinfo").write_text("")
        path = [str(shim), str(FAKES / "bin"), str(FAKES / "fsbin"), os.environ.get("PATH", "/usr/bin:/bin")]
        values = {
            **SETTINGS,
            "sysfs_root": str(sysfs),
            "dev_root": str(dev),
            "state_dir": str(state),
            "mountinfo": str(root / "mountinfo"),
            "kubelet_dir": str(root),
            "iscsi_root": str(root / "etc-iscsi"),
            "node_id": "bench-node",
        }
        self.env = {
            "PATH": os.pathsep.join(path),
            "FAKE_ATTACH_WORLD": str(world),
            "HOME": os.environ.get("HOME", "/root"),
            "PYTHONDONTWRITEBYTECODE": "1",
            **{"CINDER_ATTACH_" + k.upper(): v for k, v in values.items()},
        }
        config = {
            "sysfs_root": str(sysfs),
            "dev_root": str(dev),
            "mountinfo": str(root / "mountinfo"),
            "iscsi_root": str(root / "etc-iscsi"),
            "loop": False,
            "rbd": {
                "noudev": noudev,
                "udev": udev,
                "hang": "none",
                "images": {"volumes/volume-1": 64 << 20},
                "key": KEY,
            },
            "iscsi": {"targets": {}, "multipath": False},
            "fail": {},
        }
        (world / "config.json").write_text(json.dumps(config))
        target = RbdTarget(monitors=("10.0.0.1:6789",), pool="volumes", image="volume-1", user="cinder")
        (root / "ctx.json").write_text(json.dumps(encode(target)))
        (root / "sec.json").write_text(json.dumps({"key": KEY}))
        (root / "sec.json").chmod(0o600)

    def cli(self, *args: str) -> tuple[float, list[dict[str, Any]]]:
        """Run ``cinder-attach ARGS``; (``time.time()`` at its start, its JSON log lines); failure raises."""
        script = Path(sys.executable).parent / "cinder-attach"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "attach.cli"]
        started = time.time()
        result = subprocess.run(
            [*argv, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"cinder-attach {args[0]} exited {result.returncode}: {result.stderr.strip()[-400:]}"
            )
        lines = []
        for text in result.stderr.splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
        return started, lines

    def stage(self) -> tuple[float, list[dict[str, Any]]]:
        r = self.root
        return self.cli(
            "stage",
            "--volume-context", str(r / "ctx.json"),
            "--secrets", str(r / "sec.json"),
            "--staging-path", str(r / "staging"),
            "--volume-id", "vol-1",
            "--fs-type", "ext4",
        )  # fmt: skip

    def unstage(self) -> tuple[float, list[dict[str, Any]]]:
        return self.cli("unstage", "--volume-id", "vol-1", "--staging-path", str(self.root / "staging"))


def stage_overhead(started: float, lines: list[dict[str, Any]], baseline_pre_s: float) -> dict[str, float]:
    """One stage's split (seconds): before its first command, the tools, the rest; and the overhead.

    ``started`` is the wall clock when the process was started, ``baseline_pre_s`` how long a process
    that runs no tool takes from there to its first log line (interpreter, imports, settings, lock).
    """
    tools, _ = tool_seconds(lines)
    starts = [
        _timestamp(x["timestamp"]) - (float(x.get("seconds", 0.0)) if x.get("event") == "command" else 0.0)
        for x in lines
        if x.get("event") in ("command", "command_started")
    ]
    staged = [_timestamp(x["timestamp"]) for x in lines if x.get("event") == "staged"]
    if not starts or not staged:
        raise RuntimeError("the stage ran no command or never logged 'staged'")
    first = min(starts)
    pre = first - started
    in_op = staged[-1] - first - tools
    return {"pre_s": pre, "tools_s": tools, "in_op_s": in_op, "overhead_s": in_op + pre - baseline_pre_s}


def run_node(repeats: int = 5) -> dict[str, Any] | None:
    """P4's figures (None when this checkout has no ``tests/fakes``)."""
    if not (FAKES / "bin" / "rbd").exists():
        return None
    with tempfile.TemporaryDirectory(prefix="bench-p4-") as tmp:
        node = FakeNode(Path(tmp) / "noudev", udev="ok", noudev=True)
        pres, splits = [], []
        for _ in range(repeats):
            # paired with each stage (the machine's load drifts): a tool-less process, nothing stashed
            started, lines = node.unstage()
            pres.append(_timestamp(lines[0]["timestamp"]) - started)
            started, lines = node.stage()
            splits.append(stage_overhead(started, lines, pres[-1]))
            node.unstage()
        baseline_pre = statistics.median(pres)
        hang = FakeNode(Path(tmp) / "reorder", udev="reorder", noudev=False)
        recoveries = []
        trigger = float(SETTINGS["udev_trigger_after"])
        for _ in range(repeats):
            _, lines = hang.stage()
            _, map_s = tool_seconds(lines)
            if map_s is None or not any(line.get("event") == "rbd_map_udev_hang" for line in lines):
                raise RuntimeError("the udev-reorder stage did not go through the targeted trigger")
            recoveries.append(map_s - trigger)
            hang.unstage()

    def med(key: str) -> float:
        return statistics.median(x[key] for x in splits) * 1000

    return {
        "overhead_ms": round(med("overhead_s"), 1),
        "in_operation_ms": round(med("in_op_s"), 1),
        "before_first_command_ms": round(med("pre_s"), 1),
        "process_baseline_ms": round(baseline_pre * 1000, 1),
        "tools_ms": round(med("tools_s"), 1),
        "recovery_s": round(statistics.median(recoveries), 3),
        "udev_trigger_after_s": trigger,
        "repeats": repeats,
        "overhead_notes": (
            f"between/after tools {med('in_op_s'):.0f} ms + before the first tool "
            f"{med('pre_s'):.0f} - {baseline_pre * 1000:.0f} ms process start; tools {med('tools_s'):.0f} ms"
        ),
        "recovery_notes": f"map start -> mapped - udev_trigger_after {trigger:g} s (median of {repeats})",
    }
