"""The module a Dramatiq worker process loads: ``dramatiq engine.workers.main:broker``.

Importing it reads the settings, connects, and declares the actors on the broker.
``journey worker`` runs it for you.
"""

from __future__ import annotations

import dramatiq

from engine.services import Services
from engine.settings import Settings

services = Services.from_settings(Settings.from_env())
broker = services.broker
dramatiq.set_broker(broker)
