"""The scorer: REST over Feast online features and the MLflow champion, run with ONNX Runtime.

Every answer names the model and version that produced it, the features' as-of time and age,
and whether it is ``degraded``: when the online store fails or exceeds its budget the answer
comes from the class prior; when the champion fails, from a single model, then from a
heuristic; none of these causes is ever a 5xx. A sticky share of customers (by hashed id) is
answered by the challenger; the challenger also scores in the shadow; both are logged to the
``predictions`` topic.
"""

from __future__ import annotations

import time
import uuid
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from activity_settings import Settings
from serving import metrics
from serving.auth import Authenticator
from serving.batching import DEFAULT_MAX_SIZE, MicroBatcher
from serving.deps import guards
from serving.problems import REQUEST_ID_PATTERN, install_problem_handlers
from serving.ratelimit import RateLimiter
from serving.routes import API_VERSION, api, health
from serving.scorer import Scorer

# ORJSONResponse is chosen for the answers' speed (docs/serving.md); FastAPI's notice that it prefers
# its own serialisation is for FastAPI's users at large and would print on every scorer's terminal
warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", category=UserWarning)


def create_app(settings: Settings, holder: Any, online: Any, prediction_log: Any | None = None,
               micro_batch_max: int = DEFAULT_MAX_SIZE) -> FastAPI:
    """The FastAPI app over a loaded ``ModelHolder`` and an ``OnlineFeatures`` reader.

    Concurrent single-customer requests are scored together (``serving.batching``), at most
    ``micro_batch_max`` per scoring call; 1 scores every request alone.
    """
    app = FastAPI(title="Customer activity scorer", version="1.0.0", default_response_class=ORJSONResponse,
                  description=__doc__)
    install_problem_handlers(app)
    scorer = Scorer(settings, holder, online, prediction_log)
    app.state.settings = settings
    app.state.scorer = scorer
    app.state.batcher = MicroBatcher(scorer.score, micro_batch_max)
    app.state.guards = guards(Authenticator(settings),
                              RateLimiter(settings.serving.rate_limit_per_s, settings.serving.rate_limit_burst))
    app.include_router(health)
    app.include_router(api)
    metrics.export_model_versions(holder.info())
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


def _route_name(path: str) -> str:
    if path.startswith(f"/{API_VERSION}/customers/"):
        return f"/{API_VERSION}/customers/{{customer_id}}/activity"
    if path in ("/healthz", "/readyz", "/metrics", f"/{API_VERSION}/activity:batch", f"/{API_VERSION}/model",
                f"/{API_VERSION}/admin/reload"):
        return path
    return "other"
