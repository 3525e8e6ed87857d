"""What the HTTP adapters share: one client per adapter, and how answers become results."""

from __future__ import annotations

import json
from typing import Any

import httpx

from channels.base import Result, http_result
from engine.errors import ChannelError

USER_AGENT = "journey-engine"
#: How much of an error answer is kept in a result, for the delivery record.
EXCERPT = 500


def make_client(timeout: float, **options: Any) -> httpx.Client:
    """An httpx client that never follows redirects on its own and waits ``timeout`` seconds.

    The provider URLs come from the operator's settings, not from journey files, so
    these clients honour proxy variables and need no address guard.
    """
    options.setdefault("headers", {})["user-agent"] = USER_AGENT
    return httpx.Client(timeout=timeout, follow_redirects=False, **options)


def send(client: httpx.Client, request: httpx.Request, provider: str, *, stream: bool = False) -> httpx.Response:
    """Send ``request`` and turn transport failures into ChannelErrors.

    With ``stream`` the body is left unread: the caller reads what it wants (see
    :func:`read_some`) and closes the response.

    Raises:
        ChannelError: retryable on a timeout or a lost connection, permanent on a URL
            that cannot be used.
    """
    try:
        return client.send(request, stream=stream)
    except httpx.TimeoutException as exc:
        raise ChannelError(f"{provider} did not answer in time ({type(exc).__name__})", retryable=True) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ChannelError(f"cannot send to {request.url}: {exc}", retryable=False) from None
    except httpx.TransportError as exc:
        raise ChannelError(f"cannot reach {provider}: {exc or type(exc).__name__}", retryable=True) from None


def failure(response: httpx.Response, provider: str, message: str | None = None, *, bounce: bool = False,
            **detail: Any) -> Result:
    """The result of an error answer: 408, 429 and 5xx retryable, other statuses permanent
    (a bounce when ``bounce``: the provider said the address is bad)."""
    text = excerpt(response) if message is None else message
    error = f"{provider} answered {response.status_code} {response.reason_phrase}".rstrip()
    if text:
        error += f": {text}"
    return http_result(response.status_code, error, retry_after=response.headers.get("retry-after"),
                       bounce=bounce, **detail)


def excerpt(response: httpx.Response) -> str:
    """The start of the answer's body, on one line."""
    return " ".join(response.text[:EXCERPT].split())


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or an empty dict if it has none."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_some(response: httpx.Response, limit: int = EXCERPT) -> str:
    """Read at most ``limit`` bytes of a streamed answer, close it, and return them on one line.

    An endpoint named in a journey file could answer with an endless body; this never
    reads more than ``limit`` bytes of it.
    """
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    except httpx.HTTPError:
        pass  # the status already says what happened; the body was only for the record
    finally:
        response.close()
    return " ".join(data[:limit].decode("utf-8", "replace").split())
