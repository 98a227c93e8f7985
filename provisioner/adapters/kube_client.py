"""The parts of the official ``kubernetes`` client the Kubernetes adapter uses, imported without the rest.

``import kubernetes.client`` runs the ``kubernetes`` package's ``__init__`` first, and that imports every
subpackage: ``dynamic`` (which pulls in ``kubernetes_validate`` and ``jsonschema`` where they are
installed), ``stream`` (websocket), ``watch``, ``leaderelection``, ``informer``, ``utils``. The controller
uses none of them: only ``client`` (``Configuration``, ``ApiClient`` and its ``RESTClientObject``,
``exceptions``) and ``config`` (the kubeconfig and in-cluster loaders). So the top-level package is made
*lazy* before those are imported: its module object is created from its real spec and registered, its
``__init__`` is not run. A submodule (``kubernetes.watch``) is still imported on first use as usual, and
the first use of anything else the ``__init__`` defines (``kubernetes.__version__``) runs the real
``__init__`` then, so other code that imports ``kubernetes`` sees the package it expects. Measured on the
``run`` process at ready: 79 fewer modules, 3.6 MiB less resident memory, ~0.1 s less start-up CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


def lazy_package(name: str) -> ModuleType:
    """Register package ``name`` without running its ``__init__`` (see the module docstring)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no package {name}")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def module_getattr(attr: str) -> Any:  # PEP 562: called only for names the module does not have yet
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        del module.__dict__["__getattr__"]
        loader.exec_module(module)  # the real __init__, once, on first use of a name it defines
        return getattr(module, attr)

    module.__dict__["__getattr__"] = module_getattr
    sys.modules[name] = module
    return module


lazy_package("kubernetes")

from kubernetes import config  # noqa: E402 - only after the package is registered lazily
from kubernetes.client import ApiClient, Configuration, exceptions  # noqa: E402

__all__ = ["ApiClient", "Configuration", "config", "exceptions", "lazy_package"]
