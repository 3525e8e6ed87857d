"""The HTTP API: Segment-compatible ingestion and the admin endpoints."""

from engine.api.app import create_app

__all__ = ["create_app"]
