"""CSI Identity and Node gRPC servicers over ``NodeOps``, and the unix-socket server.

This is the only module that knows gRPC: requests are validated and translated into plain calls, our
errors into status codes (``AttachError.grpc_code``; malformed volume attributes → INVALID_ARGUMENT; a
concurrent operation on the same volume → ABORTED). Request secrets are never logged; neither are
mount flags (the spec says they may be sensitive).
"""

from __future__ import annotations

import os
from concurrent import futures
from typing import Any

import grpc
import structlog

from attach import csi_stubs
from attach.errors import AttachError, InvalidRequest
from attach.node import NodeOps, StageRequest
from provisioner.domain.errors import ProvisionerError
from provisioner.domain.names import CSI_DRIVER_NAME

log = structlog.get_logger(__name__)

VENDOR_VERSION = "0.1.0"

pb2, pb2_grpc = csi_stubs.load()


def _abort(context: grpc.ServicerContext, method: str, error: Exception) -> Any:
    if not isinstance(error, ProvisionerError | OSError):
        # a bug, not a refusal: log it with its traceback, answer one line without one
        log.exception("csi_call_crashed", method=method, error_type=type(error).__name__)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(error).__name__}")
    if isinstance(error, AttachError):
        code = getattr(grpc.StatusCode, error.grpc_code, grpc.StatusCode.INTERNAL)
    elif isinstance(error, ProvisionerError) and error.final:
        code = grpc.StatusCode.INVALID_ARGUMENT
    else:
        code = grpc.StatusCode.INTERNAL
    log.warning("csi_call_failed", method=method, code=code.name, error=str(error))
    context.abort(code, str(error))


def _capability(cap: Any) -> tuple[bool, str, tuple[str, ...], bool]:
    """(block, fs_type, mount_flags, readonly-by-access-mode) from a VolumeCapability."""
    if cap is None or not cap.ByteSize():
        raise InvalidRequest("volume_capability is required")
    kind = cap.WhichOneof("access_type")
    if kind is None:
        raise InvalidRequest("volume_capability needs block or mount")
    mode = cap.access_mode.mode
    modes = pb2.VolumeCapability.AccessMode
    if mode == modes.UNKNOWN:
        raise InvalidRequest("volume_capability.access_mode is required")
    if kind == "mount" and mode == modes.MULTI_NODE_MULTI_WRITER:
        raise InvalidRequest("a filesystem cannot be mounted read-write on several nodes")
    readonly = mode in (modes.SINGLE_NODE_READER_ONLY, modes.MULTI_NODE_READER_ONLY)
    if kind == "block":
        return True, "", (), readonly
    return False, cap.mount.fs_type, tuple(cap.mount.mount_flags), readonly


class IdentityServicer(pb2_grpc.IdentityServicer):  # type: ignore[misc,name-defined]
    """GetPluginInfo / GetPluginCapabilities / Probe."""

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return pb2.GetPluginInfoResponse(name=CSI_DRIVER_NAME, vendor_version=VENDOR_VERSION)

    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        expansion = pb2.PluginCapability.VolumeExpansion(type=pb2.PluginCapability.VolumeExpansion.ONLINE)
        return pb2.GetPluginCapabilitiesResponse(
            capabilities=[pb2.PluginCapability(volume_expansion=expansion)]
        )

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from google.protobuf import wrappers_pb2

        return pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))


