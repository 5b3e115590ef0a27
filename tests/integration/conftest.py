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
