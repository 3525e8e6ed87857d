"""The demo with one channel configured: its messages really go, the others' would.

Given ``SMTP_URL`` and ``EMAIL_FROM`` pointing at an SMTP server on loopback and no other
channel's settings, when a user runs ``journey demo``, then the story says ``sent`` for
each email and the server has received them, and an SMS still reads ``would send``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from channels.settings import _VARIABLES as CHANNEL_VARIABLES
from tests.integration.channels.peers import SENDER, smtp_peer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_demo_sends_through_a_configured_channel_and_only_shows_the_others(tmp_path):
    drop = {name for name, *_ in CHANNEL_VARIABLES} | {"DATABASE_URL", "REDIS_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    with contextmanager(smtp_peer)() as smtp:
        env |= {"SMTP_URL": f"smtp://user:secret@{smtp.host}:{smtp.port}", "EMAIL_FROM": SENDER,
                "DATABASE_URL": f"sqlite:///{tmp_path / 'journey.db'}"}
        result = subprocess.run([sys.executable, "-m", "engine", "demo", "--journeys", str(ROOT / "journeys")],
                                env=env, capture_output=True, text=True, timeout=300, check=False)
        received = [(m["To"], m["Subject"]) for m in smtp.mailbox.messages]

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("sent email welcome (marketing): 'Welcome, Ada!'" in line for line in lines), result.stdout
    assert ("ada@example.com", "Welcome, Ada!") in received
    assert sum("sent email " in line for line in lines) == len(received)
    assert any("would send sms inline" in line and "(sms not configured)" in line for line in lines)
