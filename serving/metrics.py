"""The scorer's Prometheus metrics (one registry per process: the default one)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUEST_SECONDS = Histogram("activity_scorer_request_seconds", "Request latency per route.", ["route"],
                            buckets=LATENCY_BUCKETS)
RESPONSES = Counter("activity_scorer_responses_total", "Responses per route and status code.", ["route", "status"])
PREDICTIONS = Counter("activity_scorer_predictions_total", "Predictions per class, arm and model version.",
                      ["label", "arm", "version"])
FALLBACKS = Counter("activity_scorer_fallbacks_total", "Answers from a fallback level, per level and cause.",
                    ["level", "cause"])
MODEL_VERSION = Gauge("activity_scorer_model_version", "Registered version of the loaded model, per alias.", ["alias"])
MODEL_LOADED_AT = Gauge("activity_scorer_model_loaded_timestamp_seconds", "When the champion was loaded.")
FEATURE_AGE = Histogram("activity_scorer_feature_age_seconds",
                        "as_of minus the time of the customer's latest stored state (feature freshness).",
                        buckets=(1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400))
SHADOW_DISAGREEMENTS = Counter("activity_scorer_shadow_disagreements_total",
                               "Shadow-scored requests where the challenger's class differs from the answer.")
PREDICTION_LOG_SENT = Counter("activity_scorer_prediction_log_sent_total", "Prediction records delivered.")
PREDICTION_LOG_DROPPED = Counter("activity_scorer_prediction_log_dropped_total",
                                 "Prediction records dropped (buffer full or delivery failed).")
MICRO_BATCH_SIZE = Histogram("activity_scorer_micro_batch_size",
                             "Single-customer requests scored together in one micro-batch (1 = scored alone).",
                             buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


def export_model_versions(info: dict) -> None:
    """The registered versions behind champion and challenger (``ModelHolder.info()``) on their gauge."""
    challenger = info.get("challenger") or {}
    for alias, version in (("champion", info.get("version")), ("challenger", challenger.get("version"))):
        if version is not None and str(version).isdigit():
            MODEL_VERSION.labels(alias).set(int(version))
