"""The scorer's routes: thin handlers over the request-level ``Scorer`` and the ``ModelHolder``.

Health and metrics answer without credentials; every ``/v1`` route names the scope it requires
through its dependency (``serving.deps``). The security schemes are declared in the OpenAPI
document only (``openapi_extra``): the check itself reads the headers in the scope dependency.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import ORJSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import metrics
from serving.deps import Admin, BatcherDep, HolderDep, ModelReader, OnlineDep, ScorerDep, ScoresReader, SettingsDep
from serving.problems import Problem
from serving.schemas import CUSTOMER_ID, ActivityScore, BatchRequest, BatchResponse

log = logging.getLogger("activity.serving")
API_VERSION = "v1"
MAX_FUTURE_S = 86_400  # an as_of more than a day ahead is a client error
DOCUMENTED: dict[str, Any] = {"security": [{"bearer": []}, {"apiKey": []}]}
UNAUTHORIZED = {"description": "No or bad credentials."}

health = APIRouter(tags=["health"])
api = APIRouter(prefix=f"/{API_VERSION}")


@health.get("/healthz", summary="Alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", summary="Ready: a model is loaded and the online store answers",
            responses={503: {"description": "Not ready (problem details)."}})
def readyz(holder: HolderDep, online: OnlineDep, scorer: ScorerDep) -> dict[str, Any]:
    problems = []
    if holder.served.champion is None:
        problems.append("no model loaded")
    try:
        online.features(["readiness-probe"], [int(time.time())], timeout_s=max(1.0, scorer.timeout_s))
    except Exception as exc:  # any failure means not ready
        log.warning("readiness: online store: %s", exc)
        problems.append("online store unavailable")
    if problems:
        raise Problem(503, "Not ready", "; ".join(problems))
    return {"status": "ready", "model_version": holder.info()["version"]}


@health.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@api.get("/customers/{customer_id}/activity", openapi_extra=DOCUMENTED, tags=["scores"],
         summary="A customer's predicted activity change", response_model=None,
         responses={200: {"model": ActivityScore}, 401: UNAUTHORIZED,
                    403: {"description": "Missing scope scores:read."}, 422: {"description": "Bad input."},
                    429: {"description": "Rate limited."}})
async def customer_activity(
    request: Request,
    customer_id: Annotated[str, Path(pattern=CUSTOMER_ID, description="The customer id (as in transactions).")],
    who: ScoresReader,
    batcher: BatcherDep,
    as_of: Annotated[datetime | None, Query(description="Prediction time (ISO 8601); default now.")] = None,
) -> ORJSONResponse:
    as_of_s = as_of_seconds(as_of, time.time())
    return ORJSONResponse(await batcher.score(customer_id, as_of_s, request.state.request_id))


@api.post("/activity:batch", openapi_extra=DOCUMENTED, tags=["scores"],
          summary="Predicted activity of many customers", response_model=None,
          responses={200: {"model": BatchResponse}, 401: UNAUTHORIZED,
                     403: {"description": "Missing scope scores:read."}, 422: {"description": "Bad input."},
                     429: {"description": "Rate limited."}})
async def batch_activity(request: Request, body: BatchRequest, who: ScoresReader, scorer: ScorerDep,
                         settings: SettingsDep) -> ORJSONResponse:
    if len(body.customers) > settings.serving.batch_max:
        raise Problem(422, "Batch too large", f"at most {settings.serving.batch_max} customers per request",
                      errors=[{"field": "customers", "message": f"{len(body.customers)} items"}])
    now = time.time()
    as_of = [as_of_seconds(item.as_of, now) for item in body.customers]
    results = scorer.score([item.customer_id for item in body.customers], as_of, request.state.request_id)
    return ORJSONResponse({"request_id": request.state.request_id, "results": results})


@api.get("/model", openapi_extra=DOCUMENTED, tags=["model"], summary="The loaded model, since when, and its metrics",
         responses={401: UNAUTHORIZED, 403: {"description": "Missing model:read."}})
def model_info(who: ModelReader, holder: HolderDep) -> dict[str, Any]:
    return holder.info()


@api.post("/admin/reload", openapi_extra=DOCUMENTED, tags=["admin"], summary="Load the current champion now",
          responses={401: UNAUTHORIZED, 403: {"description": "Missing admin."}})
def reload(who: Admin, holder: HolderDep) -> dict[str, Any]:
    outcome = holder.reload()
    metrics.export_model_versions(holder.info())
    return outcome if isinstance(outcome, dict) else {"result": str(outcome)}


def as_of_seconds(as_of: datetime | None, now: float) -> int:
    """The request's as_of in epoch seconds (now when absent; naive times are UTC); a bad one is a 422."""
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
