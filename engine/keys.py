"""API keys: created once, stored only as a SHA-256 hash, recognizable by their prefix.

A key looks like ``je_write_3q2...``, ``je_read_Ab...`` or ``je_admin_Xy...``: the prefix
lets secret scanners and people tell at a glance what leaked and how much it can do.

Scopes: a ``write`` key sends events; a ``read`` key may read the admin API (every GET)
but not act; an ``admin`` key reads and acts (and may send events). Lists show a key's
id, prefix and name, never the key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from engine.errors import AuthError
from engine.storage.models import ApiKey

WRITE_PREFIX = "je_write_"
READ_PREFIX = "je_read_"
ADMIN_PREFIX = "je_admin_"
#: What a key may do: send events, look at the admin API, or also act on it.
SCOPES = ("write", "read", "admin")
PREFIXES = {"write": WRITE_PREFIX, "read": READ_PREFIX, "admin": ADMIN_PREFIX}
#: Characters of the random part a key's stored prefix keeps, to tell keys apart.
SHOWN = 4


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name (the event source), scope and prefix (never the key)."""

    key_id: int
    name: str
    scope: str = "write"
    prefix: str = ""

    @property
    def admin(self) -> bool:
        """Whether the key may act on the admin API."""
        return self.scope == "admin"

    @property
    def actor(self) -> str:
        """The key as the audit log and the trace name it: id, prefix and name."""
        return f"key {self.key_id} {self.prefix}… ({self.name})"


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest under which ``key`` is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, name: str, *, admin: bool = False, scope: str | None = None) -> tuple[ApiKey, str]:
    """Create a key named ``name`` and return (its row, the key in clear).

    ``scope`` is one of :data:`SCOPES` (``admin=True`` is ``scope="admin"``; the default
    is a write key). The clear key is not stored anywhere; the caller shows it once.
    """
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name, e.g. the app that will use it: `journey keys create web-app`")
    scope = scope or ("admin" if admin else "write")
    if scope not in SCOPES:
        raise ValueError(f"unknown key scope {scope!r}; use one of {', '.join(SCOPES)}")
    secret = PREFIXES[scope] + secrets.token_urlsafe(24)
    row = ApiKey(
        name=name,
        prefix=secret[: len(PREFIXES[scope]) + SHOWN],
        key_hash=hash_key(secret),
        scope=scope,
        created_at=datetime.now(timezone.utc),
    )
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, key: str | None, *, admin_required: bool = False) -> Principal:
    """Return who ``key`` belongs to.

    Raises:
        AuthError: 401 when the key is missing, unknown or revoked; 403 when a write
            or read key is used where an admin key is required.
    """
    if not key:
        raise AuthError(
            "no API key: send it as the HTTP Basic username (the password stays empty) "
            "or as writeKey in the body"
        )
    row = session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.scope, ApiKey.revoked_at).where(
            ApiKey.key_hash == hash_key(key)
        )
    ).one_or_none()
    if row is None:
        raise AuthError("unknown API key: check the key, or create one with `journey keys create NAME`")
    if row.revoked_at is not None:
        raise AuthError(f"the API key {row.prefix}… was revoked; create a new one with `journey keys create`")
    principal = Principal(key_id=row.id, name=row.name, scope=row.scope, prefix=row.prefix)
    if admin_required:
        require(principal, "admin")
    return principal


def require(principal: Principal, needed: str, what: str = "this endpoint") -> None:
    """Check that ``principal`` may do what needs the scope ``needed`` (one of :data:`SCOPES`).

    An admin key may do everything; a read key may only read the admin API; a write key
    may only send events.

    Raises:
        AuthError: 403, saying what the key is, what it may do and which key to use.
    """
    have = principal.scope
    if have == "admin" or have == needed:
        return
    if have == "read":
        if needed == "write":
            raise AuthError("this is a read key, which may only read the admin API; sending events needs a write "
                            "key (`journey keys create NAME`)", status=403)
        raise AuthError(f"this is a read key, which may look but not act; {what} needs an admin key "
                        "(`journey keys create NAME --admin`)", status=403)
    if needed == "read":
        raise AuthError("this is a write key, which may only send events; this endpoint needs a read key "
                        "(`journey keys create NAME --read`) or an admin key", status=403)
    raise write_key_on_admin_path()


def write_key_on_admin_path() -> AuthError:
    """The 403 for a write key used where an admin key is required."""
    return AuthError(
        "this is a write key, which may only send events; this endpoint needs an admin key "
        "(`journey keys create NAME --admin`)",
        status=403,
    )


class KeyCache:
    """Remembers keys that authenticated, for ``ttl``, so ingestion skips a query per request.

    Only successes are kept: a new key works at once, and a revoked key stops working
    within ``ttl`` (``JOURNEY_KEY_CACHE``; ``0s`` turns the cache off).
    """

    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl.total_seconds()
        self._known: dict[str, tuple[Principal, float]] = {}

    def get(self, key: str | None) -> Principal | None:
        """Return the cached principal for ``key``, or None if absent or stale."""
        if not key or self.ttl <= 0:
            return None
        entry = self._known.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: str, principal: Principal) -> None:
        """Remember that ``key`` authenticated as ``principal``."""
        if self.ttl > 0:
            if len(self._known) > 10_000:  # a bound, not an LRU: keys are few in practice
                self._known.clear()
            self._known[key] = (principal, time.monotonic() + self.ttl)


def list_keys(session: Session) -> list[ApiKey]:
    """Return every key, newest first (hashes only; the keys themselves are not stored)."""
    return list(session.execute(select(ApiKey).order_by(ApiKey.id.desc())).scalars())


def revoke_key(session: Session, ident: str) -> int:
    """Revoke the keys whose id, prefix or name is ``ident``; return how many were revoked."""
    condition = ApiKey.prefix == ident
    if ident.isdigit():
        condition = condition | (ApiKey.id == int(ident))
    else:
        condition = condition | (ApiKey.name == ident)
    result = cast(CursorResult, session.execute(  # an UPDATE's result has a rowcount
        update(ApiKey)
        .where(condition, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(timezone.utc))
    ))
    return result.rowcount or 0
