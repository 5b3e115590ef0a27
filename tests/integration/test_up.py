"""`activity up` on a fresh data directory: everything starts, answers under live traffic, and stops cleanly.

The README's promise is ten minutes without an error; CI runs it for two (after the first start's
history and first champion), and the closing check is the same: every service's log is free of
errors, every process is gone, the exit code is 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.conftest import free_port, settings_env, stack_settings

pytestmark = pytest.mark.integration


def test_up_runs_the_platform_under_live_traffic_and_stops_cleanly(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    settings = settings.model_copy(update={
        "serving": settings.serving.model_copy(update={"port": free_port()}),
        "streaming": settings.streaming.model_copy(update={"metrics_port": free_port()}),
        "monitoring": settings.monitoring.model_copy(update={"metrics_port": free_port()}),
    })
    process = subprocess.Popen([sys.executable, "-m", "activity", "up", "--duration", "120", "--rate", "20"],
                               env=settings_env(settings) | {"COLUMNS": "250"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output: list[str] = []
    token = None
    deadline = time.monotonic() + 900
    for line in process.stdout:
        output.append(line)
        found = re.match(r"token\s+(\S+)", line)
        if found:
            token = found[1]
            break
        assert time.monotonic() < deadline, "".join(output[-30:])
    assert token, "".join(output[-30:])
    base = f"http://127.0.0.1:{settings.serving.port}"
    request = urllib.request.Request(f"{base}/v1/customers/c0000007/activity",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = orjson.loads(answer.read())
    assert body["model"]["version"] is not None and not body["degraded"], body
    rest, _ = process.communicate(timeout=600)
    text = "".join(output) + rest
    assert process.returncode == 0, text[-4000:]
    assert "0 error lines in the services' logs" in text, text[-4000:]
    sent = int(re.search(r"up: ([\d,]+) live transactions sent", text)[1].replace(",", ""))
    assert sent >= 20 * 100, text[-2000:]  # about 20/s for the 120 s
    for name in ("scorer", "monitor-schedule", "training-schedule", "stream"):
        assert re.search(rf"{name}: stopped \(exit code 0\)", text), text[-3000:]
    assert "broker: stopped" in text
    # the live traffic reached the feature store: micro-batches after the history's first one
    stream_log = (settings.home / "up" / "logs" / "stream.log").read_text()
    assert len(re.findall(r"· batch \d+: [\d,]+ records", stream_log)) >= 10, stream_log[-2000:]
