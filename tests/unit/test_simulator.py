"""The synthetic population: deterministic, valid under the contract, and its oracle is right."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow.compute as pc
import pytest

from streaming.publish import encode_simulated
from streaming.schema import Transaction, validate_bytes
from streaming.simulator import TRAJECTORIES, day_events, expected_activity, make_population, simulate

START = date(2026, 1, 1)


@pytest.fixture(scope="module")
def population():
    return make_population(3_000, START, 120, seed=7)


def test_same_seed_gives_identical_events() -> None:
    first = list(simulate(make_population(500, START, 10, seed=3)))
    second = list(simulate(make_population(500, START, 10, seed=3)))
    assert all(a.equals(b) for a, b in zip(first, second, strict=True))


def test_other_seed_gives_other_events() -> None:
    first = day_events(make_population(500, START, 10, seed=3), 4)
    second = day_events(make_population(500, START, 10, seed=4), 4)
    assert not first.equals(second)


def test_a_day_regenerates_alone(population) -> None:
    in_sequence = list(simulate(population, first_day=0, days=6))[5]
    assert day_events(population, 5).equals(in_sequence)


def test_events_are_in_event_time_order_and_on_their_day(population) -> None:
    table = day_events(population, 10)
    times = table["event_time"].to_numpy()
    assert (np.diff(times.astype("int64")) >= 0).all()
    day = np.datetime64(START + timedelta(days=10))
    assert (times.astype("datetime64[D]") == day).all()


def test_every_simulated_event_is_valid_under_the_contract(population) -> None:
    table = day_events(population, 3)
    results = [validate_bytes(value) for value in encode_simulated(table)]
    assert results and all(isinstance(result, Transaction) for result in results)
    assert pc.count_distinct(table["transaction_id"]).as_py() == table.num_rows


def test_oracle_matches_the_realized_counts(population) -> None:
    realized = np.zeros(population.size)
    index = {cid: i for i, cid in enumerate(population.customer_ids)}
    for table in simulate(population, first_day=30, days=30):
        for cid, n in zip(*np.unique(table["customer_id"].to_numpy(zero_copy_only=False),
                                      return_counts=True), strict=True):
            realized[index[cid]] += n
    oracle = expected_activity(population, START + timedelta(days=30), START + timedelta(days=60))
    expected = oracle["expected_count"].to_numpy()
    # Poisson: the total is within a few standard deviations of its expectation ...
    assert abs(realized.sum() - expected.sum()) < 4 * np.sqrt(expected.sum())
    # ... and per customer the oracle explains the realized counts well.
    assert np.corrcoef(realized, expected)[0, 1] > 0.9


def test_oracle_sees_trajectories_change_activity(population) -> None:
    before = expected_activity(population, START, START + timedelta(days=30))["expected_count"].to_numpy()
    after = expected_activity(population, START + timedelta(days=90), START + timedelta(days=120))
    ratio = after["expected_count"].to_numpy() / before
    growth = population.trajectory == TRAJECTORIES.index("growth")
    churn = population.trajectory == TRAJECTORIES.index("churn")
    stopped = churn & (population.change_start + population.change_days < 90)
    assert np.median(ratio[growth]) > 1.2
    assert np.all(after["expected_count"].to_numpy()[stopped] == 0)


def test_oracle_answers_beyond_the_simulated_period(population) -> None:
    end = START + timedelta(days=population.days)
    future = expected_activity(population, end, end + timedelta(days=30))
    assert (future["expected_count"] >= 0).all() and future["expected_count"].sum() > 0
    assert (future["expected_spend"] >= future["expected_count"] * 0).all()


def test_a_shift_changes_only_its_days_amounts_in_its_category_and_the_channel_mix() -> None:
    from streaming.simulator import CHANNELS, Shift

    population = make_population(400, date(2026, 1, 1), 40, seed=5)
    shifted = population.shifted(Shift(from_day=20, amount_factor=3.0, category="grocery",
                                       channel_mix=(0, 0, 0, 0, 1)))
    assert day_events(shifted, 19).equals(day_events(population, 19))
    before, after = day_events(population, 25).to_pandas(), day_events(shifted, 25).to_pandas()
    assert before["transaction_id"].tolist() == after["transaction_id"].tolist()
    grocery = before["merchant_category"] == "grocery"
    assert grocery.any() and (~grocery).any()
    ratio = after.loc[grocery, "amount"] / before.loc[grocery, "amount"]
    assert np.allclose(ratio, 3.0, rtol=0.01)
    assert after.loc[~grocery, "amount"].equals(before.loc[~grocery, "amount"])
    assert set(after["channel"]) == {CHANNELS[4]}
    assert set(before["channel"]) != {CHANNELS[4]}


def test_a_shift_rejects_what_it_cannot_mean() -> None:
    from streaming.simulator import Shift

    with pytest.raises(ValueError, match="merchant category"):
        Shift(from_day=0, category="spaceships")
    with pytest.raises(ValueError, match="channel mix"):
        Shift(from_day=0, channel_mix=(1.0, 0.0))
    with pytest.raises(ValueError, match="positive"):
        Shift(from_day=0, amount_factor=0.0)
