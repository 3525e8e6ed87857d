"""The console's sign-in: server-side sessions keyed by a random token the browser keeps in a cookie.

Only the token's SHA-256 is stored (``console_sessions``), with the key that signed in
and the session's CSRF token (a synchronizer token: every form carries it, every POST is
checked against it). A session ends at ``expires_at`` (:data:`LIFETIME` after sign-in),
at sign-out, or at the first request after its key was revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine import keys
from engine.storage.models import ApiKey, ConsoleSession

#: The cookie holding the session token.
COOKIE = "journey_console"
#: The cookie holding the sign-in form's token (checked against the form's hidden field).
LOGIN_COOKIE = "journey_console_login"
#: How long a session lasts after sign-in.
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the key (never the key itself) and the session's CSRF token."""

    principal: keys.Principal
    csrf: str
    expires_at: datetime

    @property
    def admin(self) -> bool:
        """Whether the key may act (a read key may only look)."""
        return self.principal.admin


def token_hash(token: str) -> str:
    """The SHA-256 hex digest under which a session token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_session(session: Session, principal: keys.Principal, now: datetime) -> str:
    """Start a session for ``principal``; return its token (for the cookie). Expired sessions go."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(ConsoleSession(token_hash=token_hash(token), key_id=principal.key_id, csrf=secrets.token_urlsafe(32),
                               created_at=now, expires_at=now + LIFETIME))
    session.flush()
    return token


def find(session: Session, token: str | None, now: datetime) -> Operator | None:
    """The operator of the session ``token`` names; None if none, expired, or its key was revoked (it ends)."""
    if not token:
        return None
    row = session.execute(
        select(ConsoleSession, ApiKey).join(ApiKey, ApiKey.id == ConsoleSession.key_id)
        .where(ConsoleSession.token_hash == token_hash(token))
    ).one_or_none()
    if row is None:
        return None
    stored, key = row
    if stored.expires_at <= now or key.revoked_at is not None or key.scope not in ("read", "admin"):
        session.delete(stored)
        return None
    principal = keys.Principal(key_id=key.id, name=key.name, scope=key.scope, prefix=key.prefix)
    return Operator(principal, stored.csrf, stored.expires_at)


def close(session: Session, token: str | None) -> None:
    """End the session ``token`` names (sign-out)."""
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token)))


def same(given: str | None, expected: str) -> bool:
    """Whether a form's token is the expected one (in constant time)."""
    return bool(given) and hmac.compare_digest(str(given), expected)


__all__ = ["COOKIE", "LIFETIME", "LOGIN_COOKIE", "Operator", "close", "find", "open_session", "same", "token_hash"]
