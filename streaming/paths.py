"""Where the streaming job keeps its files under the data directory (read by backfill and training too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activity_settings import Settings


@dataclass(frozen=True)
class StreamPaths:
    root: Path

    @classmethod
    def of(cls, settings: Settings) -> StreamPaths:
        return cls(settings.home / "stream")

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def dlq_markers(self) -> Path:
        return self.root / "dlq-sent"

    @property
    def late(self) -> Path:
        return self.root / "late"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"
