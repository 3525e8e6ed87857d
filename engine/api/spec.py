"""The OpenAPI document: what each endpoint accepts and what it answers.

The endpoints read their bodies by hand (:mod:`engine.segment`, :mod:`engine.preferences`,
:mod:`engine.deliveries`), so FastAPI cannot see their rules. The schemas here are built
from the same constants those modules check with (``TYPES``, ``MAX_ID_LENGTH``, the
installed channels, ``REASONS``, ``STATUSES``, the limits and patterns), and state the
same rules: the spec accepts what the validation accepts, no more and no less, which a
schemathesis run in the test suite checks against ``journey serve``
(tests/integration/test_openapi_fuzz.py). What a schema cannot say (a message's 32 KB, a
request's 4 MB) is in the descriptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from annotated_types import MaxLen
from pydantic import BaseModel

from channels.base import ADDRESS_FIELDS
from engine import actions, deliveries, failed_events, preferences
from engine.policy import REASONS
from engine.segment import MAX_BATCH_BYTES, MAX_EVENT_BYTES, MAX_ID_LENGTH, MAX_ID_NUMBER, MIN_ID_NUMBER, TYPES

#: A string without NUL, the one character PostgreSQL cannot store: the API refuses it
#: in a path, a query string and a message.
NO_NUL = r"^[^\x00]*$"
#: The characters ``str.strip()`` removes (a blank id or name counts as absent), spelled
#: out so that every regex dialect reads ``[...]`` alike (``\s`` differs between them).
SPACES = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
#: Not blank: a character that is neither whitespace nor NUL.
NOT_BLANK = rf"[^\x00{SPACES}]"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def text(max_length: int, *, blank: bool = False, pattern: str | None = None) -> Schema:
    """A string of at most ``max_length`` characters, without NUL; not blank unless ``blank``."""
    schema: Schema = {"type": "string", "maxLength": max_length, "pattern": pattern or NO_NUL}
    if not blank:
        schema["allOf"] = [{"pattern": NOT_BLANK}]
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_NUMBER_ID: Schema = {"type": "integer", "minimum": MIN_ID_NUMBER, "maximum": MAX_ID_NUMBER}
#: An id as a message may hold it: a string or a whole number; null is the same as absent.
_ID: Schema = {"anyOf": [text(MAX_ID_LENGTH, blank=True), _NUMBER_ID, {"type": "null"}]}
#: An id that is there: not null, not blank.
_PRESENT_ID: Schema = {"anyOf": [text(MAX_ID_LENGTH), _NUMBER_ID]}
_TEXT: Schema = _nullable(text(MAX_ID_LENGTH, blank=True))
_PRESENT_TEXT: Schema = text(MAX_ID_LENGTH)
_TIME: Schema = _nullable({"type": "string", "format": "date-time"})
_OBJECT: Schema = _nullable(ref("JsonObject"))


def _message(type_: str | None, *, in_batch: bool) -> Schema:
    """One Segment message of ``type_``: on its own endpoint (whose path gives the type), or in a batch."""
    properties: Schema = {
        "userId": _ID, "anonymousId": _ID, "messageId": _ID, "previousId": _ID, "groupId": _ID,
        "event": _TEXT, "name": _TEXT,
        "properties": _OBJECT, "traits": _OBJECT, "context": _OBJECT, "integrations": _OBJECT,
        "timestamp": _TIME, "originalTimestamp": _TIME, "sentAt": _TIME,
    }  # fmt: skip
    required: list[str] = []
    if in_batch:
        properties["type"] = {"type": "string", "const": type_}
        required.append("type")
    rules: list[Schema] = [{"anyOf": [
        {"required": ["userId"], "properties": {"userId": _PRESENT_ID}},
        {"required": ["anonymousId"], "properties": {"anonymousId": _PRESENT_ID}},
    ]}]  # fmt: skip
    if type_ == "track":
        rules.append({"required": ["event"], "properties": {"event": _PRESENT_TEXT}})
    elif type_ == "alias":
        rules.append({"required": ["userId", "previousId"],
                      "properties": {"userId": _PRESENT_ID, "previousId": _PRESENT_ID}})
    elif type_ == "group":
        rules.append({"required": ["groupId"], "properties": {"groupId": _PRESENT_ID}})
    elif type_ == "identify":
        # RudderStack's SDKs put an identify's traits in context.traits only: read there
        # when the message has no traits of its own, so they must be an object then.
        rules.append({"anyOf": [
            {"required": ["traits"], "properties": {"traits": {"type": "object", "minProperties": 1}}},
            {"properties": {"context": _nullable({"type": "object", "properties": {"traits": _OBJECT}})}},
        ]})  # fmt: skip
    return {
        "type": "object",
        "description": f"A Segment {type_} call; at most {MAX_EVENT_BYTES} bytes as JSON. userId or anonymousId "
                       "is required (null or blank is absent). Fields the spec does not name are kept.",
        "properties": properties,
        "required": required,
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": ref("JsonValue"),
        "allOf": rules,
    }


def _problem() -> Schema:
    return {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "where, e.g. batch[3].userId"},
            "message": {"type": "string", "description": "what is wrong and how to fix it"},
            "line": {"type": "integer"},
            "column": {"type": "integer"},
        },
        "required": ["path", "message"],
    }


def components(channels: Sequence[str]) -> Schema:
    """The shared schemas and security schemes of the document."""
    schemas: Schema = {
        # Any JSON a message may carry: no NUL in a string or a key (PostgreSQL cannot store it).
        "JsonValue": {"anyOf": [
            {"type": "string", "pattern": NO_NUL}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
            {"type": "array", "items": ref("JsonValue")}, ref("JsonObject"),
        ]},  # fmt: skip
        "JsonObject": {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": ref("JsonValue")},
        "Problem": _problem(),
        "Error": {
            "type": "object",
            "description": "Every error: code says which kind; errors names every problem of a 400 with its place.",
            "properties": {
                "success": {"const": False},
                "code": {"enum": ["invalid_request", "unauthorized", "forbidden", "not_found", "conflict",
                                  "http_error", "unavailable"]},
                "message": {"type": "string"},
                "errors": {"type": "array", "items": ref("Problem")},
                "accepted": {"type": "integer", "description": "a batch: how many messages were stored (none)"},
                "rejected": ref("Rejected"),
            },
            "required": ["success", "code", "message"],
        },
        "Rejected": {"type": "array", "description": "the messages of a batch that were not stored, by index", "items": {
            "type": "object",
            "properties": {"index": {"type": "integer"}, "errors": {"type": "array", "items": ref("Problem")}},
            "required": ["index", "errors"],
        }},
        "Ingested": {
            "description": "Stored: success true; or some messages of a batch stored (code partial), the others named.",
            "anyOf": [
                {"type": "object", "properties": {"success": {"const": True}}, "required": ["success"]},
                {"type": "object", "properties": {
                    "success": {"const": False}, "code": {"const": "partial"}, "message": {"type": "string"},
                    "errors": {"type": "array", "items": ref("Problem")}, "accepted": {"type": "integer"},
                    "rejected": ref("Rejected"),
                 }, "required": ["success", "code", "message", "errors", "accepted", "rejected"]},
            ],
        },
        "Suppression": {"type": "object", "properties": {
            "id": {"type": "integer"}, "channel": {"type": "string"}, "address": {"type": ["string", "null"]},
            "userId": {"type": ["string", "null"]}, "reason": {"enum": list(REASONS)},
            "note": {"type": ["string", "null"]}, "at": {"type": "string"},
        }, "required": ["id", "channel", "address", "userId", "reason", "note", "at"]},
        "Consent": {"type": "object", "properties": {
            "channel": {"type": "string"}, "topic": {"type": "string"}, "subscribed": {"type": "boolean"},
            "source": {"type": ["string", "null"]}, "at": {"type": "string"},
        }, "required": ["channel", "topic", "subscribed", "source", "at"]},
        "Customer": {"type": "object", "properties": {
            "id": {"type": "integer"}, "userId": {"type": ["string", "null"]},
            "anonymousIds": {"type": "array", "items": {"type": "string"}},
            "traits": {"type": "object"}, "journeys": {"type": "array"},
        }, "required": ["id", "userId"]},
    }
    for type_ in TYPES:
        schemas[f"{type_.capitalize()}Message"] = _message(type_, in_batch=False)
        schemas[f"{type_.capitalize()}BatchItem"] = _message(type_, in_batch=True)
    schemas["Batch"] = {
        "type": "object",
        "description": f"Up to {MAX_BATCH_BYTES} bytes (4 MB), optionally gzip-compressed (Content-Encoding: gzip). "
                       "Each message is checked alone: the good ones are stored and the bad ones named.",
        "properties": {
            "batch": {"type": "array", "items": {"anyOf": [ref(f"{t.capitalize()}BatchItem") for t in TYPES]}},
            "sentAt": _TIME,
            "writeKey": {"description": "the write key, when the request has no Authorization header"},
        },
        "required": ["batch"],
        "additionalProperties": True,  # read by nobody, stored nowhere
    }
    schemas.update(operator_schemas())
    schemas["SuppressionRequest"] = _suppression_request(channels)
    schemas["ConsentRequest"] = {
        "type": "object",
        "properties": {
            "channel": {"enum": list(channels)},
            "topic": _nullable(text(preferences.TOPIC_LENGTH)),
            "subscribed": {"type": "boolean"},
            "source": _nullable(text(preferences.SOURCE_LENGTH)),
        },
        "required": ["channel", "subscribed"],
        "additionalProperties": False,
    }
    return {
        "schemas": schemas,
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic", "description": "the key as the username, no password"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "the key as a bearer token"},
        },
    }


def _suppression_request(channels: Sequence[str]) -> Schema:
    """An address (checked against the channel) or a userId, never both."""
    every = preferences.EVERY_CHANNEL
    limit = preferences.ID_LENGTH
    address_rules: list[Schema] = [
        {"properties": {"channel": {"const": every}, "address": text(limit)}},
    ]
    for channel in channels:
        if channel not in ADDRESS_FIELDS:
            continue
        # The engine's \s is str.isspace(): spelled out for other dialects.
        pattern = preferences.ADDRESS_PATTERNS.get(channel, r"[^\s\x00]+").replace(r"\s", SPACES)
        address_rules.append({"properties": {"channel": {"const": channel},
                                             "address": text(limit, pattern=rf"^[{SPACES}]*{pattern}[{SPACES}]*$")}})
    return {
        "type": "object",
        "description": "Suppress an address on a channel (an email address, an E.164 phone number...), or a "
                       "customer by userId whatever their address; channels without an address take a userId.",
        "properties": {
            "channel": {"enum": [*channels, every]},
            "reason": {"enum": list(REASONS)},
            "address": _nullable(text(limit)),
            "userId": _nullable(text(limit)),
            "note": _nullable(text(preferences.NOTE_LENGTH)),
        },
        "required": ["channel", "reason"],
        "additionalProperties": False,
        "anyOf": [
            {"required": ["userId"], "properties": {"userId": text(limit), "address": {"type": "null"}}},
            {"required": ["address"], "properties": {"userId": {"type": "null"}}, "anyOf": address_rules},
        ],
    }


def _filter_fields(model: type[BaseModel], statuses: Sequence[str]) -> Schema:
    """The fields of an operator filter (:class:`~engine.deliveries.DeliveryFilter`...), not null.

    ``status`` is one of ``statuses``; ``since`` and ``until`` are times; every other field
    is text that is not blank, of at most the model's length.
    """
    fields: Schema = {}
    for name, info in model.model_fields.items():
        if name == "status":
            schema: Schema = {"enum": list(statuses)}
        elif name in ("since", "until"):
            schema = {"type": "string", "format": "date-time"}
        else:
            schema = text(next(m.max_length for m in info.metadata if isinstance(m, MaxLen)))
        fields[name] = {**schema, "description": info.description or ""}
    return fields


def _selection(noun: str, filter_name: str, *, every: bool) -> Schema:
    """An operator action's body: exactly one of ``ids``, ``filter`` (and ``all`` when ``every``).

    The others may be left out or null (the model reads null as absent).
    """
    names = ["ids", "filter", *(["all"] if every else [])]
    given: Schema = {
        "ids": {"type": "array", "minItems": 1, "maxItems": preferences.MAX_LIMIT,
                "items": {"type": "integer", "minimum": 1, "maximum": actions.MAX_ID},
                "description": f"these {noun} (at most {preferences.MAX_LIMIT}): all of them, or none"},
        "filter": {**ref(filter_name), "description": f"every one of the {noun} it selects that the action applies to"},
        "all": {"const": True, "description": f"every one of the {noun} the action applies to (as filter: {{}})"},
    }
    return {
        "type": "object",
        "description": f"The {noun}: by ids, {'by a filter, or all' if every else 'or by a filter'} (exactly one).",
        "properties": {name: _nullable(given[name]) for name in names},
        "additionalProperties": False,
        "oneOf": [{"required": [name], "properties": {name: given[name], **{other: {"type": "null"}
                                                                            for other in names if other != name}}}
                  for name in names],
    }


def operator_schemas() -> Schema:
    """The bodies of the operator actions on deliveries and failed events, and their filters."""
    schemas: Schema = {}
    for name, model, statuses in (("DeliveryFilter", deliveries.DeliveryFilter, deliveries.STATUSES),
                                  ("EventFilter", failed_events.EventFilter, failed_events.STATUSES)):
        schemas[name] = {
            "type": "object",
            "description": (model.__doc__ or "").strip() + " since must be before until (400 otherwise).",
            "properties": {field: _nullable(schema) for field, schema in _filter_fields(model, statuses).items()},
            "additionalProperties": False,
        }
    schemas["DeliveryAction"] = _selection("deliveries", "DeliveryFilter", every=True)
    schemas["EventAction"] = _selection("events", "EventFilter", every=False)
    return schemas


def filter_parameters(model: type[BaseModel], statuses: Sequence[str]) -> list[Schema]:
    """The query parameters of a listing on an operator filter, then ``limit`` and ``cursor``."""
    return listing_parameters(*(query(name, {key: value for key, value in schema.items() if key != "description"},
                                      schema["description"] + (" (before until)" if name == "since" else ""))
                                for name, schema in _filter_fields(model, statuses).items()))


#: A message of each type, as the SDKs send them.
EXAMPLES: dict[str, Schema] = {
    "identify": {"userId": "ada", "traits": {"email": "ada@example.com", "first_name": "Ada"}},
    "track": {"userId": "ada", "event": "Order Completed", "properties": {"order_id": "o-1", "total": 42},
              "originalTimestamp": "2026-11-23T09:30:00Z", "sentAt": "2026-11-23T09:30:05Z"},
    "page": {"anonymousId": "b7f1c2", "name": "Pricing", "properties": {"path": "/pricing"}},
    "screen": {"userId": "ada", "name": "Cart"},
    "group": {"userId": "ada", "groupId": "acme", "traits": {"plan": "enterprise"}},
    "alias": {"userId": "ada", "previousId": "b7f1c2"},
}


def json_body(schema: Schema, description: str = "", example: Any = None) -> Schema:
    """An operation's JSON request body, with an ``example`` if given."""
    content: Schema = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": True, "description": description, "content": {"application/json": content}}}


