"""``journey trace``: what the engine did with one customer, and why.

:func:`explain` gathers, for one customer, the journeys they entered and left, each
enrollment's path with every condition's value, its waits and its deliveries' outcomes,
from the ``trace`` rows the orchestrator and the delivery pipeline write. The result is
JSON-ready (the admin API returns it as is); :func:`format_text` turns it into the
timeline the CLI prints.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.log import PREVIEW_PREFIX
from engine import profiles
from engine.runtime.state import parse_iso
from engine.storage.models import Customer, Delivery, Enrollment, PointsEntry, StageChange, TraceEntry, TurnAway


def explain(session: Session, ident: str) -> dict[str, Any] | None:
    """Explain the customer known by user id or anonymous id ``ident``; None if nobody is."""
    customer = profiles.find(session, ident)
    return explain_customer(session, customer) if customer is not None else None


def explain_customer(session: Session, customer: Customer) -> dict[str, Any]:
    """Explain ``customer``: ids, stage and its history, points, and every enrollment.

    Enrollments, deliveries and points of anonymous profiles merged into this one are
    included: a merge moves events and stage history, but those rows keep the id of the
    profile that earned them.
    """
    ids = _merged_ids(session, customer.id)
    history = session.execute(
        select(StageChange).where(StageChange.customer_id.in_(ids)).order_by(StageChange.at, StageChange.id)
    ).scalars()
    points = session.execute(
        select(func.coalesce(func.sum(PointsEntry.amount), 0)).where(PointsEntry.customer_id.in_(ids))
    ).scalar_one()
    return {
        "id": customer.id,
        "userId": customer.external_id,
        "anonymousIds": profiles.anonymous_ids(session, customer),
        "stage": customer.stage,
        "stageHistory": [
            {"from": c.from_stage, "to": c.to_stage, "at": _iso(c.at), "reason": c.reason} for c in history
        ],
        "points": int(points),
        "journeys": enrollments(session, ids),
        "notEntered": turn_aways(session, ids),
    }


def turn_aways(session: Session, customer_ids: list[int]) -> list[dict[str, Any]]:
    """The latest times a journey turned ``customer_ids`` away, oldest first, and why
    (the orchestrator keeps the latest few per customer)."""
    rows = session.execute(
        select(TurnAway).where(TurnAway.customer_id.in_(customer_ids)).order_by(TurnAway.at, TurnAway.id)
    ).scalars()
    return [
        {"at": _iso(row.at), "journey": row.journey_id, "version": row.version, "event": row.event,
         "reason": row.reason, "detail": row.detail, "value": row.value}
        for row in rows
    ]


def enrollments(session: Session, customer_ids: list[int]) -> list[dict[str, Any]]:
    """Each enrollment of ``customer_ids``, oldest first, with its trace and deliveries."""
    rows = list(
        session.execute(
            select(Enrollment)
            .where(Enrollment.customer_id.in_(customer_ids))
            .order_by(Enrollment.started_at, Enrollment.id)
        ).scalars()
    )
    ids = [row.id for row in rows]
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    deliveries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        for entry in session.execute(
            select(TraceEntry).where(TraceEntry.enrollment_id.in_(ids)).order_by(TraceEntry.at, TraceEntry.id)
        ).scalars():
            traces[entry.enrollment_id].append(
                {"at": _iso(entry.at), "step": entry.step, "what": entry.what, "detail": entry.detail,
                 "value": entry.value, "error": entry.error}
            )
        for delivery in session.execute(
            select(Delivery).where(Delivery.enrollment_id.in_(ids)).order_by(Delivery.created_at, Delivery.id)
        ).scalars():
            deliveries[delivery.enrollment_id].append(
                {"id": delivery.id, "step": delivery.step, "channel": delivery.channel,
                 "template": delivery.template, "kind": delivery.kind, "status": delivery.status,
                 "attempts": delivery.attempts, "error": delivery.error, "providerId": delivery.provider_id,
                 "sentAt": _iso(delivery.sent_at)}
            )
    return [
        {
            "id": row.id,
            "journey": row.journey_id,
            "version": row.version,
            "status": row.status,
            "startedAt": _iso(row.started_at),
            "endedAt": _iso(row.ended_at),
            "reason": (row.state or {}).get("reason"),
            "step": row.step,
            "waitingFor": _waiting_for(row),
            "variant": dict((row.state or {}).get("variant") or {}),
            "trace": traces[row.id],
            "deliveries": deliveries[row.id],
        }
        for row in rows
    ]


def format_text(explanation: dict[str, Any]) -> str:
    """The explanation as a timeline for people (times in UTC)."""
    ids = [explanation["userId"] or f"customer {explanation['id']}"]
    if explanation["anonymousIds"]:
        ids.append("anonymous ids " + ", ".join(explanation["anonymousIds"]))
    lines = [
        f"{' / '.join(ids)}  stage {explanation['stage'] or '-'}  {explanation['points']} points",
    ]
    for change in explanation["stageHistory"]:
        lines.append(
            f"  stage {change['from'] or '-'} -> {change['to']}  {_when(change['at'])}  ({change['reason']})"
        )
    if not explanation["journeys"]:
        lines += ["", "no journeys entered"]
    for enrollment in explanation["journeys"]:
        lines += ["", *_enrollment_lines(enrollment)]
    if explanation.get("notEntered"):
        lines += ["", "not entered (latest):"]
        lines += [f"  {_when(t['at'])}  {t['journey']} v{t['version']}  {t['event']}: {_why_not(t)}"
                  for t in explanation["notEntered"]]
    lines += ["", "(times in UTC)"]
    return "\n".join(lines)


def _enrollment_lines(enrollment: dict[str, Any]) -> list[str]:
    status = enrollment["status"]
    if status == "active":
        status += f" at {enrollment['step']}"
    elif enrollment["reason"] and enrollment["reason"] != status:
        status += f" ({enrollment['reason']})"
    header = f"{enrollment['journey']} v{enrollment['version']}  {status}  started {_when(enrollment['startedAt'])}"
    if enrollment["endedAt"]:
        header += f"  ended {_when(enrollment['endedAt'])}"
    lines = [header]
    if enrollment["variant"]:
        lines.append("  variant " + ", ".join(f"{step}={path}" for step, path in enrollment["variant"].items()))
    by_id = {d["id"]: d for d in enrollment["deliveries"]}
    sends = defaultdict(list)  # the deliveries of each step, in the order the step sent them
    for delivery in enrollment["deliveries"]:
        sends[delivery["step"]].append(delivery)
    day = (enrollment["startedAt"] or "")[:10]
    for entry in enrollment["trace"]:
        if entry["at"][:10] != day:
            day = entry["at"][:10]
            lines.append(f"  {day}")
        if entry["what"] == "condition":
            lines.append(f"            condition {entry['detail']} -> {_value(entry['value'])}" + _error(entry["error"]))
            continue
        if entry["what"].startswith("delivery "):
            delivery = by_id.get((entry["value"] or {}).get("delivery"))
            if delivery is not None and entry["what"] == f"delivery {delivery['status']}":
                continue  # the final outcome is shown on the send line
        if entry["what"] == "run" and (entry["detail"] or "").startswith("send ") and sends[entry["step"]]:
            delivery = sends[entry["step"]].pop(0)
            text = f"{entry['detail']} ({delivery['kind']}) -> {_outcome(delivery)}"
        else:
            text = _describe(entry)
        step = "enter" if entry["what"] == "enter" else entry["step"] or "-"
        lines.append(f"  {_clock(entry['at'])}  {step}  {text}" + _error(entry["error"]))
    if enrollment["status"] == "active":
        lines.append(f"  now at {enrollment['step']}, waiting {enrollment['waitingFor'] or 'for nothing'}")
    return lines


def _describe(entry: dict[str, Any]) -> str:
    what, detail, value = entry["what"], entry["detail"] or "", entry["value"]
    if what == "enter":
        return str(value or "(segment)")
    if what == "wait":
        event = re.match(r"for (\S+), ", detail)
        until = f"until {_when(value, entry['at'])}" if value else ("with no timeout" if event else "forever")
        return f"wait {'for ' + event.group(1) + ' ' if event else ''}{until}"
    if what in ("resume", "timeout"):
        return f"{what} {detail}"
    if what == "stage":
        return f"stage -> {value}  ({detail})"
    if what == "end":
        return f"end {value}" + (f"  ({detail})" if detail and detail != value else "")
    if what == "choose":
        return f"choose {detail}" + (f" -> {value}" if value is not None and value != detail else "")
    if what.startswith("delivery "):
        return f"{what} {detail}".strip()
    shown = f"{what} {detail}".strip()
    if value is not None and str(value) not in detail:
        shown += f" ({_value(value)})"
    return shown


def _why_not(turn_away: dict[str, Any]) -> str:
    """``not entered: cart_value > 100 was false (cart_value=42)``, or the refusal in words."""
    text = f"not entered ({turn_away['reason']})"
    if turn_away["detail"]:
        text += f": {turn_away['detail']}"
    if turn_away["value"]:
        text += " (" + ", ".join(f"{name}={_value(v)}" for name, v in turn_away["value"].items()) + ")"
    return text


def _outcome(delivery: dict[str, Any]) -> str:
    text = delivery["status"]
    if (delivery["providerId"] or "").startswith(PREVIEW_PREFIX):
        # journey dev stood a logging channel in for one without settings: nothing left.
        text = f"logged, not sent ({delivery['channel']} is not configured)"
    elif delivery["providerId"]:
        text += f" (provider id {delivery['providerId']})"
    if delivery["attempts"] > 1:
        text += f" after {delivery['attempts']} attempts"
    if delivery["error"]:
        text += f": {delivery['error']}"
    return text


def _waiting_for(row: Enrollment) -> str | None:
    wait = (row.state or {}).get("wait") if row.status == "active" else None
    if not wait:
        return None
    until = _when(wait.get("until")) if wait.get("until") else None
    if wait.get("kind") == "event":
        return f"for {wait.get('event')}" + (f" until {until}" if until else " with no timeout")
    return f"until {until}" if until else "forever"


def _merged_ids(session: Session, customer_id: int) -> list[int]:
    """``customer_id`` and every profile merged into it, directly or through another."""
    ids, frontier = [customer_id], [customer_id]
    while frontier:
        frontier = list(
            session.execute(select(Customer.id).where(Customer.merged_into_id.in_(frontier))).scalars()
        )
        ids += frontier
    return ids


def _value(value: Any) -> str:
    return json.dumps(value, default=str)


def _error(error: str | None) -> str:
    return f"  ERROR: {error}" if error else ""


def _clock(at: str) -> str:
    moment = parse_iso(at)
    return moment.strftime("%H:%M:%S") if moment is not None else "--:--:--"


def _when(at: str | None, today: str | None = None) -> str:
    """``at`` to the minute; only the time when it falls on the day of ``today``."""
    moment = parse_iso(at)
    if moment is None:
        return "-"
    same_day = today is not None and (at or "")[:10] == today[:10]
    return moment.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
