"""The module a Dramatiq worker process loads: ``dramatiq engine.workers.main:broker``.

Importing it reads the settings, connects, and declares the actors on the broker.
``journey worker`` runs it for you.
"""

from __future__ import annotations

import logging

import dramatiq

from engine.services import Services
from engine.workers.broker import quiet_pika

services = Services.from_env()
# Dramatiq configured logging for its own processes; the engine's LOG_LEVEL still applies.
logging.getLogger().setLevel(services.settings.log_level)
quiet_pika(services.settings.log_level)
services.log_channels("journey worker")
broker = services.broker
dramatiq.set_broker(broker)
