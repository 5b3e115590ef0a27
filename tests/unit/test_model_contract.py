"""The model contract's place in the import graph, and its numpy metrics against scikit-learn's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from model_contract.evaluate import average_precision, roc_auc

ROOT = Path(__file__).resolve().parents[2]
TRAINER_LIBRARIES = ("sklearn", "xgboost", "skl2onnx", "onnxmltools", "pyspark")


def imported_packages(folder: str) -> dict[str, set[str]]:
    """Top-level package of every import in each module of ``folder`` (deferred imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


@pytest.mark.parametrize("folder", ["serving", "monitoring"])
def test_serving_and_monitoring_import_no_training(folder: str) -> None:
    offenders = {name: "training" for name, names in imported_packages(folder).items() if "training" in names}
    assert offenders == {}


def test_the_model_contract_imports_no_trainer_library_and_no_part_above_it() -> None:
    forbidden = {*TRAINER_LIBRARIES, "training", "serving", "monitoring", "activity"}
    offenders = {name: sorted(names & forbidden) for name, names in imported_packages("model_contract").items()
                 if names & forbidden}
    assert offenders == {}


def test_importing_the_scorer_loads_no_trainer_library() -> None:
    code = ("import sys, serving.main, serving.app, serving.scoring, serving.online, serving.prediction_log; "
            f"print(sorted(m for m in {TRAINER_LIBRARIES[:4]!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_average_precision_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.random(500) < 0.3
    score = np.round(rng.random(500) + 0.3 * positive, 1)  # coarse: many tied scores across both classes
    assert roc_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert average_precision(positive, score) == pytest.approx(average_precision_score(positive, score), abs=1e-12)


def test_ranking_metrics_without_both_classes_are_nan_or_trivial() -> None:
    score = np.array([0.2, 0.4, 0.4])
    assert np.isnan(roc_auc(np.array([True, True, True]), score))
    assert np.isnan(roc_auc(np.array([False, False, False]), score))
    assert np.isnan(average_precision(np.array([False, False, False]), score))
    assert average_precision(np.array([True, True, True]), score) == 1.0
