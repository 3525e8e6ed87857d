"""The console's door: sign-in and sign-out, the session cookie, sessions that end, CSRF and
origin checks, and read keys that look but cannot act."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from engine import keys
from engine.console import sessions
from engine.services import Services
from engine.storage.models import ApiKey, AuditEntry, ConsoleSession, Delivery
from tests.conftest import create_key
from tests.unit.console_helpers import client_for, csrf_of, form_token, hooks, sign_in
from tests.unit.test_operator_actions import deliveries_in
from tests.unit.test_policy import make_world


def test_a_page_without_a_session_sends_to_the_sign_in_form_and_back(services: Services) -> None:
    client = client_for(services)
    answer = client.get("/console/deliveries?status=dead")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Fdeliveries%3Fstatus%3Ddead"
    form = client.get(answer.headers["location"])
    assert 'name="key"' in form.text and 'value="/console/deliveries?status=dead"' in form.text
    key = create_key(services, "ops", admin=True)
    token = form_token(form.text)
    signed = client.post("/console/login", data={"key": key, "form_token": token, "next": "/console/deliveries?status=dead"})
    assert (signed.status_code, signed.headers["location"]) == (303, "/console/deliveries?status=dead")


def test_sign_in_sets_an_httponly_strict_cookie_secure_over_https_only(services: Services) -> None:
    key = create_key(services, "ops", admin=True)
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        client = client_for(services, base)
        form = client.get("/console/login")
        token = form_token(form.text)
        signed = client.post("/console/login", data={"key": key, "form_token": token})
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(f"{sessions.COOKIE}="))
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
        assert ("secure" in flags) is secure
        assert f"max-age={int(sessions.LIFETIME.total_seconds())}" in flags
    with services.sessions() as session:
        stored = session.execute(select(ConsoleSession)).scalars().all()
    # Only the token's hash is stored, never the token.
    assert len(stored) == 2 and all(len(s.token_hash) == 64 for s in stored)
    assert all(s.expires_at - s.created_at == sessions.LIFETIME for s in stored)


def test_a_bad_key_a_write_key_and_a_forged_form_are_refused_with_the_reason(services: Services) -> None:
    client = client_for(services)
    page = client.get("/console/login")

    def attempt(key: str, **headers: str):  # type: ignore[no-untyped-def]
        token = form_token(page.text)
        return client.post("/console/login", data={"key": key, "form_token": token}, headers=headers)

    page = attempt("je_admin_nope")
    assert page.status_code == 401 and "unknown API key" in page.text
    assert f"{sessions.COOKIE}=" not in page.headers.get("set-cookie", "")
    page = attempt("")
    assert page.status_code == 401 and "enter an API key" in page.text
    write = create_key(services, "web-app")
    page = attempt(write)
    assert page.status_code == 403 and "write key" in page.text and write not in page.text
    away = attempt(write, Origin="https://evil.example")
    assert away.status_code == 403 and "another site" in away.text
    forged = client_for(services).post("/console/login", data={"key": write, "form_token": "made-up"})
    assert forged.status_code == 400 and "sign in again" in forged.text


def test_sign_out_ends_the_session_on_the_server(services: Services) -> None:
    key = create_key(services, "ops", admin=True)
    client = client_for(services)
    csrf = sign_in(client, key)
    cookie = client.cookies[sessions.COOKIE]
    assert client.post("/console/logout", data={"csrf": csrf}).headers["location"] == "/console/login"
    with services.sessions() as session:
        assert session.execute(select(ConsoleSession)).first() is None
    again = client_for(services)
    again.cookies.set(sessions.COOKIE, cookie)  # the old cookie, replayed
    assert again.get("/console").status_code == 303
    sign_in(client, key)
    third = client_for(services)
    form = third.get("/console/login")  # a sign-in form opened before, sent with the session's cookie
    token = form_token(form.text)
    third.cookies.set(sessions.COOKIE, client.cookies[sessions.COOKIE])
    assert third.post("/console/login", data={"key": key, "form_token": token}).status_code == 303
    with services.sessions() as session:  # signing in again ended the session it had
        assert len(session.execute(select(ConsoleSession)).all()) == 1
    assert client.get("/console").status_code == 303
    sign_in(client, key)
    assert client.get("/console/").headers["location"] == "/console"


def test_a_revoked_key_ends_its_sessions_and_an_expired_session_ends(services: Services) -> None:
    key = create_key(services, "ops", admin=True)
    client, other = client_for(services), client_for(services)
    sign_in(client, key)
    sign_in(other, key)
    with services.sessions.begin() as session:
        keys.revoke_key(session, "ops")
    assert client.get("/console").headers["location"].startswith("/console/login")
    key2 = create_key(services, "ops2", admin=True)
    sign_in(client, key2)
    with services.sessions.begin() as session:
        session.execute(update(ConsoleSession).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert client.get("/console/journeys").status_code == 303
    assert other.get("/console/journeys").status_code == 303


def test_a_post_needs_this_sessions_csrf_token_and_the_same_origin(services: Services) -> None:
    services, customer_id, _ = make_world(services, "UTC")
    [dead] = deliveries_in(services, customer_id, "dead")
    key = create_key(services, "ops", admin=True)
    client, other = client_for(services), client_for(services)
    csrf = sign_in(client, key)
    others = sign_in(other, key)
    assert csrf != others
    for form, headers in (({"only": str(dead)}, {}),  # no token
                          ({"only": str(dead), "csrf": others}, {}),  # another session's token
                          ({"only": str(dead), "csrf": csrf}, {"Origin": "https://evil.example"}),
                          ({"only": str(dead), "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"})):
        refused = client.post("/console/deliveries/retry", data=form, headers=headers)
        assert refused.status_code == 403, form
    with services.sessions() as session:
        assert session.get(Delivery, dead).status == "dead"  # type: ignore[union-attr]
        assert session.execute(select(AuditEntry)).first() is None
    done = client.post("/console/deliveries/retry", data={"only": str(dead), "csrf": csrf},
                       headers={"Origin": "http://testserver"})
    assert done.status_code == 303


def test_a_read_key_sees_every_page_without_a_button_and_a_post_is_a_403(services: Services) -> None:
    services, customer_id, _ = make_world(services, "UTC")
    [dead] = deliveries_in(services, customer_id, "dead")
    read = create_key(services, "auditor", scope="read")
    client = client_for(services)
    csrf = sign_in(client, read)
    with services.sessions() as session:
        prefix = session.execute(select(ApiKey.prefix).where(ApiKey.name == "auditor")).scalar_one()
    for page in ("/console", "/console/deliveries", f"/console/deliveries/{dead}", "/console/events", "/console/journeys",
                 "/console/journeys/nps_survey", "/console/customers?q=ada", "/console/experiments", "/console/audit"):
        shown = client.get(page)
        assert shown.status_code == 200, page
        assert not hooks(shown.text, "row-action") and not hooks(shown.text, "act-selected")
        assert not hooks(shown.text, "act-filter") and not hooks(shown.text, "journey-action")
        assert not hooks(shown.text, "select-row") and 'data-test="actions"' not in shown.text
        assert f"auditor ({prefix}…)" in shown.text and read not in shown.text
    assert "Sign out" in shown.text
    for target in ("/console/deliveries/retry", "/console/events/drop", "/console/journeys/nps_survey/pause"):
        refused = client.post(target, data={"only": str(dead), "csrf": csrf, "confirmed": "yes"})
        assert refused.status_code == 403 and "read key" in refused.text, target
    with services.sessions() as session:
        assert session.get(Delivery, dead).status == "dead"  # type: ignore[union-attr]
    # A read key may still sign out.
    assert client.post("/console/logout", data={"csrf": csrf_of(shown.text)}).status_code == 303


def test_pages_are_never_cached_framed_or_given_outside_resources(services: Services) -> None:
    client = client_for(services)
    sign_in(client, create_key(services, "ops", admin=True))
    page = client.get("/console")
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text.replace("http://testserver", "") and "https://" not in page.text
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and "@import" not in css.text and "url(" not in css.text


def test_the_package_data_ships_every_template_and_static_file() -> None:
    """A non-editable install has what the console serves: pyproject's package-data covers each file."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import engine.console

    root = Path(engine.console.__file__).parent
    patterns = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["engine"]
    files = [p.relative_to(root.parent).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".py"
             and "__pycache__" not in p.parts]
    assert files and all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), files
