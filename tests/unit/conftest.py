"""Unit-test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``ACTIVITY_*`` variable and no ``activity.yaml`` from the machine leaks into the settings."""
    for name in list(os.environ):
        if name.startswith("ACTIVITY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
