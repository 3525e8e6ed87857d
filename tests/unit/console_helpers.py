"""Shared by the console's tests: a signed-in TestClient and what its pages hold."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from engine.api import create_app
from engine.services import Services


def client_for(services: Services, base_url: str = "http://testserver") -> TestClient:
    return TestClient(create_app(services), base_url=base_url, follow_redirects=False)


def form_token(page: str) -> str:
    """The sign-in form's own token (matched against its cookie)."""
    token = re.search(r'name="form_token" value="([^"]+)"', page)
    assert token is not None, "no sign-in form on this page"
    return token.group(1)


def sign_in(client: TestClient, key: str, next_page: str = "/console") -> str:
    """Sign in with ``key``; return the session's CSRF token (as every form of the session carries it)."""
    form = client.get("/console/login")
    assert form.status_code == 200
    signed = client.post("/console/login", data={"key": key, "form_token": form_token(form.text), "next": next_page})
    assert signed.status_code == 303, signed.text
    return csrf_of(client.get("/console").text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no form with a CSRF token on this page"
    return found.group(1)


def hooks(page: str, hook: str) -> list[str]:
    """The elements of ``page`` carrying ``data-test="hook"`` (their opening tags)."""
    return re.findall(rf'<[^>]*data-test="{re.escape(hook)}"[^>]*>', page)
