"""librdkafka's own log, through the platform's logging instead of straight to stderr.

Without a ``logger`` a confluent-kafka client writes every log line of librdkafka to stderr itself,
from its own threads: a broker that refuses connections fills stderr with a ``%3|...|FAIL|`` line per
reconnect (one every 50-100 ms), around and after whatever the platform says. With the ``logger`` and
``log_level`` properties from ``client_logging`` the lines become records of the ``activity.kafka.client``
logger at the level the user chose (setting ``kafka.client_log_level``), served on the thread that polls
the client, and a line that only repeats (the same text but for numbers) is passed once a minute.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

CLIENT_LOGGER = "activity.kafka.client"

# librdkafka's ``log_level`` is a syslog severity: it emits a line at this severity or more urgent.
SYSLOG_SEVERITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

_NUMBERS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Pass a record once per ``window_s`` for each text (its numbers ignored: ports, times, counts)."""

    def __init__(self, window_s: float = 60.0, capacity: int = 1_000) -> None:
        super().__init__()
        self.window_s = window_s
        self.capacity = capacity
        self._last_passed: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = _NUMBERS.sub("#", record.getMessage())
        now = time.monotonic()
        last = self._last_passed.get(key)
        if last is not None and now - last < self.window_s:
            return False
        if len(self._last_passed) >= self.capacity:
            self._last_passed.clear()
        self._last_passed[key] = now
        return True


def client_logger() -> logging.Logger:
    """The logger every Kafka client of the platform logs to, with its ``RepeatFilter`` (added once)."""
    logger = logging.getLogger(CLIENT_LOGGER)
    if not any(isinstance(existing, RepeatFilter) for existing in logger.filters):
        logger.addFilter(RepeatFilter())
    return logger


def client_logging(level: str) -> dict[str, Any]:
    """The librdkafka properties that send its log at ``level`` (a logging level name) to ``client_logger``."""
    return {"logger": client_logger(), "log_level": SYSLOG_SEVERITY[level]}
