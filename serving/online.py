"""The scorer's feature path: customers' stored states from Feast's online store, then THE transform.

Feast's ``get_online_features`` costs milliseconds per call (registry lookups, proto round trips,
the on-demand view re-run through its own machinery). For the SQLite online store this module reads
the very table ``features.store._sqlite_upsert`` writes, keyed by Feast's own ``serialize_entity_key``
and decoded with Feast's ``ValueProto``, and hands the state bytes to ``features.transform`` exactly
as the on-demand view does (``decode_states(strict=False)`` then ``window_features``), so the
features are the ones Feast would have served, bit for bit. Any other online store (redis) goes
through Feast's ``get_online_features``.

Reads run in a small thread pool so a request can give up after its budget
(``serving.online_timeout_ms``) with ``OnlineStoreUnavailable`` while a stuck read finishes on its
own. Each pool thread keeps one read-only SQLite connection; with the database in WAL mode (switched
on here once, it is a persistent property of the file) readers never wait for the stream's writes
and the stream never waits for readers.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from activity_settings import ActivityError, Settings
from features.repo import STATE_VIEW
from features.state import ENTITY_KEY, STATE_FEATURE, decode_states
from features.transform import FEATURE_NAMES, window_features

log = logging.getLogger(__name__)

CHUNK = 500  # keys per SELECT: well under SQLite's bound-parameter limit
StoredState = tuple[bytes | None, datetime | None]  # (state bytes, event time of its newest event), None: never seen


class OnlineStoreUnavailable(ActivityError, RuntimeError):
    """The online store failed or did not answer within the budget: the caller should degrade, not wait."""


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
        from features.store import open_feature_store

        self.settings = settings
        self.store = open_feature_store(settings) if store is None else store
        self.default_timeout_s = settings.serving.online_timeout_ms / 1_000.0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="online-store")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []  # every thread's, so close() can close them
        self._connections_lock = threading.Lock()
        config = self.store.config
        self._sqlite = _is_plain_sqlite(self.store)
        self.backend = "sqlite" if self._sqlite else str(config.online_store.type)
        if self._sqlite:
            from feast.infra.online_stores.sqlite import _table_id

            view = self.store.get_feature_view(STATE_VIEW)
            self.db_path = _sqlite_path(config)
            self.table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
            self._key_version = int(config.entity_key_serialization_version)
            self._query_head = f'SELECT entity_key, value, event_ts FROM "{self.table.replace(chr(34), chr(34) * 2)}" '
            if wal:
                _ensure_wal(self.db_path)

    # -- public API ---------------------------------------------------------------------------------------------

    def states(self, customer_ids: Sequence[str], timeout_s: float | None = None) -> list[StoredState]:
        """The stored state bytes and their event time per customer (``(None, None)`` when never seen)."""
        ids = [str(cid) for cid in customer_ids]
        if not ids:
            return []
        budget = self.default_timeout_s if timeout_s is None else timeout_s
        if self._sqlite:
            # inline, no thread hop: SQLite bounds a lock wait by the connection's timeout and a slow query
            # by the progress handler's deadline, so the budget holds without a pool (~200 us saved)
            return self._read_sqlite(ids, budget, time.perf_counter() + budget)
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
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def __enter__(self) -> OnlineFeatures:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- SQLite ------------------------------------------------------------------------------------------------

    def _connection(self, budget_s: float) -> sqlite3.Connection:
        """This pool thread's read-only connection (opened on first use, reopened after an error).

        The file is stat'ed on every read (~1 us): an open connection keeps reading a deleted or
        replaced file (a re-created store) without any error, so a new inode means reconnect.
        """
        try:
            inode = os.stat(self.db_path).st_ino
        except FileNotFoundError:
            self._drop_connection()
            raise OnlineStoreUnavailable(f"the online store {self.db_path} does not exist: "
                                         "materialize or stream features first") from None
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "inode", None) != inode:
            self._drop_connection()
            connection = None
        if connection is None:
            uri = f"file:{quote(str(self.db_path))}?mode=ro"
            # a lock wait longer than the request's budget is useless; the pool thread is freed after it
            connection = sqlite3.connect(uri, uri=True, timeout=max(budget_s, 0.001), check_same_thread=False)
            self._local.connection, self._local.inode = connection, inode
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._connections_lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            connection.close()

    def _keys(self, ids: Sequence[str]) -> list[bytes]:
        """Feast's serialized entity keys, exactly as its SQLite store (and ``_sqlite_upsert``) writes them."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return [serialize_entity_key(EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=cid)]),
                                     entity_key_serialization_version=self._key_version) for cid in ids]

    def _read_sqlite(self, ids: list[str], budget_s: float, deadline: float | None = None) -> list[StoredState]:
        from feast.protos.feast.types.Value_pb2 import Value

        keys = self._keys(ids)
        found: dict[bytes, StoredState] = {}
        try:
            connection = self._connection(budget_s)
            if deadline is not None:
                connection.set_progress_handler(lambda: time.perf_counter() > deadline, 1_000)
            for start in range(0, len(keys), CHUNK):
                chunk = list(dict.fromkeys(keys[start:start + CHUNK]))  # a customer asked twice is read once
                query = f"{self._query_head}WHERE entity_key IN ({','.join('?' * len(chunk))}) AND feature_name = ?"
                for key, blob, event_ts in connection.execute(query, [*chunk, STATE_FEATURE]):
                    state = Value.FromString(blob).bytes_val if blob is not None else None
                    found[key] = (state, _utc(event_ts))
        except sqlite3.Error as exc:  # missing table, corrupt file, lock timeout: all "unavailable" to a request
            self._drop_connection()
            raise OnlineStoreUnavailable(f"the online store {self.db_path} failed: {exc}") from exc
        return [found.get(key, (None, None)) for key in keys]

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


def _is_plain_sqlite(store: Any) -> bool:
    """The SQLite store ``features.store.FeatureWriter`` writes directly (not the vector-enabled variant)."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    online = store._get_provider().online_store  # the same check FeatureWriter.write_online makes
    return type(online) is SqliteOnlineStore and not getattr(store.config.online_store, "vector_enabled", False)


def _sqlite_path(config: Any) -> Path:
    """Where Feast's SQLite store keeps its file (``SqliteOnlineStore._get_db_path``'s rule)."""
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        path = Path(config.repo_path) / path
    return path.resolve()


def _ensure_wal(db_path: Path) -> None:
    """Switch the database to WAL (persistent) so readers and the stream's writer never block each other."""
    if not db_path.is_file():
        log.warning("online store %s does not exist yet: reads fail until features are written", db_path)
        return
    try:
        with sqlite3.connect(db_path, timeout=5.0) as connection:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        connection.close()
        if str(mode).lower() != "wal":
            log.warning("online store %s stays in %s journal mode: reads and writes take turns", db_path, mode)
    except sqlite3.Error as exc:
        log.warning("could not switch online store %s to WAL (%s): reads and writes take turns", db_path, exc)


def _utc(moment: Any) -> datetime | None:
    """SQLite's ``event_ts`` as an aware UTC datetime, decoded the way Feast's ``online_read`` does.

    Feast's sqlite module registers an adapter that stores a datetime as ``int(naive_utc.timestamp())``
    (whole seconds, the naive value taken as local time) and reads it back with ``fromtimestamp`` (local
    again) then labels it UTC: the two local-time steps cancel, so the same steps give Feast's value.
    """
    if moment is None:
        return None
    if isinstance(moment, int | float):
        return datetime.fromtimestamp(int(moment)).replace(tzinfo=UTC)  # Feast's round trip
    if isinstance(moment, bytes):
        moment = moment.decode()
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
