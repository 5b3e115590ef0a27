"""The README's main command: `activity demo` runs every step on a fresh data directory."""

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
    env = settings_env(settings) | {"ACTIVITY_STREAMING__METRICS_PORT": "0"}
    try:
        result = subprocess.run([sys.executable, "-m", "activity", "demo", "--customers", "500", "--days", "40"],
                                env=env, capture_output=True, text=True, timeout=600)
    finally:
        stack_down(settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("✓ done") == 4
    assert "online features == point-in-time offline features: yes" in result.stdout
    assert "failed" not in result.stdout
