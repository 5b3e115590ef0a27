"""Kafka -> Feast online ingest: our streaming job against a bare consumer and Feast's own processor.

1. sustained: N simulated events preloaded on a topic, then our job (``run_stream``, trigger 0)
   drains it into Feast online; tx/s = events / (last batch written - first batch started).
2. freshness: our job (``activity stream run``, trigger 1 s) in its own process while live events
   (event time = now) arrive at a steady rate; event time -> online write per batch.
3. reference: a bare confluent-kafka consumer reading the same preloaded topic.
4. peer: Feast's ``SparkKafkaProcessor`` ingesting the same preloaded topic into its own Feast repo.
5. driver memory: our job in its own process draining a small and a large population (100k and 1M
   customers, 3 days of events each); the peak RSS of its driver's Python process.

    python -m bench.ingest [--customers 100000] [--events 2000000] [--steady-rate 10000]
                           [--steady-seconds 60] [--max-offsets 1000000] [--partitions 4]
                           [--peer-timeout 300] [--memory-customers 100000,1000000] [--memory-days 3]
                           [--quick] [--samples PATH] [--profiles embedded,cluster]

With ``--profiles embedded,cluster`` our job is also measured on the cluster profile's stores: Feast's
online store in Redis and Spark on a standalone master with one 2-core worker (throwaway servers on
loopback); the JSON line carries those figures under ``"cluster"``.

Order of the run: preload, reference, ours (sustained, freshness) per profile, peer after the first. The progress lines
go to stderr; the figures to stdout, ending with one JSON line. ``--samples PATH`` also writes the
series behind them as JSON: our job's batches while draining and at the steady rate (events, duration,
per-batch freshness p50/p99), and the reference's and the peer's rates.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FunctionType
from typing import cast

import numpy as np
import psutil
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from activity_settings import (
    KafkaSettings,
    Settings,
    StreamingSettings,
    TopicSettings,
    load_settings,
    settings_environment,
)
from bench.common import bench_stack, cluster_stores, log, machine, print_result, profiles_argument
from infra.topics import ensure_topics, topic_offsets
from streaming.paths import StreamPaths
from streaming.publish import Pace, encode_simulated, publish_simulation, publish_tables
from streaming.schema import FIELDS
from streaming.simulator import Population, make_population, simulate

PEER_CHECKPOINT = Path("/tmp/checkpoint")  # hard-coded in Feast's SparkKafkaProcessor



# ------------------------------------------------------------------------------------- set-up


def job_settings(stack: Settings, data_dir: Path, transactions: str, **streaming: object) -> Settings:
    """The stack's settings with its own data directory and topics, and these stream settings."""
    tag = uuid.uuid4().hex[:6]
    topics = TopicSettings(transactions=transactions, dlq=f"bench-dlq-{tag}", predictions=f"bench-predictions-{tag}")
    settings = stack.model_copy(update={
        "data_dir": data_dir,
        "kafka": stack.kafka.model_copy(update={"topics": topics}),
        "streaming": StreamingSettings.model_validate({"metrics_port": 0, **streaming}),
    })
    ensure_topics(settings.kafka)
    return settings


def share_jars(source: Settings, target: Settings) -> None:
    """Copy the Kafka connector jars already fetched for ``source`` (saves a Maven run)."""
    jars = source.home / "jars"
    if jars.is_dir() and not (target.home / "jars").exists():
        shutil.copytree(jars, target.home / "jars")


def topic_size(kafka: KafkaSettings, topic: str) -> int:
    return sum(high - low for low, high in topic_offsets(kafka, topic).values())


def preload(kafka: KafkaSettings, population: Population) -> int:
    report = publish_simulation(kafka, population)
    if report.delivered != report.queued:
        raise RuntimeError(f"preload lost {report.queued - report.delivered} events: {report.errors}")
    return report.delivered


