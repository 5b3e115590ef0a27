"""Shared fixtures. Integration fixtures start real services on free loopback ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from activity_settings import KafkaSettings, Settings, load_settings, settings_environment


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_alive(pid: int) -> bool:
    """Seen from outside: the pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stack_settings(data_dir: Path) -> Settings:
    """Settings for an isolated stack: its own data directory and ports."""
    return load_settings(
        data_dir=data_dir,
        kafka=KafkaSettings(port=free_port(), controller_port=free_port(), partitions=4),
        spark={"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 4},
        # The embedded Triton's ports too: `./run demo` leaves its stack running for the next command.
        serving={"port": free_port(), "triton_port": free_port(), "triton_metrics_port": free_port()},
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a CLI subprocess use exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")}
    return env | settings_environment(settings)


@pytest.fixture(scope="session")
def kafka_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real single-node Kafka broker for the whole session, stopped at the end."""
    from infra.stack import stack_down, stack_up

    settings = stack_settings(tmp_path_factory.mktemp("stack"))
    stack_up(settings)
    try:
        yield settings
    finally:
        stack_down(settings)


@pytest.fixture(scope="session")
def spark(kafka_stack: Settings):
    """A local Spark session with the Kafka connector, shared by the session's tests."""
    from infra.spark import spark_session

    session = spark_session(kafka_stack, "activity-tests")
    yield session
    session.stop()