def responses(ok: Schema | None, *statuses: int, ok_status: int = 200, ok_description: str = "OK") -> Schema:
    """An operation's answers: ``ok`` (a JSON schema) and the error ``statuses`` it can give."""
    answers: Schema = {}
    if ok is not None:
        answers[str(ok_status)] = {"description": ok_description, "content": {"application/json": {"schema": ok}}}
    for status in (*statuses, 503):
        answers[str(status)] = {"description": _ERRORS[status], "content": {"application/json": {"schema": ref("Error")}}}
    return {"responses": answers}


_ERRORS = {
    400: "The request is invalid: errors names every problem with its place",
    401: "No API key, or an unknown or revoked one",
    403: "A write key where an admin key is needed",
    404: "What the request names does not exist",
    409: "What the request names is in a state that refuses it: errors names each one",
    503: "The database is unavailable: nothing was stored, retry after Retry-After seconds",
}

#: Either kind of Authorization header (a batch may also name its key in its body or URL).
INGEST_SECURITY: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def listing_parameters(*extra: Schema) -> list[Schema]:
    """The paging parameters of a listing (``limit``, ``cursor``), after ``extra``."""
    return [
        *extra,
        query("limit", {"type": "integer", "minimum": 1, "maximum": preferences.MAX_LIMIT},
              f"entries per page (default {preferences.DEFAULT_LIMIT})"),
        query("cursor", {"type": "integer", "minimum": 0, "maximum": preferences.MAX_CURSOR},
              "the nextCursor of the previous page"),
    ]
