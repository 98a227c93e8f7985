"""The kubernetes client's parts the adapter needs load without the package's other subpackages."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import provisioner.adapters.kube
before = sorted(m for m in sys.modules if m.startswith("kubernetes"))
import kubernetes, kubernetes.watch
version = kubernetes.__version__
from kubernetes.client import CoreV1Api
print(json.dumps({"before": before, "version": version, "watch": "kubernetes.watch" in sys.modules,
                  "dynamic_after": "kubernetes.dynamic" in sys.modules, "api": CoreV1Api.__name__}))
"""


def test_the_adapter_loads_client_and_config_only_and_the_package_stays_whole_for_others() -> None:
    """After importing the adapter: no kubernetes.dynamic / stream / watch / leaderelection module; then a
    submodule imports on use, and the first name only the package's __init__ defines runs that __init__."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    loaded = {m.split(".")[1] for m in doc["before"] if m.count(".") >= 1}
    assert {"client", "config"} <= loaded
    assert set() == loaded & {"dynamic", "stream", "watch", "leaderelection", "informer"}
    assert (True, True, "CoreV1Api") == (doc["watch"], doc["dynamic_after"], doc["api"])
    assert doc["version"].startswith("37.")
