"""The scorer's models: the registered champion (and challenger) as ONNX, hot-swapped, with a fallback chain.

What a request sees is one immutable ``Served`` snapshot read from a single attribute, and a reload
builds a complete new snapshot before assigning that attribute once: an in-flight request keeps
scoring with the models it started with and never sees a half-loaded one. A reload that fails
(registry down, a corrupt ONNX file, a model fitted on other features) changes nothing but
``last_error``; the previous model keeps serving.

The fallback chain, best first, for when the preferred model is missing or fails at scoring time:

1. ``champion`` (or ``challenger`` when the A/B split asks for it; a failing challenger falls to the champion);
2. ``single``: the champion's XGBoost member alone, the ``fallback_xgboost.onnx`` the trainer wrote
   into the version at registration (``training.onnx_export.fallback_to_onnx``: uncalibrated, plain
   argmax). Nothing is converted at load: the scorer runs ONNX files with onnxruntime only and never
   imports scikit-learn or XGBoost;
3. ``heuristic``: no model at all: a fixed softmax over ``model_contract.heuristic.recency_frequency_scores``
   (the last week's pace against the month, the month-on-month trend, recency). Valid probabilities,
   rough decisions; it keeps the API answering when nothing could be loaded.

Levels 2 and 3 answer with ``degraded=True``.

A version may carry the activity forecast (``model_contract.forecast``, ``artifacts/activity_forecast.json``):
loaded with it, checked like its ONNX file (present but broken rejects the version), absent for a
version registered before the trainer wrote one.

With ``serving.model_server: triton`` the champion and challenger score in Triton Inference Server
(``serving/triton.py``), and a level ``inprocess`` comes between them and ``single``: the champion's own
ONNX copy in this process, answering (``degraded=True``) while Triton is down or over its budget.
The versions Triton serves follow the holder's at every load (``TritonVersions.serve``).

Registry calls are made to fail fast (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_TIMEOUT`` defaults set
below unless the environment sets them): MLflow's own defaults retry with exponential backoff for
minutes, which would stall reloads while the last good model keeps serving anyway.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from activity_settings import ActivityError, Settings
from features.transform import COLD_START, FEATURE_NAMES
from model_contract.artifacts import (
    CHALLENGER,
    CHAMPION,
    FALLBACK_ONNX_FILE,
    FORECAST_FILE,
    INPUT,
    LABEL,
    ONNX_FILE,
    PROBABILITIES,
    artifact_path,
)
from model_contract.forecast import ActivityForecast
from model_contract.heuristic import recency_frequency_scores
from model_contract.labels import CLASSES
from model_contract.onnx_runner import OnnxScorer
from model_contract.registry import RegisteredModel, client, load_by_alias

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

log = logging.getLogger(__name__)

Level = Literal["champion", "challenger", "inprocess", "single", "heuristic"]
LEVELS: tuple[Level, ...] = ("champion", "challenger", "inprocess", "single", "heuristic")
DEGRADED_LEVELS = frozenset({"inprocess", "single", "heuristic"})
MANIFEST = "current.json"
HEURISTIC_NAME = "recency-frequency-heuristic"
HEADLINE_METRICS = ("roc_auc", "macro_f1", "log_loss", "ece", "pr_auc", "share_decline", "share_stable", "share_growth")
LOG_EVERY_S = 60.0  # a failing level is logged at most this often (a broken model would log every request)


class ModelUnavailable(ActivityError, RuntimeError):
    """The requested level has no usable model (not loaded, or it failed to score)."""


class _RegistryDown(ActivityError, RuntimeError):
    """The registry did not answer: nothing about the aliases is known, so nothing changes."""


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a batch; ``label`` indexes ``classes`` (``label_names`` spells them)."""

    probabilities: np.ndarray  # float32 (n, 3), columns in ``classes`` order, rows sum to 1
    label: np.ndarray  # int64 (n,)
    model_name: str
    model_version: str | None
    level: Level
    degraded: bool
    classes: tuple[str, ...] = CLASSES

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] for i in self.label.tolist()]


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to score."""

    name: str
    version: str
    alias: str
    run_id: str | None  # None: registered outside any MLflow run
    directory: Path  # the downloaded version (MLmodel, artifacts/model.onnx, ...)
    scorer: OnnxScorer
    loaded_at: str
    metrics: dict[str, float]
    source: Literal["registry", "cache"]
    remote: Any = None  # serving.triton.RemoteVersion when the model server is Triton
    forecast: ActivityForecast | None = None  # P(active), expected transactions; None before the trainer wrote one

    @property
    def onnx_path(self) -> Path:
        return artifact_path(self.directory, ONNX_FILE)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "path": str(self.directory), "loaded_at": self.loaded_at, "metrics": dict(self.metrics),
                "source": self.source,
                "forecast": ({"model": self.forecast.model, "horizon_days": self.forecast.horizon_days}
                             if self.forecast is not None else None)}


@dataclass(frozen=True)
class FallbackModel:
    """The single-member fallback derived from a champion version."""

    name: str
    version: str  # the champion version it was derived from
    path: Path
    scorer: OnnxScorer


@dataclass(frozen=True)
class Served:
    """Everything a request may score with: replaced as a whole, never mutated."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    single: FallbackModel | None = None


