"""Typed configuration and OpenStack auth loading."""
