"""The operator console in a real browser: Debian's Chromium, driven by Playwright, against
the Procfile's processes configured by the environment alone.

The deployment runs the shipped journeys (``journeys/``). Its SMTP_URL names a loopback
port nothing listens on, and ``CHANNEL_MAX_ATTEMPTS=email=1``: Ada's order receipt fails
its one attempt and is ``dead``. An operator signs in at ``/console/login`` with an admin
key, filters the deliveries by ``dead``, finds the receipt; the SMTP server comes up; they
click "Retry all matching", confirm, and the receipt arrives at the SMTP peer while the
page, reloaded, reads ``sent``. Then the samples of ``journeys/samples/`` go through the
API, so every page has figures, and each page is saved as a full-page screenshot in
``$JOURNEY_TEST_ARTIFACTS`` (default ``test-artifacts/console/``), and with
``UPDATE_DOCS_SCREENSHOTS=1`` in ``docs/console/`` too (docs/console.md).

A read key signs in and sees no action anywhere; a POST without the session's CSRF token
is refused and changes nothing.

Chromium comes from the system (``apt-get install chromium``), never from Playwright's
downloads: without it these tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import CI, free_port
from tests.integration.channels.peers import Mailbox
from tests.integration.conftest import eventually
from tests.integration.deployed.deployment import Deployment, smtp_down, smtp_later
from tests.unit.console_helpers import sign_in as console_sign_in

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "journeys"
#: The pages screenshotted, in the order of the menu (body[data-page] names each).
PAGES = ("overview", "deliveries", "delivery", "failed-events", "journeys", "journey", "customer", "experiments", "audit")
VIEWPORT = {"width": 1280, "height": 800}
#: No shipped journey splits, so the Experiments page has one of its own to show: two offers and a holdout.
EXPERIMENT = """
id: trial_offer
name: Trial offer experiment
stage: consideration
trigger: {event: trial_started}
goal: {event: plan_upgraded}
policy: {kind: transactional}
steps:
  - id: pick
    split:
      - {name: percent_off, weight: 45, goto: percent_off}
      - {name: free_month, weight: 45, goto: free_month}
      - {holdout: 10}
  - id: percent_off
    send: {channel: log, text: "15% off your first year"}
    goto: wait_upgrade
  - id: free_month
    send: {channel: log, text: "Your second month is on us"}
  - id: wait_upgrade
    wait: 14d
"""
TRIALS = 240
#: A screenshot for docs/console/ bigger than this needs pngquant to shrink it.
DOCS_PNG_MAX = 300 * 1024


def chromium_path() -> str:
    """Debian's Chromium: skip without it, fail under CI (which installs it: .ci/run)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        reason = "the console's browser test needs Chromium: apt-get install chromium (docs/development.md)"
        if CI:
            pytest.fail(reason + " (CI is set, so this fails instead of skipping)")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def smtp_port() -> int:
    """The port the SMTP server will listen on, once it is up."""
    return free_port()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, smtp_port: int) -> Iterator[Deployment]:
    """serve, worker and scheduler running the shipped journeys and the experiment; SMTP down."""
    home = tmp_path_factory.mktemp("console")
    journeys = home / "journeys"
    shutil.copytree(SHIPPED, journeys, ignore=shutil.ignore_patterns("samples"))
    (journeys / "trial_offer.yaml").write_text(EXPERIMENT)
    with smtp_down(home, journeys, smtp_port) as running:
        yield running


@pytest.fixture(scope="module")
def mailbox(smtp_port: int) -> Iterator[Callable[[], Mailbox]]:
    """Start the SMTP server on its port when called (once); stop it after the module."""
    with smtp_later(smtp_port) as start:
        yield start


