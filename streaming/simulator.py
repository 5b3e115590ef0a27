"""A synthetic customer population whose true future activity is known (the oracle).

Each customer has a segment (base rate, weekly pattern, night share, category mix), a channel
mix and a trajectory: stable, growing, declining or stopping. The expected number of
transactions on day ``d`` is ``rate(c, d) = base * weekday * payday * trend(d)``; the events of a
day are Poisson draws from it. Everything derives from the seed: the population from
``(seed,)``, a day's events from ``(seed, day)``, so any day can be regenerated alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from streaming.schema import CHANNELS, MERCHANT_CATEGORIES, SCHEMA_VERSION

SEGMENTS = ("occasional", "regular", "heavy", "business")
SEGMENT_SHARE = np.array([0.40, 0.35, 0.20, 0.05])
SEGMENT_RATE = np.array([0.10, 0.30, 0.80, 1.50])  # relative; rescaled to mean_daily_rate
SEGMENT_NIGHT_SHARE = np.array([0.10, 0.06, 0.12, 0.02])
# Monday..Sunday multipliers (mean 1).
SEGMENT_WEEKDAY = np.array([
    [0.8, 0.8, 0.9, 0.9, 1.2, 1.3, 1.1],
    [1.0, 1.0, 1.0, 1.0, 1.1, 1.0, 0.9],
    [0.9, 0.9, 1.0, 1.0, 1.2, 1.1, 0.9],
    [1.3, 1.3, 1.3, 1.3, 1.2, 0.4, 0.2],
])
SEGMENT_WEEKDAY = SEGMENT_WEEKDAY / SEGMENT_WEEKDAY.mean(axis=1, keepdims=True)
PAYDAY_BOOST = 1.6  # on the 1st and the 15th of a month and the day after
TRAJECTORIES = ("stable", "growth", "decline", "churn")
TRAJECTORY_SHARE = np.array([0.55, 0.17, 0.18, 0.10])
# log-normal amount parameters per merchant category (mu, sigma).
CATEGORY_AMOUNT = np.array([
    [3.4, 0.6], [3.0, 0.5], [3.9, 0.3], [3.8, 0.9], [5.5, 0.8],
    [3.3, 0.7], [4.3, 0.4], [3.6, 0.8], [2.5, 0.6], [3.2, 1.0],
])
CATEGORY_WEIGHT = np.array([  # per segment, over MERCHANT_CATEGORIES
    [3, 2, 1, 2, 0.5, 2, 1, 1, 2, 1],
    [5, 3, 2, 3, 0.5, 1, 1, 1, 2, 1],
    [4, 5, 2, 4, 1.0, 3, 1, 1, 4, 1],
    [1, 3, 4, 2, 3.0, 0.5, 3, 0.5, 3, 2],
])
MERCHANTS_PER_CATEGORY = 500
CURRENCY = "EUR"
_MERCHANT_IDS = pa.array([f"m{k:05d}" for k in range(len(MERCHANT_CATEGORIES) * MERCHANTS_PER_CATEGORY)])


@dataclass(frozen=True)
class Shift:
    """A change of the population from day index ``from_day`` on, for drift scenarios.

    Amounts in ``category`` (every category when None) are multiplied by ``amount_factor``;
    ``channel_mix`` (probabilities over ``CHANNELS``) replaces every customer's channel mix.
    Days before ``from_day`` are unchanged, event for event.
    """

    from_day: int
    amount_factor: float = 1.0
    category: str | None = None
    channel_mix: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.amount_factor <= 0:
            raise ValueError(f"shift amount factor must be positive, got {self.amount_factor}")
        if self.category is not None and self.category not in MERCHANT_CATEGORIES:
            raise ValueError(f"unknown merchant category {self.category!r}; one of {', '.join(MERCHANT_CATEGORIES)}")
        if self.channel_mix is not None:
            mix = np.asarray(self.channel_mix, dtype=float)
            if len(mix) != len(CHANNELS) or (mix < 0).any() or mix.sum() <= 0:
                raise ValueError(f"a channel mix is {len(CHANNELS)} non-negative weights over {', '.join(CHANNELS)}")

    def channel_cum(self, customers: int) -> np.ndarray | None:
        if self.channel_mix is None:
            return None
        mix = np.asarray(self.channel_mix, dtype=float)
        return np.tile(np.cumsum(mix / mix.sum()), (customers, 1))


@dataclass(frozen=True)
class Population:
    """The customers' fixed parameters. Index ``i`` is customer ``customer_ids[i]``."""

    seed: int
    start: date
    days: int
    customer_ids: np.ndarray  # str
    segment: np.ndarray  # int, index into SEGMENTS
    base_rate: np.ndarray  # expected tx/day before weekday, payday and trend
    trajectory: np.ndarray  # int, index into TRAJECTORIES
    change_start: np.ndarray  # day index where the trend starts
    change_days: np.ndarray  # days the ramp takes
    change_factor: np.ndarray  # rate multiplier reached at the end of the ramp (0 = churn)
    category_cum: np.ndarray  # (n, categories) cumulative probabilities
    channel_cum: np.ndarray  # (n, channels) cumulative probabilities
    favourite_merchant: np.ndarray  # per customer offset into each category's merchant pool
    shift: Shift | None = None

    def shifted(self, shift: Shift | None) -> Population:
        """The same customers, changed by ``shift`` from its first day on."""
        return replace(self, shift=shift)

    @cached_property
    def fingerprint(self) -> str:
        """Short id of the population's parameters: the same population re-sent has the same
        transaction ids (so duplicates are recognized), another population never collides."""
        key = f"{self.seed}|{self.size}|{self.start}|{self.base_rate.sum():.9g}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]

    @cached_property
    def customer_id_array(self) -> pa.Array:
        return pa.array(self.customer_ids)

    @property
    def size(self) -> int:
        return len(self.customer_ids)

    def day_index(self, moment: date | datetime) -> int:
        day = moment.date() if isinstance(moment, datetime) else moment
        return (day - self.start).days

    def trend(self, days: np.ndarray) -> np.ndarray:
        """Rate multiplier per (customer, day) from the trajectory; shape (n, len(days))."""
        progress = (days[None, :] - self.change_start[:, None]) / self.change_days[:, None]
        progress = np.clip(progress, 0.0, 1.0)
        return 1.0 + (self.change_factor[:, None] - 1.0) * progress

    def daily_rate(self, days: np.ndarray) -> np.ndarray:
        """Expected transactions per (customer, day) for day indices ``days``."""
        calendar = [self.start + timedelta(days=int(d)) for d in days]
        weekday = np.array([moment.weekday() for moment in calendar])
        payday = np.array([PAYDAY_BOOST if moment.day in (1, 2, 15, 16) else 1.0 for moment in calendar])
        seasonal = SEGMENT_WEEKDAY[self.segment][:, weekday] * payday[None, :]
        return self.base_rate[:, None] * seasonal * self.trend(np.asarray(days, dtype=float))

    def expected_events(self, first_day: int = 0) -> int:
        """Expected number of events from ``first_day`` to the end (for progress bars)."""
        return int(round(sum(self.daily_rate(np.arange(day, min(day + 30, self.days))).sum()
                             for day in range(first_day, self.days, 30))))

    def mean_amount(self) -> np.ndarray:
        """Expected amount of one transaction per customer (log-normal means, category mix)."""
        probabilities = np.diff(self.category_cum, axis=1, prepend=0.0)
        category_mean = np.exp(CATEGORY_AMOUNT[:, 0] + CATEGORY_AMOUNT[:, 1] ** 2 / 2)
        return probabilities @ category_mean


