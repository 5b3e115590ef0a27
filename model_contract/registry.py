"""The MLflow registry as the trainer, the scorer and the monitors see it: where it lives, its client, aliases.

By default tracking and registry are one SQLite file under the data directory with artifacts
beside it; ``mlflow.tracking_uri`` points at a server or a database instead. A registered version
is found by alias (``champion``, ``challenger``) and downloaded once into a local directory.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES

from activity_settings import Settings
from infra.reachability import mlflow_requirement, require_all
from model_contract.artifacts import ONNX_FILE, artifact_path

# MLflow's progress bars and its git probe are noise in a command's output; its deprecation notices are
# for MLflow's own maintainers, not for the platform's users
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
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_location(settings))
    except MlflowException:  # created meanwhile by another job
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@dataclass(frozen=True)
class RegisteredModel:
    """A downloaded version: ``MLmodel`` and ``artifacts/`` (the ONNX graphs, the native ensemble)."""

    name: str
    version: str
    run_id: str | None  # None: the version was registered from a model outside any MLflow run
    directory: Path

    @property
    def onnx_path(self) -> Path:
        return artifact_path(self.directory, ONNX_FILE)

    def artifact(self, name: str) -> Path:
        return artifact_path(self.directory, name)


def load_by_alias(settings: Settings, alias: str, destination: Path) -> RegisteredModel | None:
    """Download the version behind ``alias`` into ``destination/v<version>`` (None when no version has it)."""
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
