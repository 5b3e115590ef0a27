"""A service that does not listen is one line naming its setting and what starts it, within seconds."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from activity_settings import FeatureStoreSettings, KafkaSettings, MlflowSettings, load_settings
from infra.reachability import (
    ServiceUnavailable,
    kafka_requirement,
    mlflow_requirement,
    redis_requirement,
    require,
    require_all,
)
from tests.conftest import free_port


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _refusal(*requirements: object) -> str:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        require_all(*requirements)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message and "does not answer (" in message and "connection refused" in message
    return message


def test_no_embedded_broker_names_the_setting_and_activity_stack_up() -> None:
    port = free_port()
    message = _refusal(kafka_requirement(KafkaSettings(port=port)))
    assert message.startswith(f"Kafka at 127.0.0.1:{port} does not answer")
    assert "`activity stack up`" in message
    assert "kafka.bootstrap_servers" in message and "ACTIVITY_KAFKA__BOOTSTRAP_SERVERS" in message


def test_no_cluster_names_every_address_and_the_setting() -> None:
    first, second = free_port(), free_port()
    message = _refusal(kafka_requirement(KafkaSettings(bootstrap_servers=f"127.0.0.1:{first},127.0.0.1:{second}")))
    assert f"127.0.0.1:{first}: connection refused; 127.0.0.1:{second}: connection refused" in message
    assert "ACTIVITY_KAFKA__BOOTSTRAP_SERVERS" in message and "up -d kafka" in message


def test_one_listening_bootstrap_server_is_enough(listening: int) -> None:
    require(kafka_requirement(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()},127.0.0.1:{listening}")))


def test_no_redis_online_store_names_its_connection_string() -> None:
    store = FeatureStoreSettings(online_store="redis", redis_connection_string=f"127.0.0.1:{free_port()},password=x")
    message = _refusal(redis_requirement(store))
    assert message.startswith("Redis (the Feast online store)") and "password" not in message
    assert "feature_store.redis_connection_string" in message
    assert "ACTIVITY_FEATURE_STORE__REDIS_CONNECTION_STRING" in message and "redis-server" in message


def test_no_mlflow_server_names_the_tracking_uri_and_mlflow_server() -> None:
    port = free_port()
    message = _refusal(mlflow_requirement(MlflowSettings(tracking_uri=f"http://127.0.0.1:{port}")))
    assert message.startswith(f"the MLflow registry at 127.0.0.1:{port}")
    assert "mlflow.tracking_uri" in message and "ACTIVITY_MLFLOW__TRACKING_URI" in message
    assert f"`mlflow server --port {port}`" in message


def test_no_postgresql_behind_mlflow_names_the_tracking_uri() -> None:
    uri = f"postgresql+psycopg2://mlflow:secret@127.0.0.1:{free_port()}/mlflow"
    message = _refusal(mlflow_requirement(MlflowSettings(tracking_uri=uri)))
    assert message.startswith("PostgreSQL (the MLflow store)") and "secret" not in message
    assert "ACTIVITY_MLFLOW__TRACKING_URI" in message and "up -d postgres" in message


def test_local_stores_need_no_server() -> None:
    assert redis_requirement(FeatureStoreSettings()) is None
    assert mlflow_requirement(MlflowSettings()) is None
    assert mlflow_requirement(MlflowSettings(tracking_uri="sqlite:////tmp/mlflow.db")) is None
    require_all(None, None)


def test_a_listening_service_passes(listening: int) -> None:
    require_all(kafka_requirement(KafkaSettings(port=listening)),
                mlflow_requirement(MlflowSettings(tracking_uri=f"http://127.0.0.1:{listening}")))


def test_a_publisher_without_a_broker_fails_at_once_and_names_the_setting() -> None:
    from streaming.producer import TransactionPublisher

    message = _refusal_of(lambda: TransactionPublisher(KafkaSettings(port=free_port()), "transactions"))
    assert "kafka.bootstrap_servers" in message and "activity stack up" in message


def test_the_scorer_needs_kafka_only_for_its_prediction_log_and_redis_only_as_its_online_store(tmp_path) -> None:
    from serving.main import serving_requirements

    kafka = {"port": free_port()}
    default = serving_requirements(load_settings(data_dir=tmp_path, kafka=kafka))
    message = _refusal(*default)
    assert "serving.prediction_log=false" in message and "activity stack up" in message
    assert [r for r in serving_requirements(load_settings(data_dir=tmp_path, kafka=kafka,
                                                          serving={"prediction_log": False})) if r] == []
    redis = serving_requirements(load_settings(
        data_dir=tmp_path, kafka=kafka, serving={"prediction_log": False},
        feature_store={"online_store": "redis", "redis_connection_string": f"127.0.0.1:{free_port()}"}))
    assert "feature_store.redis_connection_string" in _refusal(*redis)


def test_every_mlflow_client_checks_its_server_first(tmp_path) -> None:
    from model_contract.registry import client

    settings = load_settings(data_dir=tmp_path, mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"})
    assert "ACTIVITY_MLFLOW__TRACKING_URI" in _refusal_of(lambda: client(settings))
    client(load_settings(data_dir=tmp_path))  # SQLite under the data directory: nothing to reach


def test_training_without_its_mlflow_server_fails_before_any_work(tmp_path) -> None:
    import mlflow  # noqa: F401 - imported by train(); not part of the time it takes to fail

    from training.pipeline import train

    settings = load_settings(data_dir=tmp_path, mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"})
    message = _refusal_of(lambda: train(settings))
    assert "mlflow.tracking_uri" in message and "mlflow server" in message


def _refusal_of(action) -> str:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        action()
    assert time.monotonic() - started < 5
    return str(caught.value)

def test_the_scorer_needs_triton_only_as_its_model_server(tmp_path, listening: int) -> None:
    from serving.main import serving_requirements

    def triton(**serving: object) -> list[object]:
        settings = load_settings(data_dir=tmp_path, serving={"prediction_log": False, **serving})
        return [r for r in serving_requirements(settings) if r]

    assert triton() == []
    port = free_port()
    embedded = _refusal(*triton(model_server="triton", triton_port=port))
    assert f"127.0.0.1:{port}" in embedded and "activity stack up" in embedded and "serving.triton_url" in embedded
    named = _refusal(*triton(model_server="triton", triton_url=f"http://127.0.0.1:{port}"))
    assert "up -d triton" in named and "ACTIVITY_SERVING__TRITON_URL" in named
    require_all(*triton(model_server="triton", triton_url=f"http://127.0.0.1:{listening}"))
