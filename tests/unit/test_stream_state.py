"""The stream's driver-side state: decisions logged before they are applied, replayable after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streaming.history import PARTIAL_COLUMNS
from streaming.stream_state import BatchLog, StreamState

DAY = 86_400


def batch(batch_id: int, customer: str, day: int, ids: list[str]) -> BatchLog:
    partial = {name: 0 for name in PARTIAL_COLUMNS}
    partial.update(customer_id=customer, day=day, count=len(ids), spend=10.0 * len(ids), max_amount=10.0,
                   first_s=day * DAY + 1.0, last_s=day * DAY + 2.0)
    return BatchLog(
        batch_id=batch_id,
        duplicates=pd.DataFrame({"partition": pd.Series([], dtype="int32"), "offset": pd.Series([], dtype="int64"),
                                 "transaction_id": pd.Series([], dtype=object)}),
        accepted=pd.DataFrame({"transaction_id": ids, "day": [day] * len(ids)}),
        partials=pd.DataFrame([partial], columns=list(PARTIAL_COLUMNS)),
        late=pd.DataFrame({"customer_id": pd.Series([], dtype=object), "day": pd.Series([], dtype="int64")}),
        meta={"max_event_s": day * DAY + 2.0, "valid": len(ids)},
    )


def log_and_apply(state: StreamState, log: BatchLog) -> None:
    state.write_log(log)
    state.apply(log)


def test_recovery_replays_logs_after_the_snapshot(tmp_path: Path) -> None:
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    log_and_apply(state, batch(0, "a", 20_000, ["t1", "t2"]))
    log_and_apply(state, batch(1, "b", 20_001, ["t3"]))
    state.snapshot()  # a copy, written in the background: the next batch does not wait
    log_and_apply(state, batch(2, "a", 20_002, ["t4"]))
    state.close()
    assert not (tmp_path / "batches" / f"{1:012d}").exists() and (tmp_path / "batches" / f"{2:012d}").exists()
    recovered = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=2)
    assert recovered.applied_batch == 2
    assert set(recovered.seen) == {"t1", "t2", "t3", "t4"}
    rows = recovered.history.rows_of(["a", "b"])
    assert recovered.history.total_count[rows].tolist() == [3, 1]


def test_an_uncommitted_batch_is_left_for_spark_to_run_again(tmp_path: Path) -> None:
    """Spark re-runs the batch it did not commit; recovery must not apply it, the re-run does."""
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    log_and_apply(state, batch(0, "a", 20_000, ["t1"]))
    log_and_apply(state, batch(1, "a", 20_001, ["t2"]))  # logged and applied, then the process died
    recovered = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=0)
    assert recovered.applied_batch == 0 and "t2" not in recovered.seen
    days = []
    recovered.apply(recovered.read_log(1), on_day=days.append)  # the re-run, from the log
    assert recovered.history.total_count[recovered.history.rows_of(["a"])].tolist() == [2]
    with pytest.raises(ValueError, match="already applied"):
        recovered.apply(recovered.read_log(1))
    recovered.snapshot()  # through batch 1; a checkpoint that lost its commits no longer matches
    recovered.wait_for_snapshot()  # written in the background: recover reads what it wrote
    with pytest.raises(RuntimeError, match="ahead of Spark's checkpoint"):
        StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=0)


def test_duplicates_are_earlier_ids_and_repeats_within_the_batch(tmp_path: Path) -> None:
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    log_and_apply(state, batch(0, "a", 20_000, ["t1"]))
    verdict = state.classify(np.array(["t1", "t2", "t2", "t3"], dtype=object),
                             np.array([20_000 * DAY, 20_000 * DAY, 20_000 * DAY, 19_990 * DAY], dtype=float))
    assert verdict.duplicate.tolist() == [True, False, True, False]
    assert verdict.late.tolist() == [False, False, False, True]  # 10 days behind the newest event


def test_a_failed_snapshot_write_raises_and_keeps_the_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    log_and_apply(state, batch(0, "a", 20_000, ["t1"]))

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("streaming.stream_state.pickle.dump", full_disk)
    state.snapshot()
    with pytest.raises(OSError, match="No space"):
        state.close()
    monkeypatch.undo()
    recovered = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=0)
    assert recovered.applied_batch == 0 and set(recovered.seen) == {"t1"}



def test_committed_batches_not_yet_written_are_folded_again_on_recovery(tmp_path: Path) -> None:
    """The fold of a batch runs on after Spark commits it: one unfinished at a crash is redone from its log."""
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    for batch_id, (customer, day) in enumerate([("a", 20_000), ("b", 20_001), ("a", 20_002), ("b", 20_003)]):
        log_and_apply(state, batch(batch_id, customer, day, [f"t{batch_id}"]))
    state.mark_written(0)  # batches 1 and 2 were committed, their Feast writes did not finish; 3 was not committed
    refolded: list[int] = []

    def refold(recovering: StreamState, log: BatchLog) -> None:
        assert recovering.applied_batch == log.batch_id and recovering.folded_batch == log.batch_id - 1
        recovering.fold(log)
        recovering.mark_written(log.batch_id)
        refolded.append(log.batch_id)

    recovered = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=2, refold=refold)
    assert refolded == [1, 2] and recovered.last_written() == 2
    assert recovered.applied_batch == recovered.folded_batch == 2
    assert recovered.history.total_count[recovered.history.rows_of(["a", "b"])].tolist() == [2, 1]
    assert StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=2, refold=refold) is not None
    assert refolded == [1, 2]  # written now: nothing to redo


def test_a_batch_is_folded_once_and_only_after_its_decisions(tmp_path: Path) -> None:
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    first, second = batch(0, "a", 20_000, ["t1"]), batch(1, "a", 20_001, ["t2"])
    with pytest.raises(ValueError, match="cannot be folded"):
        state.fold(first)  # not admitted yet
    state.admit(first)
    state.admit(second)  # the next batch's decisions may come before the previous fold finishes
    with pytest.raises(ValueError, match="cannot be folded"):
        state.fold(second)  # folds go in batch order
    with pytest.raises(RuntimeError, match="folded"):
        state.snapshot()  # a snapshot holds folded batches only
    state.fold(first)
    state.fold(second)
    with pytest.raises(ValueError, match="cannot be folded"):
        state.fold(second)
    assert state.history.total_count[state.history.rows_of(["a"])].tolist() == [2]
