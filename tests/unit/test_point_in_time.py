"""The as-of join against the obvious one: for each entity row, scan its customer's stored rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.point_in_time import NO_MATCH, as_of_match, customer_codes, to_utc_microseconds


def brute_force(entity_keys: list[str], entity_t: np.ndarray, keys: list[str], t: np.ndarray, created: np.ndarray,
                ttl: int | None) -> np.ndarray:
    found = np.full(len(entity_keys), NO_MATCH)
    for i, (key, at) in enumerate(zip(entity_keys, entity_t, strict=True)):
        best = None
        for j in range(len(keys)):
            if keys[j] != key or t[j] > at or (ttl is not None and t[j] < at - ttl):
                continue
            if best is None or (t[j], created[j]) > (t[best], created[best]):
                best = j
        found[i] = NO_MATCH if best is None else best
    return found


def test_as_of_match_is_the_newest_row_not_after_each_time_ties_to_the_newest_write() -> None:
    rng = np.random.default_rng(0)
    for ttl in (None, 5):
        customers = [f"c{i}" for i in range(12)]
        keys = list(rng.choice(customers[:10], 300))  # two customers never stored
        t = rng.integers(0, 40, 300)  # many equal times: ties broken by write time
        created = rng.permutation(300)  # distinct, so the expected row is unique
        entity_keys = list(rng.choice(customers, 500))
        entity_t = rng.integers(-5, 50, 500)
        entity_codes, stored_codes = customer_codes(pa.array(entity_keys), pa.array(keys))
        matched = as_of_match(entity_codes, entity_t, stored_codes, t, created, ttl)
        np.testing.assert_array_equal(matched, brute_force(entity_keys, entity_t, keys, t, created, ttl))
        assert (matched == NO_MATCH).any() and (matched != NO_MATCH).any()


def test_as_of_match_with_nothing_stored_matches_nothing() -> None:
    codes, _ = customer_codes(pa.array(["a", "b"]), pa.array([], type=pa.string()))
    matched = as_of_match(codes, np.array([1, 2]), np.empty(0, np.int32), np.empty(0, np.int64),
                          np.empty(0, np.int64))
    assert matched.tolist() == [NO_MATCH, NO_MATCH]


def test_times_become_utc_microseconds_naive_as_utc() -> None:
    aware = pd.Series(pd.to_datetime(["1969-12-31T23:59:59.0000015Z", "2026-01-01T00:00:00.0000000Z"]))
    naive = pd.Series(pd.to_datetime(["1969-12-31T23:59:59.0000015", "2026-01-01T00:00:00.0000000"]))
    expected = [-999_999, 1_767_225_600_000_000]  # floored to the microsecond, also before 1970
    assert to_utc_microseconds(aware).tolist() == expected
    assert to_utc_microseconds(naive).tolist() == expected
    assert to_utc_microseconds(pa.array(aware)).tolist() == expected
