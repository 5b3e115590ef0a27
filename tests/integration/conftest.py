"""Fixtures for tests that run the stream: a fresh data directory and fresh topics on the session broker,
and a trained stack (streamed history, a registered champion) shared by the training and serving tests."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

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


def training_settings(settings: Settings, **model: object) -> Settings:
    """Small, quick models on a 30-day horizon (the defaults' label policy)."""
    training = settings.training.model_copy(update={
        "horizon_days": 30, "grid_days": 7, "reference_sample_rows": 500,
        "model": settings.training.model.model_copy(update={"forest_trees": 60, "booster_rounds": 80, **model}),
    })
    return settings.model_copy(update={"training": training})


@pytest.fixture(scope="session")
def trained(kafka_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """200 simulated days of 3,000 customers streamed through the real job into Feast."""
    from streaming.publish import encode_simulated, publish_tables
    from streaming.runner import run_stream
    from streaming.simulator import make_population, simulate

    settings = isolated(kafka_stack, tmp_path_factory.mktemp("trained"))
    population = make_population(3_000, date(2026, 1, 1), 200, seed=11)
    assert publish_tables(settings.kafka, simulate(population), encode_simulated).failed == 0
    run_stream(settings, until_idle_s=2.0)
    return training_settings(settings)


@pytest.fixture(scope="session")
def first(trained: Settings):  # (TrainingOutcome, TrainingData)
    """The first training run on that history: it registers the champion."""
    from training.pipeline import build_training_data, train

    data = build_training_data(trained)
    return train(trained, data=data), data
