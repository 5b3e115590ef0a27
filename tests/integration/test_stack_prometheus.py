"""The local Prometheus of `activity stack up --with-prometheus`: starts ready with our rules, stops clean."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from activity_settings import load_settings
from infra.observability import PROMETHEUS_BIN, PrometheusError, PrometheusPaths, start_prometheus
from infra.stack import stack_down, stack_status
from tests.conftest import free_port, process_alive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.access(PROMETHEUS_BIN, os.X_OK),
                       reason=f"{PROMETHEUS_BIN} is missing: install the Debian package `prometheus`"),
]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_start_loads_our_rules_and_targets_then_stack_down_stops_it(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, serving={"port": free_port()},
                             streaming={"metrics_port": free_port()}, monitoring={"metrics_port": free_port()})
    port = free_port()
    lines: list[str] = []
    process = start_prometheus(settings, lines.append, port=port)
    try:
        assert any(f"127.0.0.1:{port}" in line for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as response:
            assert response.status == 200

        groups = {group["name"]: group for group in _get(f"{process.url}/api/v1/rules")["data"]["groups"]}
        assert {"activity-recording", "activity-drift", "activity-quality", "activity-scorer",
                "activity-streaming", "activity-monitoring-jobs"} <= set(groups)
        alerts = {rule["name"] for rule in groups["activity-drift"]["rules"]}
        assert {"DatasetDrift", "FeaturePsiHigh", "PredictionDrift"} <= alerts

        config = _get(f"{process.url}/api/v1/status/config")["data"]["yaml"]
        for target_port in (settings.serving.port, settings.streaming.metrics_port, settings.monitoring.metrics_port):
            assert f"127.0.0.1:{target_port}" in config

        (status,) = [s for s in stack_status(settings) if s.name == "prometheus"]
        assert status.running and status.where == process.url
        assert start_prometheus(settings, port=port).pid == process.pid  # a second start finds it running
    finally:
        stopped = stack_down(settings)
    assert stopped == [f"prometheus (pid {process.pid})"]
    assert not process_alive(process.pid)
    assert not PrometheusPaths.under(settings.home).pid_file.exists()
    assert [s.name for s in stack_status(settings)] == ["kafka"]
    assert stack_down(settings) == []


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(PrometheusError, match="is taken by another process"):
            start_prometheus(load_settings(data_dir=tmp_path), port=sock.getsockname()[1])