class NodeServicer(pb2_grpc.NodeServicer):  # type: ignore[misc,name-defined]
    """The CSI Node service."""

    def __init__(self, *, ops: NodeOps, node_id: str) -> None:
        self._ops = ops
        self._node_id = node_id

    def NodeStageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        log.info("csi_node_stage", volume_id=request.volume_id, staging_path=request.staging_target_path)
        try:
            block, fs_type, flags, readonly = _capability(
                request.volume_capability if request.HasField("volume_capability") else None
            )
            self._ops.stage(
                StageRequest(
                    volume_id=request.volume_id,
                    staging_path=request.staging_target_path,
                    attributes=dict(request.volume_context),
                    secrets=dict(request.secrets),
                    fs_type=fs_type,
                    mount_flags=flags,
                    block=block,
                    readonly=readonly,
                )
            )
        except Exception as e:  # every failure becomes one status line (_abort)
            return _abort(context, "NodeStageVolume", e)
        return pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        log.info("csi_node_unstage", volume_id=request.volume_id)
        try:
            self._ops.unstage(request.volume_id, request.staging_target_path)
        except Exception as e:  # every failure becomes one status line (_abort)
            return _abort(context, "NodeUnstageVolume", e)
        return pb2.NodeUnstageVolumeResponse()

    def NodePublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        log.info("csi_node_publish", volume_id=request.volume_id, target_path=request.target_path)
        try:
            block, _fs, _flags, ro_mode = _capability(
                request.volume_capability if request.HasField("volume_capability") else None
            )
            self._ops.publish(
                volume_id=request.volume_id,
                staging_path=request.staging_target_path,
                target_path=request.target_path,
                readonly=request.readonly or ro_mode,
                block=block,
            )
        except Exception as e:  # every failure becomes one status line (_abort)
            return _abort(context, "NodePublishVolume", e)
        return pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        log.info("csi_node_unpublish", volume_id=request.volume_id, target_path=request.target_path)
        try:
            self._ops.unpublish(volume_id=request.volume_id, target_path=request.target_path)
        except Exception as e:  # every failure becomes one status line (_abort)
            return _abort(context, "NodeUnpublishVolume", e)
        return pb2.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            stats = self._ops.stats(volume_id=request.volume_id, volume_path=request.volume_path)
        except Exception as e:  # every failure becomes one status line (_abort)
            return _abort(context, "NodeGetVolumeStats", e)
        usage = [
            pb2.VolumeUsage(
                unit=pb2.VolumeUsage.BYTES,
                total=stats.total_bytes,
                available=stats.available_bytes,
                used=stats.used_bytes,
            )
        ]
        if not stats.block:
            usage.append(
                pb2.VolumeUsage(
                    unit=pb2.VolumeUsage.INODES,
                    total=stats.total_inodes,
                    available=stats.free_inodes,
                    used=stats.used_inodes,
                )
            )
        return pb2.NodeGetVolumeStatsResponse(usage=usage)

    def NodeExpandVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        log.info("csi_node_expand", volume_id=request.volume_id)
        try:
            size = self._ops.expand(volume_id=request.volume_id, volume_path=request.volume_path)
        except Exception as e:  # every failure becomes one status line (_abort)
            return _abort(context, "NodeExpandVolume", e)
        wanted = request.capacity_range.required_bytes if request.HasField("capacity_range") else 0
        if wanted and size < wanted:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"device is {size} bytes < {wanted} requested")
        return pb2.NodeExpandVolumeResponse(capacity_bytes=size)

    def NodeGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        rpc = pb2.NodeServiceCapability.RPC
        return pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                pb2.NodeServiceCapability(rpc=rpc(type=t))
                for t in (rpc.STAGE_UNSTAGE_VOLUME, rpc.GET_VOLUME_STATS, rpc.EXPAND_VOLUME)
            ]
        )

    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return pb2.NodeGetInfoResponse(node_id=self._node_id)


def unix_socket_path(endpoint: str) -> str:
    """``unix:///csi/csi.sock`` or ``unix:/csi/csi.sock`` or a bare path → the filesystem path."""
    for prefix in ("unix://", "unix:"):
        if endpoint.startswith(prefix):
            return endpoint[len(prefix) :]
    return endpoint


def build_server(*, ops: NodeOps, node_id: str, endpoint: str, workers: int = 8) -> grpc.Server:
    """A started-ready gRPC server bound to the unix socket (a stale socket file is removed first)."""
    path = unix_socket_path(endpoint)
    if not path.startswith("/"):
        raise InvalidRequest(f"endpoint must be an absolute unix socket path: {endpoint}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(), server)
    pb2_grpc.add_NodeServicer_to_server(NodeServicer(ops=ops, node_id=node_id), server)
    server.add_insecure_port(f"unix://{path}")
    return server
