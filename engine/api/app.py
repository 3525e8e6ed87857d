"""The FastAPI application: ``/v1/track`` and friends, ``/v1/batch``, the admin views and
operations (customers, suppressions, consents, deliveries, failed events, the audit log),
``/metrics`` and ``/u`` (unsubscribe). A read key may GET the admin views; acting needs an admin key.

Endpoints read the raw body themselves instead of letting FastAPI validate a model:
that keeps Segment's size limits exact, accepts gzip as the SDKs send it, and reports
every problem as a 400 in one JSON shape (never a 422, never a 500). The OpenAPI document
(``/openapi.json``) states those rules all the same: :mod:`engine.api.spec`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from channels import registry as channel_registry
from engine import audit, deliveries, deploy, failed_events, ingest, keys, metrics, preferences
from engine.api import spec
from engine.api import stats as stats_routes
from engine.api.views import customer_view
from engine.errors import AuthError, ConflictError, NotFoundError, PayloadError, Problem, did_you_mean
from engine.segment import MAX_BATCH_BYTES, TYPES
from engine.services import Services
from engine.trace import explain

log = logging.getLogger(__name__)


# Path parameters: a NUL cannot be looked up (PostgreSQL refuses it), so it is a 400.
Ident = Annotated[str, Path(pattern=spec.NO_NUL, description="a user id or an anonymous id")]
Address = Annotated[str, Path(pattern=spec.NO_NUL, description="the suppressed address")]
Channel = Annotated[str, Path(description="an installed channel, or * for the entries of every channel")]
JourneyPath = Annotated[str, Path(pattern=spec.NO_NUL, description="a deployed journey's id", examples=["nps_survey"])]
UserId = Annotated[str, Query(alias="userId", pattern=spec.NO_NUL, description="the customer of the entry")]


class JSONResponse(Response):
    """A JSON response serialized with orjson (fast, and datetimes come out as ISO-8601)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(services: Services) -> FastAPI:
    """Build the API application on ``services``."""
    writer = ingest.EventWriter(services)
    key_cache = keys.KeyCache(services.settings.key_cache)
    registry = metrics.make_registry(services)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await writer.close()  # commit and enqueue what is in flight before exiting

    app = FastAPI(
        lifespan=lifespan,
        title="Journey Engine",
        version="0.1.0",
        docs_url="/docs",
    )
    app.state.services = services
    channels = channel_registry.available()
    any_channel = [*channels, preferences.EVERY_CHANNEL]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                   description="Segment-compatible ingestion and the admin API of Journey Engine.")
            for path, operations in document["paths"].items():
                for operation in operations.values():
                    operation["responses"].pop("422", None)  # every problem is a 400 (the Error schema)
                    if "security" not in operation and operation["operationId"] != "health_health_get":
                        # The operator endpoints that declare their own body and answer with models.
                        action = path.startswith(("/v1/deliveries/", "/v1/events/failed/"))
                        operation["security"] = spec.ADMIN_SECURITY
                        errors = spec.responses(None, 400, 401, 403, *((404, 409) if action else ()))
                        operation["responses"] = {**errors["responses"], **operation["responses"]}
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "path" and parameter["name"] == "channel":
                            parameter["schema"]["enum"] = any_channel  # the channels installed here
            components = document.setdefault("components", {})
            generated = {name: schema for name, schema in components.get("schemas", {}).items()
                         if name not in ("HTTPValidationError", "ValidationError")}  # never answered: a 400
            ours = spec.components(channels)
            components["schemas"] = {**generated, **ours["schemas"]}
            components["securitySchemes"] = {**components.get("securitySchemes", {}), **ours["securitySchemes"]}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(AuthError)
    async def _auth_error(_request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="journey-engine"'} if exc.status == 401 else None
        code = "unauthorized" if exc.status == 401 else "forbidden"
        return JSONResponse({"success": False, "code": code, "message": str(exc)}, exc.status, headers=headers)

    @app.exception_handler(PayloadError)
    async def _payload_error(_request: Request, exc: PayloadError) -> JSONResponse:
        return _invalid(exc.problems)

    @app.exception_handler(ConflictError)
    async def _conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({**_problems_body(exc.problems), "code": "conflict"}, 409)

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"success": False, "code": "not_found", "message": str(exc)}, 404)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid([_validation_problem(e) for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        message = str(exc.detail)
        if exc.status_code == 404 and request.method == "POST" and request.url.path.startswith("/v1/"):
            # No route: most often a misspelt type, as in POST /v1/trak.
            endpoints = [route.path for route in app.routes
                         if isinstance(route, APIRoute) and "POST" in (route.methods or ()) and "{" not in route.path]
            hint = did_you_mean(request.url.path, endpoints)
            message = f"no endpoint POST {request.url.path}.{hint} (endpoints: {', '.join(endpoints)})".replace(". (", " (")
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names the first route of the path only
            headers = {**(headers or {}), "Allow": ", ".join(_methods_of(app, request))}
        return JSONResponse({"success": False, "code": code, "message": message}, exc.status_code, headers=headers)


    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig)
        message = "the database is unavailable; nothing was stored, retry later"
        return JSONResponse({"success": False, "code": "unavailable", "message": message}, 503,
                            headers={"Retry-After": "5"})

    async def authenticate(key: Any, *, admin: bool = False, read: bool = False,
                           what: str = "this endpoint") -> keys.Principal:
        key = key if isinstance(key, str) else None
        principal = key_cache.get(key)
        if principal is None:
            principal = await run_in_threadpool(_authenticate, services, key)
            key_cache.put(key or "", principal)
        keys.require(principal, "admin" if admin else "read" if read else "write", what)
        return principal

    def acting(what: str) -> Callable[[Request], Any]:
        """A dependency: an admin key, checked before the body is (a read key is told it may only look)."""
        async def admin_key(request: Request) -> keys.Principal:
            return await authenticate(_basic_key(request), admin=True, what=what)

        return admin_key

    async def ingest_request(request: Request, type_: str | None) -> JSONResponse:
        received_at = services.clock()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BATCH_BYTES * 4:
            raise PayloadError("the request", [Problem("body", f"is {length} bytes; at most {MAX_BATCH_BYTES} are allowed")])
        raw = await request.body()
        body = ingest.decode_body(raw, request.headers.get("content-encoding"))
        in_body = body.get("writeKey") if isinstance(body, dict) else None
        # A browser's sendBeacon cannot set headers: RudderStack's SDK puts the key in the URL.
        principal = await authenticate(_basic_key(request) or in_body or request.query_params.get("writeKey"))
        if type_ is None:  # a batch of up to 4 MB: check it off the event loop
            rows, outcome = await run_in_threadpool(
                ingest.prepare, body, source=principal.name, received_at=received_at, type_=None
            )
        else:
            rows, outcome = ingest.prepare(body, source=principal.name, received_at=received_at, type_=type_)
        if rows:
            await writer.write(rows)
        return _ingested(outcome)

    for type_ in TYPES:
        app.add_api_route(f"/v1/{type_}", _endpoint(ingest_request, type_), methods=["POST"], name=type_,
                          openapi_extra=_ingest_doc(f"{type_.capitalize()}Message", spec.EXAMPLES[type_]))
    for path, name in (("/v1/batch", "batch"), ("/v1/import", "import"), ("/beacon/v1/batch", "beacon")):
        app.add_api_route(path, _endpoint(ingest_request, None), methods=["POST"], name=name,
                          openapi_extra=_ingest_doc("Batch", {"batch": [{"type": t, **spec.EXAMPLES[t]} for t in TYPES]}))

    @app.get("/v1/customers/{ident}", openapi_extra=_admin_doc(spec.ref("Customer"), 400, 404))
    async def get_customer(ident: Ident, request: Request) -> JSONResponse:
        """The customer's profile: ids, traits, time zone, stage and its history, latest events."""
        await authenticate(_basic_key(request), read=True)
        return JSONResponse(await run_in_threadpool(_customer, services, ident, customer_view))

    @app.get("/v1/customers/{ident}/trace", openapi_extra=_admin_doc({"type": "object"}, 400, 404))
    async def get_customer_trace(ident: Ident, request: Request) -> JSONResponse:
        """What the journeys did with the customer: enrollments, paths, conditions, waits, deliveries."""
        await authenticate(_basic_key(request), read=True)
        return JSONResponse(await run_in_threadpool(_customer, services, ident, explain))

    @app.post("/v1/suppressions", status_code=201, openapi_extra={
        **spec.json_body(spec.ref("SuppressionRequest"), example={"channel": "email", "address": "ada@example.com",
                                                                   "reason": "manual", "note": "asked by phone"}),
        **_admin_doc(spec.ref("Suppression"), 400, 404, ok_status=201, ok_description="Added to the list"),
    } | {"responses": {**_admin_doc(spec.ref("Suppression"), 400, 404, ok_status=201,
                                    ok_description="Added to the list")["responses"],
                       "200": {"description": "It was on the list already: the entry as it is",
                               "content": {"application/json": {"schema": spec.ref("Suppression")}}}}})
    async def add_suppression(request: Request) -> JSONResponse:
        """Put an address (or a customer, by userId) on a channel's suppression list: 201, or 200 if it is on it."""
        await authenticate(_basic_key(request), admin=True)
        wanted = preferences.read_suppression(await _json_body(request))
        entry, created = await run_in_threadpool(_transaction, services, preferences.add_suppression, wanted, services.clock())
        return JSONResponse(entry, 201 if created else 200)

    @app.get("/v1/suppressions", openapi_extra={
        "parameters": spec.listing_parameters(
            spec.query("channel", {"enum": any_channel}, "only this channel's list"),
            spec.query("address", spec.text(preferences.ID_LENGTH), "only this address"),
        ),
        **_admin_doc(_listing("suppressions", "Suppression"), 400),
    })
    async def list_suppressions(request: Request) -> JSONResponse:
        """The suppression list, newest first, by ``channel`` and ``address``; pages of ``limit`` from ``cursor``."""
        await authenticate(_basic_key(request), read=True)
        listing = preferences.read_listing(request.query_params)
        entries, cursor = await run_in_threadpool(_transaction, services, preferences.list_suppressions, listing)
        return JSONResponse({"suppressions": entries, "nextCursor": cursor})

    @app.delete("/v1/suppressions/{channel}/{address}", openapi_extra=_admin_doc(spec.ref("Suppression"), 400, 404))
    async def lift_suppression(channel: Channel, address: Address,
                               request: Request) -> JSONResponse:
        """Take an address off a channel's suppression list (a manual lift); the entry as it was."""
        await authenticate(_basic_key(request), admin=True)
        return JSONResponse(await run_in_threadpool(_transaction, services, preferences.lift_suppression, channel,
                                                    address=address))

    @app.delete("/v1/suppressions/{channel}", openapi_extra=_admin_doc(spec.ref("Suppression"), 400, 404))
    async def lift_customer_suppression(channel: Channel, request: Request,
                                        user_id: UserId) -> JSONResponse:
        """Take a customer entry (``?userId=``) off a channel's suppression list; the entry as it was."""
        await authenticate(_basic_key(request), admin=True)
        return JSONResponse(await run_in_threadpool(_transaction, services, preferences.lift_suppression, channel,
                                                    user_id=user_id))

    @app.get("/v1/customers/{ident}/consents", openapi_extra=_admin_doc({
        "type": "object",
        "properties": {"id": {"type": "integer"}, "userId": {"type": ["string", "null"]},
                       "consents": {"type": "array", "items": spec.ref("Consent")}},
        "required": ["id", "userId", "consents"],
    }, 400, 404))
    async def get_consents(ident: Ident, request: Request) -> JSONResponse:
        """The customer's consent choices by channel and topic (none recorded: marketing is allowed)."""
        await authenticate(_basic_key(request), read=True)
        return JSONResponse(await run_in_threadpool(_transaction, services, preferences.consents_of, ident))

    @app.put("/v1/customers/{ident}/consents", openapi_extra={
        **spec.json_body(spec.ref("ConsentRequest"), example={"channel": "email", "topic": "newsletter",
                                                               "subscribed": False}),
        **_admin_doc(spec.ref("Consent"), 400, 404),
    })
    async def put_consent(ident: Ident, request: Request) -> JSONResponse:
        """Record a consent choice for a channel and topic, as the unsubscribe link does; it applies at once."""
        principal = await authenticate(_basic_key(request), admin=True)
        wanted = preferences.read_consent(await _json_body(request))
        return JSONResponse(await run_in_threadpool(_transaction, services, preferences.set_consent, ident, wanted,
                                                    services.clock(), f"admin API, key {principal.name}"))

    @app.get("/v1/deliveries", response_model=deliveries.DeliveryPage,
             openapi_extra={"parameters": spec.filter_parameters(deliveries.DeliveryFilter, deliveries.STATUSES)})
    async def list_deliveries(request: Request) -> JSONResponse:
        """Deliveries oldest first, by ``status`` (``dead``, ``unknown``: a worker stopped while sending them,
        ``held``...), ``channel``, ``journey``, ``reason`` and creation time; pages of ``limit`` from ``cursor``."""
        await authenticate(_basic_key(request), read=True)
        listing = deliveries.read_listing(request.query_params)
        entries, cursor = await run_in_threadpool(_transaction, services, deliveries.list_deliveries, listing)
        return _model(deliveries.DeliveryPage(deliveries=entries, next_cursor=cursor))

    def delivery_action(action: str, summary: str) -> None:
        admin_key = Depends(acting(f"{action} of deliveries"))

        async def act(selection: deliveries.DeliveryAction, principal: keys.Principal = admin_key) -> JSONResponse:
            return _model(await run_in_threadpool(deliveries.act, services, action, selection,
                                                  audit.Actor.of_key(principal)))

        act.__doc__ = summary + (" By ``ids`` (all or none: 404 for an unknown id, 409 naming each one the action "
                                 "does not apply to), or every delivery a ``filter`` selects, in batches. Written "
                                 "to each delivery's trace and to the audit log.")
        app.add_api_route(f"/v1/deliveries/{action}", act, methods=["POST"], name=f"{action}_deliveries",
                          response_model=deliveries.DeliveryActionResult)

    delivery_action("retry", "Send dead or failed deliveries again: pending and enqueued, their attempts from 0.")
    delivery_action("drop", "Give up dead, failed, unknown or pending deliveries: ``dropped``, never sent, kept.")
    delivery_action("resend", "Send unknown deliveries again: pending and enqueued (a second copy may arrive).")
    delivery_action("mark-sent", "Record unknown deliveries as sent: the provider had them.")

    journey_doc = _admin_doc({
        "type": "object",
        "properties": {"id": {"type": "string"}, "status": {"enum": list(deploy.STATUSES)},
                       "version": {"type": "integer", "description": "the current version"},
                       "updatedAt": {"type": "string", "format": "date-time"},
                       "auditId": {"type": "integer", "description": "the action's row in the audit log"}},
        "required": ["id", "status", "version", "updatedAt", "auditId"],
    }, 400, 404)

    def journey_action(action: str, summary: str) -> None:
        async def act(journey_id: JourneyPath, request: Request) -> JSONResponse:
            principal = await authenticate(_basic_key(request), admin=True, what=f"the {action} of a journey")

            def change() -> dict[str, Any]:
                with services.sessions.begin() as session:
                    record, entry = deploy.change_status(session, journey_id, action, services.clock(),
                                                         audit.Actor.of_key(principal))
                    return {"id": record.id, "status": record.status, "version": record.current_version,
                            "updatedAt": record.updated_at.isoformat(), "auditId": entry}

            try:
                return JSONResponse(await run_in_threadpool(change))
            except KeyError:
                raise NotFoundError(f"no deployed journey has the id {journey_id!r}; see GET /v1/journeys") from None

        act.__doc__ = summary + " Idempotent (the status it sets stays); written to the audit log."
        app.add_api_route(f"/v1/journeys/{{journey_id}}/{action}", act, methods=["POST"], name=f"{action}_journey",
                          openapi_extra=journey_doc)

    journey_action("pause", "Pause a journey: no new enrollments; running ones wait where they are (timers and events held).")
    journey_action("resume", "Resume a paused or archived journey: customers enter again, held timers fire.")
    journey_action("archive", "Archive a journey: like a pause, and left out of deploy plans.")

    @app.get("/v1/events/failed", response_model=failed_events.FailedEventPage,
             openapi_extra={"parameters": spec.filter_parameters(failed_events.EventFilter,
                                                                 failed_events.STATUSES)})
    async def list_failed_events(request: Request) -> JSONResponse:
        """Stored events that failed to apply, oldest first: ``failing`` (still retried), ``failed`` (given up),
        ``dropped``; by ``name``, ``source`` and receipt time; pages of ``limit`` from ``cursor``."""
        await authenticate(_basic_key(request), read=True)
        listing = failed_events.read_listing(request.query_params)
        entries, cursor = await run_in_threadpool(_transaction, services, failed_events.list_failed, listing)
        return _model(failed_events.FailedEventPage(events=entries, next_cursor=cursor))

    def event_action(action: str, summary: str) -> None:
        admin_key = Depends(acting(f"{action} of events"))

        async def act(selection: failed_events.EventAction, principal: keys.Principal = admin_key) -> JSONResponse:
            return _model(await run_in_threadpool(failed_events.act, services, action, selection,
                                                  audit.Actor.of_key(principal)))

        act.__doc__ = summary + (" By ``ids`` (all or none: 404 for an unknown id, 409 naming each one applied, "
                                 "dropped or never failed), or every failing or failed event a ``filter`` selects, "
                                 "in batches. Written to the audit log.")
        app.add_api_route(f"/v1/events/failed/{action}", act, methods=["POST"], name=f"{action}_events",
                          response_model=failed_events.EventActionResult)

    event_action("retry", "Apply failing or failed events again: enqueued, their attempts from 0.")
    event_action("drop", "Give up failing or failed events: never applied; the rows stay, with who and when.")

    @app.get("/v1/audit", response_model=audit.AuditPage, openapi_extra={"parameters": spec.listing_parameters()})
    async def list_audit(request: Request) -> JSONResponse:
        """The operator actions, newest first: who (a key by id, prefix and name), when, what, on what, how many."""
        await authenticate(_basic_key(request), read=True)
        limit, cursor = audit.read_listing(request.query_params)
        page = await run_in_threadpool(_transaction, services, audit.list_entries, limit, cursor)
        return _model(page)

    stats_routes.add_routes(app, services, authenticate, _basic_key)
    from engine.console import add_console  # here: the console reads engine.api.views, whose package imports this

    add_console(app, services)  # /console: the operator web console

    metrics_doc = spec.responses(None, 401, 403)
    metrics_doc["responses"]["200"] = {"description": "The metrics in Prometheus' text format",
                                       "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}

    @app.get("/metrics", openapi_extra={"security": spec.ADMIN_SECURITY, **metrics_doc})
    async def get_metrics(request: Request) -> Response:
        """Prometheus metrics, read from the database and the broker at scrape time (admin key)."""
        await authenticate(_basic_key(request), read=True)
        body = await run_in_threadpool(metrics.render, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/u/{token}", include_in_schema=False)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        """The page an unsubscribe link opens: a button that confirms (a GET changes nothing)."""
        valid = await run_in_threadpool(services.policy.read_token, token)
        if valid is None:
            return HTMLResponse(_page("This link is not valid", "<p>It may have been cut short. Use the link in a recent message.</p>"), 400)
        _, channel, topic = valid
        what = _what(channel, topic)
        form = (f'<form method="post" action="/u/{html.escape(token)}"><p>Stop receiving {what}?</p>'
                '<button type="submit" name="List-Unsubscribe" value="One-Click">Unsubscribe</button></form>')
        return HTMLResponse(_page("Unsubscribe", form))

    @app.post("/u/{token}", include_in_schema=False)
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        """Unsubscribe at once: the confirmation form, or a mail client's RFC 8058 one-click POST."""
        await request.body()  # List-Unsubscribe=One-Click, from the form or a mail client
        done = await run_in_threadpool(services.policy.unsubscribe, token, "unsubscribe link", services.clock())
        if done is None:
            return HTMLResponse(_page("This link is not valid", "<p>Nothing was changed.</p>"), 400)
        return HTMLResponse(_page("You are unsubscribed", f"<p>You will not receive {_what(*done)} any more.</p>"))

    @app.get("/health", openapi_extra=spec.responses({
        "type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"],
    }))
    async def health() -> dict[str, Any]:
        """Liveness and database reachability."""
        def ping() -> None:
            with services.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        await run_in_threadpool(ping)
        return {"status": "ok"}

    return app


def _what(channel: str, topic: str) -> str:
    return html.escape(f"{channel} messages" + ("" if topic == "*" else f" about {topic.replace('_', ' ')}"))


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width"></head><body><h1>{title}</h1>{body}</body></html>')


def _ingest_doc(body: str, example: Any) -> dict[str, Any]:
    """The OpenAPI of an ingestion endpoint taking ``body`` (a schema of :mod:`engine.api.spec`)."""
    return {
        **spec.json_body(spec.ref(body), "JSON, optionally gzip-compressed (Content-Encoding: gzip)", example),
        "parameters": [spec.query("writeKey", {"type": "string"},
                                  "the write key, for a browser's sendBeacon that cannot set headers")],
        "security": spec.INGEST_SECURITY,
        **spec.responses(spec.ref("Ingested"), 400, 401),
    }


def _admin_doc(ok: dict[str, Any], *statuses: int, **kwargs: Any) -> dict[str, Any]:
    """The OpenAPI of an admin endpoint answering ``ok``, or an error of ``statuses``."""
    return {"security": spec.ADMIN_SECURITY, **spec.responses(ok, *statuses, 401, 403, **kwargs)}


def _listing(name: str, item: str) -> dict[str, Any]:
    """The schema of a page of a listing: ``name`` (items of schema ``item``) and ``nextCursor``."""
    return {
        "type": "object",
        "properties": {name: {"type": "array", "items": spec.ref(item)}, "nextCursor": {"type": ["string", "null"]}},
        "required": [name, "nextCursor"],
    }


def _methods_of(app: FastAPI, request: Request) -> list[str]:
    """Every method the routes of the request's path take."""
    methods: set[str] = set()
    for route in app.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _validation_problem(error: Any) -> Problem:
    """A problem FastAPI found in a declared parameter, as the engine words it."""
    path = ".".join(str(p) for p in error["loc"])
    if error.get("type") == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == spec.NO_NUL:
        return Problem(path, "contains a NUL character (%00), which cannot be looked up; remove it")
    if error.get("type") == "missing" and error["loc"][:1] == ("query",):
        return Problem(path, f"is required: add ?{error['loc'][-1]}= to the URL")
    return Problem(path, error["msg"])


def _endpoint(handler: Any, type_: str | None) -> Any:
    async def endpoint(request: Request) -> JSONResponse:
        return await handler(request, type_)

    endpoint.__doc__ = f"Ingest a Segment {'batch' if type_ is None else type_} call."
    return endpoint


def _model(model: BaseModel) -> JSONResponse:
    """A response model as JSON, with its API field names."""
    return JSONResponse(model.model_dump(mode="json", by_alias=True))


def _authenticate(services: Services, key: str | None) -> keys.Principal:
    with services.sessions() as session:
        return keys.authenticate(session, key)


async def _json_body(request: Request) -> Any:
    return ingest.decode_body(await request.body(), request.headers.get("content-encoding"))


def _transaction(services: Services, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``work(session, *args, **kwargs)`` in one transaction, committed if it returns."""
    with services.sessions.begin() as session:
        return work(session, *args, **kwargs)


def _customer(services: Services, ident: str, view_of: Callable[[Session, str], dict[str, Any] | None]) -> dict[str, Any]:
    with services.sessions.begin() as session:
        view = view_of(session, ident)
    if view is None:
        raise StarletteHTTPException(404, f"no customer is known by the user id or anonymous id {ident!r}")
    return view


def _ingested(outcome: ingest.IngestResult) -> JSONResponse:
    if not outcome.rejected:
        return JSONResponse({"success": True})
    rejected = [
        {"index": index, "errors": [p.as_dict() for p in problems]} for index, problems in outcome.rejected
    ]
    problems = [p for _, ps in outcome.rejected for p in ps]
    body = _problems_body(problems)
    body.update(accepted=outcome.accepted, rejected=rejected)
    if outcome.accepted:
        # Partial success: the good messages are stored, the body names the bad ones. A 200,
        # as Segment's API answers: the RudderStack SDK takes anything else for a failure
        # and retries the whole batch for minutes (the bad messages would fail again).
        body["code"] = "partial"
        body["message"] = f"{outcome.accepted} of {outcome.received} messages accepted; " + body["message"]
        return JSONResponse(body, 200)
    return JSONResponse(body, 400)


def _invalid(problems: list[Problem]) -> JSONResponse:
    return JSONResponse(_problems_body(problems), 400)


def _problems_body(problems: list[Problem]) -> dict[str, Any]:
    count = len(problems)
    summary = "; ".join(str(p) for p in problems[:5]) + ("; ..." if count > 5 else "")
    return {
        "success": False,
        "code": "invalid_request",
        "message": f"{count} problem{'s' if count != 1 else ''}: {summary}",
        "errors": [p.as_dict() for p in problems],
    }


def _basic_key(request: Request) -> str | None:
    """Return the API key from ``Authorization: Basic`` (key as username) or ``Bearer``."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None
