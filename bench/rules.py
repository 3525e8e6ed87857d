"""How fast journeys load and conditions evaluate; prints figures, asserts nothing.

Run: python bench/rules.py [--journeys 1000] [--evaluations 200000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.definitions import load_text
from engine.rules import compile_condition, make_activation

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "journeys" / "cart_abandonment.yaml"


def bench_loading(count: int) -> float:
    """Journeys per second: each copy has its own id, and is parsed, checked and compiled."""
    text = SOURCE.read_text()
    templates = SOURCE.parent / "templates"
    texts = [text.replace("id: cart_abandonment", f"id: cart_abandonment_{i}", 1) for i in range(count)]
    start = time.perf_counter()
    for i, body in enumerate(texts):
        load_text(body, filename=f"copy_{i}.yaml", templates=templates)
    return count / (time.perf_counter() - start)


def bench_condition(evaluations: int) -> tuple[float, float, float]:
    """Nanoseconds per evaluation: prepared activation, plain dict, and a Python baseline."""
    condition = compile_condition("event.properties.cart_value >= 200 && customer.tier != 'gold'")
    data: dict[str, dict[str, Any]] = {"event": {"properties": {"cart_value": 250}}, "customer": {"tier": "silver"}}
    activation = make_activation(data)

    def per_call(function: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(evaluations):
            function()
        return (time.perf_counter() - start) / evaluations * 1e9

    prepared = per_call(lambda: condition.evaluate(activation))
    from_dict = per_call(lambda: condition.evaluate(data))
    baseline = per_call(lambda: data["event"]["properties"]["cart_value"] >= 200 and data["customer"]["tier"] != "gold")
    return prepared, from_dict, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=1000)
    parser.add_argument("--evaluations", type=int, default=200_000)
    args = parser.parse_args()

    rate = bench_loading(args.journeys)
    print(f"loading: {args.journeys} journeys in {args.journeys / rate:.2f}s ({rate:,.0f} journeys/s)")
    prepared, from_dict, baseline = bench_condition(args.evaluations)
    print(f"condition, prepared activation: {prepared:,.0f} ns per evaluation")
    print(f"condition, from a dict:         {from_dict:,.0f} ns per evaluation")
    print(f"baseline, the same test in plain Python: {baseline:,.0f} ns")


if __name__ == "__main__":
    main()
