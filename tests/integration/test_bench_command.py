"""`activity bench` for real, on its cheapest benchmark: model quality at quick size (~1-2 minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_quick_model_quality_writes_the_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")} | {"ACTIVITY_DATA_DIR": str(tmp_path)}
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "activity", "bench", "--only", "model_quality", "--quick",
                             "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    log = out / "model_quality.log"
    assert result.returncode == 0, (result.stdout[-3000:] + result.stderr[-3000:]
                                    + (log.read_text()[-3000:] if log.is_file() else ""))
    assert f"report: {out / 'report.md'}" in result.stdout.replace("\n", "")

    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Benchmark report (quick run)")
    assert "## model_quality" in markdown and "--customers 1500 --days 180" in markdown
    assert "ensemble ROC-AUC / oracle's" in markdown
    assert markdown.count(" | met |") + markdown.count(" | **missed** |") == 5  # every target judged
    samples = json.loads((out / "model_quality.json").read_text())
    kinds = {model["kind"] for model in samples["models"].values()}
    assert kinds == {"baseline", "single", "ensemble", "oracle"}
    figures = json.loads(next(line for line in reversed(log.read_text().splitlines())
                              if line.startswith('{"ensemble_auc"')))  # the benchmark's own JSON line
    assert figures["ensemble_auc"] == round(samples["models"]["ensemble"]["roc_auc"], 4)
    assert (out / "model_quality.png").stat().st_size > 5_000
    assert "![model_quality](model_quality.png)" in markdown
