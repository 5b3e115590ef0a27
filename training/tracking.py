"""How the trainer packages a model version for the registry, and reads a native ensemble back.

A registered version holds the native ensemble (a pyfunc that returns class probabilities) and
every file the scorer needs (``model_contract.artifacts``): the ensemble's ONNX export and the
single-member fallback's, so the scorer loads a version without converting anything. The pyfunc
is logged from code (``training/pyfunc_model.py``), not pickled, so its class is imported by name
when MLflow loads it.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from features.transform import FEATURE_NAMES
from model_contract.artifacts import ENSEMBLE_FILE, FALLBACK_ONNX_FILE, FORECAST_FILE, ONNX_FILE
from model_contract.labels import CLASSES
from model_contract.registry import RegisteredModel

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def log_model(ensemble: Any, onnx_path: Path, fallback_path: Path, example: pd.DataFrame, workdir: Path,
              forecast_path: Path | None = None) -> Any:
    """Log the ensemble (pyfunc) with its ONNX exports in the active run; returns MLflow's ModelInfo.

    ``onnx_path`` and ``fallback_path`` land as ``artifacts/model.onnx`` and ``artifacts/fallback_xgboost.onnx``,
    ``forecast_path`` (the activity forecast, when one was fitted) as ``artifacts/activity_forecast.json``.
    """
    if forecast_path is not None and forecast_path.name != FORECAST_FILE:
        raise ValueError(f"the forecast file must be named {FORECAST_FILE}, not {forecast_path.name}")
    if onnx_path.name != ONNX_FILE or fallback_path.name != FALLBACK_ONNX_FILE:
        raise ValueError(f"the ONNX files must be named {ONNX_FILE} and {FALLBACK_ONNX_FILE}, "
                         f"not {onnx_path.name} and {fallback_path.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    native = workdir / ENSEMBLE_FILE
    joblib.dump(ensemble, native)
    example = example[list(FEATURE_NAMES)].astype(np.float64).reset_index(drop=True)
    output = pd.DataFrame(ensemble.predict_proba(example.to_numpy(dtype=np.float32)), columns=list(CLASSES))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts={"ensemble": str(native), "onnx": str(onnx_path), "fallback": str(fallback_path),
                   **({"forecast": str(forecast_path)} if forecast_path is not None else {})},
        signature=infer_signature(example, output),
        input_example=example.head(5),
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in
            ("scikit-learn", "xgboost", "numpy", "pandas", "joblib", "onnxruntime", "mlflow")]


def load_ensemble(model: RegisteredModel) -> Any:
    """The native ``ActivityEnsemble`` of a downloaded version (unpickling it needs scikit-learn and XGBoost)."""
    return joblib.load(model.artifact(ENSEMBLE_FILE))
