"""The realistic mix of bench/e2e.py: the shipped journeys, fed their samples scaled up.

Copy ``k`` of the mix is every file of ``journeys/samples/*.jsonl`` once, its people made
its own (``ada`` becomes ``ada-RUN-k``, with their own address, phone, push token, order
ids and referral codes, so that goals, exits and referrals match within the copy as they
do in the sample), in the samples' timestamp order. The journeys are the shipped ones
(conditions, branches, waits, templates, policy: consent, quiet hours, frequency caps),
deployed with the bench's journey; the one change is the detractor webhook of
nps_survey, pointed at the bench's webhook peer.

Everyone lives in a time zone where it is about noon while the bench runs, so quiet
hours (21:00-08:00 in the customer's zone) defer nothing and every send is final within
the run; the policy is still judged for every marketing send.
"""

from __future__ import annotations

import datetime as dt
import shutil
import zlib
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "journeys"
BENCH_JOURNEYS = Path(__file__).resolve().parent / "journeys"
DETRACTOR_HOOK = "https://support.example.com/hooks/nps-detractor"
#: Values made the copy's own, wherever they appear in traits or properties.
OWN = ("order_id", "referral_code", "push_token")


def write_journeys(target: Path, webhook_url: str) -> None:
    """Write the bench's journey and the shipped ones (with their templates) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for path in [*BENCH_JOURNEYS.glob("*.yaml"), *SHIPPED.glob("*.yaml")]:
        (target / path.name).write_text(path.read_text().replace(DETRACTOR_HOOK, webhook_url))
    shutil.copytree(SHIPPED / "templates", target / "templates")


def samples() -> list[dict[str, Any]]:
    """Every sample event of the shipped journeys, file by file, in timestamp order."""
    events = [orjson.loads(line) for path in sorted((SHIPPED / "samples").glob("*.jsonl"))
              for line in path.read_text().splitlines() if line.strip()]
    return sorted(events, key=lambda event: str(event.get("timestamp", "")))


def noon_zone(now: dt.datetime) -> str:
    """An ``Etc/GMT`` zone where it is between 10:00 and 14:00 at ``now`` (UTC)."""
    offset = (12 - now.astimezone(dt.timezone.utc).hour + 12) % 24 - 12  # hours east of UTC, -12..11
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # the Etc names count westwards


def copies(run: str, count: int, now: dt.datetime) -> list[list[dict[str, Any]]]:
    """``count`` copies of the samples, one list of events each, stamped in order just before ``now``."""
    template, zone = samples(), noon_zone(now)
    stamp = now - dt.timedelta(milliseconds=count * len(template) + 1000)
    result = []
    for k in range(count):
        suffix = f"{run}-{k}"
        events = []
        for event in template:
            stamp += dt.timedelta(milliseconds=1)
            events.append(_own(event, suffix, zone, stamp))
        result.append(events)
    return result


def _own(event: dict[str, Any], suffix: str, zone: str, stamp: dt.datetime) -> dict[str, Any]:
    own = {**event, "messageId": f"{suffix}-{event['messageId']}", "timestamp": stamp.isoformat().replace("+00:00", "Z")}
    for ident in ("userId", "anonymousId"):
        if ident in event:
            own[ident] = f"{event[ident]}-{suffix}"
    user = own.get("userId") or own["anonymousId"]
    if "properties" in event:
        own["properties"] = _suffixed(event["properties"], suffix)
    if "traits" in event:
        traits = _suffixed(event["traits"], suffix)
        if "email" in traits:
            traits["email"] = f"{user}@example.com"
        traits["timezone"] = zone
        traits.setdefault("phone", "+4477009" + str(zlib.crc32(user.encode()) % 100000).zfill(5))
        own["traits"] = traits
    return own


def _suffixed(values: dict[str, Any], suffix: str) -> dict[str, Any]:
    return {name: f"{value}-{suffix}" if name in OWN and isinstance(value, str) else value for name, value in values.items()}
