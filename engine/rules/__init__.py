"""CEL conditions and expressions, compiled once at load and evaluated without raising.

The runtime calls :func:`compile_condition` (or gets compiled conditions from a loaded
:class:`~engine.definitions.Journey`) and then ``condition.evaluate(activation)``, where the
activation maps the variables ``event``, ``trigger``, ``customer``, ``context`` and ``now``
to their values. :func:`bucket` and :func:`choose_weighted` place a customer in a split.
"""

from __future__ import annotations

from engine.rules.cel import (
    VARIABLES,
    CelCompileError,
    CelIssue,
    Condition,
    ConditionResult,
    Expression,
    ExpressionResult,
    Mismatch,
    compile_condition,
    compile_expression,
    make_activation,
    mismatched_comparisons,
)
from engine.rules.references import FieldReference, field_references
from engine.rules.split import BUCKETS, bucket, choose_weighted

__all__ = [
    "BUCKETS",
    "VARIABLES",
    "CelCompileError",
    "CelIssue",
    "Condition",
    "ConditionResult",
    "Expression",
    "ExpressionResult",
    "FieldReference",
    "Mismatch",
    "bucket",
    "choose_weighted",
    "compile_condition",
    "compile_expression",
    "field_references",
    "make_activation",
    "mismatched_comparisons",
]
