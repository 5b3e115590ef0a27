"""Per-customer day-indexed history, merged from daily partial aggregates, exported as state rows.

The streaming job and the backfill both feed Spark's per-(customer, day) partial aggregates
through ``ActivityHistory.merge`` and write ``ActivityHistory.export`` rows to Feast: one code
path, so a restarted stream and a batch rebuild produce the same state. Each customer keeps a
ring of ``HISTORY_DAYS`` daily slots ending on the day of their latest transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd
import pyarrow as pa

from features.state import (
    CHANNELS,
    CREATED_TIMESTAMP,
    DAILY_COUNTS,
    DAY_DTYPE,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    HEADER_DTYPE,
    HISTORY_DAYS,
    MERCHANT_CATEGORIES,
    NEVER,
    STATE_DTYPE,
    STATE_FEATURE,
    STATE_VERSION,
    empty_states,
    pack_states,
    state_column,
)

N = HISTORY_DAYS
_UNSET_FIRST = np.iinfo(np.int64).max
_INT16_MAX = np.iinfo(np.int16).max  # a stored day count is capped here
INT_PARTS = ("count", "night", *(f"ch_{channel}" for channel in CHANNELS))  # partial columns, in order
assert len(INT_PARTS) == len(DAILY_COUNTS)
PARTIAL_COLUMNS = (
    ENTITY_KEY, "day", *INT_PARTS, "spend", "max_amount", "category_mask", "merchant_bits", "first_s", "last_s",
    "refunds", "refund_amount",
)


GENESIS = pd.Timestamp(0, tz="UTC")
_ARRAYS = ("end_day", "first_day", "last_event_s", "total_count", "ints", "spend", "max_amount", "category_last",
           "merchant_bits", "total_spend", "refund_count", "refund_amount")  # one row per customer each
_TOTALS = ("total_spend", "refund_count", "refund_amount")  # lifetime totals: the same name in the state
_UNSET = {"end_day": NEVER, "first_day": _UNSET_FIRST, "last_event_s": -np.inf, "category_last": NEVER}  # else 0


@dataclass(frozen=True)
class MergeResult:
    changed: np.ndarray  # row numbers of customers whose state changed
    new: np.ndarray  # row numbers of customers seen for the first time
    too_late: pd.DataFrame  # (customer_id, day) partials older than the customer's history
    unmatched_refunds: int = 0  # refunds and reversals of customers with no purchase yet: not in any state

    @staticmethod
    def combine(results: list[MergeResult]) -> MergeResult:
        if not results:
            none = np.empty(0, dtype=np.int64)
            return MergeResult(none, none, pd.DataFrame({ENTITY_KEY: [], "day": []}))
        return MergeResult(np.unique(np.concatenate([r.changed for r in results])),
                           np.unique(np.concatenate([r.new for r in results])),
                           pd.concat([r.too_late for r in results], ignore_index=True),
                           sum(r.unmatched_refunds for r in results))


class ActivityHistory:
    """Growable, vectorized store of every customer's last ``HISTORY_DAYS`` of activity."""

    def __init__(self, capacity: int = 1024) -> None:
        self.index: dict[str, int] = {}
        self.customer_ids: list[str] = []
        self.end_day = np.full(capacity, NEVER, dtype=np.int64)
        self.first_day = np.full(capacity, _UNSET_FIRST, dtype=np.int64)
        self.last_event_s = np.full(capacity, -np.inf)
        self.total_count = np.zeros(capacity, dtype=np.int64)
        self.ints = np.zeros((capacity, len(INT_PARTS), N), dtype=np.int32)
        self.spend = np.zeros((capacity, N))
        self.max_amount = np.zeros((capacity, N))
        self.category_last = np.full((capacity, len(MERCHANT_CATEGORIES)), NEVER, dtype=np.int64)
        self.merchant_bits = np.zeros((capacity, N), dtype=np.int64)
        self.total_spend = np.zeros(capacity)
        self.refund_count = np.zeros(capacity, dtype=np.int64)
        self.refund_amount = np.zeros(capacity)

    def copy(self) -> ActivityHistory:
        """An independent copy holding exactly this history (capacity trimmed to its size)."""
        size = self.size
        other = ActivityHistory.__new__(ActivityHistory)
        other.index, other.customer_ids = dict(self.index), list(self.customer_ids)
        for name in _ARRAYS:
            setattr(other, name, getattr(self, name)[:size].copy())
        return other

    @property
    def size(self) -> int:
        return len(self.customer_ids)

    def _rows(self, customer_ids: np.ndarray) -> np.ndarray:
        """Row numbers for ``customer_ids``, adding new customers."""
        index = self.index
        rows = np.fromiter(map(index.get, customer_ids, repeat(-1)), dtype=np.int64, count=len(customer_ids))
        unknown = rows < 0
        if unknown.any():
            for cid in pd.unique(customer_ids[unknown]):
                index[cid] = len(self.customer_ids)
                self.customer_ids.append(cid)
            self._grow(len(self.customer_ids))
            rows[unknown] = np.fromiter(map(index.__getitem__, customer_ids[unknown]), dtype=np.int64,
                                        count=int(unknown.sum()))
        return rows

    def _grow(self, needed: int) -> None:
        capacity = len(self.end_day)
        if needed <= capacity:
            return
        new = max(needed, capacity * 2)

        def grown(array: np.ndarray, fill: float) -> np.ndarray:
            out = np.zeros((new, *array.shape[1:]), dtype=array.dtype)  # calloc: untouched pages cost nothing
            out[:capacity] = array
            if fill:
                out[capacity:] = fill
            return out

        for name in _ARRAYS:
            setattr(self, name, grown(getattr(self, name), _UNSET.get(name, 0)))

    def merge(self, partials: pd.DataFrame) -> MergeResult:
        """Add daily partial aggregates (unique per customer and day) into the history.

        Purchases make the history; refunds and reversals only add to their customer's lifetime
        totals. A customer whose refunds come before any purchase of theirs (in this merge or an
        earlier one) has no state to add them to: they are counted in ``unmatched_refunds``.
        """
        if partials.empty:
            none = np.empty(0, dtype=np.int64)
            return MergeResult(none, none, partials.iloc[:0][[ENTITY_KEY, "day"]])
        known = self.size
        bought = partials["count"].to_numpy(dtype=np.int64) > 0
        purchases = partials[bought] if not bought.all() else partials
        rows = self._rows(purchases[ENTITY_KEY].to_numpy(dtype=object))
        late = self._merge_purchases(purchases, rows)
        changed = np.unique(rows)
        unmatched = 0
        if "refunds" in partials.columns:  # a batch log from before refunds were counted has none
            refunds = partials[partials["refunds"].to_numpy(dtype=np.int64) > 0]
            index = self.index
            who = np.fromiter(map(index.get, refunds[ENTITY_KEY].to_numpy(dtype=object), repeat(-1)),
                              dtype=np.int64, count=len(refunds))
            matched = who >= 0
            unmatched = int(refunds["refunds"].to_numpy(dtype=np.int64)[~matched].sum())
            who = who[matched]
            np.add.at(self.refund_count, who, refunds["refunds"].to_numpy(dtype=np.int64)[matched])
            np.add.at(self.refund_amount, who, refunds["refund_amount"].to_numpy(dtype=np.float64)[matched])
            changed = np.union1d(changed, who)
        return MergeResult(changed, np.arange(known, self.size), late, unmatched)

    def _merge_purchases(self, partials: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
        """Fold purchase partials into rows ``rows``; returns the (customer, day) pairs too old for the window."""
        day = partials["day"].to_numpy(dtype=np.int64)
        latest = self.end_day.copy()
        np.maximum.at(latest, rows, day)
        changed = np.unique(rows)
        self._advance(changed, latest[changed])

        fits = day > self.end_day[rows] - N
        r, slot = rows[fits], day[fits] % N
        for k, name in enumerate(INT_PARTS):
            self.ints[r, k, slot] += partials[name].to_numpy(dtype=np.int32)[fits]
        self.spend[r, slot] += partials["spend"].to_numpy(dtype=np.float64)[fits]
        self.merchant_bits[r, slot] |= partials["merchant_bits"].to_numpy(dtype=np.int64)[fits]
        self.max_amount[r, slot] = np.maximum(self.max_amount[r, slot],
                                              partials["max_amount"].to_numpy(dtype=np.float64)[fits])
        np.minimum.at(self.first_day, rows, day)
        np.maximum.at(self.last_event_s, rows, partials["last_s"].to_numpy(dtype=np.float64))
        np.add.at(self.total_count, rows, partials["count"].to_numpy(dtype=np.int64))
        np.add.at(self.total_spend, rows, partials["spend"].to_numpy(dtype=np.float64))
        mask = partials["category_mask"].to_numpy(dtype=np.int64)
        for k in range(len(MERCHANT_CATEGORIES)):
            has = (mask >> k) & 1 == 1
            np.maximum.at(self.category_last[:, k], rows[has], day[has])
        return partials.loc[~fits, [ENTITY_KEY, "day"]].reset_index(drop=True)

    def _advance(self, rows: np.ndarray, new_end: np.ndarray) -> None:
        """Move each customer's window to end on ``new_end``, clearing slots that fall out.

        Only the slots of the days entering the window are cleared (the ring slot of day ``d`` is
        ``d % N``, the one day ``d - N`` held): a day-by-day catch-up touches one slot per customer.
        """
        old_end = self.end_day[rows]
        moving = new_end > old_end
        rows, old_end, new_end = rows[moving], old_end[moving], new_end[moving]
        if len(rows) == 0:
            return
        gap = new_end - old_end
        whole = gap >= N  # the whole window falls out (or the customer is new)
        if whole.any():
            cleared = rows[whole]
            self.ints[cleared], self.spend[cleared], self.max_amount[cleared] = 0, 0.0, 0.0
            self.merchant_bits[cleared] = 0
        part = ~whole
        if part.any():
            steps = gap[part]
            r = np.repeat(rows[part], steps)
            first = np.cumsum(steps) - steps  # each row's first entry in r
            day = np.repeat(old_end[part], steps) + (np.arange(len(r)) - np.repeat(first, steps)) + 1
            slot = day % N
            self.ints[r, :, slot] = 0
            self.spend[r, slot], self.max_amount[r, slot], self.merchant_bits[r, slot] = 0.0, 0.0, 0
        self.end_day[rows] = new_end

    def rows_of(self, customer_ids: list[str]) -> np.ndarray:
        return np.array([self.index[cid] for cid in customer_ids], dtype=np.int64)

    def states(self, rows: np.ndarray) -> np.ndarray:
        """``STATE_DTYPE`` records of customers ``rows``: daily arrays oldest first, ending on end_day."""
        rows = np.asarray(rows, dtype=np.int64)
        end = self.end_day[rows]
        order = (end[:, None] - N + 1 + np.arange(N)[None, :]) % N  # the slot of each day, oldest first
        states = np.zeros(len(rows), dtype=STATE_DTYPE)
        states["version"] = STATE_VERSION
        states["end_day"] = end
        states["first_day"] = self.first_day[rows]
        states["total_count"] = self.total_count[rows]
        states["last_event_s"] = self.last_event_s[rows]
        for name in _TOTALS:
            states[name] = getattr(self, name)[rows]
        counts = np.take_along_axis(self.ints[rows], order[:, None, :], axis=2)
        states["daily_counts"] = np.minimum(counts, np.iinfo(np.int16).max)
        states["daily_spend"] = np.take_along_axis(self.spend[rows], order, axis=1)
        states["daily_max"] = np.take_along_axis(self.max_amount[rows], order, axis=1)
        states["category_last_day"] = self.category_last[rows]
        states["daily_merchant_bits"] = np.take_along_axis(self.merchant_bits[rows], order, axis=1)
        return states

    def genesis(self, rows: np.ndarray) -> pd.DataFrame:
        """An empty state at 1970-01-01 for newly seen customers.

        Feast's file offline store drops an entity row whose customer has state rows but none
        at or before the row's time; with this row it gets the cold-start state instead.
        """
        rows = np.asarray(rows, dtype=np.int64)
        return pd.DataFrame({
            ENTITY_KEY: [self.customer_ids[r] for r in rows.tolist()],
            EVENT_TIMESTAMP: GENESIS,
            CREATED_TIMESTAMP: GENESIS,
            STATE_FEATURE: pd.arrays.ArrowExtensionArray(state_column(empty_states(len(rows)))),
        })

    def encode(self, rows: np.ndarray) -> pa.ChunkedArray:
        """``state_column(self.states(rows))`` without the dense records: gathers only active days."""
        rows = np.asarray(rows, dtype=np.int64)
        end = self.end_day[rows]
        headers = np.zeros(len(rows), dtype=HEADER_DTYPE)
        headers["version"] = STATE_VERSION
        headers["end_day"] = end
        headers["first_day"] = self.first_day[rows]
        headers["total_count"] = self.total_count[rows]
        headers["last_event_s"] = self.last_event_s[rows]
        headers["category_last_day"] = self.category_last[rows]
        for name in _TOTALS:
            headers[name] = getattr(self, name)[rows]
        # Active days in ring order (np.nonzero walks each row's slots upwards); a state lists them
        # oldest first, which rotates each row's list: the slots after end_day's come first.
        who, ring = np.nonzero(self.ints[:, 0, :][rows] > 0)
        active = np.bincount(who, minlength=len(rows))
        headers["active_days"] = active
        start = np.cumsum(active) - active
        newest = end % N
        wrapped = ring <= newest[who]  # days up to end_day's slot: the newest part of the window
        n_wrapped = np.bincount(who, weights=wrapped, minlength=len(rows)).astype(np.int64)
        at = np.arange(len(who)) - start[who]  # index within the row, in ring order
        dest = start[who] + np.where(wrapped, at + (active - n_wrapped)[who], at - n_wrapped[who])
        r = rows[who]
        days = np.empty(len(who), dtype=DAY_DTYPE)
        days["slot"][dest] = (ring - newest[who] - 1) % N  # the day's index, oldest first (``states`` order)
        counts = self.ints[r, :, ring]
        if counts.max(initial=0) > _INT16_MAX:
            np.minimum(counts, _INT16_MAX, out=counts)
        days["counts"][dest] = counts
        days["spend"][dest] = self.spend[r, ring]
        days["max"][dest] = self.max_amount[r, ring]
        days["merchant_bits"][dest] = self.merchant_bits[r, ring]
        return pack_states(headers, days)

    def export(self, rows: np.ndarray, created: pd.Timestamp | None = None) -> pd.DataFrame:
        """Rows of the Feast feature view for customers ``rows``: key, timestamps, packed state."""
        rows = np.asarray(rows, dtype=np.int64)
        return pd.DataFrame({
            ENTITY_KEY: [self.customer_ids[r] for r in rows.tolist()],
            EVENT_TIMESTAMP: pd.to_datetime(np.round(self.last_event_s[rows] * 1e6).astype(np.int64), unit="us",
                                            utc=True),
            CREATED_TIMESTAMP: created if created is not None else pd.Timestamp.now(tz="UTC"),
            STATE_FEATURE: pd.arrays.ArrowExtensionArray(self.encode(rows)),
        })
