"""The trainer's progress hooks, importable without loading the trainer (the CLI subclasses them)."""

from __future__ import annotations


class Reporter:
    """Receives the run's progress; the default says nothing."""

    def step(self, name: str, detail: str = "") -> None:  # optional hook
        pass

    def done(self, name: str, detail: str = "") -> None:  # optional hook
        pass
