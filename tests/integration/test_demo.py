"""The README's main command: `activity demo` runs every step on a fresh data directory.

With the defaults, as the README runs it: stream, train and promote, score over REST, shift, estimate,
drift alert, retrain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack import stack_down
from tests.conftest import settings_env, stack_settings

pytestmark = pytest.mark.integration


def test_demo_finishes_every_step_on_a_fresh_data_directory(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    env = settings_env(settings) | {"ACTIVITY_STREAMING__METRICS_PORT": "0", "COLUMNS": "200"}
    try:
        result = subprocess.run([sys.executable, "-m", "activity", "demo"],
                                env=env, capture_output=True, text=True, timeout=900)
    finally:
        stack_down(settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("✓ done") == 9, result.stdout[-3000:]  # with the quality estimate
    assert "online features == point-in-time offline features: yes" in result.stdout
    assert "failed" not in result.stdout
    flat = " ".join(result.stdout.split())  # as read, whatever the table wrapping
    assert "-> champion" in flat and "without credentials: HTTP 401" in flat
    assert "webhook received ActivityFeatureDrift" in flat
    assert "retraining: done" in flat
    reports = list((settings.home / "demo").glob("*/monitoring/reports/drift-*.html"))
    assert len(reports) == 1 and f"drift report: {reports[0]}" in result.stdout
