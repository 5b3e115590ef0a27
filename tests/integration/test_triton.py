"""The scorer with its model in a real Triton Inference Server (the nvidia-pytriton wheel's tritonserver on loopback).

The stack is the shared trained one (streamed features in Feast, the champion in MLflow); Triton runs
the registered versions from its model repository, loaded by the scorer through the repository API.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from activity_settings import Settings
from features.store import FeatureWriter, online_features
from infra.services import free_port
from infra.triton import TritonPaths, running_triton, start_triton, stop_triton

pytestmark = pytest.mark.integration
AS_OF = "2026-07-15T00:00:00+00:00"
AS_OF_S = 1_784_073_600  # 2026-07-15 00:00 UTC
CUSTOMERS = [f"c{i:07d}" for i in range(1, 301)]


def triton_settings(trained: Settings, **serving: object) -> Settings:
    """The trained stack's settings scoring through Triton, polling the registry every second."""
    base = {"model_server": "triton", "triton_port": free_port(), "triton_metrics_port": free_port(),
            "reload_interval_s": 1.0, "online_timeout_ms": 500.0, "triton_timeout_ms": 1_000.0,
            "triton_retry_s": 0.5, "prediction_log": False, "rate_limit_per_s": 1e6,
            "rate_limit_burst": 1_000_000, **serving}
    return trained.model_copy(update={"serving": trained.serving.model_copy(update=base)})


@pytest.fixture(scope="module")
def triton(trained: Settings, first) -> Iterator[Settings]:  # first registers the champion
    settings = triton_settings(trained)
    start_triton(settings)
    try:
        yield settings
    finally:
        stop_triton(settings.home)


@pytest.fixture
def scorer(triton: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    from serving.auth import issue_token
    from serving.main import build_app

    app = build_app(triton)
    headers = {"Authorization": f"Bearer {issue_token(triton, 'analyst', ['scores:read', 'model:read'])}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, headers


def test_answers_through_triton_equal_the_in_process_onnx_answers(triton: Settings, scorer) -> None:
    client, headers = scorer
    holder = client.app.state.scorer.holder
    assert holder.served.champion.remote is not None, holder.last_error
    x = online_features(FeatureWriter.open(triton).store, CUSTOMERS, [AS_OF_S] * len(CUSTOMERS))
    from model_contract.onnx_runner import as_matrix

    features = as_matrix(x).astype(np.float32)
    remote, local = holder.score(features, "champion"), holder.score(features, "inprocess")
    assert remote.level == "champion" and not remote.degraded and local.degraded
    np.testing.assert_allclose(remote.probabilities, local.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(remote.label, local.label)

    answer = client.post("/v1/activity:batch", headers=headers,
                         json={"customers": [{"customer_id": c, "as_of": AS_OF} for c in CUSTOMERS]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert not any(result["degraded"] for result in results)
    got = np.array([[r["probabilities"][k] for k in ("decline", "stable", "growth")] for r in results])
    np.testing.assert_allclose(got, local.probabilities, rtol=0, atol=1e-6)


class Load:
    """Single-customer requests from a few threads until stopped: each answer's status and degraded flag."""

    def __init__(self, client: TestClient, headers: dict[str, str], threads: int = 4) -> None:
        self.client, self.headers = client, headers
        self.answers: list[tuple[float, int, bool, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            customer = CUSTOMERS[i % len(CUSTOMERS)]
            response = self.client.get(f"/v1/customers/{customer}/activity", params={"as_of": AS_OF},
                                       headers=self.headers)
            body = response.json() if response.status_code == 200 else {}
            self.answers.append((time.monotonic(), response.status_code, bool(body.get("degraded")),
                                 (body.get("model") or {}).get("version")))
            i += len(self._threads)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:.0f}s: {what}")


def test_killed_triton_degrades_to_the_in_process_copy_and_recovers(triton: Settings, scorer) -> None:
    client, headers = scorer
    paths = TritonPaths.under(triton.home)
    with Load(client, headers) as load:
        wait_for(lambda: sum(1 for a in load.answers if not a[2]) >= 50, 60, "50 answers through Triton")
        process = running_triton(paths)
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: sum(1 for a in load.answers if a[0] > killed_at and a[2]) >= 50, 60,
                 "50 degraded answers while Triton is down")
        start_triton(triton)
        restarted_at = time.monotonic()
        wait_for(lambda: sum(1 for a in load.answers if a[0] > restarted_at and not a[2]) >= 50, 60,
                 "50 answers through Triton again after its restart")
    statuses = {status for _, status, _, _ in load.answers}
    assert statuses == {200}, statuses
    model = client.get("/v1/model", headers=headers).json()
    assert model["model_server"] == "triton"


def test_a_new_champion_is_loaded_into_triton_under_load_without_a_failed_request(
        triton: Settings, scorer, first) -> None:
    import mlflow

    from model_contract.artifacts import CHAMPION
    from model_contract.registry import client as registry_client
    from model_contract.registry import tracking_uri

    client, headers = scorer
    registry = registry_client(triton)
    name = triton.mlflow.registered_model
    champion = registry.get_model_version_by_alias(name, CHAMPION)
    with Load(client, headers) as load:
        wait_for(lambda: len(load.answers) >= 50, 60, "50 answers from the first champion")
        mlflow.set_tracking_uri(tracking_uri(triton))
        new = mlflow.register_model(f"runs:/{champion.run_id}/model", name)
        registry.set_registered_model_alias(name, CHAMPION, new.version)
        try:
            moved_at = time.monotonic()
            wait_for(lambda: sum(1 for a in load.answers if a[0] > moved_at and a[3] == str(new.version)) >= 50,
                     90, f"50 answers from version {new.version}")
        finally:
            registry.set_registered_model_alias(name, CHAMPION, champion.version)
    assert {status for _, status, _, _ in load.answers} == {200}
    # A Triton call over its budget while the new version loads is answered by the in-process copy, and so
    # are the calls of the retry pause after it: a short stretch of degraded answers, never a failure.
    degraded = [at for at, _, is_degraded, _ in load.answers if is_degraded]
    assert not degraded or max(degraded) - min(degraded) < 5.0, f"{len(degraded)} degraded answers over " \
        f"{max(degraded) - min(degraded):.1f}s of {len(load.answers)}"
    loaded = client.app.state.scorer.holder.triton.client.ready_models()
    assert {f"{name}-v{new.version}", f"{name}-v{champion.version}"} <= loaded
