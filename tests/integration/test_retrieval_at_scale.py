"""The point-in-time retrieval at the size that broke training, and past its memory ceiling.

Generated states (10,000 customers x 60 event days, about 1.3 kB each, as large as the simulator's)
in a real Feast repo, asked at 26 weekly times per customer: the bench.model_quality shape. Feast's
file store merged every entity row with every state of its customer (15.6 million rows, 20 GB of
binary across its partitions): past 6 GB of memory here, and with the simulator's data a SIGSEGV in
pyarrow's ``take`` over a column past 2 GiB. The retrieval runs in a child process, so a crash is a
failed test rather than a dead test run; the child reports its peak memory and a sample of its rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from activity_settings import load_settings
from features.offline_store import RetrievalTooLarge
from features.state import (
    CREATED_TIMESTAMP,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    HISTORY_DAYS,
    STATE_FEATURE,
    STATE_VERSION,
    empty_states,
    state_column,
)
from features.store import FeatureWriter, historical_features
from features.transform import FEATURE_NAMES, features_frame
from tests.parity import assert_features_equal

pytestmark = pytest.mark.integration
CUSTOMERS, STATES_PER_CUSTOMER, AS_OF_TIMES = 10_000, 60, 26
START = pd.Timestamp("2026-01-01", tz="UTC")

CHILD = textwrap.dedent("""
    import json, re, sys, time
    import pandas as pd
    from activity_settings import load_settings
    from features.store import FeatureWriter, historical_features
    def peak_mb():  # this image's high-water mark (ru_maxrss would count the forked test process's too)
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
    settings = load_settings(data_dir=sys.argv[1])
    entities = pd.read_parquet(sys.argv[2])
    started = time.perf_counter()
    features = historical_features(FeatureWriter.open(settings).store, entities)
    features.iloc[::997].to_parquet(sys.argv[3])
    print(json.dumps({"rows": len(features), "seconds": time.perf_counter() - started, "peak_rss_mb": peak_mb()}))
""")


def generated_states(rows: int, start: pd.Timestamp, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """States ending ``days`` after ``start``, active on about 40 % of their days (as large as the simulator's)."""
    end_days = (start - pd.Timestamp(0, tz="UTC")).days + np.asarray(days)
    states = empty_states(rows)
    active = rng.random((rows, HISTORY_DAYS)) < 0.4
    active[:, -1] = True  # the end day has the newest event
    counts = rng.integers(1, 4, (rows, HISTORY_DAYS)) * active
    states["version"] = STATE_VERSION
    states["end_day"] = end_days
    states["first_day"] = end_days - 200
    states["total_count"] = counts.sum(axis=1) + 25
    states["last_event_s"] = end_days * 86_400.0 + 72_000
    states["daily_counts"][:, 0, :] = counts
    states["daily_counts"][:, 2, :] = counts  # all in store
    states["daily_spend"] = counts * rng.uniform(5, 80, (rows, HISTORY_DAYS))
    states["daily_max"] = states["daily_spend"]
    states["category_last_day"][:, 0] = end_days
    states["daily_merchant_bits"] = rng.integers(1, 2**40, (rows, HISTORY_DAYS)) * active
    return states


def write_states(data_dir: Path, rng: np.random.Generator) -> pd.DataFrame:
    """Every customer's states, one per event day (every other day from ``START``), as the stream writes them."""
    settings = load_settings(data_dir=data_dir)
    writer = FeatureWriter.open(settings)
    customers = np.repeat([f"c{i:07d}" for i in range(CUSTOMERS)], STATES_PER_CUSTOMER)
    days = np.tile(np.arange(STATES_PER_CUSTOMER) * 2, CUSTOMERS)
    states = generated_states(len(customers), START, days, rng)
    rows = pd.DataFrame({ENTITY_KEY: customers,
                         EVENT_TIMESTAMP: START + pd.to_timedelta(days, unit="D") + pd.Timedelta(hours=20),
                         CREATED_TIMESTAMP: pd.Timestamp("2026-06-01", tz="UTC"),
                         STATE_FEATURE: state_column(states).to_pylist()})
    for part, chunk in enumerate(np.array_split(np.arange(len(rows)), 12)):  # files as a stream's batches
        writer.write_offline(rows.iloc[chunk], f"stream-{part:012d}")
    return rows


def test_retrieval_at_the_crashing_size_builds_in_bounded_memory(tmp_path: Path) -> None:
    rows = write_states(tmp_path / "data", np.random.default_rng(3))
    assert rows[STATE_FEATURE].map(len).mean() > 900  # the size that made the merge pass 2 GiB
    times = START + pd.to_timedelta(np.arange(AS_OF_TIMES) * 7 + 3, unit="D")
    entities = pd.DataFrame({ENTITY_KEY: np.repeat(rows[ENTITY_KEY].unique(), AS_OF_TIMES),
                             EVENT_TIMESTAMP: np.tile(times, CUSTOMERS)})
    entities.to_parquet(tmp_path / "entities.parquet")
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "data"), str(tmp_path / "entities.parquet"),
                            str(tmp_path / "sample.parquet")], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr[-3000:]}"
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["rows"] == len(entities)
    assert report["peak_rss_mb"] < 3_000, report  # Feast's file store peaked past 6 GB here

    sample = pd.read_parquet(tmp_path / "sample.parquet")
    expected = features_frame(oracle_states(rows, sample), sample["as_of_s"].to_numpy())
    assert (expected["tx_count_90d"] > 0).mean() > 0.9  # the sample is of customers with history, as asked
    columns = list(FEATURE_NAMES)
    assert_features_equal(pd.concat([sample[columns].reset_index(drop=True).add_suffix("_on"),
                                     expected[columns].add_suffix("_off")], axis=1))


def oracle_states(rows: pd.DataFrame, asked: pd.DataFrame) -> list[bytes | None]:
    """The newest state at or before each asked time, the slow obvious way."""
    by_customer = {customer: group.sort_values(EVENT_TIMESTAMP) for customer, group in rows.groupby(ENTITY_KEY)}
    found = []
    for customer, at in zip(asked[ENTITY_KEY], pd.to_datetime(asked[EVENT_TIMESTAMP], utc=True), strict=True):
        earlier = by_customer[customer][by_customer[customer][EVENT_TIMESTAMP] <= at]
        found.append(earlier[STATE_FEATURE].iloc[-1] if len(earlier) else None)
    return found


def test_a_retrieval_past_the_memory_ceiling_fails_naming_the_setting(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, feature_store={"retrieval_memory_mb": 1})
    writer = FeatureWriter.open(settings)
    rng = np.random.default_rng(1)
    customers = [f"c{i:06d}" for i in range(10_000)]  # with the entity rows: 1.3 MB of index
    states = generated_states(len(customers), START, np.zeros(len(customers), dtype=int), rng)
    writer.write_offline(pd.DataFrame({ENTITY_KEY: customers, EVENT_TIMESTAMP: START, CREATED_TIMESTAMP: START,
                                       STATE_FEATURE: state_column(states).to_pylist()}), "stream-000000000001")
    entities = pd.DataFrame({ENTITY_KEY: customers[:1_000], EVENT_TIMESTAMP: START + pd.Timedelta(days=1)})
    with pytest.raises(RetrievalTooLarge, match="feature_store.retrieval_memory_mb"):
        historical_features(writer.store, entities)
