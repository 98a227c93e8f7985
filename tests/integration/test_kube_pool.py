"""The replica's Kubernetes client keeps one pooled connection per thread that may talk at once.

Its pool used to be a fixed 32 while the tuned deployment runs 64 workers (and 6 watch streams): every
request beyond the 32nd opened a TCP connection and closed it again, with a bare "Connection pool is full,
discarding connection" line in the JSON log each time. Real HTTP to a real (threaded) server; the server
counts the connections it accepts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes.client as k8s
import pytest

from provisioner.runtime.replica import Replica
from provisioner.testworld.cinder_emulator.emulator import CinderEmulator
from tests.integration.test_cinder_adapter_close import replica_config


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # all workers connect at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Counting

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:
        time.sleep(0.05)  # every request is in flight at the same time
        body = json.dumps({"kind": "PersistentVolumeClaim", "metadata": {"name": "c"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Counting]:
    srv = _Counting()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_as_many_workers_as_configured_share_pooled_connections(
    server: _Counting, caplog: pytest.LogCaptureFixture
) -> None:
    workers = 48
    with CinderEmulator() as emu:
        config = replica_config(emu, "pool", workers=workers, kube_qps=10_000, kube_burst=10_000)
        replica = Replica(
            config,
            client_configuration=k8s.Configuration(host=f"http://127.0.0.1:{server.server_port}"),
            identity="pool",
        )
        try:
            start = threading.Barrier(workers)
            errors: list[BaseException] = []

            def worker() -> None:
                try:
                    for _ in range(4):  # four rounds, every worker at once
                        start.wait(10)
                        replica.kube.get("persistentvolumeclaims", "c", namespace="default")
                except BaseException as e:
                    errors.append(e)

            with caplog.at_level(logging.WARNING, logger="urllib3"):
                threads = [threading.Thread(target=worker) for _ in range(workers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
        finally:
            replica.terminate(timeout=1.0)
    assert not errors
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    # one connection per worker, reused in every round (a pool of 32 opened 16 new ones per round)
    assert server.connections == workers
