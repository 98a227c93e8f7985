"""Hostile files for ``cinder-provisioner render``: shapes, encodings, nesting, sizes, claims, flags.

Each case runs the real command line in this process and asserts the whole answer: exit 2, nothing on
stdout (no half-printed PV), one stderr line ``error: <field>: …`` naming the file option or the field,
no traceback, and the cephx key from the connection info never echoed. A Hypothesis test throws
arbitrary claims at the renderer: each renders or is refused naming a field, never another exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioner.cli.main import main
from provisioner.cli.render import rendered
from provisioner.domain.errors import InvalidInput

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CI = SAMPLES / "ci-rbd-cephx-keyring.json"
SC = SAMPLES / "sc-rbd-csi.yaml"
PVC = SAMPLES / "pvc.yaml"
KEY = "AQBsampleSAMPLEsampleSAMPLEsample0123456=="
OPTION = {"ci": "--connection-info", "sc": "--storage-class", "pvc": "--pvc"}


@dataclass(frozen=True)
class Answer:
    code: int
    out: str
    err: str


def render_cli(capsys: pytest.CaptureFixture[str], files: dict[str, Path], *extra: str) -> Answer:
    argv = ["render", "--connection-info", str(files["ci"]), "--storage-class", str(files["sc"])]
    argv += ["--pvc", str(files["pvc"]), *extra]
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return Answer(code, captured.out, captured.err)


def assert_refused(answer: Answer, field: str) -> None:
    lines = answer.err.splitlines()
    assert (2, "", 1) == (answer.code, answer.out, len(lines)), answer
    assert lines[0].startswith(f"error: {field}:") or lines[0].startswith(
        f"cinder-provisioner render: error: {field}"
    ), lines[0]
    assert "Traceback" not in answer.err
    assert KEY not in answer.err


def test_the_samples_render(capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline every case below spoils one piece of: exit 0, a List on stdout."""
    answer = render_cli(capsys, {"ci": CI, "sc": SC, "pvc": PVC})
    assert (0, "List") == (answer.code, yaml.safe_load(answer.out)["kind"])


BAD_FILES: dict[str, bytes | str] = {
    "deep-json-array": "[" * 5000 + "]" * 5000,
    "deep-json-object": '{"a":' * 5000 + "1" + "}" * 5000,
    "deep-yaml-block": "".join("  " * i + "a:\n" for i in range(200)) + "  " * 200 + "b: 1\n",
    "alias-bomb": "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)),
    "recursive-alias": "a: &a {b: *a}\n",
    "latin1": "kind: caf\xe9\n".encode("latin-1"),
    "binary": bytes(range(256)),
    "two-documents": "a: 1\n---\nb: 2\n",
    "syntax-error": '{"a": [1, 2}',
    "python-tag": "!!python/object/apply:os.system ['true']\n",
    "too-large": "a: " + "x" * (5 << 20) + "\n",
}


@pytest.mark.parametrize("which", ["ci", "sc", "pvc"])
@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_hostile_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, content: bytes | str
) -> None:
    """Each hostile file in each of the three positions: exit 2, one line naming that option."""
    path = tmp_path / "bad"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    files = {"ci": CI, "sc": SC, "pvc": PVC, which: path}
    assert_refused(render_cli(capsys, files), OPTION[which])


@pytest.mark.parametrize("which", ["ci", "sc", "pvc"])
@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "a-list", "a-string"])
def test_unusable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, kind: str) -> None:
    """Missing, a directory, empty, or not one object: exit 2 naming the option."""
    path = tmp_path / "f"
    if kind == "directory":
        path.mkdir()
    elif kind != "missing":
        path.write_text({"empty": "", "a-list": "[1, 2]", "a-string": "hello"}[kind], encoding="utf-8")
    files = {"ci": CI, "sc": SC, "pvc": PVC, which: path}
    assert_refused(render_cli(capsys, files), OPTION[which])


STORAGE = "spec.resources.requests.storage"
CLAIM_CASES: list[tuple[str, Any, str]] = [
    ("zero", "0", STORAGE),
    ("zero-gi", "0Gi", STORAGE),
    ("zero-int", 0, STORAGE),
    ("negative", "-1Gi", STORAGE),
    ("garbage", "lots", STORAGE),
    ("long-garbage", "9" * 70 + "Gi", STORAGE),
    ("beyond-1eib", "2Ei", STORAGE),
    ("bool", True, STORAGE),
    ("list", ["1Gi"], STORAGE),
    ("missing", None, STORAGE),
]


