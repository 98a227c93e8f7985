"""Telemetry: Kubernetes Events, Prometheus metrics and structured logs.

Below the flows (they record what they did) and beside the mapping; it imports only the domain and its
own libraries (structlog, prometheus-client), so every layer above may use it.
"""
