"""What every benchmark shares: an isolated embedded stack and the closing JSON line."""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from activity_settings import KafkaSettings, Settings, load_settings


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            kafka=KafkaSettings(port=_free_port(), controller_port=_free_port(), partitions=partitions,
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


def print_result(figures: dict[str, float | int | str | None]) -> None:
    """The benchmark's last line: one JSON object with the figures its issue names."""
    print(json.dumps(figures, sort_keys=False))