@dataclass(frozen=True)
class LoadOutcome:
    """What a load/reload did (the admin route's answer)."""

    changed: bool
    champion: str | None  # the version serving afterwards
    challenger: str | None
    source: str | None  # registry | cache | None (nothing loaded)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


class ModelHolder:
    """The scorer's current models, their fallbacks, and the registry watcher that swaps them."""

    def __init__(self, settings: Settings, cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.name = settings.mlflow.registered_model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else settings.home / "serving" / "models"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._served = Served()
        self._load_lock = threading.Lock()  # one load at a time (watcher vs. admin route)
        # (version, run_id) -> why; the watcher does not retry these
        self._failed: dict[tuple[str, str | None], str] = {}
        self._last_logged: dict[str, float] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_checked: str | None = None
        self.triton: Any = None  # serving.triton.TritonVersions with serving.model_server: triton
        if settings.serving.model_server == "triton":
            from serving.triton import TritonVersions

            self.triton = TritonVersions(settings)

    # -- scoring -----------------------------------------------------------------------------------------------

    @property
    def served(self) -> Served:
        """The current snapshot; read it once per request and score with that."""
        return self._served

    def score(self, x: np.ndarray, level: Level = "champion", served: Served | None = None) -> ScoreResult:
        """Scores at exactly ``level``; raises ``ModelUnavailable`` when it has no model or the model fails."""
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}: one of {LEVELS}")
        x = _as_features(x)
        served = self._served if served is None else served
        if level == "heuristic":
            probabilities = heuristic_probabilities(x)
            return ScoreResult(probabilities, np.argmax(probabilities, axis=1).astype(np.int64), HEURISTIC_NAME,
                               None, "heuristic", True)
        if level == "single":
            single = served.single
            if single is None:
                raise ModelUnavailable("no single-member fallback is loaded")
            probabilities, _ = _run(single.scorer, x, "single")
            return ScoreResult(probabilities, np.argmax(probabilities, axis=1).astype(np.int64), single.name,
                               single.version, "single", True)
        model = served.challenger if level == "challenger" else served.champion
        if model is None:
            raise ModelUnavailable(f"no {'champion' if level == 'inprocess' else level} model is loaded")
        if level == "inprocess" or model.remote is None:
            probabilities, label = _run(model.scorer, x, level)
        else:
            probabilities, label = _run_remote(model.remote, x, level)
        return ScoreResult(probabilities, label, model.name, model.version, level, level == "inprocess")

    def score_with_fallback(self, x: np.ndarray, prefer: Level = "champion", served: Served | None = None
                            ) -> ScoreResult:
        """The first level of the chain that answers: [challenger ->] champion -> single -> heuristic.

        ``served``: the snapshot to score with (a caller that reads the versions' other files, such as
        their forecasts, passes the one it read them from); the current one by default."""
        x = _as_features(x)
        served = self._served if served is None else served  # one snapshot for the whole chain
        chain: tuple[Level, ...] = ("champion", "single", "heuristic")
        if served.champion is not None and served.champion.remote is not None:
            chain = ("champion", "inprocess", "single", "heuristic")
        if prefer == "challenger":
            chain = ("challenger", *chain)
        elif prefer in ("single", "heuristic"):
            chain = chain[chain.index(prefer):]
        for level in chain[:-1]:
            try:
                return self.score(x, level, served)
            except ModelUnavailable as exc:
                self._log_fallback(level, str(exc))
        return self.score(x, chain[-1], served)

    def _log_fallback(self, level: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(level, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_logged[level] = now
            log.warning("scoring fell back from %s: %s", level, reason)

    # -- loading -----------------------------------------------------------------------------------------------

    def load(self, retry_failed: bool = True) -> LoadOutcome:
        """Pull the versions behind ``champion`` and ``challenger``; swap them in if they changed and are good.

        A version that failed before is skipped unless ``retry_failed`` (the admin route retries,
        the watcher does not, so a corrupt version is not re-downloaded every poll).
        """
        with self._load_lock:
            self.last_checked = _now()
            before = self._served
            errors: list[str] = []
            try:
                champion = self._pull(CHAMPION, before.champion, retry_failed, errors)
                challenger = self._pull(CHALLENGER, before.challenger, retry_failed, errors, required=False)
            except _RegistryDown as exc:
                errors.append(f"registry unavailable, keeping the current models: {exc}")
                champion, challenger = before.champion, before.challenger
            single = before.single
            if champion is None:
                single = None
            elif single is None or single.version != champion.version:
                single = self._single_for(champion, retry_failed, errors)
            after = self._on_model_server(Served(champion, challenger, single), before, errors)
            changed = _versions(after) != _versions(before)
            if after != before:
                self._served = after  # the atomic swap: one reference assignment
                if changed:
                    self._write_manifest(after, errors)
                    self._prune(after, before)
                    log.info("serving %s", _describe_versions(after))
            self.last_error = "; ".join(errors) or None
            return LoadOutcome(changed, _version(champion), _version(challenger),
                               champion.source if champion else None, errors)

    def reload(self) -> dict[str, Any]:
        """The admin route: a load that also retries versions that failed before."""
        return self.load(retry_failed=True).as_dict()

    def load_cached(self) -> LoadOutcome:
        """Start from ``cache_dir/current.json`` (the last good load) when the registry cannot be reached."""
        with self._load_lock:
            errors: list[str] = []
            try:
                manifest = json.loads((self.cache_dir / MANIFEST).read_text())
                champion = self._from_manifest(manifest)
                if champion is None:
                    raise ValueError("the manifest names no champion")
                try:
                    challenger = self._from_manifest(manifest.get("challenger"))
                except Exception as exc:  # the champion still serves without its challenger
                    challenger = None
                    errors.append(f"cached challenger unusable: {_reason(exc)}")
                single = None
                fallback = manifest.get("fallback")
                if fallback:
                    try:
                        single = FallbackModel(fallback["name"], str(fallback["version"]), Path(fallback["path"]),
                                               OnnxScorer(fallback["path"]))
                    except Exception as exc:  # the champion still serves; say why the fallback won't
                        errors.append(f"cached fallback unusable: {_reason(exc)}")
            except Exception as exc:  # no manifest, unreadable, or its model is gone/corrupt
                errors.append(f"cache {self.cache_dir / MANIFEST} unusable: {_reason(exc)}")
                self.last_error = "; ".join(errors)
                served = self._served
                return LoadOutcome(False, _version(served.champion), _version(served.challenger),
                                   served.champion.source if served.champion else None, errors)
            before = self._served
            self._served = self._on_model_server(Served(champion, challenger, single), before, errors)
            self.last_error = "; ".join(errors) or None
            log.info("serving %s from the cache", _describe_versions(self._served))
            return LoadOutcome(_versions(self._served) != _versions(before), champion.version,
                               _version(challenger), "cache", errors)

    def startup(self) -> LoadOutcome:
        """At process start: the registry if it answers, else the cache; else only the heuristic serves."""
        outcome = self.load()
        if self._served.champion is not None:
            return outcome
        cached = self.load_cached()
        errors = outcome.errors + cached.errors
        self.last_error = "; ".join(errors) or None  # "from the cache" is only half the story: say why
        if self._served.champion is None:
            log.error("no model could be loaded (%s): answering with the heuristic", self.last_error)
        return LoadOutcome(cached.changed, cached.champion, cached.challenger, cached.source,
                           errors)

    # -- the watcher -------------------------------------------------------------------------------------------

    def start_watcher(self, interval_s: float | None = None) -> threading.Thread:
        """A daemon thread that polls the registry every ``serving.reload_interval_s`` and swaps new versions in."""
        if self._watcher is not None and self._watcher.is_alive():
            return self._watcher
        interval = self.settings.serving.reload_interval_s if interval_s is None else interval_s
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, args=(interval,), name="model-watcher", daemon=True)
        self._watcher.start()
        return self._watcher

    def stop_watcher(self, timeout_s: float | None = 5.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout_s)

    def _watch(self, interval_s: float) -> None:
        reported: str | None = None  # the same failure is logged once, not every poll
        while not self._stop.wait(interval_s):
            try:
                problem = "; ".join(self.load(retry_failed=False).errors) or None
                if problem and problem != reported:
                    log.warning("model reload: %s", problem)
                reported = problem
            except BaseException:  # the watcher must outlive anything a reload throws
                log.exception("model reload crashed; keeping the current model")

    # -- reporting ---------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """GET /v1/model: the champion being served, where it came from, and what went wrong last."""
        served = self._served
        champion = served.champion
        base: dict[str, Any] = {"name": self.name, "version": None, "alias": "champion", "run_id": None,
                                "loaded_at": None, "metrics": {}, "source": None}
        if champion is not None:
            base |= {k: v for k, v in champion.describe().items() if k != "path"}
        challenger = served.challenger.describe() if served.challenger else None
        if challenger:
            challenger.pop("path")
        levels = [level for level, model in (("champion", champion), ("challenger", served.challenger),
                                             ("single", served.single)) if model is not None]
        return base | {
            "challenger": challenger,
            "fallback": {"name": served.single.name, "version": served.single.version} if served.single else None,
            "levels": [*levels, "heuristic"],
            "last_error": self.last_error,
            "last_checked": self.last_checked,
            "model_server": self.settings.serving.model_server,
        }

    # -- internals ---------------------------------------------------------------------------------------------

    def _on_model_server(self, after: Served, before: Served, errors: list[str]) -> Served:
        """With Triton: its loaded versions made equal to ``after``'s (plus the previous champion, which
        requests in flight may still name), and ``after``'s models given their Triton handle. Triton
        failing changes nothing here: its handles fail fast and the in-process copies answer."""
        if self.triton is None:
            return after
        keep = [model for model in (after.champion, after.challenger, before.champion) if model is not None]
        try:
            for model in keep:
                self.triton.publish(model.version, model.onnx_path)
            self.triton.serve(model.version for model in keep)
        except Exception as exc:  # Triton down or refusing: the in-process copies answer meanwhile
            errors.append(f"triton: {_reason(exc)}")

        def attached(model: LoadedModel | None) -> LoadedModel | None:
            if model is None or model.remote is not None:
                return model
            return replace(model, remote=self.triton.remote(model.version))

        return Served(attached(after.champion), attached(after.challenger), after.single)

    def _pull(self, alias: str, current: LoadedModel | None, retry_failed: bool, errors: list[str],
              required: bool = True) -> LoadedModel | None:
        """The version behind ``alias``: the current one if unchanged, a freshly built one, or (when it is
        missing or rejected) the current one again with the reason in ``errors``. Raises ``_RegistryDown``
        when the registry cannot be read (or the version cannot be downloaded)."""
        try:
            registered = load_by_alias(self.settings, alias, self.cache_dir)
        except Exception as exc:  # registry down, artifact download failed
            raise _RegistryDown(_reason(exc)) from exc
        if registered is None:
            problem = self._registry_problem()
            if problem is not None:
                raise _RegistryDown(problem)
            if required:
                errors.append(f"{alias}: no version of {self.name} has the alias {alias!r}")
                return current  # a champion is never unloaded for lack of an alias
            return None  # the challenger was retired
        key = (registered.version, registered.run_id)
        if current is not None and (current.version, current.run_id) == key:
            return replace(current, source="registry") if current.source != "registry" else current
        if key in self._failed and not retry_failed:
            errors.append(self._failed[key])
            return current
        try:
            model = self._build(registered, alias)
        except Exception as exc:  # corrupt/incompatible model: keep serving the last good one
            reason = f"{alias}: version {registered.version} rejected, keeping " \
                     f"{'version ' + current.version if current else 'no model'}: {_reason(exc)}"
            self._failed[key] = reason
            errors.append(reason)
            shutil.rmtree(registered.directory, ignore_errors=True)  # a retry downloads it afresh
            log.error(reason)
            return current
        self._failed.pop(key, None)
        return model

    def _registry_problem(self) -> str | None:
        """Why the registry cannot be read, or None when it answers (``load_by_alias`` hides the difference)."""
        try:
            client(self.settings).search_registered_models(max_results=1)
        except Exception as exc:
            return _reason(exc)
        return None

    def _build(self, registered: RegisteredModel, alias: str) -> LoadedModel:
        scorer = _checked_scorer(registered.onnx_path)
        return LoadedModel(name=registered.name, version=registered.version, alias=alias, run_id=registered.run_id,
                           directory=registered.directory, scorer=scorer, loaded_at=_now(),
                           metrics=self._metrics(registered.run_id), source="registry",
                           forecast=forecast_of(registered.directory))

    def _metrics(self, run_id: str | None) -> dict[str, float]:
        if run_id is None:
            log.warning("metrics unavailable: the version was registered outside any MLflow run")
            return {}
        try:
            metrics = client(self.settings).get_run(run_id).data.metrics
        except Exception as exc:  # metrics are informative only
            log.warning("metrics of run %s unavailable: %s", run_id, _reason(exc))
            return {}
        return {name: float(metrics[name]) for name in HEADLINE_METRICS if name in metrics}

    def _single_for(self, champion: LoadedModel, retry_failed: bool, errors: list[str]) -> FallbackModel | None:
        """The XGBoost-only fallback of ``champion`` (see the module docstring), loaded once per version."""
        path = artifact_path(champion.directory, FALLBACK_ONNX_FILE)
        key = ("single", champion.version)
        if key in self._failed and not retry_failed:
            errors.append(self._failed[key])
            return None
        try:
            if not path.is_file():
                raise FileNotFoundError(f"version {champion.version} has no {FALLBACK_ONNX_FILE}: it was registered "
                                        "before the trainer wrote one; `activity train run` registers one with it")
            return FallbackModel(f"{champion.name}/xgboost-only", champion.version, path, _checked_scorer(path))
        except Exception as exc:  # the champion still serves; only the middle fallback is missing
            self._failed[key] = f"single-member fallback of version {champion.version} unavailable: {_reason(exc)}"
            errors.append(self._failed[key])
            return None

    def _from_manifest(self, entry: dict[str, Any] | None) -> LoadedModel | None:
        if not entry:
            return None
        directory = Path(entry["path"])
        scorer = _checked_scorer(artifact_path(directory, ONNX_FILE))
        return LoadedModel(name=entry["name"], version=str(entry["version"]), alias=entry["alias"],
                           run_id=entry["run_id"], directory=directory, scorer=scorer,
                           loaded_at=_now(), metrics=dict(entry.get("metrics", {})), source="cache",
                           forecast=forecast_of(directory))

    def _prune(self, after: Served, before: Served) -> None:
        """Delete downloaded versions no longer served, keeping the previous champion's (a quick way back).

        Sessions hold their model in memory, so requests still scoring with an old snapshot are unaffected.
        """
        keep = {model.directory.resolve() for model in (after.champion, after.challenger, before.champion) if model}
        for directory in self.cache_dir.glob("v*"):
            if directory.is_dir() and directory.resolve() not in keep:
                shutil.rmtree(directory, ignore_errors=True)

    def _write_manifest(self, served: Served, errors: list[str]) -> None:
        """``current.json``: the champion's version, run, path, load time and metrics (+ challenger, fallback)."""
        if served.champion is None:
            return
        manifest = served.champion.describe() | {
            "challenger": served.challenger.describe() if served.challenger else None,
            "fallback": ({"name": served.single.name, "version": served.single.version, "path": str(served.single.path)}
                         if served.single else None),
            "written_at": _now(),
        }
        target = self.cache_dir / MANIFEST
        temporary = target.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            temporary.replace(target)  # never a half-written manifest
        except OSError as exc:
            errors.append(f"manifest not written: {_reason(exc)}")


# -- helpers ---------------------------------------------------------------------------------------------------


def heuristic_probabilities(x: np.ndarray) -> np.ndarray:
    """A model-free guess from the features: momentum (week pace vs. month, month trend) and recency.

    ``z = pace + trend/2 - recency/4`` on the log scales of ``recency_frequency_scores``, only for
    customers active in the last 30 days (others: "stable", nothing to change from); the class
    logits are ``(-z, 1, +z)``, so a slowing or lapsing customer leans to decline, an accelerating one
    to growth. Hand-set, not fitted: valid probabilities, rough decisions.
    """
    scores = recency_frequency_scores(pd.DataFrame(np.asarray(x, dtype=np.float64), columns=list(FEATURE_NAMES)))
    recency, frequency, pace, trend = scores.T
    z = np.where(frequency > 0, pace + 0.5 * trend - 0.25 * recency, 0.0)
    logits = np.column_stack([-z, np.ones_like(z), z])
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def forecast_of(directory: Path) -> ActivityForecast | None:
    """The version's activity forecast; None when it has none (registered before the trainer wrote one).

    A forecast file that is there but unusable rejects the version like a corrupt ONNX file does.
    """
    path = artifact_path(directory, FORECAST_FILE)
    return ActivityForecast.load(path) if path.is_file() else None


def _as_features(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"expected features of shape (n, {len(FEATURE_NAMES)}), got {x.shape}")
    return np.ascontiguousarray(x)


def _run(scorer: OnnxScorer, x: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and decided labels in one onnxruntime call; any failure or non-finite output -> unavailable."""
    try:
        probabilities, label = scorer.session.run([PROBABILITIES, LABEL], {INPUT: x})
    except Exception as exc:  # onnxruntime's errors have no common base worth naming
        raise ModelUnavailable(f"{level} failed to score: {_reason(exc)}") from exc
    if not np.isfinite(probabilities).all():
        raise ModelUnavailable(f"{level} produced non-finite probabilities")
    return probabilities, label.astype(np.int64, copy=False)


def _run_remote(remote: Any, x: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """``_run`` through Triton: its failures and budget overruns make the level unavailable."""
    try:
        probabilities, label = remote.score(x)
    except Exception as exc:  # TritonUnavailable, or an answer that does not parse
        raise ModelUnavailable(f"{level} failed in Triton: {_reason(exc)}") from exc
    if not np.isfinite(probabilities).all():
        raise ModelUnavailable(f"{level} produced non-finite probabilities in Triton")
    return probabilities, label


def _checked_scorer(path: Path) -> OnnxScorer:
    """An ``OnnxScorer`` that loads, was fitted on ``FEATURE_NAMES`` and gives valid probabilities."""
    scorer = OnnxScorer(path)
    if scorer.feature_names and scorer.feature_names != tuple(FEATURE_NAMES):
        raise ValueError(f"model was fitted on {len(scorer.feature_names)} other features, not FEATURE_NAMES")
    if scorer.classes and scorer.classes != tuple(CLASSES):
        raise ValueError(f"model predicts classes {scorer.classes}, not {CLASSES}")
    probe = np.array([[COLD_START[name] for name in FEATURE_NAMES]], dtype=np.float32)
    probabilities, _ = _run(scorer, probe, "probe")
    if probabilities.shape != (1, len(CLASSES)) or abs(float(probabilities.sum()) - 1.0) > 1e-4:
        raise ValueError(f"model output {probabilities!r} is not a probability vector over {CLASSES}")
    return scorer


def _versions(served: Served) -> tuple[str | None, str | None, str | None]:
    return _version(served.champion), _version(served.challenger), served.single.version if served.single else None


def _version(model: LoadedModel | None) -> str | None:
    return model.version if model is not None else None


def _describe_versions(served: Served) -> str:
    parts = [f"champion v{served.champion.version}" if served.champion else "no champion"]
    if served.challenger:
        parts.append(f"challenger v{served.challenger.version}")
    return ", ".join(parts)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