def make_population(
    customers: int, start: date, days: int, seed: int = 42, mean_daily_rate: float = 0.35
) -> Population:
    """Draw a population deterministically from ``seed``."""
    rng = np.random.default_rng([seed, 0])
    segment = rng.choice(len(SEGMENTS), size=customers, p=SEGMENT_SHARE)
    individual = rng.lognormal(mean=-0.125, sigma=0.5, size=customers)  # mean 1
    scale = mean_daily_rate / float(SEGMENT_SHARE @ SEGMENT_RATE)
    base_rate = SEGMENT_RATE[segment] * individual * scale
    trajectory = rng.choice(len(TRAJECTORIES), size=customers, p=TRAJECTORY_SHARE)
    change_start = rng.uniform(0, days, size=customers)
    change_days = rng.uniform(14, 75, size=customers)
    factor = np.ones(customers)
    factor = np.where(trajectory == 1, rng.uniform(1.8, 3.5, customers), factor)
    factor = np.where(trajectory == 2, rng.uniform(0.1, 0.45, customers), factor)
    factor = np.where(trajectory == 3, 0.0, factor)
    change_days = np.where(trajectory == 3, rng.uniform(1, 7, customers), change_days)
    category_weights = CATEGORY_WEIGHT[segment] * rng.gamma(2.0, 0.5, (customers, len(MERCHANT_CATEGORIES)))
    category_p = category_weights / category_weights.sum(axis=1, keepdims=True)
    channel_p = rng.dirichlet([4.0, 2.0, 3.0, 0.4, 0.05], size=customers)
    return Population(
        seed=seed,
        start=start,
        days=days,
        customer_ids=np.array([f"c{i:07d}" for i in range(customers)]),
        segment=segment,
        base_rate=base_rate,
        trajectory=trajectory,
        change_start=change_start,
        change_days=change_days,
        change_factor=factor,
        category_cum=np.cumsum(category_p, axis=1),
        channel_cum=np.cumsum(channel_p, axis=1),
        favourite_merchant=rng.integers(0, MERCHANTS_PER_CATEGORY, customers),
    )


