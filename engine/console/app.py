"""The console's routes: sign-in, the pages, and the actions (each one an engine function the admin API calls too).

Every page is server-rendered (Jinja2, :mod:`engine.console.templates`); the few
scripts and the stylesheet are files of the package (``static/``), nothing is fetched
from elsewhere. A page reads through the engine's own functions: keyset pages
(:mod:`engine.storage.paging`) on indexed columns, never an unbounded list.

Security: a session cookie (HttpOnly, SameSite=Strict, Secure over https) names a
server-side session (:mod:`engine.console.sessions`); every POST must carry the session's
CSRF token and must not come from another origin; a read key sees every page but no
action, and a POST from it is a 403.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from channels import registry as channel_registry
from engine import actions, analytics, audit, deliveries, deploy, failed_events, keys, queues
from engine.api.views import customer_view
from engine.console import charts, sessions
from engine.errors import AuthError, ConflictError, NotFoundError, PayloadError, Problem
from engine.services import Services
from engine.storage.models import AuditEntry, Delivery, JourneyRecord, TraceEntry
from engine.trace import explain, format_text

HERE = Path(__file__).parent
#: A confirmation counts the rows an action on a filter would take up to this many ("more than").
CONFIRM_CAP = 10_000
#: The largest form the console reads (a thousand ticked ids fit many times over).
MAX_FORM = 256 * 1024
#: Response headers of every console page: no caching, no framing, nothing but the console's own files.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
NAV = (("overview", "/console", "Overview"), ("deliveries", "/console/deliveries", "Deliveries"),
       ("failed-events", "/console/events", "Failed events"), ("journeys", "/console/journeys", "Journeys"),
       ("customer", "/console/customers", "Customer"), ("experiments", "/console/experiments", "Experiments"),
       ("audit", "/console/audit", "Audit log"))
#: The query parameters of journey stats the journey page passes on.
STATS_PARAMS = ("since", "until", "version", "min_sample")


@dataclass(frozen=True)
class Rows:
    """What the console lists and acts on the same way: deliveries, failed events (each through its engine module)."""

    noun: str
    plural: str
    page: str
    base: str
    template: str
    fields: tuple[str, ...]
    statuses: tuple[str, ...]
    actions: tuple[str, ...]
    read_listing: Callable[[Mapping[str, Any]], Any]
    page_of: Callable[[Any, Any], tuple[list[Any], str | None]]
    count: Callable[[Any, str, Any, int], int]
    applies: Callable[[str], tuple[str, ...]]
    selection: type[Any]
    act: Callable[[Services, str, Any, audit.Actor], Any]


DELIVERIES = Rows("delivery", "deliveries", "deliveries", "/console/deliveries", "deliveries.html", deliveries.LISTING_FIELDS,
                  deliveries.STATUSES, deliveries.ACTIONS, deliveries.read_listing, deliveries.list_deliveries,
                  deliveries.count_applicable, lambda action: deliveries.RULES[action].applies, deliveries.DeliveryAction,
                  deliveries.act)
EVENTS = Rows("event", "events", "failed-events", "/console/events", "events.html", failed_events.LISTING_FIELDS,
              failed_events.STATUSES, failed_events.ACTIONS, failed_events.read_listing, failed_events.list_failed,
              lambda session, _action, wanted, cap: failed_events.count_actionable(session, wanted, cap),
              lambda _action: ("failing", "failed"), failed_events.EventAction, failed_events.act)


class Refused(Exception):
    """A request the console answers with a page saying why (``status``, ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Call:
    """One request, as the page handlers (run in a thread) see it."""

    request: Request
    operator: sessions.Operator
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def query(self) -> dict[str, str]:
        """The query parameters given a value (an empty form field is a filter left out)."""
        return {k: v for k, v in self.request.query_params.items() if v.strip() != ""}

    def field(self, name: str) -> str | None:
        """The first value of a form field."""
        values = self.form.get(name)
        return values[0] if values else None

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor.of_console(self.operator.principal)


def add_console(app: FastAPI, services: Services) -> None:
    """Serve the console under ``/console`` on ``app``."""
    Console(services).mount(app)


class Console:
    """The console's pages on ``services``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = _when
        self.env.filters["age"] = _age
        self.env.globals["nav"] = NAV

    # -- plumbing ---------------------------------------------------------------------------

    def mount(self, app: FastAPI) -> None:
        app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
        get, post = ["GET"], ["POST"]
        routes: list[tuple[str, Callable[..., Any], list[str], bool]] = [
            ("/console", self.overview, get, False),
            ("/console/deliveries", self.deliveries, get, False),
            ("/console/deliveries/{delivery_id}", self.delivery, get, False),
            ("/console/deliveries/{action}", self.act_on_deliveries, post, True),
            ("/console/events", self.events, get, False),
            ("/console/events/{action}", self.act_on_events, post, True),
            ("/console/journeys", self.journeys, get, False),
            ("/console/journeys/{journey_id}", self.journey, get, False),
            ("/console/journeys/{journey_id}/{action}", self.act_on_journey, post, True),
            ("/console/customers", self.customer, get, False),
            ("/console/experiments", self.experiments, get, False),
            ("/console/audit", self.audit_log, get, False),
            ("/console/logout", self.logout, post, False),
        ]
        app.add_api_route("/console/login", self.login_form, methods=get, include_in_schema=False)
        app.add_api_route("/console/login", self.login, methods=post, include_in_schema=False)
        for path, handler, methods, acts in routes:
            app.add_api_route(path, self.endpoint(handler, acts), methods=methods, include_in_schema=False,
                              name=f"console.{handler.__name__}")
        app.add_api_route("/console/{rest:path}", self.endpoint(self.not_found, False), methods=get, include_in_schema=False)

    def endpoint(self, handler: Callable[[Call], Response], acts: bool) -> Callable[[Request], Any]:
        """A route calling ``handler`` for a signed-in operator (and, for a POST, a checked form)."""
        async def run(request: Request) -> Response:
            form: dict[str, list[str]] = {}
            if request.method == "POST":
                if not same_origin(request):
                    return self.bare(request, 403, "This form was sent from another site, so it was refused. "
                                                   "Open the console and use its own forms.")
                body = await request.body()
                if len(body) > MAX_FORM:
                    return self.bare(request, 413, f"This form is {len(body)} bytes; a console form has at most {MAX_FORM}. "
                                                   "Tick fewer rows, or act on everything the filter selects.")
                form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            return await run_in_threadpool(self.call, handler, request, form, acts)

        run.__name__ = handler.__name__
        return run

    def call(self, handler: Callable[[Call], Response], request: Request, form: dict[str, list[str]], acts: bool) -> Response:
        token = request.cookies.get(sessions.COOKIE)
        try:
            with self.services.sessions.begin() as session:
                operator = sessions.find(session, token, self.services.clock())
        except OperationalError:
            return self.bare(request, 503, "The database is unavailable; try again in a moment.")
        if operator is None:
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target = "/console/login" + (f"?{urlencode({'next': wanted})}" if request.method == "GET" else "")
            response: Response = RedirectResponse(target, 303)
            if token:
                response.delete_cookie(sessions.COOKIE, path="/console")
            return response
        call = Call(request, operator, form)
        if request.method == "POST":
            if not sessions.same(call.field("csrf"), operator.csrf):
                return self.render(call, "error.html", status=403, title="Refused",
                                   message="The form's security token is missing or is not this session's. "
                                           "Reload the page and send the form again.")
            if acts and not operator.admin:
                return self.render(call, "error.html", status=403, title="Refused",
                                   message=f"You signed in with the read key {operator.principal.prefix}…, which may "
                                           "look but not act. Sign in with an admin key to act.")
        try:
            return handler(call)
        except Refused as exc:
            return self.render(call, "error.html", status=exc.status, title="Not possible", message=str(exc))
        except PayloadError as exc:
            status = 409 if isinstance(exc, ConflictError) else 400
            return self.render(call, "error.html", status=status, title="Not possible", problems=exc.problems,
                               message=f"{exc.subject[:1].upper()}{exc.subject[1:]} was not accepted:")
        except NotFoundError as exc:
            return self.render(call, "error.html", status=404, title="Not found", message=str(exc))
        except OperationalError:
            return self.render(call, "error.html", status=503, title="Unavailable",
                               message="The database is unavailable; nothing was changed. Try again in a moment.")

    def render(self, call: Call | None, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        operator = call.operator if call is not None else None
        body = self.env.get_template(template).render(operator=operator, csrf=operator.csrf if operator else "",
                                                       can_act=bool(operator and operator.admin), **context)
        return HTMLResponse(body, status, headers=HEADERS)

    def bare(self, _request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(None, "error.html", status=status, title="Refused", message=message)

    def done(self, call: Call) -> dict[str, Any] | None:
        """The action a redirect after a POST names (``?done=<audit id>``), to say what was done."""
        raw = call.request.query_params.get("done", "")
        if not raw.isdigit() or len(raw) > 18:
            return None
        with self.services.sessions() as session:
            entry = session.get(AuditEntry, int(raw))
            return audit.view(entry).model_dump(by_alias=True) if entry is not None else None

    def listing_query(self, call: Call, names: tuple[str, ...]) -> dict[str, str]:
        return {k: v for k, v in call.query.items() if k in names}

    # -- sign-in ----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """The sign-in form (a signed-in operator goes to the overview)."""
        token = request.cookies.get(sessions.COOKIE)

        def signed_in() -> bool:
            with self.services.sessions.begin() as session:
                return sessions.find(session, token, self.services.clock()) is not None

        known: bool = bool(token) and await run_in_threadpool(signed_in)
        if known:
            return RedirectResponse("/console", 303)
        return self.login_page(request, 200, None)

    def login_page(self, request: Request, status: int, message: str | None) -> Response:
        form_token = secrets.token_urlsafe(24)
        response = self.render(None, "login.html", status=status, message=message, form_token=form_token,
                               next=_next(request.query_params.get("next")))
        response.set_cookie(sessions.LOGIN_COOKIE, form_token, max_age=3600, path="/console/login", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def login(self, request: Request) -> Response:
        """Sign in with an admin or read key: a session, its cookie, and the page asked for."""
        if not same_origin(request):
            return self.bare(request, 403, "This form was sent from another site, so it was refused.")
        form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        given = (form.get("form_token") or [""])[0]
        if not sessions.same(given, request.cookies.get(sessions.LOGIN_COOKIE) or "\x00"):
            return self.login_page(request, 400, "The sign-in form expired or was not this browser's; sign in again.")
        key = (form.get("key") or [""])[0].strip()
        wanted = _next((form.get("next") or [""])[0])

        def open_session() -> str:
            with self.services.sessions.begin() as session:
                principal = keys.authenticate(session, key or None)
                if principal.scope not in ("read", "admin"):
                    raise AuthError("this is a write key, which may only send events; sign in with a read key "
                                    "or an admin key (`journey keys create NAME --read`)", status=403)
                sessions.close(session, request.cookies.get(sessions.COOKIE))  # signing in again ends the old session
                return sessions.open_session(session, principal, self.services.clock())

        try:
            token = await run_in_threadpool(open_session)
        except AuthError as exc:
            message = str(exc).replace("no API key: send it as the HTTP Basic username (the password stays empty) "
                                       "or as writeKey in the body", "enter an API key (an admin key or a read key)")
            return self.login_page(request, exc.status, message)
        response = RedirectResponse(wanted, 303)
        response.set_cookie(sessions.COOKIE, token, max_age=int(sessions.LIFETIME.total_seconds()), path="/console",
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        response.delete_cookie(sessions.LOGIN_COOKIE, path="/console/login")
        return response

    def logout(self, call: Call) -> Response:
        """Sign out: the session ends here and now."""
        with self.services.sessions.begin() as session:
            sessions.close(session, call.request.cookies.get(sessions.COOKIE))
        response = RedirectResponse("/console/login", 303)
        response.delete_cookie(sessions.COOKIE, path="/console")
        return response

    def not_found(self, call: Call) -> Response:
        if call.request.url.path == "/console/":
            return RedirectResponse("/console", 307)
        raise Refused(404, f"The console has no page {call.request.url.path}; use the links above.")

    # -- pages ------------------------------------------------------------------------------

    def overview(self, call: Call) -> Response:
        """Queues, the last hour's sends per minute, the oldest pending work, the scheduler's lag, the backlog."""
        now = self.services.clock()
        broker_error = None
        try:
            depths = queues.queue_depths(self.services.broker)
        except Exception as exc:  # noqa: BLE001 - a broker down must not hide the database's figures
            depths, broker_error = [], f"the broker could not be read ({exc.__class__.__name__}: {exc})"
        with self.services.sessions() as session:
            work = queues.backlog(session, now, cap=CONFIRM_CAP)
            oldest = queues.oldest_pending(session)
            sent = queues.sent_per_minute(session, now)
        return self.render(call, "overview.html", page="overview", depths=depths, broker_error=broker_error, work=work,
                           oldest=oldest, now=now, chart=charts.per_minute(sent), sent_total=sum(c for _, c in sent))

    def deliveries(self, call: Call) -> Response:
        """Deliveries by status, channel, journey, reason and time, a keyset page at a time, and the actions."""
        with self.services.sessions() as session:  # the ids only: list_journeys counts enrollments too
            journeys = list(session.execute(select(JourneyRecord.id).order_by(JourneyRecord.id)).scalars())
        return self.listing(call, DELIVERIES, channels=channel_registry.available(), journeys=journeys,
                            rules=deliveries.RULES)

    def delivery(self, call: Call) -> Response:
        """One delivery: its attempts, errors, content as rendered, and its trace lines."""
        delivery_id = _row_id(call.request.path_params["delivery_id"], "delivery")
        with self.services.sessions() as session:
            row = session.get(Delivery, delivery_id)
            if row is None:
                raise NotFoundError(f"no delivery has the id {delivery_id}; see the deliveries page")
            [shown] = deliveries.views(session, [row])
            trace = [t for t in session.execute(
                select(TraceEntry).where(TraceEntry.enrollment_id == row.enrollment_id, TraceEntry.step == row.step)
                .order_by(TraceEntry.at, TraceEntry.id).limit(500)
            ).scalars() if not t.what.startswith("delivery") or (t.value or {}).get("delivery") == row.id]
            details = {"enrollment": row.enrollment_id, "template": row.template, "topic": row.topic,
                       "provider id": row.provider_id, "enqueued": _when(row.enqueued_at), "sent": _when(row.sent_at),
                       "not before": _when(row.not_before), "cleared": _when(row.cleared_at)}
            content, rendered = row.content, row.rendered
        return self.render(call, "delivery.html", page="deliveries", row=shown, details=details, content=content,
                           rendered=rendered, trace=trace, rules=deliveries.RULES, done=self.done(call),
                           back=_here(call))

    def act_on_deliveries(self, call: Call) -> Response:
        """Retry, drop, resend or mark sent: the deliveries ticked, one, or (confirmed) every one the filter selects."""
        return self.act_on(call, DELIVERIES)

    def events(self, call: Call) -> Response:
        """Stored events that failed to apply: the error, the attempts; retry and drop."""
        return self.listing(call, EVENTS)

    def act_on_events(self, call: Call) -> Response:
        """Retry or drop failed events: those ticked, one, or (confirmed) every one the filter selects."""
        return self.act_on(call, EVENTS)

    def listing(self, call: Call, rows: Rows, **context: Any) -> Response:
        """A keyset page of ``rows`` by the filter the query gives; a bad filter is a message above the form."""
        query = self.listing_query(call, rows.fields)
        found: list[Any] = []
        cursor, problems = None, []
        try:
            listing = rows.read_listing(query)
            with self.services.sessions() as session:
                found, cursor = rows.page_of(session, listing)
        except PayloadError as exc:
            problems = exc.problems
        filter_query = {k: v for k, v in query.items() if k not in ("cursor", "limit")}
        return self.render(call, rows.template, 400 if problems else 200, page=rows.page, rows=found, next_cursor=cursor,
                           problems=problems, query=query, filter_qs=urlencode(filter_query), statuses=rows.statuses,
                           actions=rows.actions, done=self.done(call), back=_here(call), page_qs=_page_qs(query),
                           **context)

    def act_on(self, call: Call, rows: Rows) -> Response:
        """An action on ``rows``: those ticked, one (its row's button), or, once confirmed with the count,
        every one the form's filter selects; the engine function the admin API calls does it."""
        action = call.request.path_params["action"]
        if action not in rows.actions:
            raise Refused(404, f"there is no {rows.noun} action {action!r}; the actions are {', '.join(rows.actions)}")
        listing = rows.read_listing(_filter_of(call))
        back = _back(call, rows.base)
        if call.field("scope") == "filter":
            if call.field("confirmed") != "yes":
                with self.services.sessions() as session:
                    count = rows.count(session, action, listing.filter, CONFIRM_CAP)
                return self.render(call, "confirm.html", page=rows.page, noun=rows.plural, action=action, count=count,
                                   cap=CONFIRM_CAP, applies=rows.applies(action), filter_qs=call.field("filter") or "",
                                   criteria=listing.filter.model_dump(mode="json", exclude_none=True),
                                   target=f"{rows.base}/{action}", back=back)
            selection = actions.checked(rows.selection, {"filter": listing.filter}, "the selection")
        else:
            selection = actions.checked(rows.selection, {"ids": _ids(call, rows.noun)}, "the selection")
        result = rows.act(self.services, action, selection, call.actor)
        return RedirectResponse(_with_done(back, result.audit_id), 303)

    def journeys(self, call: Call) -> Response:
        """The deployed journeys: status, versions, active enrollments."""
        with self.services.sessions() as session:
            listed = analytics.list_journeys(session)
        return self.render(call, "journeys.html", page="journeys", journeys=listed, done=self.done(call))

    def journey(self, call: Call) -> Response:
        """One journey: the steps as a funnel, exits and deliveries per step; pause, resume, archive."""
        journey_id = call.request.path_params["journey_id"]
        record = self.journey_record(journey_id)
        params: dict[str, str | None] = {k: v for k, v in call.query.items() if k in STATS_PARAMS}
        problems: list[Problem] = []
        stats = None
        try:
            stats = analytics.journey_stats_now(self.services, journey_id, params)
        except PayloadError as exc:
            problems = exc.problems
        actions_left = [a for a, status in deploy.STATUS_ACTIONS.items() if status != record["status"]]
        return self.render(call, "journey.html", 400 if problems else 200, page="journeys", journey=record, stats=stats, problems=problems,
                           query=params, funnel=charts.funnel(stats["steps"]) if stats else None,
                           actions=actions_left, done=self.done(call))

    def journey_record(self, journey_id: str) -> dict[str, Any]:
        with self.services.sessions() as session:
            listed = analytics.list_journeys(session)
        found = next((j for j in listed if j["id"] == journey_id), None)
        if found is None:
            raise NotFoundError(f"no deployed journey has the id {journey_id!r}; see the journeys page")
        return found

    def act_on_journey(self, call: Call) -> Response:
        """Pause, resume or archive a journey, once confirmed; audited."""
        journey_id, action = call.request.path_params["journey_id"], call.request.path_params["action"]
        if action not in deploy.STATUS_ACTIONS:
            raise Refused(404, f"there is no journey action {action!r}; the actions are "
                               f"{', '.join(deploy.STATUS_ACTIONS)}")
        record = self.journey_record(journey_id)
        if call.field("confirmed") != "yes":
            return self.render(call, "confirm_journey.html", page="journeys", journey=record, action=action,
                               becomes=deploy.STATUS_ACTIONS[action])
        try:
            with self.services.sessions.begin() as session:
                _, entry = deploy.change_status(session, journey_id, action, self.services.clock(), call.actor)
        except KeyError:
            raise NotFoundError(f"no deployed journey has the id {journey_id!r}; see the journeys page") from None
        return RedirectResponse(_with_done(f"/console/journeys/{journey_id}", entry), 303)

    def customer(self, call: Call) -> Response:
        """A customer by user id or anonymous id: profile, stage history, enrollments, deliveries, trace."""
        ident = call.query.get("q", "").strip()
        view, text, message = None, None, None
        if ident:
            if "\x00" in ident or len(ident) > 255:
                message = "a user id or an anonymous id has at most 255 characters and no NUL; check what you pasted"
            else:
                with self.services.sessions.begin() as session:
                    view = customer_view(session, ident)
                    explained = explain(session, ident) if view is not None else None
                text = format_text(explained) if explained is not None else None
                if view is None:
                    message = f"no customer is known by the user id or anonymous id {ident!r}"
        return self.render(call, "customer.html", 404 if ident and view is None else 200, page="customer", ident=ident, view=view, trace_text=text,
                           message=message)

    def experiments(self, call: Call) -> Response:
        """Every journey with splits: each variant's customers, rate, lift, interval, p-value and verdict."""
        params: dict[str, str | None] = {k: v for k, v in call.query.items() if k in STATS_PARAMS and k != "version"}
        with self.services.sessions() as session:
            listed = analytics.list_journeys(session)
            split = [j["id"] for j in listed if any(
                step.kind == "split"
                for definition in analytics.definitions_for(session, self.services.deployed, j["id"], None).values()
                for step in definition.steps)]
        found, problems = [], []
        try:
            analytics.read_window(params, self.services.clock())  # checked even when no journey splits
            analytics.read_options(params)
            for journey_id in split:
                stats = analytics.journey_stats_now(self.services, journey_id, params)
                splits: dict[str, list[dict[str, Any]]] = {}
                for variant in stats["variants"]:
                    splits.setdefault(variant["split"], []).append(variant)
                found.append({"journey": journey_id, "since": stats["since"], "until": stats["until"], "splits": splits})
        except PayloadError as exc:
            problems = exc.problems
        return self.render(call, "experiments.html", 400 if problems else 200, page="experiments", experiments=found, problems=problems,
                           query=params)

    def audit_log(self, call: Call) -> Response:
        """The audit log, newest first, a page at a time."""
        query = self.listing_query(call, ("limit", "cursor"))
        entries: list[audit.AuditView] = []
        cursor, problems = None, []
        try:
            limit, before = audit.read_listing(query)
            with self.services.sessions() as session:
                page = audit.list_entries(session, limit, before)
            entries, cursor = page.entries, page.next_cursor
        except PayloadError as exc:
            problems = exc.problems
        return self.render(call, "audit.html", 400 if problems else 200, page="audit", entries=entries, next_cursor=cursor, problems=problems,
                           query=query, page_qs=_page_qs(query))


def same_origin(request: Request) -> bool:
    """Whether a POST comes from the console's own pages: its Origin (when sent) is this host, and the
    browser does not call it cross-site."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _next(wanted: str | None) -> str:
    """Where to go after signing in: a console page only (never another site)."""
    if wanted and wanted.startswith("/console") and not wanted.startswith("/console/login") and "\\" not in wanted:
        return wanted
    return "/console"


def _back(call: Call, default: str) -> str:
    wanted = call.field("back") or ""
    return wanted if wanted.startswith("/console/") and "\\" not in wanted and not wanted.startswith("//") else default


def _here(call: Call) -> str:
    """The page's own address without ``done`` (where an action returns)."""
    query = {k: v for k, v in call.query.items() if k != "done"}
    return call.request.url.path + (f"?{urlencode(query)}" if query else "")


def _page_qs(query: Mapping[str, str]) -> str:
    """The listing's query without its cursor: the next page adds its own."""
    return urlencode({k: v for k, v in query.items() if k != "cursor"})


def _with_done(back: str, audit_id: int) -> str:
    base, _, query = back.partition("?")
    kept = [(k, v) for k, v in parse_qs(query, keep_blank_values=True).items() if k != "done"]
    return f"{base}?{urlencode([(k, v[0]) for k, v in kept] + [('done', str(audit_id))])}"


def _filter_of(call: Call) -> dict[str, str]:
    """The listing filter a form carries (the page's query, as text)."""
    query = parse_qs(call.field("filter") or "", keep_blank_values=False)
    return {k: v[0] for k, v in query.items() if k not in ("cursor", "limit")}


def _row_id(raw: str, noun: str, where: str = "the address") -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= actions.MAX_ID:
        raise PayloadError(where, [Problem(f"{noun} id", f"{raw[:40]!r} is not a {noun} id: a whole number such as 42")])
    return int(raw)


def _ids(call: Call, noun: str) -> list[int]:
    """The rows a form names: the one button's ``only``, else every ticked ``ids``."""
    given = call.form.get("only") or call.form.get("ids") or []
    if not given:
        raise Refused(400, f"Tick at least one {noun} first, or use the buttons that act on everything the filter selects.")
    return [_row_id(raw, noun, "the selection") for raw in given]


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _age(seconds: float | None) -> str:
    """A duration as people read it: 45s, 12m 3s, 5h 2m, 3d 4h."""
    if seconds is None:
        return "none"
    seconds = max(int(seconds), 0)
    for size, unit, smaller, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // smaller}{small_unit}"
    return f"{seconds}s"


__all__ = ["Console", "add_console", "same_origin"]
