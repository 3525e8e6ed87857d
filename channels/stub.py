"""The in-memory twin of a channel adapter, for the engine's tests.

Like dramatiq's StubBroker: it does what an adapter does, minus the provider. It
records every message it is given, answers ``sent`` with ids ``stub-1``, ``stub-2``...,
and can be told to fail the next sends, retryably or permanently (as a bounce, too).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

from channels.base import Channel, Message, Result, Status
from channels.settings import ChannelSettings


class StubChannel(Channel):
    """Records messages instead of sending them.

    Attributes:
        attempts: every message passed to :meth:`send` that reached the provider stage,
            failed ones included, in order.
        sent: the messages that were answered ``sent``.
    """

    def __init__(self, name: str = "stub", *, requires: Iterable[str] = (),
                 requires_content: Iterable[str | tuple[str, ...]] = ()) -> None:
        self.name = name  # type: ignore[misc]  # an instance may play any channel
        self.requires = tuple(requires)  # type: ignore[misc]
        self.requires_content = tuple(requires_content)  # type: ignore[misc]
        self.attempts: list[Message] = []
        self.sent: list[Message] = []
        self._failures: list[tuple[Status, str, bool]] = []
        self._fail_always: tuple[Status, str, bool] | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> StubChannel:
        """It needs no settings."""
        return cls()

    def fail(self, status: Status = "retryable", error: str = "the stub was told to fail", *,
             times: int | None = 1, bounce: bool = False) -> None:
        """Make the next ``times`` sends fail with ``status`` (``times=None``: until :meth:`reset`).

        ``bounce`` makes a permanent failure say the address is bad.
        """
        if status == "sent":
            raise ValueError("fail() takes 'retryable' or 'permanent'")
        if bounce and status != "permanent":
            raise ValueError("only a permanent failure can be a bounce")
        with self._lock:
            if times is None:
                self._fail_always = (status, error, bounce)
            else:
                self._failures.extend([(status, error, bounce)] * times)

    def reset(self) -> None:
        """Forget recorded messages and pending failures."""
        with self._lock:
            self.attempts.clear()
            self.sent.clear()
            self._failures.clear()
            self._fail_always = None

    def deliver(self, message: Message) -> Result:
        with self._lock:
            self.attempts.append(message)
            failure = self._failures.pop(0) if self._failures else self._fail_always
            if failure is not None:
                status, error, bounce = failure
                return Result(status, error=error, bounce=bounce)
            self.sent.append(message)
            return Result.sent(f"stub-{next(self._ids)}")

    def sent_to(self, customer_id: str) -> list[Message]:
        """The messages sent to ``customer_id``."""
        with self._lock:
            return [m for m in self.sent if m.recipient.customer_id == customer_id]
