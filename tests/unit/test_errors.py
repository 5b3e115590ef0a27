"""Every error the platform raises for a user to act on shares one base, which the command line catches."""

from __future__ import annotations

import importlib
import inspect

import pytest

from activity_settings import ActivityError

MODULES = ["activity_settings", "activity.demo", "activity.up", "infra.jars", "infra.kafka_access",
           "infra.kafka_broker", "infra.observability", "infra.reachability", "infra.services", "infra.triton",
           "features.offline_store", "features.sqlite_online", "model_contract.triton_repository",
           "monitoring.calibration", "monitoring.drift", "monitoring.estimate", "monitoring.estimate_job",
           "serving.problems", "serving.scoring", "serving.triton", "streaming.archive", "streaming.publish",
           "streaming.runner", "training.data", "training.schedule", "training.spark_backend"]


@pytest.mark.parametrize("module", MODULES)
def test_the_platforms_errors_derive_from_activity_error(module: str) -> None:
    loaded = importlib.import_module(module)
    errors = [cls for _, cls in inspect.getmembers(loaded, inspect.isclass)
              if issubclass(cls, Exception) and cls.__module__ == module]
    assert errors, f"{module} defines no error"
    assert [cls.__name__ for cls in errors if not issubclass(cls, ActivityError)] == []
