"""The OpenAPI document against ``journey serve``: schemathesis generates requests from the
document (valid ones, and ones that break a rule of it), sends them to the real process on
PostgreSQL and Redis, and checks every answer: no 5xx, only documented statuses, content
types and bodies, valid data accepted and invalid data rejected. A warning (an operation
that mostly rejected what the document calls valid...) fails the run too
(tests/integration/schemathesis.toml says how it runs, and why).

The database is seeded first, so that lookups can find something: a customer ``ada``, its
suppression entries, and unknown deliveries 1 to 10.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from engine import deploy
from engine.demo import wait_for_http
from engine.services import Services
from engine.storage.models import Customer, Delivery, Enrollment
from tests.conftest import REDIS_URL, create_key, free_port, make_services
from tests.integration.conftest import spawn, stop

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).with_name("schemathesis.toml")
JOURNEY = Path(__file__).parents[2] / "journeys" / "nps_survey.yaml"
EXAMPLES = 20  # per operation and phase: about a minute and a half on two cores
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def seed(services: Services) -> None:
    """The customer ``ada`` enrolled in nps_survey, with unknown deliveries 1 to 10."""
    with services.sessions.begin() as session:
        deploy.deploy(session, [deploy.snapshot(JOURNEY)], NOW)
        customer = Customer(external_id="ada", traits={"email": "ada@example.com"}, first_seen_at=NOW,
                            last_seen_at=NOW, updated_at=NOW)
        session.add(customer)
        session.flush()
        session.add(Enrollment(id="e-1", journey_id="nps_survey", version=1, customer_id=customer.id,
                               status="active", started_at=NOW, updated_at=NOW))
        session.flush()
        session.add_all(
            Delivery(key=f"d-{i}", enrollment_id="e-1", customer_id=customer.id, journey_id="nps_survey", version=1,
                     step="survey", channel="email", template="nps_survey", status="unknown", created_at=NOW,
                     updated_at=NOW)
            for i in range(10)
        )


def test_the_api_answers_as_its_openapi_document_says(engine_env: dict[str, str], tmp_path: Path) -> None:
    services = make_services(engine_env["DATABASE_URL"], redis_url=REDIS_URL, namespace=engine_env["JOURNEY_NAMESPACE"])
    key = create_key(services, "fuzz", admin=True)
    seed(services)
    port = free_port()
    web = spawn(["serve", "--port", str(port)], engine_env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", web)
        for channel in ("email", "sms", "push", "webhook", "*"):  # entries of ada for DELETE to lift
            added = httpx.post(f"{url}/v1/suppressions", json={"channel": channel, "userId": "ada", "reason": "manual"},
                               auth=(key, ""))
            assert added.status_code == 201, added.text
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG), "--no-color",
             "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {key}",
             "--max-examples", str(EXAMPLES), "--workers", "1"],
            capture_output=True, text=True, timeout=480, cwd=tmp_path,  # its cache (.schemathesis/) goes there
        )
    finally:
        stop(web)
        services.close()
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-30000:] + run.stderr[-5000:]
