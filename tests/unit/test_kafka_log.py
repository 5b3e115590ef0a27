"""librdkafka's log reaches the platform's logging at the chosen level, a repeated line once."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from activity_settings import KafkaSettings
from infra.kafka_log import CLIENT_LOGGER, RepeatFilter
from tests.conftest import free_port

# A producer polled for 1.5 s against a port where nothing listens: librdkafka fails to connect every
# 50-100 ms. The child prints what reached the platform's logger; stderr is librdkafka's own output.
_CHILD = textwrap.dedent("""
    import logging, sys, time
    from confluent_kafka import Producer
    from activity_settings import KafkaSettings
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("activity.kafka.client").addHandler(handler)
    kafka = KafkaSettings(bootstrap_servers=sys.argv[1], client_log_level=sys.argv[2])
    producer = Producer(kafka.client_config())
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        producer.poll(0.1)
    for record in records:
        print(record.levelname, record.getMessage())
""")


def _child(level: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CHILD, f"127.0.0.1:{free_port()}", level],
                          capture_output=True, text=True, timeout=60)


def test_a_refused_broker_is_one_record_of_the_platform_logger_and_nothing_on_stderr() -> None:
    result = _child("ERROR")
    assert result.returncode == 0, result.stderr
    assert "rdkafka" not in result.stderr and "%3|" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines  # ten or more connection failures, one line
    assert lines[0].startswith("ERROR FAIL") and "Connection refused" in lines[0]


def test_a_level_above_error_keeps_librdkafka_quiet() -> None:
    result = _child("CRITICAL")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "rdkafka" not in result.stderr


def test_the_level_is_a_setting_and_every_client_config_carries_the_logger() -> None:
    config = KafkaSettings(client_log_level="DEBUG").client_config()
    assert config["logger"].name == CLIENT_LOGGER and config["log_level"] == 7
    assert KafkaSettings().client_config()["log_level"] == 3


def test_the_repeat_filter_ignores_numbers_and_passes_a_line_again_after_its_window() -> None:
    repeat = RepeatFilter(window_s=0.0)
    assert repeat.filter(_record("Connect to 127.0.0.1:1 failed (after 0ms)"))
    assert repeat.filter(_record("Connect to 127.0.0.1:2 failed (after 3ms)"))  # window over at once
    once = RepeatFilter(window_s=60.0)
    assert once.filter(_record("Connect to 127.0.0.1:1 failed (after 0ms)"))
    assert not once.filter(_record("Connect to 127.0.0.1:1 failed (after 12ms)"))
    assert once.filter(_record("1/1 brokers are down"))


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord(CLIENT_LOGGER, logging.ERROR, __file__, 1, message, None, None)
