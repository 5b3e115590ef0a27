"""Killed twice with SIGKILL, the stream ends with exactly the state of a clean batch recomputation."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from activity_settings import Settings
from features.repo import OFFLINE_DIR
from features.state import STATE_FEATURE, decode_states
from features.store import FeatureWriter, latest_offline_states, online_states, repo_dir
from streaming.backfill import rebuild_history, topic_events
from streaming.paths import StreamPaths
from streaming.publish import publish_simulation
from streaming.simulator import make_population
from tests.conftest import settings_env
from tests.integration.conftest import isolated

pytestmark = pytest.mark.integration


def start_stream(settings: Settings, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "activity", "stream", "run", *args], env=settings_env(settings),
                            stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def batches_done(settings: Settings) -> int:
    progress = StreamPaths.of(settings).progress
    return len(progress.read_text().splitlines()) if progress.exists() else 0


def kill_after(process: subprocess.Popen, settings: Settings, batches: int, extra_s: float, log: Path) -> None:
    deadline = time.monotonic() + 300
    while batches_done(settings) < batches:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the stream made no progress"
        time.sleep(0.1)
    time.sleep(extra_s)  # land somewhere inside a later batch
    os.killpg(process.pid, signal.SIGKILL)  # the Python driver and Spark's JVM, without warning
    process.wait()


def assert_same_states(actual: list, expected: list, customers: list[str]) -> None:
    a, e = decode_states(actual), decode_states(expected)
    for field in ("version", "end_day", "first_day", "total_count", "daily_counts", "category_last_day",
                  "daily_merchant_bits"):
        mismatch = np.flatnonzero((a[field] != e[field]).reshape(len(a), -1).any(axis=1))
        assert len(mismatch) == 0, f"{field} differs for {[customers[i] for i in mismatch[:5]]}"
    for field in ("last_event_s", "daily_spend", "daily_max"):
        np.testing.assert_allclose(a[field], e[field], rtol=1e-9, err_msg=field)


def test_killed_job_resumes_without_losing_or_double_counting(kafka_stack: Settings, tmp_path: Path, spark) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    print(f"kill points drawn with seed {seed}")
    settings = isolated(kafka_stack, tmp_path / "stream", max_offsets_per_trigger=15_000, snapshot_every_batches=4)
    population = make_population(10_000, date(2026, 1, 1), 58, seed=21)
    report = publish_simulation(settings.kafka, population)
    assert report.delivered == report.queued >= 200_000

    log = tmp_path / "stream.log"
    first_kill, second_kill = rng.randint(1, 4), rng.randint(6, 9)
    process = start_stream(settings, log)
    kill_after(process, settings, first_kill, rng.uniform(0, 2.0), log)
    process = start_stream(settings, log)
    kill_after(process, settings, second_kill, rng.uniform(0, 2.0), log)
    process = start_stream(settings, log, "--until-idle", "3")
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]

    progress = [json.loads(line) for line in StreamPaths.of(settings).progress.read_text().splitlines()]
    assert len(progress) > second_kill  # the kills landed before the end
    archive = pd.read_parquet(StreamPaths.of(settings).archive)
    assert len(archive) == report.delivered and archive["transaction_id"].is_unique  # nothing lost or doubled

    clean = settings.model_copy(update={"data_dir": tmp_path / "clean"})
    clean_writer = FeatureWriter.open(clean)
    summary = rebuild_history(topic_events(spark, settings), clean_writer)
    assert summary.events == report.delivered

    customers = list(population.customer_ids)
    stream_store = FeatureWriter.open(settings).store
    assert_same_states(online_states(stream_store, customers), online_states(clean_writer.store, customers), customers)
    streamed_offline = latest_offline_states(repo_dir(settings) / OFFLINE_DIR)
    clean_offline = latest_offline_states(repo_dir(clean) / OFFLINE_DIR)
    seen = sorted(clean_offline.index)
    assert sorted(streamed_offline.index) == seen
    assert_same_states(streamed_offline.loc[seen, STATE_FEATURE].tolist(),
                       clean_offline.loc[seen, STATE_FEATURE].tolist(), seen)


def test_a_committed_batch_whose_feature_write_failed_is_written_on_restart(
        kafka_stack: Settings, tmp_path: Path, spark, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark commits a batch once its decisions are logged and its sinks written, while the fold (history
    merge, Feast writes) runs on: a fold that fails after the commit is redone from the log on restart."""
    from streaming.runner import StreamError, run_stream

    settings = isolated(kafka_stack, tmp_path / "stream", max_offsets_per_trigger=4_000)
    population = make_population(1_500, date(2026, 1, 1), 40, seed=5)
    report = publish_simulation(settings.kafka, population)
    assert report.delivered == report.queued > 12_000
    real_write = FeatureWriter.write

    def write_failing_on_batch_1(self: FeatureWriter, states: pd.DataFrame, batch_id: int,
                                 offline: pd.DataFrame | None = None) -> None:
        if batch_id == 1:
            raise OSError(28, "No space left on device (injected)")
        real_write(self, states, batch_id, offline)

    monkeypatch.setattr(FeatureWriter, "write", write_failing_on_batch_1)
    with pytest.raises(StreamError, match="No space left"):
        run_stream(settings, until_idle_s=2.0)
    paths = StreamPaths.of(settings)
    assert (paths.checkpoint / "commits" / "1").exists()  # Spark committed batch 1 ...
    assert (paths.state / "written").read_text() == "0"  # ... whose feature states were never written

    monkeypatch.setattr(FeatureWriter, "write", real_write)
    run_stream(settings, until_idle_s=2.0)
    assert int((paths.state / "written").read_text()) >= 2
    clean = settings.model_copy(update={"data_dir": tmp_path / "clean"})
    clean_writer = FeatureWriter.open(clean)
    assert rebuild_history(topic_events(spark, settings), clean_writer).events == report.delivered
    customers = list(population.customer_ids)
    assert_same_states(online_states(FeatureWriter.open(settings).store, customers),
                       online_states(clean_writer.store, customers), customers)
    streamed = latest_offline_states(repo_dir(settings) / OFFLINE_DIR)
    rebuilt = latest_offline_states(repo_dir(clean) / OFFLINE_DIR)
    assert sorted(streamed.index) == sorted(rebuilt.index)
    seen = sorted(rebuilt.index)
    assert_same_states(streamed.loc[seen, STATE_FEATURE].tolist(), rebuilt.loc[seen, STATE_FEATURE].tolist(), seen)


