"""ASGI entry point: ``uvicorn --factory engine.api.asgi:build`` (what ``journey serve`` runs)."""

from __future__ import annotations

from fastapi import FastAPI

from engine.api.app import create_app
from engine.services import Services
from engine.workers.broker import quiet_pika


def build() -> FastAPI:
    """Build the API app from the environment (called once per server process)."""
    services = Services.from_env(process="journey serve")
    quiet_pika(services.settings.log_level)  # a server process started by uvicorn has not run load_settings
    return create_app(services)
