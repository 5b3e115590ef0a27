"""Labels and time splits: pure logic on small hand-made histories."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_contract.labels import LabelPolicy, as_of_days, as_of_grid, epoch_days, label_activity_change
from training.dataset import split_by_time

D0 = 20_000


def daily(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "day", "count"])


def test_labels_compare_the_next_horizon_with_the_previous_one() -> None:
    policy = LabelPolicy(horizon_days=10, decline_below=-0.3, growth_above=0.3)
    history = daily([
        ("grower", D0 + 1, 2), ("grower", D0 + 12, 9),
        ("decliner", D0 + 2, 8), ("decliner", D0 + 15, 1),
        ("steady", D0 + 3, 4), ("steady", D0 + 13, 4),
        ("newcomer", D0 + 11, 3),
    ])
    labels = label_activity_change(history, np.array([D0 + 10]), policy).set_index("customer_id")
    assert labels.loc["grower", "label"] == "growth" and labels.loc["grower", "previous"] == 2
    assert labels.loc["decliner", "label"] == "decline" and labels.loc["decliner", "next"] == 1
    assert labels.loc["steady", "label"] == "stable" and labels.loc["steady", "change"] == 0
    assert "newcomer" not in labels.index  # not seen before as_of
    assert (labels["event_timestamp"] == pd.Timestamp((D0 + 10) * 86_400, unit="s", tz="UTC")).all()


def test_events_on_the_as_of_day_count_as_next() -> None:
    policy = LabelPolicy(horizon_days=5)
    history = daily([("a", D0, 1), ("a", D0 + 5, 7)])
    row = label_activity_change(history, np.array([D0 + 5]), policy).iloc[0]
    assert (row["previous"], row["next"]) == (1, 7)


def test_grid_leaves_a_full_horizon_before_and_after() -> None:
    policy = LabelPolicy(horizon_days=30)
    grid = as_of_grid(D0, D0 + 120, policy, grid_days=7)
    assert grid[0] == D0 + 30 and grid[-1] + 30 - 1 <= D0 + 120
    assert (np.diff(grid) == 7).all()


def test_time_split_keeps_a_horizon_between_splits() -> None:
    days = np.arange(D0, D0 + 400, 7)
    split = split_by_time(days, horizon_days=30)
    assert len(split.train) and len(split.validation) and len(split.test)
    assert split.train.max() + 30 <= split.validation.min()
    assert split.validation.max() + 30 <= split.test.min()


def test_a_long_horizon_holds_customers_out_for_validation_and_tests_a_horizon_later() -> None:
    """182 days on 18 months: the grid spans one horizon, too short for three periods a horizon apart."""
    policy = LabelPolicy(horizon_days=182)
    grid = as_of_grid(D0, D0 + 545, policy, grid_days=7)
    split = split_by_time(grid, horizon_days=182)
    assert split.held_out_share == 0.2
    assert len(split.train) and len(split.test)
    np.testing.assert_array_equal(split.validation, split.train)  # validation on training's own dates
    assert split.train.max() + 182 <= split.test.min()  # no training or validation label reaches test
    customers = np.array([f"c{i}" for i in range(5_000)], dtype=object)
    as_of = np.full(len(customers), split.train[0])
    train, validation = split.rows("train", as_of, customers), split.rows("validation", as_of, customers)
    assert not (train & validation).any() and (train | validation).all()
    assert 0.17 < validation.mean() < 0.23
    again = split_by_time(grid, horizon_days=182).rows("validation", as_of, customers)
    np.testing.assert_array_equal(again, validation)  # the same customers in every run
    assert not split.rows("test", as_of, customers).any()
    # a short horizon on the same history keeps the split by time
    assert split_by_time(as_of_grid(D0, D0 + 545, LabelPolicy(horizon_days=90), 7), 90).held_out_share == 0


def test_labelled_rows_carry_their_as_of_as_epoch_days_and_its_midnight_for_feast() -> None:
    policy = LabelPolicy(horizon_days=5)
    history = daily([("a", D0, 1), ("a", D0 + 9, 2), ("b", D0 + 1, 3)])
    labels = label_activity_change(history, np.array([D0 + 5, D0 + 7]), policy)
    assert labels["as_of_day"].dtype == np.int64
    np.testing.assert_array_equal(as_of_days(labels), labels["as_of_day"].to_numpy())
    assert set(labels["as_of_day"]) == {D0 + 5, D0 + 7}
    np.testing.assert_array_equal(epoch_days(labels["event_timestamp"]), labels["as_of_day"].to_numpy())
    noon = pd.Series(pd.to_datetime([(D0 + 5) * 86_400 + 43_200], unit="s", utc=True))
    assert epoch_days(noon).tolist() == [D0 + 5]  # a mid-day time belongs to its calendar day
    empty = label_activity_change(history, np.array([], dtype=np.int64), policy)
    assert empty.empty and empty["as_of_day"].dtype == np.int64


def test_the_active_target_labels_any_transaction_in_the_next_horizon() -> None:
    policy = LabelPolicy(horizon_days=10, target="active")
    history = daily([("buyer", D0 + 1, 2), ("buyer", D0 + 19, 1), ("lapsed", D0 + 2, 8), ("late", D0 + 3, 1),
                     ("late", D0 + 20, 5)])
    labels = label_activity_change(history, np.array([D0 + 10]), policy).set_index("customer_id")
    assert policy.classes == ("inactive", "active")
    assert labels.loc["buyer", "label"] == "active" and labels.loc["buyer", "label_index"] == 1
    assert labels.loc["lapsed", "label"] == "inactive" and labels.loc["lapsed", "label_index"] == 0
    assert labels.loc["late", "label"] == "inactive"  # day D0 + 20 is past the window D0+10 .. D0+19
    change = label_activity_change(history, np.array([D0 + 10]), LabelPolicy(horizon_days=10))
    assert (change["next"].to_numpy() == labels.loc[change["customer_id"], "next"].to_numpy()).all()


def test_an_unknown_target_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="target 'churn'"):
        LabelPolicy(target="churn")
