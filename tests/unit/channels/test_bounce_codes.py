"""Which SMTP refusals say the recipient's address is bad (a hard bounce)."""

from __future__ import annotations

import pytest

from channels.email import is_hard_bounce


@pytest.mark.parametrize(
    "code, text, at_recipient, bounce",
    [
        (550, "5.1.1 No such user", False, True),  # refused at DATA, but the code says the mailbox
        (550, "5.1.1 <ada@example.com>: Recipient address rejected", True, True),
        (553, "5.1.3 Bad recipient address syntax", True, True),
        (550, "5.1.10 Null MX", True, True),
        (551, "User not local; please try <ada@elsewhere.example>", True, True),
        (550, "Mailbox unavailable", True, True),
        (550, "5.7.1 Relaying denied", True, False),  # the relay's configuration
        (550, "Relaying denied", True, False),
        (554, "5.7.1 Message rejected as spam", False, False),
        (552, "5.2.2 Mailbox full", True, False),  # may clear up
        (550, "Mailbox unavailable", False, False),  # at DATA without a code: could be the content
        (553, "5.1.8 Bad sender's system address", True, False),  # about the sender
        (450, "4.1.1 Mailbox busy", True, False),  # temporary
        (421, "Try again later", True, False),
    ],
)
def test_is_hard_bounce(code: int, text: str, at_recipient: bool, bounce: bool) -> None:
    assert is_hard_bounce(code, text, at_recipient=at_recipient) is bounce
