"""The scorer's feature path: customers' stored states from Feast's online store, then THE transform.

Feast's ``get_online_features`` costs milliseconds per call (registry lookups, proto round trips,
the on-demand view re-run through its own machinery). For the SQLite online store the states come
straight from Feast's table (``features.sqlite_online``, which the stream's writes go through too)
and are handed to ``features.transform`` exactly as the on-demand view does
(``decode_states(strict=False)`` then ``window_features``), so the features are the ones Feast
would have served, bit for bit. Any other online store (redis) goes through Feast's
``get_online_features`` in a small thread pool, so a request can give up after its budget
(``serving.online_timeout_ms``) with ``OnlineStoreUnavailable`` while a stuck read finishes on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from activity_settings import Settings
from features.repo import STATE_VIEW
from features.sqlite_online import OnlineStoreUnavailable, SqliteStateTable, StoredState
from features.state import ENTITY_KEY, STATE_FEATURE, decode_states
from features.store import open_feature_store
from features.transform import FEATURE_NAMES, window_features

log = logging.getLogger(__name__)

__all__ = ["OnlineFeatures", "OnlineRows", "OnlineStoreUnavailable", "StoredState"]


class OnlineRows(NamedTuple):
    """Features of a batch of customers; unpacks as ``(matrix, event_times, known)``."""

    matrix: np.ndarray  # float32 (n, len(FEATURE_NAMES)), columns in FEATURE_NAMES order
    event_times: list[datetime | None]  # the stored state's event time (freshness); None: never seen
    known: np.ndarray  # bool (n,): a stored state was found (False -> the row holds the cold-start values)


class OnlineFeatures:
    """Fast, deadline-bound reads of customers' stored states and their features at request times."""

    def __init__(self, settings: Settings, store: Any = None, workers: int = 2, wal: bool = True) -> None:
        """``store``: an open ``feast.FeatureStore`` (default: ``features.store.open_feature_store``).

        ``wal`` switches the SQLite database to WAL once (persistent), so these reads and the stream's
        writes never block each other; without it readers and the writer take turns on the file lock.
        """
        self.settings = settings
        self.store = open_feature_store(settings) if store is None else store
        self.default_timeout_s = settings.serving.online_timeout_ms / 1_000.0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="online-store")
        self.sqlite = SqliteStateTable.for_store(self.store)  # None: another online store, Feast's read
        self.backend = "sqlite" if self.sqlite is not None else str(self.store.config.online_store.type)
        if self.sqlite is not None and wal:
            self.sqlite.ensure_wal()

    # -- public API ---------------------------------------------------------------------------------------------

    def states(self, customer_ids: Sequence[str], timeout_s: float | None = None) -> list[StoredState]:
        """The stored state bytes and their event time per customer (``(None, None)`` when never seen)."""
        ids = [str(cid) for cid in customer_ids]
        if not ids:
            return []
        budget = self.default_timeout_s if timeout_s is None else timeout_s
        if self.sqlite is not None:
            # inline, no thread hop: SQLite bounds a lock wait by the connection's timeout and a slow query
            # by the progress handler's deadline, so the budget holds without a pool (~200 us saved)
            return self.sqlite.read(ids, budget, time.perf_counter() + budget)
        future: Future[list[StoredState]] = self._pool.submit(self._read_feast, ids, budget)
        try:
            return future.result(timeout=budget)
        except FutureTimeout:
            future.cancel()  # not started yet: never runs; running: finishes in the background
            raise OnlineStoreUnavailable(f"the online store ({self.backend}) did not answer within "
                                         f"{budget * 1_000:.0f} ms") from None
        except OnlineStoreUnavailable:
            raise
        except Exception as exc:  # the store's own errors (redis connection, Feast) all mean the same here
            raise OnlineStoreUnavailable(f"the online store ({self.backend}) failed: {type(exc).__name__}: {exc}") \
                from exc

    def features(self, customer_ids: Sequence[str], as_of_s: Sequence[int] | np.ndarray,
                 timeout_s: float | None = None) -> OnlineRows:
        """Model features of each customer at its request time (epoch seconds), through THE transform.

        A never-seen customer gets ``COLD_START`` (the transform's answer to a missing state) and
        ``known`` False. Raises ``OnlineStoreUnavailable`` when the store fails or exceeds ``timeout_s``
        (default ``serving.online_timeout_ms``); only the read is bounded, the transform is pure CPU.
        """
        as_of = np.asarray(as_of_s, dtype=np.int64).reshape(-1)  # Feast's request field is Int64
        if len(as_of) != len(customer_ids):
            raise ValueError(f"{len(customer_ids)} customers but {len(as_of)} request times")
        stored = self.states(customer_ids, timeout_s)
        values = [value for value, _ in stored]
        states = decode_states(values, strict=False)  # as the on-demand view decodes: malformed -> never seen
        known = states["version"] > 0
        malformed = sum(value is not None for value in values) - int(known.sum())
        if malformed:
            log.warning("%d stored state(s) are malformed and were scored as never seen: rebuild the features "
                        "with `activity stream backfill`", malformed)
        columns = window_features(states, as_of)
        matrix = np.stack([columns[name] for name in FEATURE_NAMES], axis=1, dtype=np.float32)
        return OnlineRows(matrix, [t if ok else None for (_, t), ok in zip(stored, known, strict=True)], known)

    def close(self) -> None:
        """Stop the pool and close every thread's connection (idempotent)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.sqlite is not None:
            self.sqlite.close()

    def __enter__(self) -> OnlineFeatures:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- any other online store: Feast's own path ------------------------------------------------------------

    def _read_feast(self, ids: list[str], budget_s: float) -> list[StoredState]:
        """``features.store.online_states``'s call, with the event timestamps it leaves out (whole seconds)."""
        from feast.online_response import TIMESTAMP_POSTFIX

        response = self.store.get_online_features(features=[f"{STATE_VIEW}:{STATE_FEATURE}"],
                                                  entity_rows=[{ENTITY_KEY: cid} for cid in ids])
        result = response.to_dict(include_event_timestamps=True)
        values, seconds = result[STATE_FEATURE], result[STATE_FEATURE + TIMESTAMP_POSTFIX]
        return [(value, datetime.fromtimestamp(s, UTC) if value is not None else None)
                for value, s in zip(values, seconds, strict=True)]
