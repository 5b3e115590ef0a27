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
        new=pd.DataFrame({"customer_id": [customer]}),
        meta={"max_event_s": day * DAY + 2.0, "valid": len(ids)},
    )


def log_and_apply(state: StreamState, log: BatchLog) -> None:
    state.write_log(log)
    state.apply(log)


def test_recovery_replays_logs_after_the_snapshot(tmp_path: Path) -> None:
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    log_and_apply(state, batch(0, "a", 20_000, ["t1", "t2"]))
    log_and_apply(state, batch(1, "b", 20_001, ["t3"]))
    state.snapshot()
    log_and_apply(state, batch(2, "a", 20_002, ["t4"]))
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
    with pytest.raises(RuntimeError, match="ahead of Spark's checkpoint"):
        StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=0)


def test_duplicates_are_earlier_ids_and_repeats_within_the_batch(tmp_path: Path) -> None:
    state = StreamState.recover(tmp_path, lateness_s=2 * DAY, committed_through=-1)
    log_and_apply(state, batch(0, "a", 20_000, ["t1"]))
    verdict = state.classify(np.array(["t1", "t2", "t2", "t3"], dtype=object),
                             np.array([20_000 * DAY, 20_000 * DAY, 20_000 * DAY, 19_990 * DAY], dtype=float))
    assert verdict.duplicate.tolist() == [True, False, True, False]
    assert verdict.late.tolist() == [False, False, False, True]  # 10 days behind the newest event
