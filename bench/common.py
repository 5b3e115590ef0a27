"""What every benchmark shares: an isolated embedded stack and the closing JSON line."""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from activity_settings import KafkaSettings, Settings, load_settings
from infra.services import free_port


@contextmanager
def bench_stack(partitions: int = 4) -> Iterator[Settings]:
    """Start a throwaway embedded broker (own data directory and ports), stop it afterwards.

    With ``ACTIVITY_KAFKA__BOOTSTRAP_SERVERS`` set, that cluster is used instead.
    """
    from infra.stack import stack_down, stack_up

    base = load_settings()
    if not base.kafka.embedded:
        yield base
        return
    with tempfile.TemporaryDirectory(prefix="activity-bench-") as tmp:
        settings = load_settings(
            data_dir=Path(tmp),
            kafka=KafkaSettings(port=free_port(), controller_port=free_port(), partitions=partitions,
                                heap="2g"),
        )
        stack_up(settings)
        try:
            yield settings
        finally:
            stack_down(settings)


def create_topic(kafka: KafkaSettings, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(name, partitions, kafka.replication_factor)])[name].result(30)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def log(message: str) -> None:
    """A progress line on stderr (the figures go to stdout)."""
    import sys
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def print_result(figures: dict[str, object]) -> None:
    """The benchmark's last line: one JSON object with the figures its issue names."""
    print(json.dumps(figures, sort_keys=False))


PROFILES = ("embedded", "cluster")


def profiles_argument(value: str) -> list[str]:
    """``--profiles embedded,cluster`` -> the profiles to measure, in that order."""
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PROFILES]
    if not chosen or unknown:
        raise ValueError(f"--profiles takes a comma-separated list of {', '.join(PROFILES)}; got {value!r}")
    return chosen


@contextmanager
def cluster_stores(settings: Settings, root: Path, *, postgres: bool = False,
                   spark_master: bool = False) -> Iterator[Settings]:
    """``settings`` on the cluster profile's servers (``infra/profiles/cluster.yaml``), run here as throwaway
    servers on loopback (``infra/services.py``): Feast's online store in Redis; with ``postgres``, MLflow's
    tracking and registry in PostgreSQL; with ``spark_master``, Spark on a standalone master and worker
    (2 cores). Kafka stays the stack's broker: the cluster profile only points at another one."""
    import shutil
    from contextlib import ExitStack

    from infra.services import postgres_server, redis_server, spark_standalone

    with ExitStack() as servers:
        redis = servers.enter_context(redis_server(root / "redis", free_port()))
        update: dict[str, object] = {"feature_store": settings.feature_store.model_copy(update={
            "online_store": "redis", "redis_connection_string": redis.connection_string})}
        if postgres:
            # PostgreSQL runs as the postgres user when we are root: a directory it may enter
            pg_dir = Path(tempfile.mkdtemp(prefix="activity-bench-pg-"))
            servers.callback(shutil.rmtree, pg_dir, ignore_errors=True)
            server = servers.enter_context(postgres_server(pg_dir, free_port()))
            update["mlflow"] = settings.mlflow.model_copy(update={
                "tracking_uri": server.url("mlflow"), "artifact_location": (root / "artifacts").as_uri()})
        if spark_master:
            cluster = servers.enter_context(spark_standalone(root / "spark", free_port(), cores=2, memory="6g"))
            update["spark"] = settings.spark.model_copy(update={"master": cluster.master_url})
        log("cluster profile: " + ", ".join(
            [f"Feast online store redis://{redis.connection_string}"]
            + (["MLflow on PostgreSQL"] if postgres else [])
            + ([f"Spark master {update['spark'].master}"] if spark_master else [])))  # type: ignore[attr-defined]
        yield settings.model_copy(update=update)
