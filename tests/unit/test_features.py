"""The day-indexed history and THE transform: windows relative to as_of, decay, cold start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.state import (
    HISTORY_DAYS,
    STATE_DTYPE,
    _stored_parts,
    decode_states,
    empty_states,
    encode_states,
    pack_states,
)
from features.transform import COLD_START, FEATURE_NAMES, MAX_DAYS_SINCE, features_frame, window_features
from streaming.history import PARTIAL_COLUMNS, ActivityHistory

DAY = 86_400
D0 = 20_454  # 2026-01-01 in epoch days (a Thursday)


def partial(customer: str, day: int, count: int = 1, spend: float = 10.0, channel: str = "online",
            category_bits: int = 1, merchants: tuple[str, ...] = ("m1",), night: int = 0, refunds: int = 0,
            refund_amount: float = 0.0) -> dict:
    row = {name: 0 for name in PARTIAL_COLUMNS}
    if count == 0:  # a day of refunds alone: no purchase figures, no purchase times
        row.update(customer_id=customer, day=day, spend=0.0, max_amount=0.0, first_s=np.nan, last_s=np.nan,
                   refunds=refunds, refund_amount=refund_amount)
        return row
    bits = 0
    for merchant in merchants:
        bits |= 1 << (int(merchant[1:]) % 63)
    row.update(customer_id=customer, day=day, count=count, night=night, spend=spend, max_amount=spend / count,
               category_mask=category_bits, merchant_bits=bits, first_s=day * DAY + 3600.0,
               last_s=day * DAY + 7200.0, refunds=refunds, refund_amount=refund_amount)
    row[f"ch_{channel}"] = count
    return row


def history_of(*rows: dict) -> ActivityHistory:
    history = ActivityHistory(capacity=2)
    history.merge(pd.DataFrame(rows, columns=list(PARTIAL_COLUMNS)))
    return history


def features_at(history: ActivityHistory, customer: str, as_of_day: float) -> dict[str, float]:
    states = history.states(history.rows_of([customer]))
    out = window_features(states, [as_of_day * DAY])
    return {name: float(values[0]) for name, values in out.items()}


def test_windows_count_days_relative_to_as_of() -> None:
    history = history_of(partial("a", D0, count=2, spend=30), partial("a", D0 + 10, count=1, spend=5),
                         partial("a", D0 + 25, count=4, spend=40))
    f = features_at(history, "a", D0 + 25.5)
    assert (f["tx_count_7d"], f["tx_count_30d"], f["tx_count_90d"]) == (4, 7, 7)
    assert (f["spend_7d"], f["spend_30d"]) == (40, 75)
    assert f["active_days_30d"] == 3
    assert f["mean_ticket_90d"] == pytest.approx(75 / 7)
    assert f["days_since_last_tx"] == pytest.approx(0.5 - 2 / 24)
    assert f["tenure_days"] == 25


def test_silent_customer_decays_without_new_events() -> None:
    history = history_of(partial("a", D0, count=3), partial("a", D0 + 5, count=2))
    fresh = features_at(history, "a", D0 + 5.5)
    silent = features_at(history, "a", D0 + 25.5)
    gone = features_at(history, "a", D0 + 400)
    assert fresh["tx_count_7d"] == 5
    assert silent["tx_count_7d"] == 0 and silent["tx_count_30d"] == 5
    assert silent["days_since_last_tx"] == pytest.approx(20.5 - 2 / 24)
    assert silent["trend_count_7d"] == 0.0
    assert gone["tx_count_90d"] == 0 and gone["days_since_last_tx"] == MAX_DAYS_SINCE


def test_trend_compares_recent_with_previous_window() -> None:
    history = history_of(partial("a", D0, count=1), partial("a", D0 + 8, count=1), partial("a", D0 + 9, count=6))
    f = features_at(history, "a", D0 + 9.5)
    assert f["trend_count_7d"] == pytest.approx(np.log1p(7) - np.log1p(1))


def test_lifetime_features_remember_what_the_windows_forgot() -> None:
    history = history_of(partial("a", D0, count=2), partial("a", D0 + 10, count=1), partial("a", D0 + 25, count=4))
    f = features_at(history, "a", D0 + 25.5)
    assert f["lifetime_tx_count"] == 7
    assert f["lifetime_tx_per_30d"] == pytest.approx(7 * 30 / 25)
    assert f["purchase_span_days"] == 25  # first to last purchase day
    assert f["mean_days_between_tx"] == pytest.approx(25 / 6)
    assert f["recency_over_mean_gap"] == pytest.approx((0.5 - 2 / 24) / (25 / 6))

    history.merge(pd.DataFrame([partial("a", D0 + 200, count=1)], columns=list(PARTIAL_COLUMNS)))
    later = features_at(history, "a", D0 + 260.5)  # the first days left the 90-day history long ago
    assert later["tx_count_90d"] == 1
    assert later["lifetime_tx_count"] == 8 and later["purchase_span_days"] == 200
    assert later["lifetime_tx_per_30d"] == pytest.approx(8 * 30 / 260)
    assert later["mean_days_between_tx"] == pytest.approx(200 / 7)
    assert later["recency_over_mean_gap"] == pytest.approx((60.5 - 2 / 24) / (200 / 7))


def test_lifetime_spend_and_refunds_are_kept_apart_from_the_activity() -> None:
    history = history_of(partial("a", D0, count=2, spend=30), partial("a", D0 + 10, count=1, spend=5, refunds=1,
                                                                      refund_amount=12.5))
    before = features_at(history, "a", D0 + 10.5)
    result = history.merge(pd.DataFrame([partial("a", D0 + 120, count=0, refunds=2, refund_amount=7.0),
                                         partial("z", D0 + 120, count=0, refunds=3, refund_amount=1.0)],
                                        columns=list(PARTIAL_COLUMNS)))
    assert result.unmatched_refunds == 3 and "z" not in history.index  # no purchase of z's yet: no state
    assert list(result.changed) == [history.index["a"]] and len(result.new) == 0
    after = features_at(history, "a", D0 + 10.5)
    # refunds are not activity: the window, the last transaction and the counts stay as they were
    assert {k: v for k, v in after.items() if k != "refund_share"} == {
        k: v for k, v in before.items() if k != "refund_share"}
    assert after["lifetime_spend"] == 35 and after["lifetime_mean_ticket"] == pytest.approx(35 / 3)
    assert before["refund_share"] == pytest.approx(1 / 4) and after["refund_share"] == pytest.approx(3 / 6)
    state = history.states(history.rows_of(["a"]))[0]
    assert (state["refund_count"], state["refund_amount"], state["end_day"]) == (3, 19.5, D0 + 10)
    assert features_at(history, "a", D0 + 200.5)["lifetime_spend"] == 35  # the window forgets, the total not


def test_a_single_day_of_purchases_has_no_gap() -> None:
    once = features_at(history_of(partial("a", D0, count=3)), "a", D0 + 40.5)
    assert once["lifetime_tx_count"] == 3 and once["purchase_span_days"] == 0
    assert once["mean_days_between_tx"] == 0 and once["recency_over_mean_gap"] == 0
    assert once["lifetime_tx_per_30d"] == pytest.approx(3 * 30 / 40)


def test_never_seen_customer_gets_cold_start_values() -> None:
    out = features_frame([None, None], [D0 * DAY, (D0 + 3) * DAY])
    assert list(out.columns) == list(FEATURE_NAMES)
    for name, value in COLD_START.items():
        assert (out[name] == value).all(), name


def test_history_window_moves_and_forgets_days_older_than_the_history() -> None:
    history = history_of(partial("a", D0, count=9))
    history.merge(pd.DataFrame([partial("a", D0 + HISTORY_DAYS + 5, count=1)], columns=list(PARTIAL_COLUMNS)))
    state = history.states(history.rows_of(["a"]))[0]
    assert state["end_day"] == D0 + HISTORY_DAYS + 5
    assert state["daily_counts"][0].sum() == 1  # the day-0 count fell out of the ring
    assert state["total_count"] == 10 and state["first_day"] == D0


def test_late_partial_within_history_is_added_and_too_old_one_is_reported() -> None:
    history = history_of(partial("a", D0 + 100, count=1))
    result = history.merge(pd.DataFrame([partial("a", D0 + 95, count=2), partial("a", D0, count=7)],
                                        columns=list(PARTIAL_COLUMNS)))
    f = features_at(history, "a", D0 + 100.5)
    assert f["tx_count_7d"] == 3
    assert result.too_late.to_dict("records") == [{"customer_id": "a", "day": D0}]


def test_merging_is_order_independent_across_batches() -> None:
    rows = [partial("a", D0 + d, count=d % 3 + 1, spend=d + 0.5, merchants=(f"m{d % 4}",)) for d in range(0, 60, 3)]
    rows += [partial("b", D0 + d, count=1, channel="atm") for d in range(10, 40, 7)]
    one = history_of(*rows)
    split = ActivityHistory()
    for chunk in (rows[5:], rows[:5]):  # later days first: a late batch
        split.merge(pd.DataFrame(chunk, columns=list(PARTIAL_COLUMNS)))
    for customer in ("a", "b"):
        a = one.states(one.rows_of([customer]))
        b = split.states(split.rows_of([customer]))
        assert a.tobytes() == b.tobytes()


def test_channel_category_and_merchant_features() -> None:
    history = history_of(
        partial("a", D0, count=2, channel="online", category_bits=0b11, merchants=("m1", "m2")),
        partial("a", D0 + 1, count=2, channel="atm", category_bits=0b100, merchants=("m2", "m3")),
        partial("a", D0 + 2, count=1, channel="online", category_bits=0b1, merchants=("m9",), night=1),
    )
    f = features_at(history, "a", D0 + 2.5)
    assert f["share_online_90d"] == pytest.approx(3 / 5) and f["share_atm_90d"] == pytest.approx(2 / 5)
    assert f["distinct_categories_90d"] == 3
    assert f["distinct_merchants_90d"] == pytest.approx(4, abs=0.2)  # a linear-counting estimate
    assert f["night_share_90d"] == pytest.approx(1 / 5)
    # D0 (Thu), D0+1 (Fri), D0+2 (Sat): only the Saturday transaction is a weekend one
    assert f["weekend_share_90d"] == pytest.approx(1 / 5)


def test_states_round_trip_through_bytes() -> None:
    history = history_of(partial("a", D0, count=2), partial("b", D0 + 3, count=1))
    states = history.states(np.arange(2))
    decoded = decode_states([*encode_states(states), None])
    assert decoded[:2].tobytes() == states.tobytes()
    assert decoded[2].tobytes() == empty_states(1)[0].tobytes()
    with pytest.raises(ValueError, match="backfill"):
        decode_states([b"short"])
    assert decode_states([b"short"], strict=False).tobytes() == empty_states(1).tobytes()
    assert len(encode_states(states)[1]) < STATE_DTYPE.itemsize / 10  # one active day: stored sparse


def random_partials(seed: int, customers: int = 40, days: int = 400) -> pd.DataFrame:
    """Sparse daily partials with gaps shorter and longer than the window, counts above int16."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        active = np.sort(rng.choice(days, size=int(rng.integers(1, 60)), replace=False))
        for d in active.tolist():
            count = int(rng.choice([1, 2, 5, 40_000]))
            refunds = int(rng.choice([0, 0, 0, 1, 2]))
            rows.append(partial(f"c{c}", D0 + d, count=count, spend=float(rng.uniform(1, 500)),
                                channel=str(rng.choice(["online", "atm", "mobile"])),
                                category_bits=int(rng.integers(1, 1 << 10)), merchants=(f"m{rng.integers(99)}",),
                                night=int(rng.integers(0, 2)), refunds=refunds, refund_amount=refunds * 4.5))
        for d in rng.choice(np.setdiff1d(np.arange(active[0] + 1, days), active), size=2, replace=False).tolist():
            rows.append(partial(f"c{c}", D0 + d, count=0, refunds=1, refund_amount=2.0))  # refunds alone
    return pd.DataFrame(rows, columns=list(PARTIAL_COLUMNS)).sort_values(["day", "customer_id"], ignore_index=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_day_by_day_merging_equals_one_merge(seed: int) -> None:
    partials = random_partials(seed)
    at_once = ActivityHistory(capacity=2)
    at_once.merge(partials)
    daily = ActivityHistory(capacity=2)
    for _, day in partials.groupby("day", sort=True):  # the stream's catch-up: one window step at a time
        daily.merge(day)
    customers = sorted(partials["customer_id"].unique())
    a = at_once.states(at_once.rows_of(customers))
    b = daily.states(daily.rows_of(customers))
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("seed", [4, 5])
def test_encode_equals_encoding_the_dense_states(seed: int) -> None:
    partials = random_partials(seed)
    history = ActivityHistory(capacity=2)
    for _, chunk in partials.groupby(partials["day"] // 17, sort=True):
        history.merge(chunk)
        rows = np.random.default_rng(seed).permutation(history.size)[: max(1, history.size // 2)]
        assert history.encode(rows).to_pylist() == encode_states(history.states(rows))
    assert history.encode(np.empty(0, dtype=np.int64)).to_pylist() == []


def test_packed_states_are_the_same_in_any_chunking() -> None:
    history = ActivityHistory(capacity=2)
    history.merge(random_partials(6))
    states = history.states(np.arange(history.size))
    whole = encode_states(states)
    assert all(len(value) > 0 for value in whole)
    for chunk_rows in (1, 3, 7, len(states)):
        headers, days = _stored_parts(states)
        packed = pack_states(headers, days, chunk_rows=chunk_rows)
        assert packed.num_chunks == -(-len(states) // chunk_rows)
        assert packed.to_pylist() == whole