def new_key(deployment: Deployment, name: str, *flags: str) -> str:
    """``journey keys create NAME [--admin|--read]``, as an operator runs it: the key it prints."""
    done = deployment.journey("keys", "create", name, *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()[0]


def save(name: str, shot: bytes) -> None:
    """Keep a page's screenshot in the artifacts directory, and in docs/console/ when asked to update
    the docs (there quantized by pngquant, which one over 300 KB needs: apt-get install pngquant)."""
    artifacts = Path(os.environ.get("JOURNEY_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "console")
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / f"{name}.png").write_bytes(shot)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") != "1":
        return
    quantizer = shutil.which("pngquant")
    if quantizer is None and len(shot) > DOCS_PNG_MAX:
        pytest.fail(f"docs/console/{name}.png would be {len(shot) // 1024} KB: install pngquant (apt-get install "
                    "pngquant) to update the docs' screenshots")
    if quantizer is not None:
        shot = subprocess.run([quantizer, "--quality", "40-90", "--speed", "1", "-"], input=shot, capture_output=True,
                              check=True).stdout
    docs = ROOT / "docs" / "console"
    docs.mkdir(exist_ok=True)
    (docs / f"{name}.png").write_bytes(shot)


def sign_in(browser: Browser, deployment: Deployment, key: str) -> Page:
    """A new browser context (its own cookies) signed in with ``key`` at /console/login."""
    page = browser.new_context(viewport=VIEWPORT, base_url=deployment.url).new_page()
    page.goto("/console/login")
    page.locator('form[data-test="login"] input[name="key"]').fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console$"))
    assert page.locator("body").get_attribute("data-page") == "overview"
    return page


def reload_until(page: Page, done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Reload the page until ``done()`` holds, as an operator would; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f}s of reloading {page.url}")
        time.sleep(0.5)
        page.reload()


def send_samples(deployment: Deployment) -> int:
    """Every scene of journeys/samples/ through POST /v1/batch, as an app would send them; how many events."""
    sent = 0
    for scene in sorted((SHIPPED / "samples").glob("*.jsonl")):
        events = [json.loads(line) for line in scene.read_text().splitlines() if line.strip()]
        answer = httpx.post(f"{deployment.url}/v1/batch", auth=(deployment.write_key, ""), json={"batch": events})
        assert answer.json() == {"success": True}, f"{scene.name}: {answer.text}"
        sent += len(events)
    return sent


def run_experiment(deployment: Deployment) -> None:
    """TRIALS customers start a trial; once each is enrolled, every third upgrades (the split's goal)."""
    def send(batch: list[dict[str, Any]]) -> None:
        answer = httpx.post(f"{deployment.url}/v1/batch", auth=(deployment.write_key, ""), json={"batch": batch})
        assert answer.json() == {"success": True}, answer.text

    send([{"type": "track", "userId": f"trial-{i:03}", "event": "trial_started", "properties": {"plan": "pro"}}
          for i in range(TRIALS)])
    eventually(lambda: deployment.rows("SELECT count(*) AS n FROM enrollments WHERE journey_id = 'trial_offer'")[0].n,
               lambda n: n == TRIALS, "the trials enrolled")
    send([{"type": "track", "userId": f"trial-{i:03}", "event": "plan_upgraded", "properties": {"plan": "pro"}}
          for i in range(0, TRIALS, 3)])


def quiet(deployment: Deployment) -> Any:
    """Whether every event was applied and no delivery is being worked on right now."""
    [row] = deployment.rows(
        "SELECT (SELECT count(*) FROM events WHERE processed_at IS NULL AND attempts < 2) AS events,"
        " (SELECT count(*) FROM deliveries WHERE status IN ('claimed', 'sending')"
        "  OR (status = 'pending' AND not_before IS NULL)) AS deliveries")
    return row


def test_an_operator_retries_a_dead_email_in_the_console_and_it_arrives(browser: Browser, deployment: Deployment, mailbox):
    # Given Ada's order receipt went dead: its SMTP server was down and email has one attempt
    answer = httpx.post(f"{deployment.url}/v1/batch", auth=(deployment.write_key, ""), json={"batch": [
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com", "first_name": "Ada"}},
        {"type": "track", "userId": "ada", "event": "order_completed",
         "properties": {"order_id": "o-7", "total": 42.0, "currency": "EUR", "item_count": 1}}]})
    assert answer.json() == {"success": True}, answer.text
    receipt = "SELECT id, status FROM deliveries WHERE journey_id = 'order_followup' AND step = 'thank_you'"
    [dead] = eventually(lambda: deployment.rows(receipt), lambda rows: [r.status for r in rows] == ["dead"], "a dead receipt")

    # When an operator signs in, filters the deliveries by dead and this journey, and finds it
    page = sign_in(browser, deployment, new_key(deployment, "ops-admin", "--admin"))
    page.locator('nav a[data-test="nav-deliveries"]').click()
    listing = page.locator('form[data-test="filter"]')
    listing.locator('select[name="status"]').select_option("dead")
    listing.locator('select[name="journey"]').select_option("order_followup")
    listing.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=dead"))
    rows = page.locator('table[data-test="deliveries"] tr[data-test="delivery-row"]')
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == [str(dead.id)]
    assert rows.first.get_attribute("data-status") == "dead"

    # and, the SMTP server back, retries every delivery the filter selects, confirming the count
    box = mailbox()
    page.locator('button[data-test="act-filter"][data-action="retry"]').click()
    count = page.locator('[data-test="confirm-count"]')
    assert count.get_attribute("data-count") == "1", count.inner_text()
    page.locator('form[data-test="confirm"]').get_by_role("button", name="Confirm").click()
    notice = page.locator('[data-test="notice"]').inner_text()

    # Then the receipt arrives at the SMTP peer, and its page, reloaded, reads sent
    [message] = eventually(lambda: list(box.messages), lambda found: len(found) >= 1, "the receipt at the SMTP peer")
    page.goto(f"/console/deliveries/{dead.id}")
    facts = page.locator('[data-test="delivery"]')
    reload_until(page, lambda: facts.get_attribute("data-status") == "sent", "the delivery's page reading sent")
    assert (message["To"], page.locator('[data-test="status"]').inner_text().strip(), "1" in notice) == (
        "ada@example.com", "sent", True), notice

    # And with the samples sent through the API, every page shows figures and is saved
    assert send_samples(deployment) > 0
    run_experiment(deployment)
    eventually(lambda: quiet(deployment), lambda row: (row.events, row.deliveries) == (0, 0), "the samples applied")
    visits = {
        "overview": "/console", "deliveries": "/console/deliveries", "delivery": f"/console/deliveries/{dead.id}",
        "failed-events": "/console/events", "journeys": "/console/journeys", "journey": "/console/journeys/order_followup",
        "customer": "/console/customers?q=ada", "experiments": "/console/experiments", "audit": "/console/audit",
    }
    assert tuple(visits) == PAGES
    for name, path in visits.items():
        answer = page.goto(path)
        assert answer is not None and answer.status == 200, f"{path}: {answer and answer.status}"
        assert page.locator("body").get_attribute("data-page") == name
        save(name, page.screenshot(full_page=True))
    [entry] = [row for row in deployment.rows("SELECT action, acted, actor FROM audit_log") if row.action == "deliveries.retry"]
    assert (entry.acted, "ops-admin" in entry.actor) == (1, True), entry
    page.context.close()


def test_a_read_key_sees_no_action_and_a_post_without_the_csrf_token_is_refused(browser: Browser, deployment: Deployment):
    # Given a read key signed in, and an admin key beside it
    viewer = sign_in(browser, deployment, new_key(deployment, "ops-viewer", "--read"))
    admin = sign_in(browser, deployment, new_key(deployment, "ops-lead", "--admin"))
    assert viewer.locator('[data-test="scope"]').inner_text().strip() == "read"

    # Then no page offers the read key an action (no action form, checkbox or button), where the admin has some
    def offered(page: Page, path: str) -> int:
        page.goto(path)
        return page.locator('form[data-test="actions"], form[data-test="journey-action"], [data-test="select-row"],'
                            ' [data-test="row-action"], [data-test="act-filter"], [data-test="act-selected"]').count()

    paths = ("/console/deliveries", "/console/events", "/console/journeys/order_followup")
    assert [offered(viewer, path) for path in paths] == [0, 0, 0]
    assert all(offered(admin, path) > 0 for path in paths)
    viewer.context.close()
    admin.context.close()

    # And an admin's session POSTing an action without its CSRF token is refused, and nothing is done
    with httpx.Client(base_url=deployment.url) as client:
        console_sign_in(client, new_key(deployment, "ops-csrf", "--admin"))  # a TestClient is an httpx.Client
        before = deployment.rows("SELECT count(*) AS n FROM audit_log")[0].n
        action = {"scope": "filter", "confirmed": "yes", "filter": "status=dead"}
        refused = [client.post("/console/deliveries/retry", data={**action, **extra}, headers={"Origin": deployment.url})
                   for extra in ({}, {"csrf": "not-this-sessions-token"})]
        after = deployment.rows("SELECT count(*) AS n FROM audit_log")[0].n
    assert [answer.status_code for answer in refused] == [403, 403]
    assert all("security token" in answer.text for answer in refused)
    assert after == before
