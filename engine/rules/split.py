"""Deterministic bucketing for ``split`` steps: the same customer always takes the same path."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

BUCKETS = 10_000  # basis points: a weight of 12.5 (percent) covers 1,250 buckets


def bucket(customer_id: str, journey_id: str, salt: str = "") -> int:
    """Return the customer's bucket in ``range(BUCKETS)`` for this journey.

    The bucket is a SHA-256 of customer and journey, so it is stable across processes,
    machines and Python versions (unlike ``hash()``), and independent between journeys.
    ``salt`` (the split step's id) keeps two splits of one journey independent.
    """
    digest = hashlib.sha256(f"{journey_id}\x00{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_weighted(weights: Sequence[float], customer_id: str, journey_id: str, salt: str = "") -> int:
    """Return the index of the path this customer takes, given percentage weights summing to 100.

    Raises:
        ValueError: the weights are negative or do not add up to 100.
    """
    if any(w < 0 for w in weights) or abs(sum(weights) - 100) > 1e-9:
        raise ValueError(f"split weights must be non-negative and add up to 100, got {list(weights)}")
    point = bucket(customer_id, journey_id, salt)
    upper = 0.0
    for index, weight in enumerate(weights):
        upper += weight * BUCKETS / 100
        if point < upper:
            return index
    # Only float rounding can get here; the last path with weight takes the remainder.
    return max(i for i, w in enumerate(weights) if w > 0)
