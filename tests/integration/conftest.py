"""Fixtures for tests that run the stream: a fresh data directory and fresh topics on the session broker."""

from __future__ import annotations

import uuid
from pathlib import Path

from activity_settings import Settings, StreamingSettings, TopicSettings
from infra.topics import ensure_topics


def isolated(settings: Settings, data_dir: Path, **streaming: object) -> Settings:
    """The session broker's settings with a new data directory, new topics and stream overrides."""
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(transactions=f"transactions-{tag}", dlq=f"transactions-{tag}.dlq",
                           predictions=f"predictions-{tag}")
    stream = {"trigger_interval_s": 0.0, "metrics_port": 0, "max_offsets_per_trigger": 50_000, **streaming}
    isolated_settings = settings.model_copy(update={
        "data_dir": data_dir,
        "kafka": settings.kafka.model_copy(update={"topics": topics}),
        "streaming": StreamingSettings(**stream),
    })
    ensure_topics(isolated_settings.kafka)
    return isolated_settings


def env_for(settings: Settings) -> dict[str, str]:
    """Environment for a CLI subprocess with exactly these settings."""
    from tests.conftest import settings_env

    env = settings_env(settings)
    topics = settings.kafka.topics
    env.update({
        "ACTIVITY_KAFKA__TOPICS__TRANSACTIONS": topics.transactions,
        "ACTIVITY_KAFKA__TOPICS__DLQ": topics.dlq,
        "ACTIVITY_KAFKA__TOPICS__PREDICTIONS": topics.predictions,
        "ACTIVITY_SPARK__MASTER": settings.spark.master,
        "ACTIVITY_SPARK__DRIVER_MEMORY": settings.spark.driver_memory,
    })
    for key, value in settings.streaming.model_dump().items():
        env[f"ACTIVITY_STREAMING__{key.upper()}"] = str(value)
    return env
