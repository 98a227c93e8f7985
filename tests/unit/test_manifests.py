"""The kustomize deployment under ``manifests/``: valid Kubernetes, and consistent with what the code does.

Why: a manifest is code nobody runs until a cluster does. These tests build every kustomization offline,
validate each object against the official schemas (strict, oldest and newest supported Kubernetes), and
tie the deployment to the programs: RBAC equals what the controller calls (derived from the source), the
probes hit the paths the health server serves, the mounted config loads, the CSI socket paths line up,
and the StorageClasses pass the provisioner's own parameter parser.

The loader (``build``) is a deliberately tiny kustomize: ``resources`` (files and directories, recursively),
``namespace``, ``images`` and ``replicas`` — the only fields used under ``manifests/``. Any other field is an
error here, so a manifest change that needs more of kustomize cannot silently build differently.
Semantics follow kustomize v5 (checked against ``kubectl kustomize`` when kubectl is installed): the
namespace goes on every namespaced object and renames ``Namespace`` objects; (Cluster)RoleBinding subjects
named ``default`` get it too; a ServiceAccount subject *without* a namespace gets its account's final
namespace (nameReference) — one written out is left alone, even by an overlay; images match by name
without tag/digest.
"""

from __future__ import annotations

import ast
import copy
import http.client
import inspect
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from attach import settings as attach_settings
from provisioner.adapters.health import HealthServer
from provisioner.adapters.kube import RESOURCES, KubeAdapter
from provisioner.config.settings import ProvisionerConfig, load_config
from provisioner.domain import names
from provisioner.domain.params import parse_class_fields, parse_class_parameters
from provisioner.runtime.replica import Replica
from tests.k8s_schema import assert_valid

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
Obj = dict[str, Any]

# ---- the loader ---------------------------------------------------------------------------------------

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CSIDriver", "StorageClass"}
NAMESPACED = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Service", "Deployment"}
NAMESPACED |= {"DaemonSet", "PodDisruptionBudget"}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}


