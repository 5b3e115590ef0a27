"""MLflow: where runs and the model registry live, and how a registered model is packaged and loaded.

By default tracking and registry are one SQLite file under the data directory with artifacts
beside it; ``mlflow.tracking_uri`` points at a server or a database instead. A registered
version holds the native ensemble (a pyfunc that returns class probabilities) and its ONNX
export side by side, so the scorer can run ONNX and the trainer can re-score a champion.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from activity_settings import Settings
from features.transform import FEATURE_NAMES
from infra.reachability import mlflow_requirement, require_all
from training.labels import CLASSES

ENSEMBLE_FILE = "ensemble.joblib"
ONNX_FILE = "model.onnx"
CHAMPION = "champion"
CHALLENGER = "challenger"

warnings.filterwarnings("ignore", module="mlflow")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow.tracking_uri:
        return settings.mlflow.tracking_uri
    root = settings.home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_location(settings: Settings) -> str | None:
    """Artifact root of new experiments: the setting; else for a tracking server (http://...) the server's
    own; else (SQLite, or a database such as postgresql://) ``<data_dir>/mlflow/artifacts``, which every
    process shares. MLflow's own default for a database would be ``./mlruns`` under the first writer's cwd."""
    if settings.mlflow.artifact_location:
        return settings.mlflow.artifact_location
    if settings.mlflow.tracking_uri and not _is_database(settings.mlflow.tracking_uri):
        return None  # the server decides
    return (settings.home / "mlflow" / "artifacts").as_uri()


def _is_database(uri: str) -> bool:
    """A SQLAlchemy URL MLflow accepts as a store (``postgresql://``, ``mysql+pymysql://``, ``sqlite:///``...)."""
    from urllib.parse import urlparse

    from mlflow.store.db.db_types import DATABASE_ENGINES

    return urlparse(uri).scheme.split("+", 1)[0] in DATABASE_ENGINES


def client(settings: Settings) -> mlflow.MlflowClient:
    """An MLflow client bound to the settings' tracking and registry store (also made the process default).

    Raises ``ServiceUnavailable`` at once when the server (or database) the settings name does not listen:
    MLflow's own client would retry it for minutes.
    """
    require_all(mlflow_requirement(settings.mlflow))
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(settings: Settings, name: str | None = None) -> str:
    """The id of experiment ``name`` (default: ``mlflow.experiment``), created under the artifact location."""
    mlflow_client = client(settings)
    name = name or settings.mlflow.experiment
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_location(settings))
    except MlflowException:  # created meanwhile by another job
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class ActivityModel(mlflow.pyfunc.PythonModel):
    """Class probabilities (columns decline, stable, growth) from the 28 features."""

    def load_context(self, context: Any) -> None:
        self.ensemble = joblib.load(context.artifacts["ensemble"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        x = model_input[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
        return pd.DataFrame(self.ensemble.predict_proba(x), columns=list(CLASSES))


def log_model(ensemble: Any, onnx_path: Path, example: pd.DataFrame, workdir: Path) -> Any:
    """Log the ensemble (pyfunc) with its ONNX export in the active run; returns MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    workdir.mkdir(parents=True, exist_ok=True)
    native = workdir / ENSEMBLE_FILE
    joblib.dump(ensemble, native)
    example = example[list(FEATURE_NAMES)].astype(np.float64).reset_index(drop=True)
    output = pd.DataFrame(ensemble.predict_proba(example.to_numpy(dtype=np.float32)), columns=list(CLASSES))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ActivityModel(),
        artifacts={"ensemble": str(native), "onnx": str(onnx_path)},
        signature=infer_signature(example, output),
        input_example=example.head(5),
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in
            ("scikit-learn", "xgboost", "numpy", "pandas", "joblib", "onnxruntime", "mlflow")]


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    directory: Path  # the downloaded model: MLmodel, artifacts/ensemble.joblib, artifacts/model.onnx

    @property
    def onnx_path(self) -> Path:
        return self.directory / "artifacts" / ONNX_FILE

    def ensemble(self) -> Any:
        return joblib.load(self.directory / "artifacts" / ENSEMBLE_FILE)


def load_by_alias(settings: Settings, alias: str, destination: Path) -> RegisteredModel | None:
    """Download the version behind ``alias`` (None when no version has it)."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    name = settings.mlflow.registered_model
    try:
        version = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    target = destination / f"v{version.version}"
    if not (target / "MLmodel").is_file():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target))
    return RegisteredModel(name=name, version=str(version.version), run_id=version.run_id, directory=target)
