"""The platform's one settings object.

Precedence: explicit arguments > environment variables (``ACTIVITY_`` prefix, ``__`` between
nested names, e.g. ``ACTIVITY_KAFKA__PARTITIONS=8``) > a YAML file (``ACTIVITY_CONFIG`` or
``./activity.yaml``) > defaults. An invalid setting fails at start with its dotted name.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from infra.kafka_log import client_logging

ENV_PREFIX = "ACTIVITY_"
CONFIG_FILE_ENV = "ACTIVITY_CONFIG"
DEFAULT_CONFIG_FILE = "activity.yaml"


class ActivityError(Exception):
    """The base of the platform's errors: the message says what went wrong and what to do about it.

    The command line prints any of them as one line with a non-zero exit code, never a traceback.
    """


class SettingsError(ActivityError, ValueError):
    """A setting is invalid; the message names it and says how it was given."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSettings(_Section):
    transactions: str = "transactions"
    dlq: str = "transactions.dlq"
    predictions: str = "predictions"


class KafkaSettings(_Section):
    """Kafka: an embedded single-node broker unless ``bootstrap_servers`` names a cluster."""

    bootstrap_servers: str | None = Field(
        default=None, description="Existing cluster to use; unset = start the embedded broker."
    )
    broker_version: str = Field(default="4.3.1", description="Embedded Apache Kafka version.")
    host: str = Field(default="127.0.0.1", description="Embedded broker's listen address.")
    port: int = Field(default=19092, ge=1, le=65535, description="Embedded broker port.")
    controller_port: int = Field(default=19093, ge=1, le=65535)
    heap: str = Field(default="1g", pattern=r"^\d+[mMgG]$", description="Embedded broker heap.")
    start_timeout_s: float = Field(default=60.0, gt=0)
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions per topic.")
    replication_factor: int = Field(default=1, ge=1)
    topics: TopicSettings = TopicSettings()
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: Path | None = None
    client_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="ERROR", description="Least severe line of librdkafka's own log that reaches the log (logger "
                                     "activity.kafka.client; a repeated line once a minute).")

    @property
    def embedded(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"{self.host}:{self.port}"

    def client_config(self) -> dict[str, Any]:
        """librdkafka connection properties shared by every client we create."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
            **client_logging(self.client_log_level),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password or ""
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        return conf

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class SparkSettings(_Section):
    master: str = Field(default="local[*]", description="local[*], spark://, k8s:// or yarn.")
    version: str = Field(default="4.2.0", description="Spark version of the Kafka connector.")
    driver_memory: str = Field(default="4g", pattern=r"^\d+[mMgG]$")
    executor_memory: str = Field(default="2g", pattern=r"^\d+[mMgG]$",
                                 description="Per executor on a cluster master (local masters run in the driver).")
    cores_max: int | None = Field(default=None, ge=1, description=(
        "Most cores one application takes on a standalone master (spark.cores.max); None = all free ones."))
    shuffle_partitions: int = Field(default=4, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"


class StreamingSettings(_Section):
    """The Spark Structured Streaming job that turns transactions into feature state."""

    trigger_interval_s: float = Field(default=1.0, ge=0, description="Micro-batch interval; 0 = as fast as possible.")
    max_offsets_per_trigger: int = Field(default=500_000, ge=1_000, description="Cap on records per micro-batch.")
    allowed_lateness_hours: float = Field(
        default=48.0, gt=0, description="Event-time watermark delay; duplicate ids are dropped within it."
    )
    snapshot_every_batches: int = Field(default=25, ge=1, description="Compact the state logs this often.")
    metrics_port: int = Field(default=19101, ge=0, le=65535, description="Prometheus /metrics; 0 = off.")
    metrics_host: str = Field(default="127.0.0.1", description="Address of /metrics (0.0.0.0 in a container).")
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    fail_on_data_loss: bool = True
    earliest_event_time: datetime = Field(default=datetime(1970, 1, 1, tzinfo=UTC), description=(
        "Events before this are rejected as stale_timestamp (a date or an ISO 8601 time; UTC without an "
        "offset). The contract's floor is 1970-01-01: real ledgers go back decades."))

    @field_validator("earliest_event_time")
    @classmethod
    def _utc_from_1970(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value < datetime(1970, 1, 1, tzinfo=UTC):
            raise ValueError("must be 1970-01-01 or later: the platform counts event days from 1970-01-01")
        return value


class FeatureStoreSettings(_Section):
    """Feast: the repo is generated under the data directory from ``features/``."""

    project: str = Field(default="customer_activity", pattern=r"^[a-z][a-z0-9_]*$")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"
    offline_store: Literal["file", "spark"] = Field(
        default="file", description="Where point-in-time joins run: file (pandas/dask in the process) or spark "
                                    "(Feast's Spark offline store on spark.master, over the same parquet files).")
    state_ttl_days: int = Field(default=3650, ge=1, description="How far back the point-in-time join looks.")
    retrieval_memory_mb: int = Field(
        default=2048, ge=1, description="Ceiling of a point-in-time retrieval's join index (keys of entity and "
                                         "stored rows, about 128 bytes a row); a larger retrieval fails naming this.")
    retrieval_batch_rows: int = Field(
        default=50_000, ge=100, le=1_000_000, description="Entity rows whose states are decoded and transformed "
                                                          "together in a point-in-time retrieval (bounds its memory).")


class ModelSettings(_Section):
    """Hyper-parameters of the RandomForest + XGBoost ensemble."""

    forest_trees: int = Field(default=200, ge=1, le=5_000)
    forest_max_depth: int | None = Field(default=14, ge=1, description="None = grow until leaves are pure.")
    forest_min_samples_leaf: int = Field(default=10, ge=1)
    forest_max_features: float = Field(default=0.5, gt=0, le=1, description="Share of features per split.")
    booster_rounds: int = Field(default=300, ge=1, le=20_000)
    booster_max_depth: int = Field(default=6, ge=1, le=32)
    booster_learning_rate: float = Field(default=0.08, gt=0, le=1)
    booster_subsample: float = Field(default=0.8, gt=0, le=1)
    seed: int = 7
    threads: int = Field(default=-1, description="-1 = every core.")


class TrainingSettings(_Section):
    """Labels, training sets, the models, the promotion gate and the retraining schedule."""

    target: Literal["change", "active"] = Field(
        default="change", description="change: decline/stable/growth (what the scorer serves); active: any "
        "transaction in the next horizon (evaluated by `activity backtest --target active`).")
    horizon_days: int = Field(default=30, ge=1, le=365, description="Window compared before and after as_of.")
    decline_below: float = Field(
        default=-0.3, lt=0, description="log1p(next) - log1p(previous) at or below this: decline."
    )
    growth_above: float = Field(
        default=0.3, gt=0, description="log1p(next) - log1p(previous) at or above this: growth."
    )
    grid_days: int = Field(default=7, ge=1, description="Spacing of the as_of dates in a training set.")
    validation_share: float = Field(default=0.2, gt=0, lt=0.5, description="Share of as_of dates for validation.")
    test_share: float = Field(default=0.2, gt=0, lt=0.5, description="Share of as_of dates (the latest) for test.")
    max_rows: int | None = Field(
        default=None, ge=1_000, description="Cap on labelled rows (a uniform sample of customers); None = all."
    )
    backend: Literal["local", "spark"] = Field(
        default="local", description="local: scikit-learn + xgboost; spark: Spark ML + xgboost.spark."
    )
    model: ModelSettings = ModelSettings()
    promotion_metric: Literal["roc_auc", "macro_f1"] = Field(
        default="roc_auc", description="The challenger must beat the champion on this, on the same test window."
    )
    min_roc_auc: float = Field(default=0.6, ge=0, le=1, description="Guard: below this a model is never promoted.")
    guard_baselines: list[Literal["persistence", "recency_frequency", "bg_nbd"]] = Field(
        default=["persistence", "recency_frequency"],
        description="Guard: baselines the model must beat on promotion_metric (all are reported either way).",
    )
    max_calibration_error: float = Field(default=0.1, gt=0, le=1, description="Guard: top-label ECE.")
    reference_sample_rows: int = Field(default=5_000, ge=100, description="Training rows kept for drift checks.")
    schedule: str = Field(default="0 3 * * *", description="Cron expression of `activity train schedule` (UTC).")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _valid_cron(value)


class MlflowSettings(_Section):
    """MLflow tracking and registry; by default a SQLite store under the data directory."""

    tracking_uri: str | None = Field(
        default=None, description="e.g. http://mlflow:5000 or postgresql://...; None = sqlite in the data dir."
    )
    artifact_location: str | None = Field(default=None, description="Artifact root of new experiments.")
    experiment: str = "customer-activity"
    registered_model: str = Field(default="customer-activity", min_length=1)


class ServingSettings(_Section):
    """The scorer: REST API, credentials, model reloads, fallbacks, A/B and the prediction log."""

    host: str = Field(default="127.0.0.1", description="Listen address of `activity serve run`.")
    port: int = Field(default=18080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    batch_max: int = Field(default=500, ge=1, le=10_000, description="Most customers in one batch request.")
    micro_batch_max: int = Field(default=64, ge=1, le=1_024, description=(
        "Most concurrent single-customer requests scored together in one call; 1 = each alone."))
    rate_limit_per_s: float = Field(default=200.0, gt=0, description="Sustained requests/s per client.")
    rate_limit_burst: int = Field(default=400, ge=1, description="Requests a client may send at once.")
    reload_interval_s: float = Field(default=30.0, ge=1, description="How often the registry is polled.")
    online_timeout_ms: float = Field(default=50.0, gt=0, description="Online store budget before falling back.")
    challenger_percent: float = Field(
        default=0.0, ge=0, le=100, description="Share of customers (sticky, by hashed id) scored by the challenger."
    )
    shadow: bool = Field(default=True, description="Also score with the challenger, logged but not answered.")
    prediction_log: bool = Field(default=True, description="Publish every prediction to the predictions topic.")
    prediction_buffer: int = Field(default=100_000, ge=100, description="Bounded buffer; overflow is dropped+counted.")
    jwt_secret: str | None = Field(
        default=None, min_length=32, description="HS256 secret; None = generated once under the data dir."
    )
    model_server: Literal["inprocess", "triton"] = Field(default="inprocess", description=(
        "Where the champion runs: inprocess (ONNX Runtime in the scorer) or triton (Triton Inference Server "
        "over KServe v2 HTTP, with the in-process copy as its fallback)."))
    triton_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$", description=(
        "An existing Triton's HTTP endpoint, e.g. http://triton:8000; none = the embedded one on triton_port."))
    triton_port: int = Field(default=18000, ge=1, le=65535, description="Embedded Triton's HTTP port.")
    triton_metrics_port: int = Field(default=18002, ge=1, le=65535, description="Embedded Triton's /metrics.")
    triton_repository: Path | None = Field(default=None, description=(
        "Triton's model repository (what its --model-repository reads); none = <data_dir>/triton/models."))
    triton_timeout_ms: float = Field(default=100.0, gt=0, description=(
        "Budget of one Triton call before the in-process copy answers (degraded)."))
    triton_retry_s: float = Field(default=1.0, ge=0, description=(
        "After a failed Triton call, how long requests skip Triton before trying it again."))
    triton_instances: int = Field(default=1, ge=1, le=16, description="Python-backend instances per model.")
    triton_max_queue_delay_us: int = Field(default=0, ge=0, le=1_000_000, description=(
        "Dynamic batching: how long Triton holds a request to batch it with others (0: it batches what "
        "queued while an instance was busy; the scorer batches its own requests already)."))
    token_ttl_s: int = Field(default=3_600, ge=60, description="Lifetime of tokens from `activity serve token`.")


class SimulationSettings(_Section):
    """Defaults of the synthetic population; each can be overridden per command."""

    customers: int = Field(default=10_000, ge=1)
    days: int = Field(default=180, ge=1)
    start: date = date(2026, 1, 1)
    seed: int = 42
    mean_daily_rate: float = Field(default=0.35, gt=0, description="Mean tx/customer/day.")


def _valid_cron(value: str) -> str:
    from croniter import croniter

    if not croniter.is_valid(value):
        raise ValueError(f"not a cron expression: {value!r}")
    return value


class MonitoringSettings(_Section):
    """Drift and online-quality jobs, their alerts and the drift -> retraining policy."""

    drift_source: Literal["auto", "predictions", "snapshot"] = Field(
        default="auto",
        description="Current window: customers scored in the last `drift_window_hours` (prediction log), the "
                    "latest offline snapshot of all customers, or `auto` (predictions when there are enough).")
    drift_window_hours: float = Field(default=24.0, gt=0, description="Prediction-log window of a drift run.")
    drift_min_rows: int = Field(default=200, ge=10, description="Fewest current rows a drift run accepts.")
    drift_max_rows: int = Field(default=5_000, ge=100, description="Current rows sampled at most.")
    drift_method: str | None = Field(
        default=None, description="Evidently's per-feature drift method (e.g. psi, wasserstein, ks, jensenshannon); "
                                  "none: Evidently's choice by column type and size.")
    drift_threshold: float | None = Field(default=None, gt=0, description="Threshold of `drift_method` "
                                          "(none: the method's default).")
    drift_share_threshold: float = Field(
        default=0.3, gt=0, le=1, description="Share of drifted features at which the dataset counts as drifted.")
    psi_threshold: float = Field(default=0.25, gt=0, description="PSI at which a single feature counts as shifted.")
    drift_schedule: str = Field(default="0 * * * *", description="Cron of the drift job in `monitor schedule` (UTC).")
    quality_schedule: str = Field(default="30 4 * * *", description="Cron of the online-quality job (UTC).")
    quality_min_predictions: int = Field(default=30, ge=1, description="Fewest matured predictions per group.")
    quality_alert_f1_drop: float = Field(
        default=0.1, ge=0, le=1, description="Alert when online macro-F1 is this far below the champion's test F1.")
    estimate_alert_auc_drop: float = Field(
        default=0.05, gt=0, le=1, description="Alert when the estimated ROC-AUC of the champion's answers (CBPE) is "
                                              "this far below its test ROC-AUC.")
    estimate_min_rows: int = Field(default=100, ge=10, description="Fewest answers a group needs to be estimated.")
    estimate_schedule: str = Field(default="15 * * * *", description="Cron of the estimate job (UTC).")
    time_driven_features: tuple[str, ...] = Field(
        default=("tenure_days", "lifetime_tx_count", "purchase_span_days"),
        description="Features that grow with time by construction: reported apart, never counted in the drifted share.")
    calibration_window_days: int = Field(
        default=28, ge=1, description="As_of days of matured answers the monitor's calibration map is refit on.")
    calibration_min_rows: int = Field(default=500, ge=50, description="Fewest matured answers a refit accepts.")
    calibration_schedule: str = Field(default="0 5 * * *", description="Cron of the calibration refit (UTC).")
    webhook_url: str | None = Field(
        default=None, description="Where the jobs post alerts (Alertmanager webhook payload); none: log only.")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    retrain_on_drift: bool = Field(default=True, description="Start a training run when the dataset drifts.")
    retrain_min_interval_h: float = Field(
        default=24.0, ge=0, description="Hours after a drift-triggered run before drift may trigger another.")
    metrics_port: int = Field(default=9103, ge=0, le=65535, description="/metrics of `monitor schedule` (0: off).")
    metrics_host: str = Field(default="127.0.0.1", description="Address of /metrics (0.0.0.0 in a container).")

    @field_validator("drift_schedule", "quality_schedule", "estimate_schedule", "calibration_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _valid_cron(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default=Path(".activity"), description="Where state lives.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    spark: SparkSettings = SparkSettings()
    simulation: SimulationSettings = SimulationSettings()
    streaming: StreamingSettings = StreamingSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    training: TrainingSettings = TrainingSettings()
    mlflow: MlflowSettings = MlflowSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def home(self) -> Path:
        """The absolute data directory (created on first use)."""
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path


def _config_file() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"{CONFIG_FILE_ENV}={explicit}: no such file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings, raising ``SettingsError`` naming each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        env = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"invalid setting {dotted} [env {env}]: {error['msg']}{shown}")
    return "\n".join(lines)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in another process (e.g. a CLI run)."""
    env: dict[str, str] = {}

    def flatten(prefix: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            name = f"{prefix}{key.upper()}"
            if isinstance(value, dict):
                flatten(f"{name}__", value)
            elif isinstance(value, list):
                env[name] = json.dumps(value)
            elif value is not None:
                env[name] = str(value).lower() if isinstance(value, bool) else str(value)

    flatten(ENV_PREFIX, settings.model_dump(mode="json"))
    return env


def settings_reference() -> str:
    """Every setting as a Markdown table: name, environment variable, default, what it does.

    The README's configuration reference is this text (a test keeps them equal).
    """
    rows = ["| setting | environment variable | default | description |", "| --- | --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            dotted = f"{prefix}{name}"
            env = ENV_PREFIX + dotted.upper().replace(".", "__")
            default = info.get_default(call_default_factory=True)
            shown = "none" if default is None else json.dumps(default, default=str) if isinstance(
                default, list | dict) else str(default).lower() if isinstance(default, bool) else str(default)
            description = (info.description or "").replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{dotted}` | `{env}` | `{shown}` | {description} |")

    walk(Settings, "")
    return "\n".join(rows) + "\n"
