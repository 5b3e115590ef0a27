"""The scorer: REST over Feast online features and the MLflow champion, run with ONNX Runtime.

Every answer names the model and version that produced it, the features' as-of time and age,
and whether it is ``degraded``: when the online store fails or exceeds its budget the answer
comes from the class prior; when the champion fails, from a single model, then from a
heuristic; none of these causes is ever a 5xx. A sticky share of customers (by hashed id) is
answered by the challenger; the challenger also scores in the shadow; both are logged to the
``predictions`` topic.
"""

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import ORJSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from activity_settings import Settings
from model_contract.labels import CLASSES
from serving import metrics
from serving.auth import Authenticator, Principal, requires
from serving.batching import DEFAULT_MAX_SIZE, MicroBatcher
from serving.problems import REQUEST_ID_PATTERN, Problem, install_problem_handlers
from serving.ratelimit import RateLimiter

log = logging.getLogger("activity.serving")
CUSTOMER_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"
MAX_FUTURE_S = 86_400  # an as_of more than a day ahead is a client error
API_VERSION = "v1"


# ------------------------------------------------------------------------------------ schemas


class ModelRef(BaseModel):
    name: str
    version: str | None = Field(description="Registered version; null for the heuristic fallback.")
    arm: str = Field(description="champion or challenger (the A/B arm that answered).")


class FeatureInfo(BaseModel):
    as_of: datetime | None = Field(description="Time of the customer's latest stored state; null if never seen.")
    freshness_s: float | None = Field(description="Request as_of minus that time.")
    known: bool = Field(description="False for a customer the platform has never seen (cold-start features).")


class ActivityScore(BaseModel):
    request_id: str
    customer_id: str
    as_of: datetime
    class_: str = Field(alias="class", description="decline, stable or growth.")
    probabilities: dict[str, float]
    activity_score: float = Field(description="P(growth) - P(decline), in [-1, 1].")
    confidence: float = Field(description="Probability of the answered class.")
    model: ModelRef
    features: FeatureInfo
    degraded: bool
    fallback: str | None = Field(description="null, or the fallback level that answered and why.")


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(pattern=CUSTOMER_ID)]
    as_of: datetime | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customers: list[BatchItem] = Field(min_length=1)


class BatchResponse(BaseModel):
    request_id: str
    results: list[ActivityScore]


# ----------------------------------------------------------------------------------- the app


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
        from serving.online import OnlineStoreUnavailable

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
        arms = [self.arm(c) for c in customer_ids]
        results: list[dict[str, Any]] = [{} for _ in customer_ids]
        for arm in set(arms):
            rows = [i for i, a in enumerate(arms) if a == arm]
            scored = self._score_rows(x[rows] if x is not None else None, len(rows), arm, cause, not one_request)
            for i, (by, j) in zip(rows, scored, strict=True):
                results[i] = self._answer(customer_ids[i], as_of_s[i], state_times[i], known[i], by, j, arm,
                                          request_ids[i])
        if x is not None and self.settings.serving.shadow and self.holder.served.challenger is not None:
            self._shadow(x, customer_ids, arms, results, request_ids, separate=not one_request)
        return results

    def _score_rows(self, x: np.ndarray | None, rows: int, arm: str, cause: str | None,
                    separate: bool) -> list[tuple[Scored, int]]:
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
        result = self.holder.score_with_fallback(x, prefer=arm)
        if separate and rows > 1 and result.level != arm and self._loaded_model_failed(arm, result.level):
            return [(self._scored(self.holder.score_with_fallback(x[j:j + 1], prefer=arm), 1), 0)
                    for j in range(rows)]
        scored = self._scored(result, requests)
        return [(scored, j) for j in range(rows)]

    def _scored(self, result: Any, requests: int) -> Scored:
        if result.degraded:
            metrics.FALLBACKS.labels(result.level, "model").inc(requests)
        return Scored(result.probabilities, result.label, result.model_name, result.model_version,
                      result.level if result.degraded else None, "model unavailable" if result.degraded else None)

    def _loaded_model_failed(self, arm: str, answered: str) -> bool:
        """Whether a level before ``answered`` in ``arm``'s chain has a model (so it failed, maybe on one row),
        rather than none being loaded (which fails every row alike)."""
        served = self.holder.served
        for level in ("challenger", "champion", "single") if arm == "challenger" else ("champion", "single"):
            if level == answered:
                return False
            if getattr(served, level, None) is not None:
                return True
        return False

    def _answer(self, customer_id: str, as_of_s: int, state_time: datetime | None, known: bool, scored: Scored,
                row: int, arm: str, request_id: str) -> dict[str, Any]:
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
        except Exception:  # noqa: BLE001 - the shadow never affects the answer
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


def _as_of_seconds(as_of: datetime | None, now: float) -> int:
    if as_of is None:
        return int(now)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    seconds = as_of.timestamp()
    if seconds > now + MAX_FUTURE_S:
        raise Problem(422, "Invalid as_of", "as_of may be at most one day in the future",
                      errors=[{"field": "as_of", "message": "more than one day in the future"}])
    if seconds < 0:
        raise Problem(422, "Invalid as_of", "as_of must be after 1970-01-01",
                      errors=[{"field": "as_of", "message": "before 1970-01-01"}])
    return int(seconds)