@pytest.mark.parametrize("next_batch", ["not begun", "turned away"])
def test_a_stop_lets_the_batch_in_flight_commit_and_loses_nothing(
        kafka_stack: Settings, tmp_path: Path, spark, monkeypatch: pytest.MonkeyPatch, next_batch: str) -> None:
    """SIGINT in the middle of a batch: the batch finishes and is committed, the query stops between batches
    without an error (a batch Spark began meanwhile is turned away, uncommitted), and the next start reads
    exactly the rest."""
    import threading

    from streaming.job import BatchGate, MicroBatch
    from streaming.runner import run_stream

    settings = isolated(kafka_stack, tmp_path / "stream", max_offsets_per_trigger=3_000)
    population = make_population(800, date(2026, 1, 1), 40, seed=9)
    report = publish_simulation(settings.kafka, population)
    assert report.delivered > 10_000  # a backlog: Spark begins each batch as soon as the last one is committed
    real_process = MicroBatch._process

    def stopped_during_batch_1(self: MicroBatch, raw, parsed, batch_id: int, started: float) -> None:
        if batch_id == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2.0)  # the stop waits for this batch
        real_process(self, raw, parsed, batch_id, started)

    monkeypatch.setattr(MicroBatch, "_process", stopped_during_batch_1)
    turned_away = threading.Event()
    if next_batch == "turned away":  # hold the stop until Spark has begun batch 2, to see it turned away
        real_close = BatchGate.close

        def close_once_batch_2_waits(self: BatchGate, timeout_s: float) -> bool:
            drained = real_close(self, timeout_s)
            deadline = time.monotonic() + 60
            while not self.waiting and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.waiting:
                turned_away.set()
            return drained

        monkeypatch.setattr(BatchGate, "close", close_once_batch_2_waits)
    first = run_stream(settings)  # returns on the SIGINT; a failure raises StreamError
    paths = StreamPaths.of(settings)
    assert (paths.checkpoint / "commits" / "1").exists()  # the batch in flight at the stop was committed
    assert not (paths.checkpoint / "commits" / "2").exists()
    assert int((paths.state / "written").read_text()) == 1
    assert turned_away.is_set() == (next_batch == "turned away")
    assert first.batches == 2

    monkeypatch.undo()
    rest = run_stream(settings, until_idle_s=2.0)
    assert first.input_rows + rest.input_rows == report.delivered  # nothing lost, nothing read twice
