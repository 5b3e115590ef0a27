"""The embedded broker's lifecycle, through the same functions and CLI a user runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.kafka_broker import BrokerPaths, running_broker
from infra.stack import stack_down, stack_status, stack_up
from infra.topics import topic_offsets
from streaming.publish import publish_simulation
from streaming.simulator import make_population
from tests.conftest import process_alive, settings_env, stack_settings

pytestmark = pytest.mark.integration


def test_up_down_up_reuses_data_and_leaves_nothing_behind(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    started = time.monotonic()
    statuses = stack_up(settings)
    assert time.monotonic() - started < 60
    assert statuses[0].running
    topics = settings.kafka.topics
    for name in (topics.transactions, topics.dlq, topics.predictions):
        assert len(topic_offsets(settings.kafka, name)) == settings.kafka.partitions

    population = make_population(200, settings.simulation.start, 5, seed=1)
    sent = publish_simulation(settings.kafka, population).delivered
    assert sent > 0

    paths = BrokerPaths.under(settings.home, settings.kafka.broker_version)
    pid = running_broker(paths).pid
    assert stack_down(settings) == [f"kafka broker (pid {pid})"]
    assert not process_alive(pid)
    assert not stack_status(settings)[0].running
    assert stack_down(settings) == []  # nothing left to stop

    stack_up(settings)  # second up: same data, nothing reformatted
    try:
        stored = sum(high for _, high in topic_offsets(settings.kafka, topics.transactions).values())
        assert stored == sent
    finally:
        stack_down(settings)


def test_cli_stack_commands_report_state_and_exit_codes(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    env = settings_env(settings)
    cli = [sys.executable, "-m", "activity"]

    down = subprocess.run([*cli, "stack", "status"], env=env, capture_output=True, text=True)
    assert down.returncode == 3 and "down" in down.stdout

    up = subprocess.run([*cli, "stack", "up"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert "running" in up.stdout
        status = subprocess.run([*cli, "stack", "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stop = subprocess.run([*cli, "stack", "down"], env=env, capture_output=True, text=True)
    assert stop.returncode == 0 and "kafka broker (pid" in stop.stdout


def test_port_taken_is_a_clear_error_naming_the_setting(kafka_stack, tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path))
    env["ACTIVITY_KAFKA__PORT"] = str(kafka_stack.kafka.port)  # already used by the session broker
    result = subprocess.run([sys.executable, "-m", "activity", "stack", "up"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "kafka.port" in result.stderr and "ACTIVITY_KAFKA__PORT" in result.stderr


def test_invalid_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path))
    env["ACTIVITY_KAFKA__PARTITIONS"] = "-1"
    result = subprocess.run([sys.executable, "-m", "activity", "stack", "up"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "kafka.partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_stream_without_a_broker_is_a_clear_error(tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path))  # nothing listens on these ports
    result = subprocess.run([sys.executable, "-m", "activity", "stream", "run"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "does not answer" in result.stderr and "activity stack up" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one line: no librdkafka log, no wrapping at the terminal's width
    assert "rdkafka" not in result.stderr and "%3|" not in result.stderr
    assert "kafka.bootstrap_servers" in result.stderr and "ACTIVITY_KAFKA__BOOTSTRAP_SERVERS" in result.stderr
