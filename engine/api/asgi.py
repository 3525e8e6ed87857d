"""ASGI entry point: ``uvicorn --factory engine.api.asgi:build`` (what ``journey serve`` runs)."""

from __future__ import annotations

from fastapi import FastAPI

from engine.api.app import create_app
from engine.services import Services


def build() -> FastAPI:
    """Build the API app from the environment (called once per server process)."""
    return create_app(Services.from_env(process="journey serve"))
