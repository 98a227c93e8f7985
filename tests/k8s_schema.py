"""Validate objects we write against the official Kubernetes OpenAPI schemas (PyPI ``kubernetes-validate``).

Why: our simulators accept whatever we send; a real API server rejects unknown fields and wrong types.
``assert_valid`` checks an object (or every item of a ``v1/List``) in *strict* mode — unknown fields are
errors — against the oldest Kubernetes we support and the newest schema the package ships, so a PV that
validates here is accepted by every server in between.

Usage (any test suite)::

    from tests.k8s_schema import assert_valid
    assert_valid(pv)            # raises AssertionError naming the version and the path of the problem
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import kubernetes_validate

#: The oldest Kubernetes release we support.
OLDEST_VERSION: Final = "1.29"
#: The newest schema kubernetes-validate ships (1.37 with kubernetes-validate 1.37.0).
NEWEST_VERSION: Final = ".".join(kubernetes_validate.utils.latest_version().split(".")[:2])
VERSIONS: Final = (OLDEST_VERSION, NEWEST_VERSION)


def assert_valid(obj: Mapping[str, Any], *, versions: tuple[str, ...] = VERSIONS) -> None:
    """Fail unless ``obj`` (or each item of a ``List``) is valid for every version in ``versions``."""
    if obj.get("kind") == "List":
        for item in obj.get("items") or []:
            assert_valid(item, versions=versions)
        return
    for version in versions:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "<root>"
            name = (obj.get("metadata") or {}).get("name")
            raise AssertionError(
                f"{obj.get('kind')} {name!r} invalid for Kubernetes {version}: {where}: {e.message}"
            ) from None