def create_app(settings: Settings, holder: Any, online: Any, prediction_log: Any | None = None,
               micro_batch_max: int = DEFAULT_MAX_SIZE) -> FastAPI:
    """The FastAPI app over a loaded ``ModelHolder`` and an ``OnlineFeatures`` reader.

    Concurrent single-customer requests are scored together (``serving.batching``), at most
    ``micro_batch_max`` per scoring call; 1 scores every request alone.
    """
    app = FastAPI(title="Customer activity scorer", version="1.0.0", default_response_class=ORJSONResponse,
                  description=__doc__)
    install_problem_handlers(app)
    authenticator = Authenticator(settings)
    limiter = RateLimiter(settings.serving.rate_limit_per_s, settings.serving.rate_limit_burst)
    scorer = Scorer(settings, holder, online, prediction_log)
    batcher = MicroBatcher(scorer.score, micro_batch_max)
    # the security schemes are declared in the OpenAPI document only (see _document_security): as
    # FastAPI dependencies they would run on every request for nothing, the check reads the headers
    documented: dict[str, Any] = {"security": [{"bearer": []}, {"apiKey": []}]}
    app.state.scorer = scorer
    app.state.batcher = batcher

    def scope(name: str):  # noqa: ANN202
        return requires(authenticator, name, limiter)

    @app.get("/healthz", tags=["health"], summary="Alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Ready: a model is loaded and the online store answers",
             responses={503: {"description": "Not ready (problem details)."}})
    def readyz() -> dict[str, Any]:
        problems = []
        if holder.served.champion is None:
            problems.append("no model loaded")
        try:
            online.features(["readiness-probe"], [int(time.time())], timeout_s=max(1.0, scorer.timeout_s))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: online store: %s", exc)
            problems.append("online store unavailable")
        if problems:
            raise Problem(503, "Not ready", "; ".join(problems))
        return {"status": "ready", "model_version": holder.info()["version"]}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"/{API_VERSION}/customers/{{customer_id}}/activity", openapi_extra=documented, tags=["scores"],
             summary="A customer's predicted activity change", response_model=None,
             responses={200: {"model": ActivityScore}, 401: {"description": "No or bad credentials."},
                        403: {"description": "Missing scope scores:read."}, 422: {"description": "Bad input."},
                        429: {"description": "Rate limited."}})
    async def customer_activity(
        request: Request,
        customer_id: Annotated[str, Path(pattern=CUSTOMER_ID, description="The customer id (as in transactions).")],
        who: Annotated[Principal, Depends(scope("scores:read"))],
        as_of: Annotated[datetime | None, Query(description="Prediction time (ISO 8601); default now.")] = None,
    ) -> ORJSONResponse:
        as_of_s = _as_of_seconds(as_of, time.time())
        return ORJSONResponse(await batcher.score(customer_id, as_of_s, request.state.request_id))

    @app.post(f"/{API_VERSION}/activity:batch", openapi_extra=documented, tags=["scores"],
              summary="Predicted activity of many customers",
              response_model=None,
              responses={200: {"model": BatchResponse}, 401: {"description": "No or bad credentials."},
                         403: {"description": "Missing scope scores:read."}, 422: {"description": "Bad input."},
                         429: {"description": "Rate limited."}})
    async def batch_activity(request: Request, body: BatchRequest,
                       who: Annotated[Principal, Depends(scope("scores:read"))]) -> ORJSONResponse:
        if len(body.customers) > settings.serving.batch_max:
            raise Problem(422, "Batch too large", f"at most {settings.serving.batch_max} customers per request",
                          errors=[{"field": "customers", "message": f"{len(body.customers)} items"}])
        now = time.time()
        as_of = [_as_of_seconds(item.as_of, now) for item in body.customers]
        results = scorer.score([item.customer_id for item in body.customers], as_of, request.state.request_id)
        return ORJSONResponse({"request_id": request.state.request_id, "results": results})

    @app.get(f"/{API_VERSION}/model", openapi_extra=documented, tags=["model"],
             summary="The loaded model, since when, and its metrics",
             responses={401: {"description": "No or bad credentials."}, 403: {"description": "Missing model:read."}})
    def model_info(who: Annotated[Principal, Depends(scope("model:read"))]) -> dict[str, Any]:
        return holder.info()

    @app.post(f"/{API_VERSION}/admin/reload", openapi_extra=documented, tags=["admin"],
              summary="Load the current champion now",
              responses={401: {"description": "No or bad credentials."}, 403: {"description": "Missing admin."}})
    def reload(who: Annotated[Principal, Depends(scope("admin"))]) -> dict[str, Any]:
        outcome = holder.reload()
        _export_model_gauges(holder)
        return outcome if isinstance(outcome, dict) else {"result": str(outcome)}

    _export_model_gauges(holder)
    app.add_middleware(Observe)
    _document_security(app)
    return app


def _document_security(app: FastAPI) -> None:
    """Both credential schemes in the OpenAPI document (what Swagger UI and generated clients use)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "A token from `activity serve token`."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "A key from `activity serve key create`."},
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class Observe:
    """Pure ASGI middleware (no per-request task like ``BaseHTTPMiddleware``): a request id on every
    request and response, and latency and status per route into Prometheus."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = given if given and REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_name(scope["path"])
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
            metrics.RESPONSES.labels(route, str(status)).inc()


def _export_model_gauges(holder: Any) -> None:
    info = holder.info()
    challenger = info.get("challenger") or {}
    for alias, version in (("champion", info.get("version")), ("challenger", challenger.get("version"))):
        if version is not None and str(version).isdigit():
            metrics.MODEL_VERSION.labels(alias).set(int(version))


def _route_name(path: str) -> str:
    if path.startswith(f"/{API_VERSION}/customers/"):
        return f"/{API_VERSION}/customers/{{customer_id}}/activity"
    if path in ("/healthz", "/readyz", "/metrics", f"/{API_VERSION}/activity:batch", f"/{API_VERSION}/model",
                f"/{API_VERSION}/admin/reload"):
        return path
    return "other"

