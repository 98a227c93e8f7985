"""Generated CSI stubs land here (``csi_pb2.py`` / ``csi_pb2_grpc.py``, git-ignored); see attach.csi_stubs."""
