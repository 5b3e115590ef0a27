"""THE feature transform per call against the implementation it replaced (the reference).

``features.transform.window_features`` and ``reference_window_features`` (the previous
implementation, kept only here) first run on the same rows and must agree: counts and other
integer-valued features exactly, the rest within 1e-12 of ``max(|reference|, 1)`` (relative,
absolute near zero); never-seen rows must get exactly ``COLD_START``. The rows are (a) states of
a simulated population (events -> the tests' pandas twin of the daily partials ->
``ActivityHistory``) at request times from before the state's last day to beyond its history,
and (b) random states with the edge cases: never seen, silent for longer than the history,
requests in the past or far in the future, window boundaries, days without transactions,
huge spends. Then both are timed on n = 1, 10, 100, 1,000 and 100,000 simulated rows: the
best of several repeats, the two taking turns, so another process's load hits both alike.

    python -m bench.transform [--customers 2000] [--days 150] [--repeats 7] [--seed 7]

Figures go to stdout, ending with one JSON line: ``{"us_per_call_1", "us_per_call_1_before",
"rows_per_s_100k", "rows_per_s_100k_before", "max_rel_diff"}``.
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial

import numpy as np
import pyarrow as pa

from bench.common import log, machine, print_result
from features.state import (
    CHANNELS,
    DAILY_COUNTS,
    HISTORY_DAYS,
    MERCHANT_CATEGORIES,
    MERCHANT_SKETCH_BITS,
    NEVER,
    STATE_VERSION,
    empty_states,
)
from features.transform import COLD_START, FEATURE_NAMES, MAX_DAYS_SINCE, SECONDS_PER_DAY, WINDOWS, window_features

Features = dict[str, np.ndarray]
EPOCH = date(1970, 1, 1)
SIZES = (1, 10, 100, 1_000, 100_000)
TOLERANCE = 1e-12
EXACT = (  # integer-valued, or a selection from the inputs: no rounding allowed
    *(f"tx_count_{w}d" for w in WINDOWS), "active_days_30d", "active_days_90d", "distinct_categories_90d",
    "tenure_days", "max_ticket_90d", "days_since_last_tx", "lifetime_tx_count", "purchase_span_days",
)


# -- the reference: the previous features.transform.window_features, unchanged -----------------------------------

def _reference_linear_count(bits_set: np.ndarray) -> np.ndarray:
    m = float(MERCHANT_SKETCH_BITS)
    empty = np.maximum(m - bits_set, 0.5)
    return m * np.log(m / empty)


def _reference_log_ratio(recent: np.ndarray, before: np.ndarray) -> np.ndarray:
    return np.log1p(recent) - np.log1p(before)


def _reference_share(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.divide(part, total, out=np.zeros_like(part, dtype=np.float64), where=total > 0)


def reference_window_features(states: np.ndarray, as_of_s: Sequence[float] | np.ndarray) -> Features:
    """The transform before its rewrite: one boolean mask and one reduction per window and quantity."""
    rows = len(states)
    as_of = np.asarray(as_of_s, dtype=np.float64).reshape(rows)
    as_of_day = np.floor(as_of / SECONDS_PER_DAY).astype(np.int64)
    seen = states["version"] > 0
    end_day = np.where(seen, states["end_day"], as_of_day).astype(np.int64)
    slot_day = end_day[:, None] - (HISTORY_DAYS - 1) + np.arange(HISTORY_DAYS)[None, :]
    age = as_of_day[:, None] - slot_day

    def window(width: int, offset: int = 0) -> np.ndarray:
        return (age >= offset) & (age < offset + width)

    daily = states["daily_counts"].astype(np.float64)
    count, night = daily[:, DAILY_COUNTS.index("count")], daily[:, DAILY_COUNTS.index("night")]
    spend, biggest = states["daily_spend"], states["daily_max"]
    w30, w90 = window(30), window(90)
    count_in = {w: (count * window(w)).sum(axis=1) for w in WINDOWS}
    spend_in = {w: (spend * window(w)).sum(axis=1) for w in WINDOWS}

    features: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        features[f"tx_count_{w}d"] = count_in[w]
        features[f"spend_{w}d"] = spend_in[w]
    since = np.clip((as_of - states["last_event_s"]) / SECONDS_PER_DAY, 0.0, MAX_DAYS_SINCE)
    features["days_since_last_tx"] = np.where(seen & np.isfinite(since), since, MAX_DAYS_SINCE)
    features["trend_count_7d"] = _reference_log_ratio(count_in[7], (count * window(7, 7)).sum(axis=1))
    features["trend_count_30d"] = _reference_log_ratio(count_in[30], (count * window(30, 30)).sum(axis=1))
    features["trend_spend_30d"] = _reference_log_ratio(spend_in[30], (spend * window(30, 30)).sum(axis=1))
    features["mean_ticket_90d"] = _reference_share(spend_in[90], count_in[90])
    features["max_ticket_90d"] = np.where(w90, biggest, 0.0).max(axis=1)
    merchant_bits = np.bitwise_or.reduce(np.where(w90, states["daily_merchant_bits"], 0), axis=1)
    features["distinct_merchants_90d"] = _reference_linear_count(np.bitwise_count(merchant_bits.view(np.uint64)))
    category_age = as_of_day[:, None] - states["category_last_day"]
    features["distinct_categories_90d"] = ((category_age >= 0) & (category_age < 90)).sum(axis=1)
    for channel in CHANNELS:
        in_channel = daily[:, DAILY_COUNTS.index(channel)]
        features[f"share_{channel}_90d"] = _reference_share((in_channel * w90).sum(axis=1), count_in[90])
    weekend = ((slot_day + 3) % 7) >= 5
    features["weekend_share_90d"] = _reference_share((count * (w90 & weekend)).sum(axis=1), count_in[90])
    features["night_share_90d"] = _reference_share((night * w90).sum(axis=1), count_in[90])
    features["active_days_30d"] = ((count > 0) & w30).sum(axis=1)
    features["active_days_90d"] = ((count > 0) & w90).sum(axis=1)
    features["tenure_days"] = np.where(seen, np.clip(as_of_day - states["first_day"], 0, None), 0)
    # The lifetime summaries (added with them: no earlier implementation), written out plainly.
    count = np.where(seen, states["total_count"], 0).astype(np.float64)
    span = np.where(seen, np.clip(states["end_day"] - states["first_day"], 0, None), 0).astype(np.float64)
    gap = np.zeros_like(span)
    np.divide(span, count - 1, out=gap, where=count > 1)
    ratio = np.zeros_like(span)
    np.divide(features["days_since_last_tx"], gap, out=ratio, where=gap > 0)
    features["lifetime_tx_count"] = count
    features["lifetime_tx_per_30d"] = count * 30 / np.maximum(features["tenure_days"], 1)
    features["purchase_span_days"] = span
    features["mean_days_between_tx"] = gap
    features["recency_over_mean_gap"] = ratio
    return {name: np.asarray(features[name], dtype=np.float64) for name in FEATURE_NAMES}


# -- the rows ----------------------------------------------------------------------------------------------------

def simulated_rows(customers: int, days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """States of a simulated population every 10 days, each asked at times around its cut (some before
    the customer's last day, some long after their history)."""
    from streaming.history import ActivityHistory
    from streaming.simulator import make_population, simulate
    from tests.partials import partials_of

    start = date(2026, 1, 1)
    first_day = (start - EPOCH).days
    population = make_population(customers, start, days, seed=seed)
    partials = partials_of(pa.concat_tables(simulate(population)))
    rng = np.random.default_rng(seed)
    history, merged_until, states, as_of = ActivityHistory(capacity=customers), first_day, [], []
    for cut in range(first_day + 10, first_day + days + 1, 10):
        history.merge(partials[(partials["day"] >= merged_until) & (partials["day"] < cut)])
        merged_until = cut
        cut_states = history.states(np.arange(history.size))
        offset_days = rng.choice([-20, -3, -1, 0, 0, 0, 1, 6, 7, 29, 30, 60, 89, 90, 200], size=len(cut_states))
        states.append(cut_states)
        as_of.append((cut + offset_days + rng.random(len(cut_states))) * SECONDS_PER_DAY)
    return np.concatenate(states), np.concatenate(as_of)


def random_rows(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random states and request times, heavy on edge cases."""
    rng = np.random.default_rng(seed)
    states = empty_states(rows)  # a tenth stay never seen
    seen = rng.random(rows) >= 0.1
    states["version"] = np.where(seen, STATE_VERSION, 0)
    end_day = rng.integers(15_000, 25_000, rows)
    states["end_day"] = np.where(seen, end_day, 0)
    states["first_day"] = np.where(seen, end_day - rng.integers(-5, 2_000, rows), 0)  # some after as_of
    states["total_count"] = np.where(seen, rng.integers(1, 10_000, rows), 0)
    last_s = (end_day + rng.random(rows)) * SECONDS_PER_DAY
    last_s = np.where(rng.random(rows) < 0.03, rng.choice([np.nan, -np.inf, np.inf], rows), last_s)
    states["last_event_s"] = np.where(seen, last_s, np.nan)

    shape = (rows, HISTORY_DAYS)
    active = seen[:, None] & (rng.random(shape) < rng.choice([0.0, 0.05, 0.3, 1.0], rows)[:, None])
    count = np.where(active, rng.choice([1, 2, 5, 40, 32_767], shape, p=[0.5, 0.3, 0.15, 0.04, 0.01]), 0)
    counts = np.zeros((rows, len(DAILY_COUNTS), HISTORY_DAYS), dtype=np.int64)
    counts[:, DAILY_COUNTS.index("count")] = count
    counts[:, DAILY_COUNTS.index("night")] = rng.binomial(count, 0.2)
    channel_share = rng.dirichlet(np.ones(len(CHANNELS)), shape)
    for k, channel in enumerate(CHANNELS):  # channel counts need not add up: the transform takes them as stored
        counts[:, DAILY_COUNTS.index(channel)] = rng.binomial(count, channel_share[..., k])
    states["daily_counts"] = counts
    ticket = rng.lognormal(3.0, 1.5, shape) * np.where(rng.random(shape) < 0.01, 1e10, 1.0)  # huge spends
    states["daily_spend"] = np.where(active, np.round(ticket * count, 2), 0.0)
    states["daily_max"] = np.where(active, ticket * rng.uniform(1.0, 3.0, shape), 0.0)
    bits = rng.integers(0, 2**63 - 1, shape)
    bits = np.where(rng.random(shape) < 0.1, bits | np.iinfo(np.int64).min, bits)  # some with bit 63 set
    states["daily_merchant_bits"] = np.where(active, bits, 0)
    category_day = end_day[:, None] - rng.integers(-10, 200, (rows, len(MERCHANT_CATEGORIES)))
    states["category_last_day"] = np.where(seen[:, None] & (rng.random(category_day.shape) < 0.7), category_day, NEVER)

    boundaries = [-10_000, -200, -91, -90, -89, -30, -1, 0, 1, 6, 7, 8, 13, 14, 29, 30, 31, 59, 60, 61, 88, 89, 90,
                  91, 120, 365, 400, 3_000, 30_000]  # as_of_day - end_day
    lag = np.where(rng.random(rows) < 0.5, rng.choice(boundaries, rows), rng.integers(-100, 200, rows))
    seconds = rng.choice([0.0, 0.5, SECONDS_PER_DAY - 1e-3], rows, p=[0.2, 0.1, 0.7]) * rng.random(rows)
    return states, (end_day + lag) * float(SECONDS_PER_DAY) + seconds


def largest_difference(ours: Features, reference: Features, never_seen: np.ndarray) -> float:
    """The largest ``|ours - reference| / max(|reference|, 1)``; raises where the two disagree."""
    worst = 0.0
    for name in FEATURE_NAMES:
        a, b = ours[name], reference[name]
        if a.dtype != np.float64 or a.shape != b.shape:
            raise AssertionError(f"{name}: {a.dtype}{a.shape}, reference {b.dtype}{b.shape}")
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            raise AssertionError(f"{name}: NaN where the reference has none or the other way round")
        if not np.array_equal(a[never_seen], np.full(never_seen.sum(), COLD_START[name])):
            raise AssertionError(f"{name}: a never-seen row is not COLD_START")
        finite = np.isfinite(b)
        if not np.array_equal(a[~finite], b[~finite]):
            raise AssertionError(f"{name}: infinities differ")
        difference = np.abs(a[finite] - b[finite]) / np.maximum(np.abs(b[finite]), 1.0)
        largest = float(difference.max(initial=0.0))
        if (name in EXACT and largest > 0.0) or largest > TOLERANCE:
            row = int(np.flatnonzero(finite)[difference.argmax()])
            raise AssertionError(f"{name}: {a[row]!r} where the reference has {b[row]!r} (row {row})")
        worst = max(worst, largest)
    return worst


def compare(label: str, states: np.ndarray, as_of: np.ndarray) -> float:
    worst = largest_difference(window_features(states, as_of), reference_window_features(states, as_of),
                               states["version"] == 0)
    print(f"{label}: {len(states):,} rows agree, largest difference {worst:.2e} (of max(|reference|, 1))")
    return worst


def best_us_per_call(functions: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Microseconds per call of each function: the best of ``repeats`` runs of ~20 ms, taking turns."""
    timers = [timeit.Timer(function) for function in functions]
    numbers = [max(1, round(0.02 / min(timer.repeat(3, 1)))) for timer in timers]
    best = [float("inf")] * len(timers)
    for _ in range(repeats):
        for k, (timer, number) in enumerate(zip(timers, numbers, strict=True)):
            best[k] = min(best[k], timer.timeit(number) / number * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    log(f"simulating {args.customers:,} customers x {args.days} days")
    states, as_of = simulated_rows(args.customers, args.days, args.seed)
    print(f"# THE transform per call ({machine()}; load average {os.getloadavg()[0]:.1f} at the start)")
    worst = max(compare("simulated states", states, as_of), compare("random states", *random_rows(20_000, args.seed)),
                compare("no rows", *random_rows(0, args.seed)))

    rng = np.random.default_rng(args.seed)
    print(f"{'rows':>8}{'before us/call':>16}{'after us/call':>15}{'speed-up':>10}{'after rows/s':>15}")
    timings: dict[int, tuple[float, float]] = {}
    for n in SIZES:
        log(f"timing {n:,} rows")
        pick = rng.choice(len(states), n, replace=n > len(states))
        batch, times = states[pick], as_of[pick]
        before, after = best_us_per_call([partial(reference_window_features, batch, times),
                                          partial(window_features, batch, times)], args.repeats)
        timings[n] = before, after
        print(f"{n:>8,}{before:>16,.1f}{after:>15,.1f}{before / after:>9.1f}x{n / after * 1e6:>15,.0f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (another process's load inflates both columns)")
    print_result({
        "us_per_call_1": round(timings[1][1], 1), "us_per_call_1_before": round(timings[1][0], 1),
        "rows_per_s_100k": round(100_000 / timings[100_000][1] * 1e6),
        "rows_per_s_100k_before": round(100_000 / timings[100_000][0] * 1e6),
        "max_rel_diff": worst,
    })


if __name__ == "__main__":
    main()
