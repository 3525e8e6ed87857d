from __future__ import annotations

import pytest

from engine.rules import BUCKETS, bucket, choose_weighted


def test_bucket_is_stable_and_depends_on_the_journey() -> None:
    assert bucket("c1", "j1") == bucket("c1", "j1")
    assert 0 <= bucket("c1", "j1") < BUCKETS
    assert len({bucket("c1", f"j{i}") for i in range(50)}) > 40


def test_choose_weighted_never_picks_a_zero_weight_path() -> None:
    picks = {choose_weighted([0, 100, 0], f"c{i}", "j") for i in range(500)}

    assert picks == {1}


@pytest.mark.parametrize("weights", [[50, 40], [-10, 110]])
def test_choose_weighted_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="add up to 100"):
        choose_weighted(weights, "c", "j")
