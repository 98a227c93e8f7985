"""An in-process Kubernetes API server for tests, the sandbox and benchmarks (see docs/kube-simulator.md).

The official ``kubernetes`` client talks to it unchanged over real HTTP; it reproduces the API semantics
and the kube-controller-manager behaviours the provisioner depends on, with fault injection.
"""

from provisioner.testworld.kube_sim.faults import Faults, RequestRecord
from provisioner.testworld.kube_sim.simulator import KubeSimulator, resolve_resource

__all__ = ["Faults", "KubeSimulator", "RequestRecord", "resolve_resource"]
