"""Names in a registered model version and in its ONNX graphs, shared by whoever writes or reads them.

A registered version is an MLflow pyfunc directory; the files the scorer and the monitors read
sit under its ``artifacts/`` folder: the ensemble as one ONNX graph, the single-member fallback
as another (both written at registration, so nothing is converted at load), the activity
forecast's parameters (``model_contract.forecast``), and the pickled native ensemble for the
trainer's own re-scoring. The training reference (a feature sample and
its statistics) is logged in the run beside the model.
"""

from __future__ import annotations

from pathlib import Path

CHAMPION = "champion"
CHALLENGER = "challenger"

ARTIFACTS_DIR = "artifacts"
ONNX_FILE = "model.onnx"
FALLBACK_ONNX_FILE = "fallback_xgboost.onnx"
ENSEMBLE_FILE = "ensemble.joblib"
FORECAST_FILE = "activity_forecast.json"  # model_contract.forecast: P(active), expected transactions

REFERENCE_DIR = "reference"
REFERENCE_FEATURES = "features.parquet"
REFERENCE_STATISTICS = "statistics.json"

# the ONNX graphs' input and outputs
INPUT = "features"
PROBABILITIES = "probabilities"
LABEL = "label"


def artifact_path(model_directory: Path, name: str) -> Path:
    """Where file ``name`` of a downloaded version lies (``<version>/artifacts/<name>``)."""
    return Path(model_directory) / ARTIFACTS_DIR / name
