"""The request-level scorer: customers and times in, answers out, through the fallback chain, A/B arms and shadow.

It reads features from the online store (the class prior answers when the store fails), scores
them with the ``ModelHolder``'s current snapshot (``serving.scoring``), answers each customer with
the model, version and arm that produced it (and that version's activity forecast: P(any
transaction) and the expected transactions over the horizon), counts fallbacks and predictions,
and logs every answer (and the challenger's shadow score) to the prediction log.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from activity_settings import Settings
from model_contract.labels import CLASSES
from serving import metrics
from serving.online import OnlineStoreUnavailable

log = logging.getLogger("activity.serving")


@dataclass
class Scored:
    probabilities: np.ndarray  # (n, 3)
    labels: np.ndarray
    name: str
    version: str | None
    level: str | None  # None = the primary model answered
    cause: str | None


class Scorer:
    """Features -> probabilities with the fallback chain, A/B arms and the shadow."""

    def __init__(self, settings: Settings, holder: Any, online: Any, prediction_log: Any | None) -> None:
        self.settings = settings
        self.holder = holder
        self.online = online
        self.prediction_log = prediction_log
        self.timeout_s = settings.serving.online_timeout_ms / 1000.0
        self.challenger_share = settings.serving.challenger_percent / 100.0

    def arm(self, customer_id: str) -> str:
        """Sticky A/B: the same customer always lands in the same arm."""
        if self.challenger_share <= 0 or self.holder.served.challenger is None:
            return "champion"
        bucket = int.from_bytes(hashlib.blake2b(customer_id.encode(), digest_size=8).digest(), "big") / 2**64
        return "challenger" if bucket < self.challenger_share else "champion"

    def score(self, customer_ids: list[str], as_of_s: list[int],
              request_id: str | Sequence[str]) -> list[dict[str, Any]]:
        """One answer per customer, in order.

        ``request_id``: a string when the rows are one request (the batch route), or one id per row
        when each row is a request of its own (the micro-batcher's single-customer requests). Every
        row's answers and prediction-log records carry its request's id, and a fallback is counted
        once per request it answered, so a micro-batch counts exactly what its requests alone would.
        """
        one_request = isinstance(request_id, str)
        request_ids: Sequence[str] = [request_id] * len(customer_ids) if isinstance(request_id, str) else request_id
        if len(request_ids) != len(customer_ids):
            raise ValueError(f"{len(customer_ids)} customers but {len(request_ids)} request ids")
        cause = None
        try:
            x, state_times, known = self.online.features(customer_ids, as_of_s, timeout_s=self.timeout_s)
        except OnlineStoreUnavailable as exc:
            cause = f"online store: {exc}"
            x, state_times, known = None, [None] * len(customer_ids), [False] * len(customer_ids)
        served = self.holder.served  # one snapshot: the class and the forecast come from the same version
        arms = [self.arm(c) for c in customer_ids]
        results: list[dict[str, Any]] = [{} for _ in customer_ids]
        for arm in set(arms):
            rows = [i for i, a in enumerate(arms) if a == arm]
            scored = self._score_rows(x[rows] if x is not None else None, len(rows), arm, cause, not one_request,
                                      served)
            forecasts = self._forecasts(x[rows] if x is not None else None, arm, served)
            for k, (i, (by, j)) in enumerate(zip(rows, scored, strict=True)):
                results[i] = self._answer(customer_ids[i], as_of_s[i], state_times[i], known[i], by, j, arm,
                                          request_ids[i], forecasts[k] if forecasts else None)
        if x is not None and self.settings.serving.shadow and self.holder.served.challenger is not None:
            self._shadow(x, customer_ids, arms, results, request_ids, separate=not one_request)
        return results

    def _score_rows(self, x: np.ndarray | None, rows: int, arm: str, cause: str | None,
                    separate: bool, served: Any) -> list[tuple[Scored, int]]:
        """Per row: the scores that answer it and its row in them.

        ``separate``: each row is a request of its own (a micro-batch): fallbacks are counted per row,
        and when a loaded model failed on the batch (an error or a non-finite score can come from a
        single row) each row is scored again alone, so one row never moves the others down the chain.
        """
        requests = rows if separate else 1
        if x is None:
            probabilities = np.tile(class_prior(self.holder.info()), (rows, 1))
            metrics.FALLBACKS.labels("prior", "online_store").inc(requests)
            prior = Scored(probabilities, np.argmax(probabilities, axis=1), "class-prior", None, "prior", cause)
            return [(prior, j) for j in range(rows)]
        result = self.holder.score_with_fallback(x, prefer=arm, served=served)
        if separate and rows > 1 and result.level != arm and self._loaded_model_failed(arm, result.level, served):
            return [(self._scored(self.holder.score_with_fallback(x[j:j + 1], prefer=arm, served=served), 1), 0)
                    for j in range(rows)]
        scored = self._scored(result, requests)
        return [(scored, j) for j in range(rows)]

    def _scored(self, result: Any, requests: int) -> Scored:
        if result.degraded:
            metrics.FALLBACKS.labels(result.level, "model").inc(requests)
        return Scored(result.probabilities, result.label, result.model_name, result.model_version,
                      result.level if result.degraded else None, "model unavailable" if result.degraded else None)

    def _forecasts(self, x: np.ndarray | None, arm: str, served: Any) -> list[dict[str, Any] | None]:
        """Each row's activity forecast from the arm's version in ``served`` (the champion's when the arm has
        none loaded).

        Empty when there are no features or no loaded version carries a forecast; a row without a
        purchase on record gets None, and a failing forecast leaves every row's None: the class answer
        never depends on it.
        """
        model = served.challenger if arm == "challenger" and served.challenger is not None else served.champion
        forecast = getattr(model, "forecast", None)
        if x is None or forecast is None:
            return []
        try:
            p_active, expected, usable = forecast.predict(x)
        except Exception:  # the forecast is an extra: a failure leaves the class answer alone
            log.exception("activity forecast failed")
            return []
        return [{"model": forecast.model, "horizon_days": forecast.horizon_days,
                 "p_active": round(float(p_active[k]), 6), "expected_transactions": round(float(expected[k]), 4)}
                if usable[k] else None for k in range(len(usable))]

    def _loaded_model_failed(self, arm: str, answered: str, served: Any) -> bool:
        """Whether a level before ``answered`` in ``arm``'s chain has a model (so it failed, maybe on one row),
        rather than none being loaded (which fails every row alike)."""
        for level in ("challenger", "champion", "single") if arm == "challenger" else ("champion", "single"):
            if level == answered:
                return False
            if getattr(served, level, None) is not None:
                return True
        return False

    def _answer(self, customer_id: str, as_of_s: int, state_time: datetime | None, known: bool, scored: Scored,
                row: int, arm: str, request_id: str, forecast: dict[str, Any] | None = None) -> dict[str, Any]:
        p = scored.probabilities[row]
        label = int(scored.labels[row])
        freshness = None if state_time is None else as_of_s - state_time.timestamp()
        if freshness is not None:
            metrics.FEATURE_AGE.observe(max(0.0, freshness))
        metrics.PREDICTIONS.labels(CLASSES[label], arm, str(scored.version)).inc()
        degraded = scored.level is not None
        answer = {
            "request_id": request_id,
            "customer_id": customer_id,
            "as_of": datetime.fromtimestamp(as_of_s, UTC).isoformat(),
            "class": CLASSES[label],
            "probabilities": {name: round(float(value), 6) for name, value in zip(CLASSES, p, strict=True)},
            "activity_score": round(float(p[2] - p[0]), 6),
            "confidence": round(float(p[label]), 6),
            "forecast": forecast,
            "model": {"name": scored.name, "version": scored.version, "arm": arm},
            "features": {"as_of": None if state_time is None else state_time.isoformat(),
                         "freshness_s": None if freshness is None else round(freshness, 3), "known": bool(known)},
            "degraded": degraded,
            "fallback": None if not degraded else f"{scored.level}: {scored.cause}" if scored.cause else scored.level,
        }
        if self.prediction_log is not None:
            self.prediction_log.publish(customer_id, answer)
        return answer

    def _shadow(self, x: np.ndarray, customer_ids: list[str], arms: list[str], results: list[dict[str, Any]],
                request_ids: Sequence[str], separate: bool = False) -> None:
        try:
            shadow = self.holder.score(x, "challenger")
        except Exception:  # the shadow never affects the answer
            if separate and len(x) > 1:  # it may have failed on one row: each request's shadow alone, as unbatched
                for i in range(len(x)):
                    self._shadow(x[i:i + 1], customer_ids[i:i + 1], arms[i:i + 1], results[i:i + 1],
                                 request_ids[i:i + 1])
                return
            log.exception("shadow scoring failed")
            return
        if shadow.degraded:
            return
        for i, answer in enumerate(results):
            if arms[i] == "challenger":
                continue
            label = CLASSES[int(shadow.label[i])]
            if label != answer["class"]:
                metrics.SHADOW_DISAGREEMENTS.inc()
            if self.prediction_log is not None:
                self.prediction_log.publish(customer_ids[i], {
                    "request_id": request_ids[i], "customer_id": customer_ids[i], "as_of": answer["as_of"],
                    "shadow": True, "class": label, "model": {"name": shadow.model_name,
                                                            "version": shadow.model_version, "arm": "challenger"},
                    "probabilities": {n: round(float(v), 6) for n, v in zip(CLASSES, shadow.probabilities[i],
                                                                             strict=True)},
                })


def class_prior(info: dict[str, Any]) -> np.ndarray:
    """The champion's test-window class shares (what to answer without features), else uniform."""
    shares = np.array([float((info.get("metrics") or {}).get(f"share_{name}", np.nan)) for name in CLASSES])
    if not np.all(np.isfinite(shares)) or shares.sum() <= 0:
        return np.full(len(CLASSES), 1.0 / len(CLASSES))
    return shares / shares.sum()
