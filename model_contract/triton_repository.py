"""The Triton model repository: each registered version of the model as a Triton model version.

Layout (Triton's)::

    <repository>/<registered model>-v<version>/config.pbtxt   inputs, outputs, dynamic batching, instances
    <repository>/<registered model>-v<version>/<version>/model.onnx   the MLflow version's ONNX export
    <repository>/<registered model>-v<version>/<version>/model.py     model_contract/triton_python_model.py

The registry's version number is Triton's version number, so "champion = version 7" means the same
thing to MLflow, to the scorer and to Triton. Each version sits in a Triton model of its own
(``customer-activity-v7``) because Triton 2.51 reloads every version of a model whenever that model
is loaded again, and requests in flight at that moment stalled for over a second (measured: 2-3 of
about 2,000 at each change); loading or unloading one single-version model leaves the others alone.
Triton runs in explicit model-control mode: nothing here is served until the scorer loads it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from activity_settings import ActivityError, Settings
from features.transform import FEATURE_NAMES
from model_contract.artifacts import INPUT, LABEL, PROBABILITIES
from model_contract.labels import CLASSES

MODEL_FILE = "model.onnx"
PYTHON_MODEL = "model.py"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
MAX_BATCH = 1_024


class TritonRepositoryError(ActivityError, RuntimeError):
    """A version could not be written into the Triton model repository; the message says where and why."""


def repository_dir(settings: Settings) -> Path:
    """``serving.triton_repository``, or ``<data_dir>/triton/models``."""
    configured = settings.serving.triton_repository
    return configured.expanduser().resolve() if configured is not None else settings.home / "triton" / "models"


def model_name(settings: Settings, version: str) -> str:
    """The Triton model holding registered ``version``: ``<registered model>-v<version>``."""
    return f"{settings.mlflow.registered_model}-v{int(version)}"


def model_config(settings: Settings, version: str) -> dict[str, Any]:
    """Triton's model configuration (its JSON form) of registered ``version``."""
    serving = settings.serving
    policy = {"specific": {"versions": [int(version)]}}
    return {
        "name": model_name(settings, version),
        "backend": "python",
        "max_batch_size": MAX_BATCH,
        "input": [{"name": INPUT, "data_type": "TYPE_FP32", "dims": [len(FEATURE_NAMES)]}],
        "output": [{"name": PROBABILITIES, "data_type": "TYPE_FP32", "dims": [len(CLASSES)]},
                   {"name": LABEL, "data_type": "TYPE_INT64", "dims": [1]}],
        "dynamic_batching": {"max_queue_delay_microseconds": serving.triton_max_queue_delay_us},
        "instance_group": [{"kind": "KIND_CPU", "count": serving.triton_instances}],
        "version_policy": policy,
        # each new instance scores one row before Triton marks it ready: ONNX Runtime's first run is slow
        "model_warmup": [{"name": "first_run", "batch_size": 1, "inputs": {
            INPUT: {"data_type": "TYPE_FP32", "dims": [len(FEATURE_NAMES)], "zero_data": True}}}],
    }


def config_pbtxt(config: dict[str, Any]) -> str:
    """The protobuf text form of ``model_config`` (what Triton reads from ``config.pbtxt``)."""
    def value(item: Any, indent: str) -> str:
        if isinstance(item, dict):
            inner = "".join(f"{indent}  {key}{field(sub, indent + '  ')}\n" for key, sub in item.items())
            return "{\n" + inner + indent + "}"
        if isinstance(item, str) and (item.startswith("TYPE_") or item.startswith("KIND_")):
            return item
        return json.dumps(item)

    def field(item: Any, indent: str) -> str:
        if isinstance(item, list):
            return ": [ " + ", ".join(value(sub, indent) for sub in item) + " ]"
        return (" " if isinstance(item, dict) else ": ") + value(item, indent)

    return "".join(f"{key}{field(item, '')}\n" for key, item in config.items())


def write_version(settings: Settings, version: str, onnx_path: Path) -> Path:
    """Put registered ``version`` (its ONNX export at ``onnx_path``) into the repository; returns its folder.

    Written into a temporary folder and renamed, so Triton never loads a half-copied version; a version
    already there is left as it is (a registered version never changes).
    """
    if not str(version).isdigit():
        raise TritonRepositoryError(f"model version {version!r} is not a number; Triton versions are numbers")
    model_dir = repository_dir(settings) / model_name(settings, version)
    target = model_dir / str(int(version))
    if (target / MODEL_FILE).is_file() and (target / PYTHON_MODEL).is_file():
        return target
    if not Path(onnx_path).is_file():
        raise TritonRepositoryError(f"version {version}: no ONNX export at {onnx_path}")
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copyfile(onnx_path, staging / MODEL_FILE)
        shutil.copyfile(PYTHON_MODEL_SOURCE, staging / PYTHON_MODEL)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        config = model_dir / "config.pbtxt"
        if not config.is_file():
            config.write_text(config_pbtxt(model_config(settings, version)))
    except OSError as exc:
        raise TritonRepositoryError(f"cannot write version {version} into the Triton model repository "
                                    f"{model_dir} (setting serving.triton_repository): {exc}") from exc
    return target
