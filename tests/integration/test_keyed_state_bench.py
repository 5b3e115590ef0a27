"""`python -m bench.keyed_state` for real at quick size: Spark's stateful operators on RocksDB and the driver's fold."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_keyed_state_bench_measures_every_stage_and_the_ceilings() -> None:
    candidates = ("driver", "executor_rows", "jvm_dedupe", "jvm_dedupe_daily", "validate")
    command = [sys.executable, "-m", "bench.keyed_state", "--quick", "--candidates", ",".join(candidates)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert (figures["customers"], figures["events"]) == (10_000, 100_000)
    for name in candidates:
        assert figures[f"{name}_s"] > 0
        assert figures[f"{name}_tx_per_s"] == pytest.approx(100_000 / figures[f"{name}_s"], rel=0.01), name
        assert any(line.startswith(name + " ") for line in lines), f"{name} is not in the table"
    assert figures["best_executor"] == "executor_rows"
    assert figures["ratio_vs_driver"] == pytest.approx(figures["driver_s"] / figures["executor_rows_s"], rel=0.01)
    # a ceiling adds stages' costs: it lies below the rate of each of its stages
    assert figures["ceiling_jvm_state_tx_per_s"] < min(figures["validate_tx_per_s"],
                                                       figures["jvm_dedupe_daily_tx_per_s"])
    assert figures["ceiling_python_state_tx_per_s"] < min(figures["validate_tx_per_s"], figures["jvm_dedupe_tx_per_s"],
                                                          figures["executor_rows_tx_per_s"])


def test_keyed_state_bench_rejects_an_unknown_candidate() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.keyed_state", "--candidates", "driver,redis"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--candidates: unknown redis" in result.stderr
