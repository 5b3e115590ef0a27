"""The registered model's pyfunc, logged from code: class probabilities from the model's features.

MLflow runs this file when it loads a version (``mlflow.pyfunc.load_model``), so the model is
found by its import path rather than unpickled from a cloudpickle of the trainer's objects.
"""

from __future__ import annotations

from typing import Any

import joblib
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from features.transform import FEATURE_NAMES
from model_contract.labels import CLASSES


class ActivityModel(PythonModel):
    """Class probabilities (columns decline, stable, growth) from ``FEATURE_NAMES``."""

    def load_context(self, context: Any) -> None:
        self.ensemble = joblib.load(context.artifacts["ensemble"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        x = model_input[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
        return pd.DataFrame(self.ensemble.predict_proba(x), columns=list(CLASSES))


set_model(ActivityModel())