@pytest.mark.parametrize(("storage", "field"), [c[1:] for c in CLAIM_CASES], ids=[c[0] for c in CLAIM_CASES])
def test_non_positive_or_malformed_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: Any, field: str
) -> None:
    """``storage: "0"`` and friends are refused naming the field (no 1 GiB PV)."""
    claim = yaml.safe_load(PVC.read_text(encoding="utf-8"))
    requests = claim["spec"]["resources"]["requests"]
    if storage is None:
        del requests["storage"]
    else:
        requests["storage"] = storage
    path = tmp_path / "pvc.json"
    path.write_text(json.dumps(claim), encoding="utf-8")
    assert_refused(render_cli(capsys, {"ci": CI, "sc": SC, "pvc": path}), field)


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--size-gib", "0"], "--size-gib"),
        (["--size-gib", "-5"], "--size-gib"),
        (["--size-gib", str(1 << 31)], "--size-gib"),
        (["--size-gib", "1.5"], "argument --size-gib"),
        (["-o", "xml"], "argument -o/--output"),
    ],
    ids=["size-zero", "size-negative", "size-huge", "size-fraction", "output-format"],
)
def test_bad_flags(capsys: pytest.CaptureFixture[str], flags: list[str], field: str) -> None:
    """Flag values out of range or of the wrong type: exit 2, one line."""
    assert_refused(render_cli(capsys, {"ci": CI, "sc": SC, "pvc": PVC}, *flags), field)


def test_a_deep_file_does_not_hit_the_recursion_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 5,000-deep JSON of the issue: refused by depth, the message says so (no RecursionError)."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 5000 + "]" * 5000, encoding="utf-8")
    answer = render_cli(capsys, {"ci": path, "sc": SC, "pvc": PVC})
    assert_refused(answer, "--connection-info")
    assert "nests deeper than 64 levels" in answer.err


CLAIM = yaml.safe_load(PVC.read_text(encoding="utf-8"))
SC_OBJ = yaml.safe_load(SC.read_text(encoding="utf-8"))
CI_OBJ = json.loads(CI.read_text(encoding="utf-8"))
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
PATHS = [
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "annotations"),
    ("spec",),
    ("spec", "accessModes"),
    ("spec", "volumeMode"),
    ("spec", "resources"),
    ("spec", "resources", "requests"),
    ("spec", "resources", "requests", "storage"),
    ("spec", "dataSource"),
]


def _with(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(obj))
    node = out
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return out


SC_PATHS = [
    ("metadata",),
    ("metadata", "name"),
    ("provisioner",),
    ("reclaimPolicy",),
    ("volumeBindingMode",),
    ("mountOptions",),
    ("allowVolumeExpansion",),
    ("parameters",),
    ("parameters", "type"),
    ("parameters", "fsType"),
    ("parameters", "secretNamespace"),
    ("parameters", "zoneTopologyKey"),
    ("parameters", "volumeSource"),
    ("parameters", "multiattach"),
]


def _outcome(claim: Any, storage_class: Any) -> str | InvalidInput:
    try:
        return rendered(connection_info=CI_OBJ, storage_class=storage_class, pvc=claim).text
    except InvalidInput as e:
        return e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), values)
def test_any_claim_renders_or_is_refused_by_name(path: tuple[str, ...], value: Any) -> None:
    """A claim with any value at any field: a v1 List, or InvalidInput naming a field; nothing else."""
    outcome = _outcome(_with(CLAIM, path, value), SC_OBJ)
    if isinstance(outcome, InvalidInput):
        assert (True, False) == (bool(outcome.field), "\n" in outcome.field)
    else:
        assert "List" == yaml.safe_load(outcome)["kind"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SC_PATHS), values)
@example(("parameters",), {"\n": None})  # found in CI: the unknown key's name went into the field as is
def test_any_class_renders_or_is_refused_by_name(path: tuple[str, ...], value: Any) -> None:
    """A StorageClass with any value at any field: a v1 List, or InvalidInput naming a field."""
    outcome = _outcome(CLAIM, _with(SC_OBJ, path, value))
    if isinstance(outcome, InvalidInput):
        assert (True, False) == (bool(outcome.field), "\n" in outcome.field)
    else:
        assert "List" == yaml.safe_load(outcome)["kind"]
