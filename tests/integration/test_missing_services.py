"""Each command that needs a server fails within seconds, in one line naming the setting and the fix.

Run as a user runs them: the real CLI in a subprocess, with nothing listening where the settings point
(free loopback ports), and a terminal width that used to break the message in two.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, settings_env, stack_settings

pytestmark = pytest.mark.integration


# What each command group imports before its check; the check is timed apart from these imports, which
# alone take a minute on a loaded 2-core machine (the check itself is timed in tests/unit/test_reachability.py).
_IMPORTS = {"produce": "streaming.producer", "serve": "serving.main", "stream": "streaming.runner",
            "train": "training.pipeline", "topic": "infra.reachability"}


def _seconds(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    return time.monotonic() - started, result


def _one_clear_line(env: dict[str, str], *command: str) -> str:
    env = {**env, "COLUMNS": "97"}
    imports, _ = _seconds([sys.executable, "-c", f"import activity.cli, {_IMPORTS[command[0]]}"], env)
    elapsed, result = _seconds([sys.executable, "-m", "activity", *command], env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "rdkafka" not in result.stderr and "%3|" not in result.stderr and "Traceback" not in result.stderr
    assert elapsed - imports < 20, (elapsed, imports)  # no retry loop or flush timeout before the refusal
    return result.stderr


def test_produce_simulate_without_a_broker(tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path))
    message = _one_clear_line(env, "produce", "simulate", "--customers", "10", "--days", "2")
    assert "does not answer" in message and "`activity stack up`" in message
    assert "kafka.bootstrap_servers" in message and "ACTIVITY_KAFKA__BOOTSTRAP_SERVERS" in message


def test_serve_run_without_a_broker_for_its_prediction_log(tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path))
    message = _one_clear_line(env, "serve", "run", "--port", str(free_port()))
    assert "prediction log" in message and "serving.prediction_log=false" in message
    assert "`activity stack up`" in message and "ACTIVITY_KAFKA__BOOTSTRAP_SERVERS" in message


def test_serve_run_without_its_redis_online_store(tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path)) | {
        "ACTIVITY_SERVING__PREDICTION_LOG": "false", "ACTIVITY_FEATURE_STORE__ONLINE_STORE": "redis",
        "ACTIVITY_FEATURE_STORE__REDIS_CONNECTION_STRING": f"127.0.0.1:{free_port()}"}
    message = _one_clear_line(env, "serve", "run", "--port", str(free_port()))
    assert "Redis" in message and "ACTIVITY_FEATURE_STORE__REDIS_CONNECTION_STRING" in message
    assert "redis-server" in message


@pytest.mark.parametrize("embedded", [True, False])
def test_serve_run_without_its_triton(tmp_path: Path, embedded: bool) -> None:
    port = free_port()
    where = {"ACTIVITY_SERVING__TRITON_PORT": str(port)} if embedded else \
        {"ACTIVITY_SERVING__TRITON_URL": f"http://127.0.0.1:{port}"}
    env = settings_env(stack_settings(tmp_path)) | where | {
        "ACTIVITY_SERVING__PREDICTION_LOG": "false", "ACTIVITY_SERVING__MODEL_SERVER": "triton"}
    message = _one_clear_line(env, "serve", "run", "--port", str(free_port()))
    assert f"Triton Inference Server at 127.0.0.1:{port}" in message and "ACTIVITY_SERVING__TRITON_URL" in message
    assert ("`activity stack up`" in message) == embedded and ("up -d triton" in message) != embedded


def test_stream_run_without_its_redis_online_store(kafka_stack, tmp_path: Path) -> None:
    settings = kafka_stack.model_copy(update={"data_dir": tmp_path})
    env = settings_env(settings) | {"ACTIVITY_FEATURE_STORE__ONLINE_STORE": "redis",
                                    "ACTIVITY_FEATURE_STORE__REDIS_CONNECTION_STRING": f"127.0.0.1:{free_port()}"}
    message = _one_clear_line(env, "stream", "run")
    assert "Redis (the Feast online store)" in message and "feature_store.redis_connection_string" in message


def test_train_run_without_its_mlflow_server(tmp_path: Path) -> None:
    port = free_port()
    env = settings_env(stack_settings(tmp_path)) | {"ACTIVITY_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{port}"}
    message = _one_clear_line(env, "train", "run")
    assert "champion is unchanged" in message and f"MLflow registry at 127.0.0.1:{port}" in message
    assert "ACTIVITY_MLFLOW__TRACKING_URI" in message and "mlflow server" in message


def test_train_status_without_its_mlflow_server(tmp_path: Path) -> None:
    env = settings_env(stack_settings(tmp_path)) | {"ACTIVITY_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    assert "ACTIVITY_MLFLOW__TRACKING_URI" in _one_clear_line(env, "train", "status")


@pytest.mark.parametrize("command", [["topic", "stats"], ["topic", "tail", "--idle", "30"]])
def test_topic_commands_without_a_broker(tmp_path: Path, command: list[str]) -> None:
    message = _one_clear_line(settings_env(stack_settings(tmp_path)), *command)  # tail no longer idles out
    assert "`activity stack up`" in message and "ACTIVITY_KAFKA__BOOTSTRAP_SERVERS" in message


def test_train_run_without_the_postgresql_behind_mlflow(tmp_path: Path) -> None:
    uri = f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow"
    env = settings_env(stack_settings(tmp_path)) | {"ACTIVITY_MLFLOW__TRACKING_URI": uri}
    message = _one_clear_line(env, "train", "run")
    assert "PostgreSQL (the MLflow store)" in message and "ACTIVITY_MLFLOW__TRACKING_URI" in message
