"""The experiment statistics of :func:`engine.analytics.compare`, on known counts."""

from __future__ import annotations

from engine.analytics import MIN_SAMPLE, Group, compare, control_of, held_kind


def by_name(groups: list[Group], **kwargs: int) -> dict[str, dict]:  # type: ignore[type-arg]
    return {row["variant"]: row for row in compare(groups, **kwargs)}


def test_a_variant_converting_at_30_percent_beats_a_control_at_10():
    rows = by_name([Group("control", 1000, 100, holdout=True), Group("a", 1000, 300)])
    a = rows["a"]
    low, high = a["ci95"]
    assert (round(a["lift"], 6), a["relative_lift"] > 1.99, a["p_value"] < 0.05, a["significant"],
            low < 0.2 < high, low > 0, a["p_beats_control"] > 0.99, a["verdict"]) == (
        0.2, True, True, True, True, True, True, "better than control")


def test_equal_rates_are_not_significant():
    rows = by_name([Group("a", 1000, 200), Group("b", 1000, 200)])
    b = rows["b"]
    assert (b["lift"], b["p_value"] > 0.05, b["significant"], b["ci95"][0] < 0 < b["ci95"][1],
            b["verdict"]) == (0.0, True, False, True, "no significant difference")


def test_a_worse_variant_is_significant_with_a_negative_lift():
    b = by_name([Group("a", 800, 240), Group("b", 800, 80)])["b"]
    assert (b["lift"] < 0, b["significant"], b["ci95"][1] < 0, b["verdict"]) == (True, True, True, "worse than control")


def test_below_the_minimum_sample_no_winner_is_declared_however_large_the_difference():
    small = MIN_SAMPLE - 1
    b = by_name([Group("a", small, 5), Group("b", small, 60)])["b"]
    assert (b["enough_data"], b["significant"], b["verdict"].startswith("not enough data"),
            b["p_value"] < 0.05) == (False, False, True, True)


def test_too_few_conversions_expected_is_not_enough_data_either():
    b = by_name([Group("a", 500, 1), Group("b", 500, 3)])["b"]
    assert (b["enough_data"], b["significant"], "expected" in b["verdict"]) == (False, False, True)


def test_nobody_converting_anywhere_gives_p_one_and_no_warning():
    b = by_name([Group("a", 300, 0), Group("b", 300, 0)])["b"]
    assert (b["p_value"], b["lift"], b["relative_lift"], b["significant"]) == (1.0, 0.0, None, False)


def test_an_empty_variant_is_not_enough_data():
    b = by_name([Group("a", 300, 30), Group("b", 0, 0)])["b"]
    assert (b["rate"], b["p_value"], b["significant"], b["verdict"].startswith("not enough data")) == (None, None, False, True)


def test_the_control_is_the_holdout_else_a_path_named_control_else_the_first():
    assert (
        control_of([Group("a", 1, 0), Group("b", 1, 0), Group("holdout", 1, 0, holdout=True)]),
        control_of([Group("a", 1, 0), Group("control", 1, 0)]),
        control_of([Group("a", 1, 0), Group("b", 1, 0)]),
    ) == (2, 1, 0)


def test_the_control_row_carries_no_comparison():
    control = by_name([Group("a", 500, 50), Group("b", 500, 60)])["a"]
    assert (control["control"], control["lift"], control["p_value"], control["significant"], control["verdict"]) == (
        True, None, None, False, "control")


def test_min_sample_is_the_callers_to_raise():
    b = by_name([Group("a", 300, 30), Group("b", 300, 90)], min_sample=500)["b"]
    assert (b["significant"], b["verdict"]) == (False, "not enough data: 300 customers, 500 needed in each group")


def test_hold_reasons_are_grouped_by_kind():
    assert [held_kind(r) for r in (
        "frequency cap: 3 email messages in the last 7d (cap 3)", "suppressed: hard bounce on email",
        "unsubscribed from email topic news", "quiet hours 21:00-08:00: dropped", None,
    )] == ["frequency cap", "suppressed", "unsubscribed", "quiet hours", "unknown"]