def build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` prints (for the fields documented above)."""
    objs = _build(directory)
    accounts = {o["metadata"]["name"]: o["metadata"].get("namespace") for o in objs if _is_sa(o)}
    for subject in _subjects(objs):
        if subject["kind"] == "ServiceAccount" and "namespace" not in subject:
            subject["namespace"] = accounts[subject["name"]]
    return objs


def _build(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - KUSTOMIZATION_FIELDS
    if unknown:
        raise ValueError(f"{directory}: kustomization fields {sorted(unknown)} unsupported by this loader")
    objs: list[Obj] = []
    for entry in spec.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            objs.extend(_build(path))
        else:
            objs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    if spec.get("namespace"):
        _set_namespace(objs, spec["namespace"])
    for image in spec.get("images") or []:
        _set_image(objs, image)
    for rep in spec.get("replicas") or []:
        targets = [o for o in objs if o["kind"] in WORKLOADS and o["metadata"]["name"] == rep["name"]]
        if not targets:
            raise ValueError(f"replicas: no workload named {rep['name']}")
        for o in targets:
            o["spec"]["replicas"] = rep["count"]
    ids = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{directory}: duplicate objects")
    return objs


def _set_namespace(objs: list[Obj], namespace: str) -> None:
    for o in objs:
        if o["kind"] == "Namespace":
            o["metadata"]["name"] = namespace
        elif o["kind"] in NAMESPACED:
            o["metadata"]["namespace"] = namespace
        elif o["kind"] not in CLUSTER_SCOPED:
            raise ValueError(f"unknown scope of kind {o['kind']}: add it to NAMESPACED or CLUSTER_SCOPED")
    for subject in _subjects(objs):
        if subject["name"] == "default":
            subject["namespace"] = namespace


def _subjects(objs: list[Obj]) -> list[Obj]:
    return [s for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o["subjects"]]


def _is_sa(o: Obj) -> bool:
    return bool(o["kind"] == "ServiceAccount")


def _set_image(objs: list[Obj], image: Obj) -> None:
    for container in (c for o in objs for c in _containers(o)):
        ref = container["image"]
        name = ref.split("@", 1)[0]
        tag_at = name.rfind(":")
        if tag_at > name.rfind("/"):
            name = name[:tag_at]
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            new += "@" + image["digest"]
        elif "newTag" in image:
            new += ":" + str(image["newTag"])
        else:
            new = ref.replace(name, new, 1)
        container["image"] = new


def _containers(o: Obj) -> list[Obj]:
    if o["kind"] not in WORKLOADS:
        return []
    pod = o["spec"]["template"]["spec"]
    return list(pod.get("initContainers") or []) + list(pod["containers"])


# ---- helpers ------------------------------------------------------------------------------------------


class Bundle:
    """The built objects of one kustomization, with lookups."""

    def __init__(self, objs: list[Obj]) -> None:
        self.objs = objs

    def all(self, kind: str) -> list[Obj]:
        """Every object of ``kind``."""
        return [o for o in self.objs if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        """The only object of ``kind`` (named ``name`` when given)."""
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert 1 == len(found), f"{kind} {name}: {len(found)} found"
        return found[0]

    @property
    def controller(self) -> Obj:
        """The controller Deployment."""
        return self.one("Deployment")

    @property
    def node(self) -> Obj:
        """The node agent DaemonSet."""
        return self.one("DaemonSet")


def container(workload: Obj, name: str | None = None) -> Obj:
    """A container of a workload (the first one when ``name`` is None)."""
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


def resolved_env(workload: Obj, c: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would resolve it (downward API with sample values)."""
    meta = workload["metadata"]
    samples = {
        "metadata.name": f"{meta['name']}-7d9f8-abcde",
        "metadata.uid": "0b8d3f3e-2a11-4d87-9d1b-6d3c1c3e8d0a",
        "metadata.namespace": meta["namespace"],
        "spec.nodeName": "worker-1",
    }
    env = {}
    for var in c.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("fieldRef")
        env[var["name"]] = samples[ref["fieldPath"]] if ref else var["value"]
    return env


def host_path(workload: Obj, c: Obj, path: str) -> str:
    """Translate a path inside container ``c`` to the host path, through its hostPath volume mounts."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    best = max(
        (m for m in c["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    return str(volumes[best["name"]]["hostPath"]["path"]) + path[len(best["mountPath"]) :]


def mounted_config(bundle: Bundle, tmp_path: Path) -> tuple[ProvisionerConfig, Path]:
    """Lay out the controller's config volume as the kubelet would and load it with the pod's env."""
    dep = bundle.controller
    c = container(dep)
    config_arg = c["args"][c["args"].index("--config") + 1]
    mount = next(m for m in c["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/"))
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    root = tmp_path / mount["mountPath"].lstrip("/")
    root.mkdir(parents=True)
    # The admin's clouds.yaml (docs/deployment.md): config/clouds.yaml's entry, under the name we configure.
    raw = yaml.safe_load(bundle.one("ConfigMap")["data"]["config.yaml"])
    cloud_name = raw["clouds"][raw["default_cloud"]]["cloud"]
    example = yaml.safe_load((ROOT / "config" / "clouds.yaml").read_text(encoding="utf-8"))["clouds"][
        "example"
    ]
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = bundle.one("ConfigMap", source["configMap"]["name"])["data"]
            for item in source["configMap"]["items"]:
                (root / item["path"]).write_text(data[item["key"]], encoding="utf-8")
        elif not source["secret"].get("optional"):
            for item in source["secret"]["items"]:
                (root / item["path"]).write_text(yaml.safe_dump({"clouds": {cloud_name: example}}))
    local = root / config_arg[len(mount["mountPath"]) + 1 :]
    return load_config(str(local), env=resolved_env(dep, c)), local


# ---- fixtures -----------------------------------------------------------------------------------------

KUSTOMIZATIONS = {"base": MANIFESTS / "base", "overlay-example": MANIFESTS / "overlays" / "example"}


@pytest.fixture(params=sorted(KUSTOMIZATIONS), scope="module")
def bundle(request: pytest.FixtureRequest) -> Bundle:
    """Each kustomization, built."""
    return Bundle(build(KUSTOMIZATIONS[request.param]))


# ---- schema -------------------------------------------------------------------------------------------


def test_every_object_is_valid_for_supported_kubernetes(bundle: Bundle) -> None:
    """Every built object passes strict schema validation for Kubernetes 1.29 and the newest release."""
    assert len(bundle.objs) >= 15
    for obj in bundle.objs:
        assert_valid(obj)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_loader_builds_what_kubectl_kustomize_builds(name: str) -> None:
    """Where kubectl exists, ``kubectl kustomize`` prints exactly the objects the offline loader builds."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout

    def by_id(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}

    assert by_id([o for o in yaml.safe_load_all(out) if o]) == by_id(build(KUSTOMIZATIONS[name]))


def test_loader_refuses_kustomize_features_it_does_not_implement(tmp_path: Path) -> None:
    """A kustomization using e.g. ``patches`` fails to build here instead of building differently."""
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: []\n")
    with pytest.raises(ValueError, match="patches"):
        build(tmp_path)


# ---- RBAC ---------------------------------------------------------------------------------------------

VERB_OF_METHOD = {"get": "get", "create": "create", "replace": "update", "patch": "patch", "delete": "delete"}
VERB_OF_METHOD |= {"list": "list", "watch": "watch"}
#: Namespaced resources the controller only touches in its own namespace: its Lease (leader.py, namespace=
#: config.namespace) and its Secrets (provision.py / deletion.py, the class's secretNamespace, which
#: defaults to config.secret_namespace = namespace). Everything else follows claims into any namespace.
OWN_NAMESPACE_ONLY = {"leases", "secrets"}
#: Verbs the design grants although no code path uses them yet (the deployment brief's list): direct
#: reads of claims and classes (today served from informer caches), the claim `update`, node topology,
#: snapshot listing, reading back an owned Secret.
DESIGN_GRANTS = {
    ("", "persistentvolumeclaims", "get"),
    ("", "persistentvolumeclaims", "update"),
    ("storage.k8s.io", "storageclasses", "get"),
    ("", "nodes", "get"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("snapshot.storage.k8s.io", "volumesnapshots", "list"),
    ("snapshot.storage.k8s.io", "volumesnapshots", "watch"),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", "list"),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", "watch"),
    ("", "secrets", "get"),
}
#: Modules that are not the deployed controller: the sandbox plays the user (creates claims and classes).
NOT_THE_CONTROLLER = ("testworld", "sandbox.py")
#: Commands people run with their own kubeconfig (the backup team's, the admin's audit): not the controller's
#: service account, so not its RBAC.
USER_COMMANDS = (
    "cli/snapshot.py",
    "cli/snapshots.py",
    "cli/restore.py",
    "cli/backup_team.py",
    "cli/audit.py",
)


def controller_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes call in the controller's source, found by parsing it."""
    calls: set[tuple[str, str]] = set()
    for path in (ROOT / "provisioner").rglob("*.py"):
        if any(part in path.parts or path.name == part for part in NOT_THE_CONTROLLER):
            continue
        if path.relative_to(ROOT / "provisioner").as_posix() in USER_COMMANDS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            resource = node.args[0].value
            if not isinstance(resource, str) or resource not in RESOURCES:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "Informer":
                calls |= {(resource, "list"), (resource, "watch")}
            elif name in VERB_OF_METHOD:
                calls.add((resource, VERB_OF_METHOD[name]))
                sub = {k.arg: k.value for k in node.keywords}.get("subresource")
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    calls.add((f"{resource}/{sub.value}", VERB_OF_METHOD[name]))  # RBAC names it apart
    return calls


def group_of(resource: str) -> str:
    """API group from the adapter's path prefix: ``/api/v1`` → core, ``/apis/<group>/<v>`` → group."""
    prefix = RESOURCES[resource.split("/", maxsplit=1)[0]].prefix
    return "" if prefix == "/api/v1" else prefix.split("/")[2]


def needed_permissions(namespace: str) -> set[tuple[str, str, str, str]]:
    """(scope, group, resource, verb) the controller needs; scope is ``*`` (cluster) or a namespace."""
    # list/watch have no namespace parameter in the adapter: they always go cluster-wide.
    assert "namespace" not in inspect.signature(KubeAdapter.list).parameters
    assert "namespace" not in inspect.signature(KubeAdapter.watch).parameters
    triples = {(group_of(r), r, v) for r, v in controller_calls()} | DESIGN_GRANTS
    return {
        (namespace if r in OWN_NAMESPACE_ONLY and v not in ("list", "watch") else "*", g, r, v)
        for g, r, v in triples
    }


def granted_permissions(bundle: Bundle, account: tuple[str, str]) -> set[tuple[str, str, str, str]]:
    """(scope, group, resource, verb) granted to ``(namespace, name)`` by the bindings in the bundle."""
    granted = set()
    for binding in bundle.all("ClusterRoleBinding") + bundle.all("RoleBinding"):
        subjects = {
            (s.get("namespace"), s["name"]) for s in binding["subjects"] if s["kind"] == "ServiceAccount"
        }
        if account not in subjects:
            continue
        ref = binding["roleRef"]
        role = bundle.one(ref["kind"], ref["name"])
        if ref["kind"] == "Role":
            assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        scope = "*" if binding["kind"] == "ClusterRoleBinding" else binding["metadata"]["namespace"]
        for rule in role["rules"]:
            assert "resourceNames" not in rule
            for g in rule["apiGroups"]:
                granted |= {(scope, g, r, v) for r in rule["resources"] for v in rule["verbs"]}
    return granted


def test_source_scan_finds_the_calls_known_to_exist() -> None:
    """The source scan sees informers, leader election, claim patches and PV creation (it is not blind)."""
    expected = {
        ("persistentvolumeclaims", "list"),
        ("persistentvolumeclaims", "watch"),
        ("persistentvolumeclaims", "patch"),
        ("persistentvolumes", "create"),
        ("persistentvolumes", "delete"),
        ("leases", "update"),
        ("events", "create"),
        ("secrets", "create"),
        ("volumesnapshots", "get"),
    }
    assert expected == expected & controller_calls()


def test_controller_is_granted_exactly_what_it_needs(bundle: Bundle) -> None:
    """RBAC for the controller's account = the calls in its source + the design's list; no wildcard."""
    dep = bundle.controller
    account = (dep["metadata"]["namespace"], dep["spec"]["template"]["spec"]["serviceAccountName"])
    granted = granted_permissions(bundle, account)
    assert not {p for p in granted if "*" in p[1:]}
    needed = needed_permissions(dep["metadata"]["namespace"])
    assert (set(), set()) == (needed - granted, granted - needed)  # (missing, extra)


def test_node_agent_has_no_api_access(bundle: Bundle) -> None:
    """The node agent's account has no token and no bindings: it never talks to the Kubernetes API."""
    pod = bundle.node["spec"]["template"]["spec"]
    account = (bundle.node["metadata"]["namespace"], pod["serviceAccountName"])
    assert set() == granted_permissions(bundle, account)
    assert False is pod["automountServiceAccountToken"]


# ---- controller ---------------------------------------------------------------------------------------


def test_mounted_config_loads_and_follows_the_pod_namespace(bundle: Bundle, tmp_path: Path) -> None:
    """The ConfigMap + clouds Secret, laid out as mounted, load; namespace settings = the pod's namespace."""
    config, _ = mounted_config(bundle, tmp_path)
    namespace = bundle.controller["metadata"]["namespace"]
    assert (namespace, namespace) == (config.namespace, config.secret_namespace)
    assert names.DEFAULT_PROVISIONER_NAME == config.provisioner_name
    assert True is config.leader_election.enabled
    assert "/etc/cinder-provisioner/config.yaml" == container(bundle.controller)["args"][-1]


def test_leader_election_identity_comes_from_the_downward_api(bundle: Bundle) -> None:
    """POD_NAME / POD_UID (lease identity) and POD_NAMESPACE come from the pod's own metadata."""
    env = {v["name"]: v.get("valueFrom", {}).get("fieldRef", {}) for v in container(bundle.controller)["env"]}
    expected = {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}
    assert expected == {k: env[k].get("fieldPath") for k in expected}


def test_probes_and_service_use_the_health_server_port(bundle: Bundle, tmp_path: Path) -> None:
    """Probes and the metrics Service target the container port that metrics_bind_address listens on."""
    config, _ = mounted_config(bundle, tmp_path)
    c = container(bundle.controller)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    bind_port = int(config.metrics_bind_address.rpartition(":")[2])
    assert bind_port == ports[c["livenessProbe"]["httpGet"]["port"]]
    assert bind_port == ports[c["readinessProbe"]["httpGet"]["port"]]
    service = bundle.one("Service")
    assert [bind_port] == [ports[p["targetPort"]] for p in service["spec"]["ports"]]
    assert (
        service["spec"]["selector"].items()
        <= bundle.controller["spec"]["template"]["metadata"]["labels"].items()
    )


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize(("alive", "ready"), [(True, True), (False, True), (True, False)])
def test_probe_paths_report_the_right_check(alive: bool, ready: bool) -> None:
    """Against the real health server: liveness follows the liveness check, readiness the readiness one."""
    c = container(Bundle(build(MANIFESTS / "base")).controller)
    server = HealthServer(
        host="127.0.0.1", port=0, registry=CollectorRegistry(), ready=lambda: ready, alive=lambda: alive
    )
    server.start()
    try:
        live = _get(server.port, c["livenessProbe"]["httpGet"]["path"])
        readiness = _get(server.port, c["readinessProbe"]["httpGet"]["path"])
    finally:
        server.stop()
    assert (alive, ready) == (live == 200, readiness == 200)


def test_controller_runs_highly_available(bundle: Bundle) -> None:
    """≥ 2 replicas spread by anti-affinity, surge-first rollout, and a PDB leaving a standby."""
    spec = bundle.controller["spec"]
    assert spec["replicas"] >= 2
    terms = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert "kubernetes.io/hostname" in {t["podAffinityTerm"]["topologyKey"] for t in terms}
    for t in terms:
        assert t["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert 0 == spec["strategy"]["rollingUpdate"]["maxUnavailable"]
    pdb = bundle.one("PodDisruptionBudget")
    assert (1, spec["selector"]) == (pdb["spec"]["maxUnavailable"], pdb["spec"]["selector"])


def test_termination_grace_covers_the_drain() -> None:
    """The grace period outlasts the SIGTERM drain plus one Kubernetes request (lease release, events)."""
    drain = inspect.signature(Replica.terminate).parameters["timeout"].default
    request = inspect.signature(KubeAdapter.__init__).parameters["request_timeout"].default
    grace = Bundle(build(MANIFESTS / "base")).controller["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace >= drain + request


def test_controller_is_locked_down(bundle: Bundle) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, all capabilities dropped."""
    pod = bundle.controller["spec"]["template"]["spec"]
    sc = container(bundle.controller)["securityContext"]
    assert (True, True) == (pod["securityContext"]["runAsNonRoot"], sc["runAsNonRoot"])
    assert pod["securityContext"]["runAsUser"] > 0
    assert (True, False, ["ALL"]) == (
        sc["readOnlyRootFilesystem"],
        sc["allowPrivilegeEscalation"],
        sc["capabilities"]["drop"],
    )


def test_every_container_has_requests_and_a_memory_limit(bundle: Bundle) -> None:
    """Each container requests CPU and memory and is capped in memory."""
    for workload in (bundle.controller, bundle.node):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            res = c["resources"]
            assert ({"cpu", "memory"}, True) == (set(res["requests"]), "memory" in res["limits"]), c["name"]


# ---- CSI driver and node agent ------------------------------------------------------------------------


def test_csidriver_matches_the_node_agent(bundle: Bundle) -> None:
    """The CSIDriver is ``cinder.netvol.io``: no attach, no pod info, persistent only, fsGroup by File."""
    driver = bundle.one("CSIDriver")
    assert names.CSI_DRIVER_NAME == driver["metadata"]["name"]
    expected = {
        "attachRequired": False,
        "podInfoOnMount": False,
        "volumeLifecycleModes": ["Persistent"],
        "fsGroupPolicy": "File",
    }
    assert expected == driver["spec"]


def test_socket_paths_line_up(bundle: Bundle) -> None:
    """Agent endpoint, registrar --csi-address and --kubelet-registration-path are one host socket."""
    ds = bundle.node
    agent = container(ds, "cinder-attach")
    registrar = container(ds, "node-driver-registrar")
    endpoint = agent["args"][agent["args"].index("--endpoint") + 1]
    assert endpoint.startswith("unix://")
    flags = dict(a.removeprefix("--").split("=", 1) for a in registrar["args"])
    registration = flags["kubelet-registration-path"]
    expected = f"/var/lib/kubelet/plugins/{names.CSI_DRIVER_NAME}/csi.sock"
    assert expected == registration
    assert registration == host_path(ds, agent, endpoint.removeprefix("unix://"))
    assert registration == host_path(ds, registrar, flags["csi-address"])
    assert "/var/lib/kubelet/plugins_registry" == host_path(ds, registrar, "/registration")


def test_node_agent_has_the_host_access_it_needs(bundle: Bundle) -> None:
    """Privileged, host net + PID, host /dev /sys /lib/modules /etc/iscsi /run, kubelet dir Bidirectional."""
    ds = bundle.node
    pod = ds["spec"]["template"]["spec"]
    agent = container(ds, "cinder-attach")
    assert (True, True, True) == (pod["hostNetwork"], pod["hostPID"], agent["securityContext"]["privileged"])
    for path in ("/dev", "/sys", "/lib/modules", "/etc/iscsi", "/run"):
        assert path == host_path(ds, agent, path)
    kubelet = next(m for m in agent["volumeMounts"] if m["mountPath"] == "/var/lib/kubelet")
    assert "Bidirectional" == kubelet["mountPropagation"]
    assert "/var/lib/kubelet" == host_path(ds, agent, "/var/lib/kubelet")


def test_node_agent_settings_are_valid_and_persistent(bundle: Bundle) -> None:
    """The agent's CINDER_ATTACH_* env loads; node id = node name; the state dir is a host directory."""
    ds = bundle.node
    agent = container(ds, "cinder-attach")
    env = resolved_env(ds, agent)
    known = {attach_settings.env_name(n) for n in attach_settings.SPECS}
    assert set() == {k for k in env if k.startswith("CINDER_ATTACH_")} - known
    settings = attach_settings.load(env)
    assert "worker-1" == settings.node_id
    assert str(settings.state_dir) == host_path(ds, agent, str(settings.state_dir))


# ---- StorageClasses -----------------------------------------------------------------------------------


def test_storage_classes_are_served_and_parse(bundle: Bundle, tmp_path: Path) -> None:
    """Each class names our provisioner, its parameters and fields parse, its cloud and Secrets work."""
    config, _ = mounted_config(bundle, tmp_path)
    dep = bundle.controller
    account = (dep["metadata"]["namespace"], dep["spec"]["template"]["spec"]["serviceAccountName"])
    granted = granted_permissions(bundle, account)
    classes = bundle.all("StorageClass")
    assert len(classes) >= 2
    for sc in classes:
        assert names.DEFAULT_PROVISIONER_NAME == sc["provisioner"] == config.provisioner_name
        params = parse_class_parameters(
            sc.get("parameters"), default_secret_namespace=config.secret_namespace
        )
        parse_class_fields(sc)
        config.cloud(params.cloud)
        assert (params.secret_namespace, "", "secrets", "create") in granted, sc["metadata"]["name"]


def test_storage_classes_are_the_config_examples() -> None:
    """The manifest classes are config/storageclass-*.yaml minus ``secretNamespace`` (and labels)."""
    for sc in Bundle(build(MANIFESTS / "base")).all("StorageClass"):
        name = sc["metadata"]["name"].removeprefix("cinder-")
        example = yaml.safe_load((ROOT / "config" / f"storageclass-{name}.yaml").read_text(encoding="utf-8"))
        example["parameters"].pop("secretNamespace")
        ours = copy.deepcopy(sc)
        ours["metadata"].pop("labels")
        assert example == ours


# ---- overlay, images, docs ----------------------------------------------------------------------------


def test_overlay_moves_every_namespaced_object_and_reference() -> None:
    """The example overlay's namespace reaches objects, binding subjects and the Namespace object."""
    objs = build(MANIFESTS / "overlays" / "example")
    namespaced = {o["metadata"].get("namespace") for o in objs if o["kind"] in NAMESPACED}
    subjects = {s["namespace"] for o in objs for s in o.get("subjects") or []}
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    assert ({"storage-system"},) * 3 == (namespaced, subjects, namespaces)
    assert 3 == Bundle(objs).controller["spec"]["replicas"]


def test_images_are_the_placeholder_or_the_overlay_rewrite() -> None:
    """Base: the placeholder image for both programs; the overlay rewrites them but not the registrar."""

    def images(objs: list[Obj]) -> dict[str, str]:
        return {c["name"]: c["image"] for o in objs for c in _containers(o)}

    base = images(build(MANIFESTS / "base"))
    overlay = images(build(MANIFESTS / "overlays" / "example"))
    placeholder = "ghcr.io/netvol/cinder-provisioner:0.1.0"
    assert (placeholder, placeholder) == (base["controller"], base["cinder-attach"])
    rewritten = "registry.example.com/netvol/cinder-provisioner:0.1.0"
    assert (rewritten, rewritten) == (overlay["controller"], overlay["cinder-attach"])
    assert base["node-driver-registrar"] == overlay["node-driver-registrar"]


def _doc_commands() -> Iterator[str]:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8").replace("\\\n", " ")
    yield from re.findall(r"kubectl [^\n]*", text)


def test_docs_create_the_secret_the_deployment_mounts() -> None:
    """docs/deployment.md creates the Secret name and key the controller's config volume reads."""
    dep = Bundle(build(MANIFESTS / "base")).controller
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if "projected" in v)
    required = next(s["secret"] for s in volume["projected"]["sources"] if "secret" in s)
    commands = [c for c in _doc_commands() if "create secret generic " + required["name"] in c]
    assert commands, "docs/deployment.md must show how to create the clouds Secret"
    for item in required["items"]:
        assert all(f"--from-file={item['key']}=" in c for c in commands)
    assert any("apply -k manifests/" in c for c in _doc_commands())