def read_progress(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------- reference


def reference_read(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 300.0) -> float:
    """A bare consumer: consume() in batches of 10k from the beginning, no processing."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"bench-reference-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        read = 0
        while read < expected:
            read += len(consumer.consume(10_000, timeout=1.0))
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"reference consumer read {read:,} of {expected:,} in {timeout_s:.0f}s")
        return read / (time.perf_counter() - started)
    finally:
        consumer.close()


# ---------------------------------------------------------------------------- ours: sustained


@dataclass(frozen=True)
class Sustained:
    events: int
    batches: int
    tx_per_s: float
    startup_s: float  # run_stream called -> first batch started (Spark, Feast repo, query start)
    drain_s: float  # first batch started -> last batch written
    phases: dict[str, float]  # seconds per phase, summed over batches
    timeline: list[dict]  # per batch: written (s after the first batch started), events, duration


def ours_sustained(settings: Settings, expected: int) -> Sustained:
    from streaming.runner import run_stream

    called = time.time()
    run_stream(settings, until_idle_s=1.0)
    batches = [b for b in read_progress(StreamPaths.of(settings).progress) if b["valid"]]
    valid = sum(b["valid"] for b in batches)
    if valid != expected:
        raise RuntimeError(f"our job accepted {valid:,} events, expected {expected:,}")
    drain = batches[-1]["written_at"] - batches[0]["started"]
    phases: dict[str, float] = {}
    for batch in batches:
        for name, seconds in batch["phases"].items():
            phases[name] = phases.get(name, 0.0) + seconds
    timeline = [{"t_s": b["written_at"] - batches[0]["started"], "events": b["valid"], "duration_s": b["duration_s"]}
                for b in batches]
    return Sustained(events=valid, batches=len(batches), tx_per_s=valid / drain,
                     startup_s=batches[0]["started"] - called, drain_s=drain, phases=phases, timeline=timeline)


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


# --------------------------------------------------------------------------- ours: freshness


@dataclass(frozen=True)
class Freshness:
    batches: int
    events: int
    sent_per_s: float
    p50_s: float
    p99_s: float
    p99_method: str
    max_batch_s: float  # the slowest batch's duration
    catch_up_s: float  # last event sent -> last batch written
    timeline: list[dict]  # per batch: written (s after the first), events, duration, freshness p50 and p99


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for `activity stream run` with exactly these settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")} | settings_environment(settings)


def live_encode(chunk: pa.Table) -> list[bytes]:
    """Encode with event time = now (called just before the chunk is sent)."""
    now_ms = np.full(chunk.num_rows, time.time_ns() // 1_000_000, dtype=np.int64)
    index = chunk.schema.get_field_index("event_time")
    live = chunk.set_column(index, "event_time", pa.array(now_ms, type=pa.timestamp("ms", tz="UTC")))
    return encode_simulated(live)


def weighted_percentile(values: list[float], weights: list[int], q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights, dtype=float)[order])
    position = int(np.searchsorted(cumulative, q / 100 * cumulative[-1]))
    return float(np.asarray(values)[order][min(position, len(order) - 1)])


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout_s: float, what: str,
             stream_log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"the stream job exited ({process.returncode}) before {what}:\n"
                               + "\n".join(stream_log.read_text().splitlines()[-15:]))
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the runner stops its query on SIGTERM
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    with contextlib.suppress(ProcessLookupError):  # the JVM pyspark started in the job's process group
        os.killpg(process.pid, signal.SIGKILL)


def steady_freshness(settings: Settings, population: Population, rate: int, seconds: float,
                     warmup_s: float) -> Freshness:
    """Our job in its own process; a first batch; ``warmup_s`` of live events at ``rate`` (not
    measured: Spark's and the Python workers' warm-up); then ``seconds`` of them, measured."""
    chunk = max(1, rate // 10)  # ~100 ms of events per send
    total = int(rate * seconds)
    warm_total = int(rate * warmup_s)
    needed = chunk + warm_total + total
    days = math.ceil(needed / max(1.0, population.expected_events() / population.days)) + 2
    live = pa.concat_tables(simulate(population, 0, days)).slice(0, needed)
    if live.num_rows < needed:
        raise RuntimeError(f"the population yields only {live.num_rows:,} live events")
    warmup, warm_traffic, steady = live.slice(0, chunk), live.slice(chunk, warm_total), live.slice(chunk + warm_total)
    progress = StreamPaths.of(settings).progress
    stream_log = settings.home / "stream.log"
    process = subprocess.Popen([sys.executable, "-m", "activity", "stream", "run"], env=cli_env(settings),
                               stdout=stream_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        publish_tables(settings.kafka, [warmup], live_encode, chunk_rows=chunk)
        wait_for(lambda: any(b["valid"] for b in read_progress(progress)), process, 300, "a warm-up batch",
                 stream_log)
        log(f"steady: first batch done; {warmup_s:.0f} s of warm-up traffic at {rate:,}/s")
        if warm_total:
            publish_tables(settings.kafka, [warm_traffic], live_encode, Pace(rate=rate), chunk_rows=chunk)
        warm_batch = max(b["batch_id"] for b in read_progress(progress))
        log(f"steady: warm-up done (through batch {warm_batch}); sending {total:,} events at {rate:,}/s")
        report = publish_tables(settings.kafka, [steady], live_encode, Pace(rate=rate), chunk_rows=chunk)
        sent_at = time.time()
        if report.delivered != total:
            raise RuntimeError(f"steady producer lost {total - report.delivered} events")

        def window() -> list[dict]:
            return [b for b in read_progress(progress) if b["batch_id"] > warm_batch and b["valid"]]

        wait_for(lambda: sum(b["valid"] for b in window()) >= total, process, 180, "the steady events",
                 stream_log)
    finally:
        stop_process(process)
        gc.collect()  # close the publishers' producers while the broker is still up
    batches = window()
    for b in batches:
        log(f"steady batch {b['batch_id']}: {b['valid']:,} events, {b['customers']:,} customers, "
            f"{b['duration_s']:.2f} s, freshness p50 {b['freshness_p50_s']:.2f} s p99 {b['freshness_p99_s']:.2f} s, "
            f"phases {b['phases']}")
    sizes = [b["valid"] for b in batches]
    p99s = [b["freshness_p99_s"] for b in batches]
    many = len(batches) >= 20
    return Freshness(
        batches=len(batches), events=sum(sizes), sent_per_s=report.rate,
        p50_s=weighted_percentile([b["freshness_p50_s"] for b in batches], sizes, 50),
        p99_s=weighted_percentile(p99s, sizes, 99) if many else max(p99s),
        p99_method=("99th percentile over batches of the per-batch p99, weighted by batch size" if many
                    else "max over batches of the per-batch p99 (fewer than 20 batches)"),
        max_batch_s=max(b["duration_s"] for b in batches),
        catch_up_s=batches[-1]["written_at"] - sent_at,
        timeline=[{"t_s": b["written_at"] - batches[0]["written_at"], "events": b["valid"],
                   "duration_s": b["duration_s"], "freshness_p50_s": b["freshness_p50_s"],
                   "freshness_p99_s": b["freshness_p99_s"]} for b in batches],
    )


# ------------------------------------------------------------------------------ driver memory


@dataclass
class DriverMemory:
    customers: int
    events: int
    peak_rss_mb: float  # the stream's driver process (Python), sampled every 0.2 s while it drains
    drain_s: float


def driver_memory(stack: Settings, root: Path, source: Settings, customers: int, days: int,
                  timeout_s: float = 1_800.0) -> DriverMemory:
    """``activity stream run --until-idle`` in its own process over ``customers`` x ``days`` of events.

    The driver's Python process is where the job keeps each customer's history today; in local
    mode Spark's driver JVM also hosts the executors (their state stores), so it is not counted.
    """
    sim = load_settings().simulation
    topic = f"bench-memory-{customers}-{uuid.uuid4().hex[:6]}"
    settings = job_settings(stack, root / f"memory-{customers}", topic, trigger_interval_s=0.0,
                            max_offsets_per_trigger=source.streaming.max_offsets_per_trigger)
    share_jars(source, settings)
    events = preload(settings.kafka, make_population(customers, sim.start, days, sim.seed, sim.mean_daily_rate))
    log(f"driver memory: {customers:,} customers, {events:,} events")
    stream_log = settings.home / "stream.log"
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "activity", "stream", "run", "--until-idle", "2"],
                               env=cli_env(settings), stdout=stream_log.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    driver = psutil.Process(process.pid)
    peak = 0
    try:
        while process.poll() is None:
            if time.time() - started > timeout_s:
                raise RuntimeError(f"the stream did not drain {events:,} events in {timeout_s:.0f} s ({stream_log})")
            with contextlib.suppress(psutil.NoSuchProcess):
                peak = max(peak, driver.memory_info().rss)
            time.sleep(0.2)
    finally:
        stop_process(process)
    drained = sum(b["valid"] for b in read_progress(StreamPaths.of(settings).progress))
    if process.returncode != 0 or drained < events:
        raise RuntimeError(f"the stream exited {process.returncode} with {drained:,} of {events:,} events "
                           f"written: {stream_log}")
    return DriverMemory(customers, events, peak / 2**20, time.time() - started)


# ---------------------------------------------------------------------------- peer: Feast's own


@dataclass
class PeerResult:
    tx_per_s: float | None = None
    events: int = 0
    batches: int = 0
    startup_s: float | None = None
    drain_s: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


PEER_FEATURES = ("amount", "channel", "merchant_category")


def peer_udf(df):  # a pyspark DataFrame in and out
    """The StreamFeatureView's transformation: the latest amount, channel and category per customer."""
    from pyspark.sql import functions as F

    return df.select("customer_id", "amount", "channel", "merchant_category",
                     F.col("event_time").alias("event_timestamp"))


def peer_trim(rows):  # pandas in and out
    """Keep the view's columns (Feast adds 'created', and pandas' nth() + reset_index an 'index')."""
    return rows[["customer_id", *PEER_FEATURES, "event_timestamp"]].reset_index(drop=True)


def peer_ingest(settings: Settings, expected: int, max_offsets: int, timeout_s: float) -> PeerResult:
    """Feast's SparkKafkaProcessor over the preloaded topic into a SQLite online store (PushMode.ONLINE)."""
    result = PeerResult()
    if PEER_CHECKPOINT.exists():
        result.notes.append(f"removed a stale {PEER_CHECKPOINT} (Feast's hard-coded checkpoint)")
        shutil.rmtree(PEER_CHECKPOINT)
    try:
        _run_peer(settings, expected, max_offsets, timeout_s, result)
    except Exception as exc:  # the benchmark reports the peer's failure and goes on
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
        log("peer failed:\n" + traceback.format_exc())
    finally:
        stop_spark()
        shutil.rmtree(PEER_CHECKPOINT, ignore_errors=True)
    return result


def _run_peer(settings: Settings, expected: int, max_offsets: int, timeout_s: float, result: PeerResult) -> None:
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, Field, FileSource, KafkaSource, ValueType
    from feast.data_format import JsonFormat
    from feast.data_source import PushMode
    from feast.infra.contrib.spark_kafka_processor import SparkKafkaProcessor, SparkProcessorConfig
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Float64, String

    from infra.spark import spark_session

    called = time.time()
    spark = spark_session(settings, "feast-peer")  # before the StreamFeatureView: it calls getOrCreate()
    repo = settings.home / "feast_peer"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: ingest_peer\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n")
    pq.write_table(pa.schema([("customer_id", pa.string()), ("amount", pa.float64()), ("channel", pa.string()),
                              ("merchant_category", pa.string()),
                              ("event_timestamp", pa.timestamp("us", tz="UTC"))]).empty_table(),
                   repo / "data" / "latest.parquet")
    # Our contract's JSON schema with event_time parsed as a timestamp (from_json reads ISO 8601 with Z).
    schema_ddl = ", ".join(f"{f.name} {'TIMESTAMP' if f.name == 'event_time' else f.spark_type}" for f in FIELDS)
    kafka = settings.kafka
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = KafkaSource(
        name="transactions_kafka", kafka_bootstrap_servers=kafka.bootstrap, topic=kafka.topics.transactions,
        timestamp_field="event_time", message_format=JsonFormat(schema_json=schema_ddl),
        batch_source=FileSource(name="latest_batch", path="data/latest.parquet", timestamp_field="event_timestamp"),
    )
    view = StreamFeatureView(
        name="customer_latest", entities=[customer], ttl=timedelta(0), source=source, mode="spark",
        udf=cast(FunctionType, peer_udf), udf_string="", timestamp_field="event_timestamp",
        schema=[Field(name="amount", dtype=Float64), Field(name="channel", dtype=String),
                Field(name="merchant_category", dtype=String)],
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([customer, source, view])
    config = SparkProcessorConfig(mode="spark", source="kafka", spark_session=spark, processing_time="0 seconds",
                                  query_timeout=1)
    processor = SparkKafkaProcessor(
        fs=store, sfv=view, config=config,
        preprocess_fn=peer_trim,  # type: ignore[arg-type]  # Feast says MethodType, calls any callable
        stream_source_options={"startingOffsets": "earliest", "maxOffsetsPerTrigger": str(max_offsets)})
    query = processor.ingest_stream_feature_view(to=PushMode.ONLINE)  # returns after query_timeout
    try:
        seen = _drain(query, expected, timeout_s)
    finally:
        query.stop()
    batches = [seen[k] for k in sorted(seen) if seen[k]["numInputRows"]]
    first = _progress_time(batches[0])
    last = _progress_time(batches[-1]) + batches[-1]["durationMs"]["triggerExecution"] / 1000
    result.events = sum(b["numInputRows"] for b in batches)
    result.batches = len(batches)
    result.startup_s = first - called
    result.drain_s = last - first
    result.tx_per_s = result.events / result.drain_s
    sample = store.get_online_features([f"customer_latest:{name}" for name in PEER_FEATURES],
                                       [{"customer_id": "c0000000"}]).to_dict()
    result.notes.append(f"online row for c0000000: {({k: v[0] for k, v in sample.items()})}")


def _drain(query, expected: int, timeout_s: float) -> dict[int, dict]:  # a StreamingQuery
    """Poll the query's progress until it has read ``expected`` rows; progress by batch id."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while sum(p["numInputRows"] for p in seen.values()) < expected:
        if not query.isActive:
            raise RuntimeError(f"the peer's query stopped: {query.exception()}")
        if time.monotonic() > deadline:
            consumed = sum(p["numInputRows"] for p in seen.values())
            raise RuntimeError(f"did not drain the topic in {timeout_s:.0f}s ({consumed:,} of {expected:,} events)")
        for progress in query.recentProgress:
            seen[progress["batchId"]] = progress
        time.sleep(0.2)
    return seen


def _progress_time(progress: dict) -> float:
    return datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------ main


def ours_under(profile: str, stack: Settings, root: Path, ours: Settings, preloaded: str, events: int,
               live_population: Population, args: argparse.Namespace) -> tuple[Sustained, Freshness]:
    """Our job drains the preloaded topic, then runs at the steady rate, on ``profile``'s stores."""
    with contextlib.ExitStack() as servers:
        drain = ours
        if profile == "cluster":
            drain = job_settings(stack, root / "ours-cluster", preloaded, trigger_interval_s=0.0,
                                 max_offsets_per_trigger=args.max_offsets)
            share_jars(ours, drain)
            drain = servers.enter_context(cluster_stores(drain, root / "servers", spark_master=True))
        log(f"ours ({profile}): draining {events:,} events")
        sustained = ours_sustained(drain, events)
        stop_spark()
        log(f"ours ({profile}): freshness at a steady rate")
        steady = job_settings(stack, root / f"steady-{profile}", f"bench-live-{uuid.uuid4().hex[:6]}")
        share_jars(ours, steady)
        steady = steady.model_copy(update={"feature_store": drain.feature_store, "spark": drain.spark})
        fresh = steady_freshness(steady, live_population, args.steady_rate, args.steady_seconds, args.warmup_seconds)
        return sustained, fresh


def caught_up(catch_up_s: float) -> str:
    """The last batch's write against the last send: after it, or already before the producer's flush returned
    (the stream had read the last events while the producer was still waiting for its acknowledgements)."""
    if catch_up_s >= 0:
        return f"last batch written {catch_up_s:.2f} s after the last send"
    return f"last batch written {-catch_up_s:.2f} s before the producer's last send returned (caught up)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--steady-rate", type=int, default=10_000)
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--warmup-seconds", type=float, default=15.0,
                        help="live traffic at the steady rate before the measured window")
    parser.add_argument("--max-offsets", type=int, default=1_000_000, help="streaming.max_offsets_per_trigger")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--peer-timeout", type=float, default=300.0, help="seconds for the peer to drain the topic")
    parser.add_argument("--memory-customers", default=None,
                        help="small,large: populations whose stream driver's peak RSS is compared "
                             "(default 100000,1000000; 20000,200000 with --quick)")
    parser.add_argument("--memory-days", type=int, default=3, help="days of events of each memory population")
    parser.add_argument("--quick", action="store_true",
                        help="20k customers, 200k events, 20 steady seconds; memory at 20k and 200k customers")
    parser.add_argument("--samples", type=Path, help="Also write the per-batch series behind the figures here (JSON).")
    parser.add_argument("--profiles", default="embedded",
                        help="embedded, cluster or embedded,cluster: our job on the embedded stores (SQLite online "
                             "store, Spark local[*]) and/or the cluster profile's (Redis online store, Spark on a "
                             "standalone master + worker; throwaway servers on loopback), side by side")
    args = parser.parse_args()
    if args.quick:
        args.customers, args.events, args.steady_seconds, args.warmup_seconds = 20_000, 200_000, 20.0, 5.0
    if args.memory_customers is None:  # --quick shrinks the populations only when none were given
        args.memory_customers = "20000,200000" if args.quick else "100000,1000000"
    try:
        small_customers, large_customers = (int(n) for n in args.memory_customers.split(","))
    except ValueError:
        parser.error(f"--memory-customers takes two populations, small,large: not {args.memory_customers!r}")
    try:
        profiles = profiles_argument(args.profiles)
    except ValueError as exc:
        parser.error(str(exc))

    sim = load_settings().simulation
    days = max(1, round(args.events / (args.customers * sim.mean_daily_rate)))
    population = make_population(args.customers, sim.start, days, sim.seed, sim.mean_daily_rate)
    live_population = make_population(args.customers, sim.start, 365, sim.seed, sim.mean_daily_rate)
    preloaded = f"bench-ingest-{uuid.uuid4().hex[:6]}"

    with bench_stack(args.partitions) as stack, tempfile.TemporaryDirectory(prefix="activity-ingest-") as tmp:
        root = Path(tmp)
        ours = job_settings(stack, root / "ours", preloaded, trigger_interval_s=0.0,
                            max_offsets_per_trigger=args.max_offsets)
        log(f"preloading {preloaded}: {args.customers:,} customers x {days} days")
        events = preload(ours.kafka, population)
        if topic_size(ours.kafka, preloaded) != events:
            raise RuntimeError(f"{preloaded} does not hold the {events:,} events published")

        log("reference: bare consumer")
        reference = reference_read(ours.kafka, preloaded, events)

        measured: dict[str, tuple[Sustained, Freshness]] = {}
        for profile in profiles:
            measured[profile] = ours_under(profile, stack, root, ours, preloaded, events, live_population, args)
            if profile == profiles[0]:
                log("peer: Feast SparkKafkaProcessor")
                peer_settings = job_settings(stack, root / "peer", preloaded)
                share_jars(ours, peer_settings)
                peer = peer_ingest(peer_settings, events, args.max_offsets, args.peer_timeout)
        sustained, fresh = measured[profiles[0]]
        memory = [driver_memory(stack, root, ours, n, args.memory_days) for n in (small_customers, large_customers)]

    ratio = sustained.tx_per_s / reference
    vs_peer = None if peer.tx_per_s is None else sustained.tx_per_s / peer.tx_per_s
    load = os.getloadavg()
    print(f"machine: {machine()}; load average {load[2]:.1f} (15 min, at the end); "
          f"broker: embedded Kafka {stack.kafka.broker_version}, {args.partitions} partitions; "
          f"Spark {stack.spark.master}, driver {stack.spark.driver_memory}")
    print(f"population: {args.customers:,} customers; preloaded {events:,} events "
          f"({days} days x {sim.mean_daily_rate} tx/customer/day); max_offsets_per_trigger {args.max_offsets:,}")
    print()
    print(f"{'Kafka -> Feast online':<44}{'events':>11}{'batches':>9}{'start-up s':>12}{'drain s':>10}{'tx/s':>12}")
    for profile, (drained, _) in measured.items():
        print(f"{f'ours (streaming job, trigger 0, {profile})':<44}{drained.events:>11,}{drained.batches:>9}"
              f"{drained.startup_s:>12.1f}{drained.drain_s:>10.1f}{drained.tx_per_s:>12,.0f}")
    if peer.tx_per_s is not None:
        print(f"{'peer (Feast SparkKafkaProcessor)':<44}{peer.events:>11,}{peer.batches:>9}"
              f"{peer.startup_s:>12.1f}{peer.drain_s:>10.1f}{peer.tx_per_s:>12,.0f}")
    else:
        print(f"{'peer (Feast SparkKafkaProcessor)':<44}{'failed: ' + str(peer.error):>54}")
    print(f"{'reference (bare confluent-kafka consumer)':<44}{events:>11,}{'':>9}{'':>12}"
          f"{events / reference:>10.1f}{reference:>12,.0f}")
    print("ours, seconds per phase (summed over batches): "
          + ", ".join(f"{name} {seconds:.1f}" for name, seconds in sustained.phases.items()))
    print("start-up (not in drain s): ours launches Spark, applies its Feast repo and runs its batch path once on "
          "made-up records (Spark's Python workers start); the peer reuses this process's JVM")
    for note in peer.notes:
        print(f"peer: {note}")
    print()
    for profile, (_, steady) in measured.items():
        print(f"freshness ({profile}) at {args.steady_rate:,} tx/s for {args.steady_seconds:.0f} s, after "
              f"{args.warmup_seconds:.0f} s of warm-up traffic at the same rate (trigger 1 s; "
              f"sent {steady.sent_per_s:,.0f}/s): {steady.events:,} events in {steady.batches} batches; "
              f"p50 {steady.p50_s:.2f} s, p99 {steady.p99_s:.2f} s; slowest batch {steady.max_batch_s:.2f} s; "
              f"{caught_up(steady.catch_up_s)}")
        print(f"  p50: median over batches of the per-batch p50, weighted by batch size; p99: {steady.p99_method}")
    for used in memory:
        print(f"stream driver (Python process), {used.customers:,} customers x {args.memory_days} days "
              f"({used.events:,} events, drained in {used.drain_s:.0f} s): peak RSS {used.peak_rss_mb:,.0f} MB")
    memory_ratio = memory[1].peak_rss_mb / memory[0].peak_rss_mb
    print()
    checks = [
        ("sustained tx/s", f"{sustained.tx_per_s:,.0f}", ">= 100,000", sustained.tx_per_s >= 100_000),
        (f"freshness p99 at {args.steady_rate:,} tx/s", f"{fresh.p99_s:.2f} s", "<= 3 s", fresh.p99_s <= 3),
        ("ours / bare consumer", f"{ratio:.3f}", ">= 0.5", ratio >= 0.5),
        ("ours / Feast peer", "n/a" if vs_peer is None else f"{vs_peer:.2f}", "> 1",
         vs_peer is not None and vs_peer > 1),
        (f"driver RSS {large_customers:,} / {small_customers:,} customers", f"{memory_ratio:.2f}", "<= 1.2",
         memory_ratio <= 1.2),
    ]
    print(f"{'target':<36}{'measured':>14}{'target':>14}{'':>4}")
    for name, figure, target, ok in checks:
        print(f"{name:<36}{figure:>14}{target:>14}    {'met' if ok else 'MISSED'}")
    if args.samples:
        args.samples.write_text(json.dumps({
            "sustained": {"tx_per_s": sustained.tx_per_s, "events": sustained.events, "batches": sustained.timeline},
            "freshness": {"steady_rate": args.steady_rate, "sent_per_s": fresh.sent_per_s, "p50_s": fresh.p50_s,
                          "p99_s": fresh.p99_s, "p99_method": fresh.p99_method, "batches": fresh.timeline},
            "reference_read_per_s": reference, "peer_tx_per_s": peer.tx_per_s, "peer_error": peer.error,
        }))
    def figures(drained: Sustained, steady: Freshness) -> dict[str, float | None]:
        return {
            "tx_per_s": round(drained.tx_per_s), "freshness_p50_s": round(steady.p50_s, 3),
            "freshness_p99_s": round(steady.p99_s, 3), "reference_read_per_s": round(reference),
            "ratio": round(drained.tx_per_s / reference, 3),
            "peer_tx_per_s": None if peer.tx_per_s is None else round(peer.tx_per_s),
            "ratio_vs_peer": None if peer.tx_per_s is None else round(drained.tx_per_s / peer.tx_per_s, 2),
        }

    # the keys for the first profile measured; the other profile's figures beside them
    print_result({**figures(sustained, fresh),
                  "driver_rss_mb_small": round(memory[0].peak_rss_mb),
                  "driver_rss_mb_large": round(memory[1].peak_rss_mb),
                  "customers_small": small_customers, "customers_large": large_customers, "profile": profiles[0],
                  **{profile: figures(*measured[profile]) for profile in profiles[1:]}})


if __name__ == "__main__":
    main()
