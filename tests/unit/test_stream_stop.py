"""A stop of the stream: the gate that makes it fall between batches, and the one-line batch errors."""

from __future__ import annotations

import re
import threading
import time
import traceback

import pytest

from streaming.job import BatchFailed, BatchGate, StreamStopping, _not_a_stop, one_line

# Spark 4.2's test of a foreachBatch error for an interruption by stop (StreamExecution.PROXY_ERROR).
SPARK_PROXY_ERROR = re.compile(r"py4j.protocol.Py4JJavaError: An error occurred while calling((.|\r\n|\r|\n)*)"
                               r"(java.lang.InterruptedException|java.io.InterruptedIOException|"
                               r"java.nio.channels.ClosedByInterruptException)")


class Py4JJavaError(Exception):
    """Shaped like py4j's: the call on the first line, then the Java exception and its stack trace."""


Py4JJavaError.__module__ = "py4j.protocol"
JAVA_TRACE = "\n".join(f"\tat org.apache.spark.Frame{i}.call(Frame.scala:{i})" for i in range(400))


def test_a_gate_without_a_batch_in_flight_closes_at_once_and_turns_later_batches_away() -> None:
    gate = BatchGate(release_timeout_s=5)
    assert gate.enter(0)
    gate.leave()
    assert gate.close(timeout_s=0.0)
    gate.release()
    assert not gate.enter(1)
    assert gate.last_batch == 0 and gate.waiting


def test_closing_waits_for_the_batch_in_flight() -> None:
    gate = BatchGate()
    assert gate.enter(3)
    finished = threading.Event()

    def finish_later() -> None:
        time.sleep(0.3)
        finished.set()
        gate.leave()

    threading.Thread(target=finish_later).start()
    assert gate.close(timeout_s=10)
    assert finished.is_set()
    assert gate.last_batch == 3


def test_closing_gives_up_after_its_timeout_while_a_batch_still_runs() -> None:
    gate = BatchGate()
    assert gate.enter(1)
    started = time.monotonic()
    assert not gate.close(timeout_s=0.2)
    assert time.monotonic() - started >= 0.2


def test_a_batch_that_begins_during_a_stop_waits_for_the_release() -> None:
    gate = BatchGate(release_timeout_s=10)
    gate.close(timeout_s=0)
    answers: list[bool] = []
    batch = threading.Thread(target=lambda: answers.append(gate.enter(7)))
    batch.start()
    deadline = time.monotonic() + 5
    while not gate.waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.waiting and batch.is_alive()  # held until the query is stopping
    gate.release()
    batch.join(5)
    assert answers == [False] and gate.last_batch is None


def test_a_py4j_error_is_named_in_one_line() -> None:
    error = Py4JJavaError("An error occurred while calling o5.getResult.\n"
                          f": java.lang.InterruptedException\n{JAVA_TRACE}")
    assert one_line(error) == ("py4j.protocol.Py4JJavaError: An error occurred while calling o5.getResult. "
                               ": java.lang.InterruptedException")
    failed = BatchFailed.of(12, OSError(28, "No space left on device"))
    assert str(failed) == "batch 12: builtins.OSError: [Errno 28] No space left on device"


def traceback_text(error: BaseException) -> str:
    """What Py4J hands to Spark for an error raised by the handler: the formatted traceback."""
    try:
        raise error from None
    except BaseException:
        return traceback.format_exc()


def test_spark_takes_a_turned_away_batch_for_a_stop_and_a_failure_for_a_failure() -> None:
    interrupted = Py4JJavaError("An error occurred while calling z:java.lang.Thread.sleep.\n"
                                f": java.lang.InterruptedException: sleep interrupted\n{JAVA_TRACE}")
    stop = traceback_text(StreamStopping.of(4, interrupted))
    assert len(stop) < 2_000  # short enough for Spark's recursive regex (the full text overflows its stack)
    assert SPARK_PROXY_ERROR.search(stop)
    failure = traceback_text(BatchFailed.of(4, RuntimeError("batch 4 does not follow the stream state's batch 2")))
    assert not SPARK_PROXY_ERROR.search(failure)


def test_py4j_does_not_log_a_stop_as_an_error() -> None:
    import logging

    def record(error: BaseException) -> logging.LogRecord:
        return logging.LogRecord("py4j.clientserver", logging.ERROR, __file__, 1, "There was an exception", (),
                                 (type(error), error, None))

    assert not _not_a_stop(record(StreamStopping("batch 2: stopping")))
    assert _not_a_stop(record(BatchFailed("batch 2: builtins.OSError: disk full")))
    assert _not_a_stop(logging.LogRecord("py4j.clientserver", logging.INFO, __file__, 1, "closing", (), None))


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_error_without_text_is_named_by_its_type(text: str) -> None:
    assert one_line(ValueError(text)) == "builtins.ValueError: "
