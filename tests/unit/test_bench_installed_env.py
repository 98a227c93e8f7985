"""The benchmark's measured processes start from bytecode, as a `pip install .` image does."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import provisioner.runtime.replica
from provisioner.testworld.harness.bench_process import installed_env


def test_the_measured_process_imports_our_modules_from_compiled_bytecode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # what tox sets for the tests
    installed_env.cache_clear()
    env = installed_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env
    source = Path(provisioner.runtime.replica.__file__)
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert cached.stat().st_mtime >= source.stat().st_mtime
    # a child with that environment finds the bytecode: importing writes nothing new
    before = cached.stat().st_mtime_ns
    probe = "import provisioner.runtime.replica as r; print(r.__cached__)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(cached)
    assert cached.stat().st_mtime_ns == before
    assert os.environ["PYTHONDONTWRITEBYTECODE"] == "1"  # ours is untouched