def _pick(cum: np.ndarray, rows: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Categorical draw per event from each event's row of cumulative probabilities."""
    picked = (uniform[:, None] > cum[rows]).sum(axis=1)
    return np.minimum(picked, cum.shape[1] - 1)


def _purchases(population: Population, rows: np.ndarray, rng: np.random.Generator, day: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Category, channel and amount of one purchase per customer index in ``rows`` (shift applied)."""
    n = len(rows)
    shift = population.shift if population.shift is not None and day >= population.shift.from_day else None
    category = _pick(population.category_cum, rows, rng.random(n))
    channel_cum = shift.channel_cum(population.size) if shift is not None else None
    channel = _pick(population.channel_cum if channel_cum is None else channel_cum, rows, rng.random(n))
    mu, sigma = CATEGORY_AMOUNT[category, 0], CATEGORY_AMOUNT[category, 1]
    amount = np.exp(mu + sigma * rng.standard_normal(n))
    if shift is not None and shift.amount_factor != 1.0:
        shifted = np.ones(n, dtype=bool) if shift.category is None else (
            category == MERCHANT_CATEGORIES.index(shift.category))
        amount = np.where(shifted, amount * shift.amount_factor, amount)
    return category, channel, np.maximum(np.round(amount, 2), 0.01)


def _table(population: Population, rows: np.ndarray, category: np.ndarray, channel: np.ndarray,
           amount: np.ndarray, epoch_ms: np.ndarray, merchant_offset: np.ndarray, ids: pa.Array) -> pa.Table:
    n = len(rows)
    merchant_number = category * MERCHANTS_PER_CATEGORY + merchant_offset
    return pa.table({
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int32)),
        "transaction_id": ids,
        "customer_id": population.customer_id_array.take(rows),
        "amount": pa.array(amount),
        "currency": pa.array(np.full(n, CURRENCY)),
        "event_time": pa.array(epoch_ms, type=pa.timestamp("ms", tz="UTC")),
        "merchant_id": _MERCHANT_IDS.take(merchant_number),
        "merchant_category": pa.DictionaryArray.from_arrays(
            pa.array(category.astype(np.int32)), pa.array(MERCHANT_CATEGORIES)).cast(pa.string()),
        "channel": pa.DictionaryArray.from_arrays(
            pa.array(channel.astype(np.int32)), pa.array(CHANNELS)).cast(pa.string()),
    })


def _sequence(prefix: str, n: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), 7, "0"), "")


def day_events(population: Population, day: int) -> pa.Table:
    """All transactions of day index ``day`` as an Arrow table, sorted by event time."""
    rng = np.random.default_rng([population.seed, 1, day])
    rates = population.daily_rate(np.array([day]))[:, 0]
    counts = rng.poisson(rates)
    rows = np.repeat(np.arange(population.size), counts)
    n = len(rows)
    category, channel, amount = _purchases(population, rows, rng, day)
    night = rng.random(n) < SEGMENT_NIGHT_SHARE[population.segment[rows]]
    hour = np.where(night, rng.uniform(0, 6, n), np.clip(rng.normal(14.5, 3.5, n), 6, 23.999))
    millis = (hour * 3_600_000).astype(np.int64)
    merchant_offset = (population.favourite_merchant[rows] + rng.geometric(0.35, n) - 1) % MERCHANTS_PER_CATEGORY
    order = np.argsort(millis, kind="stable")
    rows, category, channel, amount, millis, merchant_offset = (
        rows[order], category[order], channel[order], amount[order], millis[order], merchant_offset[order]
    )
    day_start = datetime.combine(population.start + timedelta(days=day), datetime.min.time(), UTC)
    epoch_ms = int(day_start.timestamp() * 1000) + millis
    ids = _sequence(f"t{population.fingerprint}-{day_start:%Y%m%d}-", n)
    return _table(population, rows, category, channel, amount, epoch_ms, merchant_offset, ids)


def live_events(population: Population, count: int, start_ms: int, end_ms: int, tick: int) -> pa.Table:
    """``count`` transactions happening now, between ``start_ms`` and ``end_ms`` (epoch ms), in time order.

    Customers are drawn in proportion to their rate on the current day, purchases as on any day
    (with the shift, if any). ``tick`` numbers the call: ids are unique per (population, tick).
    """
    rng = np.random.default_rng([population.seed, 2, tick])
    day = population.day_index(datetime.fromtimestamp(start_ms / 1000, UTC))
    rates = population.daily_rate(np.array([day]))[:, 0]
    total = rates.sum()
    p = rates / total if total > 0 else np.full(population.size, 1.0 / population.size)
    rows = rng.choice(population.size, size=count, p=p)
    category, channel, amount = _purchases(population, rows, rng, day)
    epoch_ms = np.sort(rng.integers(start_ms, max(end_ms, start_ms + 1), count))
    merchant_offset = (population.favourite_merchant[rows] + rng.geometric(0.35, count) - 1) % MERCHANTS_PER_CATEGORY
    ids = _sequence(f"t{population.fingerprint}-live{tick:010d}-", count)
    return _table(population, rows, category, channel, amount, epoch_ms, merchant_offset, ids)


def simulate(population: Population, first_day: int = 0, days: int | None = None) -> Iterator[pa.Table]:
    """Yield one table per day, in event-time order."""
    last = population.days if days is None else first_day + days
    for day in range(first_day, last):
        yield day_events(population, day)


def expected_activity(population: Population, start: date, end: date) -> pd.DataFrame:
    """The oracle: each customer's expected transaction count and spend in ``[start, end)``.

    Days outside the simulated period are extrapolated with the same model, so the oracle can
    answer for any future window.
    """
    first, last = population.day_index(start), population.day_index(end)
    days = np.arange(first, last)
    count = population.daily_rate(days).sum(axis=1) if len(days) else np.zeros(population.size)
    return pd.DataFrame({
        "customer_id": population.customer_ids,
        "expected_count": count,
        "expected_spend": count * population.mean_amount(),
    })
