"""The scorer on the real stack: streamed features in Feast, the MLflow champion, Kafka for the prediction log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from activity_settings import Settings
from features.store import FeatureWriter, online_features
from tests.parity import assert_champion_answer

pytestmark = pytest.mark.integration
AS_OF = "2026-07-15T00:00:00+00:00"
AS_OF_S = 1_784_073_600  # 2026-07-15 00:00 UTC


def serving_settings(trained: Settings, tmp_path: Path, **serving: object) -> Settings:
    """The trained stack's settings with the scorer's own cache directory inside ``tmp_path``."""
    base = {"reload_interval_s": 3600.0, "online_timeout_ms": 500.0, **serving}
    return trained.model_copy(update={"serving": trained.serving.model_copy(update=base)})


@pytest.fixture(scope="module")
def scorer(trained: Settings, first) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    from serving.auth import issue_token
    from serving.main import build_app

    settings = serving_settings(trained, Path("."))
    app = build_app(settings)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'analyst', ['scores:read', 'model:read'])}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, headers, settings


def test_a_query_returns_the_champions_prediction_from_the_parity_features(scorer, first) -> None:
    from model_contract import registry
    from model_contract.artifacts import FORECAST_FILE
    from model_contract.forecast import ActivityForecast
    from model_contract.onnx_runner import as_matrix
    from training.tracking import load_ensemble

    client, headers, settings = scorer
    customers = ["c0000001", "c0000042", "c0002999"]
    expected_features = online_features(FeatureWriter.open(settings).store, customers, [AS_OF_S] * 3)
    champion = registry.load_by_alias(settings, "champion", settings.home / "test-champion")
    expected = load_ensemble(champion).predict_proba(as_matrix(expected_features))
    forecast = ActivityForecast.load(champion.artifact(FORECAST_FILE))  # the trainer registered one with it
    p_active, transactions, _ = forecast.predict(as_matrix(expected_features))
    for i, customer in enumerate(customers):
        answer = client.get(f"/v1/customers/{customer}/activity", params={"as_of": AS_OF}, headers=headers)
        body = assert_champion_answer(answer, champion.version, expected[i])
        probabilities = [body["probabilities"][name] for name in ("decline", "stable", "growth")]
        assert body["activity_score"] == pytest.approx(probabilities[2] - probabilities[0], abs=1e-5)
        assert body["request_id"] == answer.headers["X-Request-ID"]
        assert body["forecast"]["model"] == forecast.model and body["forecast"]["horizon_days"] == 30
        assert body["forecast"]["p_active"] == pytest.approx(p_active[i], abs=1e-5)
        assert body["forecast"]["expected_transactions"] == pytest.approx(transactions[i], abs=1e-3)


def test_concurrent_requests_are_scored_together_and_answered_as_alone(scorer) -> None:
    """Micro-batching: requests arriving together share one scoring call, each answered as it would be alone."""
    import asyncio

    import httpx
    from prometheus_client import REGISTRY

    client, headers, _ = scorer
    customers = [f"c{i:07d}" for i in range(1, 41)] + ["never-seen-7", "c0000001"]  # a repeat in the same batch

    def batches() -> tuple[float, float]:
        return (REGISTRY.get_sample_value("activity_scorer_micro_batch_size_count") or 0.0,
                REGISTRY.get_sample_value("activity_scorer_micro_batch_size_sum") or 0.0)

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://scorer") as http:
            return await asyncio.gather(*(
                http.get(f"/v1/customers/{customer}/activity", params={"as_of": AS_OF},
                         headers=headers | {"X-Request-ID": f"together-{i:04d}"})
                for i, customer in enumerate(customers)))

    before = batches()
    answers = asyncio.run(together())
    after = batches()
    assert after[1] - before[1] == len(customers) and after[0] - before[0] < len(customers)
    for i, (customer, answer) in enumerate(zip(customers, answers, strict=True)):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["request_id"] == answer.headers["X-Request-ID"] == f"together-{i:04d}"
        alone = client.get(f"/v1/customers/{customer}/activity", params={"as_of": AS_OF}, headers=headers).json()
        assert {**body, "request_id": None} == {**alone, "request_id": None}


def test_batch_answers_each_customer_and_never_seen_ones_get_cold_start(scorer) -> None:
    client, headers, _ = scorer
    body = {"customers": [{"customer_id": "c0000001", "as_of": AS_OF}, {"customer_id": "never-seen-1"}]}
    answer = client.post("/v1/activity:batch", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["customer_id"] for r in results] == ["c0000001", "never-seen-1"]
    assert results[0]["features"]["known"] and not results[1]["features"]["known"]
    assert results[1]["features"]["as_of"] is None and not results[1]["degraded"]
    assert 0.0 <= results[0]["forecast"]["p_active"] <= 1.0 and results[1]["forecast"] is None  # no history to read


@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", "/v1/customers/bad id!/activity", None),
    ("get", "/v1/customers/c0000001/activity?as_of=not-a-time", None),
    ("get", "/v1/customers/c0000001/activity?as_of=2100-01-01T00:00:00Z", None),
    ("post", "/v1/activity:batch", {"customers": []}),
    ("post", "/v1/activity:batch", {"customers": [{"customer_id": "x", "extra": 1}]}),
    ("post", "/v1/activity:batch", {"customers": [{"customer_id": f"c{i}"} for i in range(501)]}),
])
def test_bad_requests_get_a_4xx_problem(scorer, method: str, path: str, body: dict | None) -> None:
    client, headers, _ = scorer
    answer = client.request(method.upper(), path, json=body, headers=headers)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == answer.status_code


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/v1/customers/c0000001/activity"), ("post", "/v1/activity:batch"), ("get", "/v1/model"),
    ("post", "/v1/admin/reload"),
])
def test_every_protected_route_needs_credentials_and_the_scope(scorer, method: str, path: str) -> None:
    from serving.auth import create_api_key, issue_token

    client, _, settings = scorer
    body = {"customers": [{"customer_id": "c0000001"}]}
    assert client.request(method.upper(), path, json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert client.request(method.upper(), path, json=body, headers=wrong).status_code == 401
    key = create_api_key(settings, "reader-without-scope", ["model:read"] if path != "/v1/model" else ["scores:read"])
    assert client.request(method.upper(), path, json=body, headers={"X-API-Key": key}).status_code == 403
    admin = {"Authorization": f"Bearer {issue_token(settings, 'ops', ['admin'])}"}
    assert client.request(method.upper(), path, json=body, headers=admin).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_model_route_metrics_and_readiness(scorer) -> None:
    client, headers, _ = scorer
    model = client.get("/v1/model", headers=headers).json()
    assert model["version"] and model["metrics"]["roc_auc"] > 0.5 and model["source"] == "registry"
    assert client.get("/readyz").status_code == 200
    exported = client.get("/metrics").text
    for name in ("activity_scorer_request_seconds_bucket", "activity_scorer_predictions_total",
                 "activity_scorer_model_version", "activity_scorer_feature_age_seconds"):
        assert name in exported, name


def test_predictions_are_logged_to_kafka(scorer) -> None:
    from streaming.consume import read_topic

    client, headers, settings = scorer
    client.get("/v1/customers/c0000007/activity", params={"as_of": AS_OF}, headers=headers)
    app_log = client.app.state.scorer.prediction_log
    assert app_log is not None
    app_log._producer.flush(10)  # delivery before reading the topic back
    records = [r for r in read_topic(settings.kafka, settings.kafka.topics.predictions, from_beginning=True,
                                     idle_timeout_s=3.0) if r.key == b"c0000007"]
    assert records and b'"customer_id":"c0000007"' in records[0].value


def test_online_store_unavailable_degrades_without_a_5xx(trained: Settings, first, tmp_path: Path) -> None:
    from serving.app import create_app
    from serving.auth import issue_token
    from serving.online import OnlineFeatures
    from serving.scoring import ModelHolder

    settings = serving_settings(trained, tmp_path, online_timeout_ms=100.0)
    holder = ModelHolder(settings, tmp_path / "models")
    holder.startup()
    online = OnlineFeatures(settings)
    online.sqlite.db_path = tmp_path / "moved-away" / "online_store.db"  # the store's file is not there: reads fail
    app = create_app(settings, holder, online)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'analyst', ['scores:read'])}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/customers/c0000001/activity", headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["degraded"] and body["fallback"].startswith("prior")
        assert client.get("/readyz").status_code == 503


def test_registry_down_at_start_serves_from_the_cache(trained: Settings, first, tmp_path: Path) -> None:
    from serving.scoring import ModelHolder

    settings = serving_settings(trained, tmp_path)
    warm = ModelHolder(settings, tmp_path / "models")
    assert warm.startup().ok
    down = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
        update={"tracking_uri": "http://127.0.0.1:9"})})
    cold = ModelHolder(down, tmp_path / "models")
    cold.startup()
    assert cold.info()["version"] == warm.info()["version"] and cold.info()["source"] == "cache"


def test_a_reload_under_load_fails_no_request(scorer, first) -> None:
    from serving.auth import issue_token

    client, headers, settings = scorer
    admin = {"Authorization": f"Bearer {issue_token(settings, 'ops', ['admin'])}"}
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(client.get("/v1/customers/c0000003/activity", headers=headers).status_code)

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    reloaded = client.post("/v1/admin/reload", headers=admin)
    time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join()
    assert reloaded.status_code == 200, reloaded.text
    assert statuses and all(status == 200 for status in statuses), set(statuses)


def test_generated_requests_never_get_a_server_error(scorer) -> None:
    """Schemathesis: requests generated from the app's own OpenAPI document, with and without credentials."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from serving.auth import issue_token

    client, _, serving = scorer
    admin = {"Authorization": f"Bearer {issue_token(serving, 'fuzzer', ['admin'], 3_600)}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case) -> None:
            for headers in (admin, {}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, response.text)

        no_server_error()


def test_the_cli_serves_with_a_token_it_issued(trained: Settings, first) -> None:
    import subprocess
    import sys

    import httpx

    from tests.conftest import free_port, settings_env

    port = free_port()
    env = settings_env(trained) | {"ACTIVITY_SERVING__PREDICTION_LOG": "false"}
    cli = [sys.executable, "-m", "activity", "serve"]
    token = subprocess.run([*cli, "token", "--scope", "scores:read"], env=env, capture_output=True, text=True,
                           timeout=60).stdout.strip()
    server = subprocess.Popen([*cli, "run", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/customers/c0000005/activity",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["arm"] == "champion"
    finally:
        server.terminate()
        server.wait(timeout=30)


SCORER_PROCESS = """
import json, sys
from fastapi.testclient import TestClient
from activity_settings import load_settings
from serving.auth import issue_token
from serving.main import build_app

settings = load_settings()
headers = {"Authorization": "Bearer " + issue_token(settings, "analyst", ["scores:read", "model:read"])}
with TestClient(build_app(settings, prediction_log=False)) as client:
    answer = client.get("/v1/customers/c0000042/activity", params={"as_of": sys.argv[1]}, headers=headers)
    model = client.get("/v1/model", headers=headers).json()
print(json.dumps({"status": answer.status_code, "answer": answer.json(), "model": model,
                  "loaded": sorted(name for name in ("sklearn", "xgboost", "skl2onnx", "onnxmltools", "training")
                                   if name in sys.modules)}))
"""


def test_a_fresh_scorer_serves_the_champion_without_sklearn_or_xgboost(trained: Settings, first,
                                                                         tmp_path: Path) -> None:
    """The registered version carries every file the scorer runs: no trainer library is imported to serve it."""
    import json
    import subprocess
    import sys

    from model_contract import registry
    from tests.conftest import settings_env

    champion = registry.client(trained).get_model_version_by_alias(trained.mlflow.registered_model, "champion")
    settings = trained.model_copy(update={"data_dir": trained.home})
    done = subprocess.run([sys.executable, "-c", SCORER_PROCESS, AS_OF], env=settings_env(settings),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, report["answer"]
    assert report["answer"]["model"]["arm"] == "champion" and not report["answer"]["degraded"]
    assert report["model"]["version"] == str(champion.version)
    assert report["model"]["fallback"] == {"name": f"{settings.mlflow.registered_model}/xgboost-only",
                                           "version": str(champion.version)}
    assert report["loaded"] == [], f"the scorer process imported {report['loaded']}"
