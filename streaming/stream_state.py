"""The streaming job's durable driver-side state: history, duplicate index and watermark.

Every micro-batch's decisions (which rows were duplicates, the partial aggregates it added)
are written to a batch log *before* they are applied or sent anywhere. On restart the state is
rebuilt from a snapshot and the logs of the batches Spark committed; Spark re-runs the batch it
had not committed, with the same offsets, and that run applies the batch from its log and
repeats the idempotent writes. Logs are compacted into a snapshot every few batches. Together
with Spark's checkpoint this makes a kill -9 harmless.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.state import STATE_VERSION
from streaming.history import ActivityHistory, MergeResult

SECONDS_PER_DAY = 86_400
_FRAMES = ("duplicates", "accepted", "partials", "late")


@dataclass(frozen=True)
class Classified:
    duplicate: np.ndarray  # bool per valid row: the id was accepted before (or earlier in this batch)
    late: np.ndarray  # bool per valid row: event time behind the watermark


@dataclass(frozen=True)
class BatchLog:
    batch_id: int
    duplicates: pd.DataFrame  # partition, offset, transaction_id
    accepted: pd.DataFrame  # transaction_id, day
    partials: pd.DataFrame
    late: pd.DataFrame  # customer_id, day of late events (for reconcile)
    meta: dict[str, float]


@dataclass
class StreamState:
    directory: Path
    lateness_s: float
    history: ActivityHistory = field(default_factory=ActivityHistory)
    seen: dict[str, int] = field(default_factory=dict)  # transaction_id -> event day
    max_event_s: float = float("-inf")
    applied_batch: int = -1  # the last batch admitted: its decisions (seen ids, watermark) are in the state
    folded_batch: int = -1  # the last batch folded into the history
    _snapshot_written: Future[None] | None = field(default=None, init=False, repr=False)

    @property
    def watermark_s(self) -> float:
        return self.max_event_s - self.lateness_s

    # -------------------------------------------------------------------------- decisions

    def classify(self, transaction_ids: np.ndarray, event_s: np.ndarray) -> Classified:
        """Duplicates (first occurrence in offset order wins) and late rows of one batch."""
        seen = self.seen
        before = np.fromiter((tid in seen for tid in transaction_ids), dtype=bool, count=len(transaction_ids))
        repeated = pd.Series(transaction_ids).duplicated(keep="first").to_numpy()
        return Classified(duplicate=before | repeated, late=event_s < self.watermark_s)

    # ------------------------------------------------------------------------ persistence

    def _log_dir(self, batch_id: int) -> Path:
        return self.directory / "batches" / f"{batch_id:012d}"

    def write_log(self, log: BatchLog) -> None:
        """Durably record a batch's decisions (atomic: a directory rename)."""
        final = self._log_dir(log.batch_id)
        partial = final.with_name(final.name + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in _FRAMES:
            frame: pd.DataFrame = getattr(log, name)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), partial / f"{name}.parquet")
        (partial / "meta.json").write_text(json.dumps(log.meta))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)

    def read_log(self, batch_id: int) -> BatchLog | None:
        directory = self._log_dir(batch_id)
        if not (directory / "meta.json").is_file():
            return None
        frames = {name: pq.read_table(directory / f"{name}.parquet").to_pandas()
                  for name in _FRAMES}
        return BatchLog(batch_id=batch_id, meta=json.loads((directory / "meta.json").read_text()), **frames)

    def admit(self, log: BatchLog) -> None:
        """Take a logged batch's decisions into the state (exactly once per batch id): its ids become
        known for duplicate detection and its events move the watermark."""
        if log.batch_id <= self.applied_batch:
            raise ValueError(f"batch {log.batch_id} was already applied (state is at {self.applied_batch})")
        self.seen.update(zip(log.accepted["transaction_id"].tolist(), log.accepted["day"].tolist(), strict=True))
        self.max_event_s = max(self.max_event_s, float(log.meta.get("max_event_s", float("-inf"))))
        self.applied_batch = log.batch_id

    def fold(self, log: BatchLog, on_day: Callable[[MergeResult], None] | None = None) -> MergeResult:
        """Merge an admitted batch's partial aggregates into the history (once per batch id, in order).

        With ``on_day``, the batch's days are merged one at a time, in day order, and ``on_day``
        sees each day's result while the history stands at the end of that day: that is how
        the stream writes one offline state per customer and event day, as the backfill does.
        """
        if log.batch_id != self.folded_batch + 1 or log.batch_id > self.applied_batch:
            raise ValueError(f"batch {log.batch_id} cannot be folded: the history is at batch {self.folded_batch}, "
                             f"the decisions at {self.applied_batch}")
        if on_day is None:
            result = self.history.merge(log.partials)
        else:
            results = []
            for _, day_partials in log.partials.groupby("day", sort=True):
                results.append(self.history.merge(day_partials))
                on_day(results[-1])
            result = MergeResult.combine(results)
        self.folded_batch = log.batch_id
        return result

    def apply(self, log: BatchLog, on_day: Callable[[MergeResult], None] | None = None) -> MergeResult:
        """``admit`` then ``fold``."""
        self.admit(log)
        return self.fold(log, on_day)

    def mark_written(self, batch_id: int) -> None:
        """Record that batch ``batch_id``'s Feast writes are done (batches are written in order)."""
        target = self.directory / "written"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(str(batch_id))
        temporary.replace(target)

    def last_written(self) -> int:
        target = self.directory / "written"
        return int(target.read_text()) if target.is_file() else -1

    def snapshot(self) -> None:
        """Compact: persist the whole state, then drop the logs it contains. Call it only when every
        applied batch is committed (at the start of a batch, the previous one is).

        The state is copied here; pickling and writing the copy and dropping the logs run in a
        background thread, so the batch does not wait for the disk. Until the file is in place the
        previous snapshot and the logs still recover the state; a failed write raises at the next
        ``snapshot`` or ``close``.
        """
        self.wait_for_snapshot()
        if self.folded_batch != self.applied_batch:
            raise RuntimeError(f"snapshot with batch {self.applied_batch} admitted but only {self.folded_batch} folded")
        horizon_day = int(self.watermark_s // SECONDS_PER_DAY) - 1 if np.isfinite(self.watermark_s) else None
        if horizon_day is not None:
            self.seen = {tid: day for tid, day in self.seen.items() if day >= horizon_day}
        saved = {"history": self.history.copy(), "seen": dict(self.seen), "max_event_s": self.max_event_s,
                 "applied_batch": self.applied_batch}
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="activity-snapshot")
        self._snapshot_written = writer.submit(self._write_snapshot, saved)
        writer.shutdown(wait=False)  # its thread ends when the file is written

    def _write_snapshot(self, saved: dict) -> None:
        target = self.directory / "snapshot.pickle"
        temporary = target.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(saved, handle, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(target)
        for directory in (self.directory / "batches").glob("*"):
            if directory.name.isdigit() and int(directory.name) <= saved["applied_batch"]:
                shutil.rmtree(directory, ignore_errors=True)

    def wait_for_snapshot(self) -> None:
        """Block until the snapshot being written (if any) is in place; raise if writing it failed."""
        written, self._snapshot_written = self._snapshot_written, None
        if written is not None:
            written.result()

    close = wait_for_snapshot

    @classmethod
    def recover(cls, directory: Path, lateness_s: float, committed_through: int,
                refold: Callable[[StreamState, BatchLog], None] | None = None) -> StreamState:
        """The state after batch ``committed_through`` (the last one Spark committed): the
        snapshot plus the newer logs up to it. A logged batch Spark did not commit is left for
        Spark to run again; that run applies it from its log.

        A committed batch newer than the last one recorded as written (its fold was still running
        when the process died) is admitted and handed to ``refold`` with the state being recovered,
        which folds it and writes it again; without ``refold`` every log is simply applied.
        """
        directory.mkdir(parents=True, exist_ok=True)
        state = cls(directory=directory, lateness_s=lateness_s)
        snapshot = directory / "snapshot.pickle"
        if snapshot.is_file():
            with snapshot.open("rb") as handle:
                saved = pickle.load(handle)  # our own file, written by snapshot()
            state.history, state.seen = saved["history"], saved["seen"]
            if not hasattr(state.history, "total_spend"):
                raise RuntimeError(
                    f"the stream state in {directory} predates activity state version {STATE_VERSION} (lifetime "
                    "spend and refunds): see docs/streaming.md, 'Upgrading the state'")
            state.max_event_s, state.applied_batch = saved["max_event_s"], saved["applied_batch"]
            state.folded_batch = state.applied_batch
        logs = sorted(int(p.name) for p in (directory / "batches").glob("*") if p.name.isdigit())
        if state.applied_batch > committed_through:
            raise RuntimeError(f"the stream state in {directory} is ahead of Spark's checkpoint "
                               f"({state.applied_batch} > {committed_through}): remove both to start over")
        written = state.last_written()
        for batch_id in logs:
            if state.applied_batch < batch_id <= committed_through:
                log = state.read_log(batch_id)
                if log is None:
                    continue
                if refold is not None and batch_id > written:
                    state.admit(log)
                    refold(state, log)
                else:
                    state.apply(log)
        return state
