"""Assembly of the scorer process: settings -> model holder, online reader, prediction log -> app.

``uvicorn serving.main:app_from_environment --factory`` (what ``activity serve run`` starts) builds
everything from the environment's settings; the model comes from the registry, or from the local
cache when the registry is down, and a watcher swaps in new champions while it runs.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI

from activity_settings import Settings, load_settings
from infra.reachability import Requirement, kafka_requirement, redis_requirement, triton_requirement
from serving.app import create_app
from serving.online import OnlineFeatures
from serving.prediction_log import PredictionLog
from serving.scoring import ModelHolder

log = logging.getLogger("activity.serving")


def build_app(settings: Settings, prediction_log: bool | None = None) -> FastAPI:
    holder = ModelHolder(settings, settings.home / "serving" / "models")
    holder.startup()
    online = OnlineFeatures(settings)
    publisher: Any = None
    if settings.serving.prediction_log if prediction_log is None else prediction_log:
        publisher = PredictionLog(settings)
    app = create_app(settings, holder, online, publisher, settings.serving.micro_batch_max)
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI):
        holder.start_watcher()
        async with previous(application):
            yield
        holder.stop_watcher()
        if publisher is not None:
            publisher.close()

    app.router.lifespan_context = lifespan
    return app


def serving_requirements(settings: Settings) -> list[Requirement | None]:
    """The servers the scorer cannot start without: Kafka for the prediction log, Redis as the online store,
    Triton when the champion runs there.

    The registry is not one: without it the scorer serves the cached champion, or the heuristic.
    """
    kafka = None
    if settings.serving.prediction_log:
        kafka = kafka_requirement(settings.kafka)
        kafka = replace(kafka, service="Kafka (for the prediction log; serving.prediction_log=false turns it off)")
    return [kafka, redis_requirement(settings.feature_store), triton_requirement(settings.serving)]


def app_from_environment() -> FastAPI:
    return build_app(load_settings())
