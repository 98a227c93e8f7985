"""Harnesses that run the whole product: chaos, bench and the world server."""
