"""Server plumbing: stale socket removal and CSI stub generation."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import grpc

from attach import csi_stubs
from attach.servicer import build_server, unix_socket_path
from tests.fakes.world import FakeWorld


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    """A leftover socket file from a crashed agent does not prevent serving."""
    sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))
    try:
        sock = sock_dir / "csi.sock"
        sock.write_text("stale")
        server = build_server(ops=FakeWorld(tmp_path).ops(), node_id="n", endpoint=f"unix://{sock}")
        server.start()
        try:
            pb2, pb2_grpc = csi_stubs.load()
            with grpc.insecure_channel(f"unix://{sock}") as channel:
                info = pb2_grpc.NodeStub(channel).NodeGetInfo(pb2.NodeGetInfoRequest(), timeout=10)
            assert "n" == info.node_id
        finally:
            server.stop(0).wait()
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_unix_socket_path_forms() -> None:
    """unix:///p, unix:/p and a bare path all name /p."""
    assert ["/p/csi.sock"] * 3 == [
        unix_socket_path(e) for e in ("unix:///p/csi.sock", "unix:/p/csi.sock", "/p/csi.sock")
    ]


def test_stubs_regenerate_when_stale() -> None:
    """A changed fingerprint (proto or grpcio-tools changed) regenerates the stubs; field numbers hold."""
    target = csi_stubs.ensure_stubs()
    stamp = target / "csi_stubs.stamp"
    stamp.write_text("stale")
    generated = target / "csi_pb2.py"
    before = generated.stat().st_mtime_ns
    csi_stubs.ensure_stubs()
    assert stamp.read_text() != "stale"
    assert generated.stat().st_mtime_ns >= before
    pb2, _ = csi_stubs.load()
    fields = {f.name: f.number for f in pb2.NodePublishVolumeRequest.DESCRIPTOR.fields}
    assert {
        "volume_id": 1,
        "publish_context": 2,
        "staging_target_path": 3,
        "target_path": 4,
        "volume_capability": 5,
        "readonly": 6,
        "secrets": 7,
        "volume_context": 8,
    } == fields
    assert "csi.v1" == pb2.DESCRIPTOR.package
