"""RFC 9457 problem details: every error the scorer returns has one shape and one media type.

Clients branch on ``status`` and ``type`` (a stable URI per kind of problem), people read
``title`` and ``detail``, and support staff match ``request_id`` against the logs. Internals
(tracebacks, exception text, file paths) never reach the body: a 500 says only that it happened.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from activity_settings import ActivityError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
ABOUT_BLANK = "about:blank"
PROBLEM_BASE = "https://customer-activity.dev/problems/"
REALM = "customer-activity"
MAX_LISTED_ERRORS = 50  # a 10,000-item batch with one bad field each must not answer with 10,000 errors
# Standard members plus the ones this module fills in itself.
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "request_id", "retry_after"})
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def problem_type(slug: str) -> str:
    """The stable type URI of one kind of problem, e.g. ``problem_type("rate-limited")``."""
    return PROBLEM_BASE + slug


# The problem kinds this package raises; clients may rely on these URIs.
VALIDATION = problem_type("validation")
UNAUTHENTICATED = problem_type("unauthenticated")
FORBIDDEN = problem_type("forbidden")
RATE_LIMITED = problem_type("rate-limited")
INTERNAL = problem_type("internal")


class Problem(ActivityError):
    """An HTTP error as a problem document; raise it anywhere in a request to answer with it.

    ``extra`` members go into the body next to the standard ones (e.g. ``errors``, ``reason``).
    ``retry_after`` (seconds) becomes a ``Retry-After`` header; a 401 always carries
    ``WWW-Authenticate`` (a bare Bearer challenge unless ``headers`` gives a more precise one).
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        type: str = ABOUT_BLANK,  # the RFC 9457 member name, hence the shadowing
        instance: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a problem is an error status (4xx/5xx), got {status}")
        clash = RESERVED_MEMBERS.intersection(extra)
        if clash:
            raise ValueError(f"extra members clash with reserved ones: {sorted(clash)}")
        self.status = status
        self.title = title or _phrase(status)
        self.detail = detail
        self.type = type
        self.instance = instance
        self.retry_after = retry_after
        self.extra = extra
        self.headers: dict[str, str] = dict(headers or {})
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after_seconds(retry_after)))
        if status == 401 and not any(name.lower() == "www-authenticate" for name in self.headers):
            self.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
        super().__init__(f"{status} {self.title}" + (f": {detail}" if detail else ""))

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document (``detail``/``instance`` only when set; ``instance`` is the fallback)."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if (self.instance or instance) is not None:
            body["instance"] = self.instance or instance
        body.update(self.extra)
        if self.retry_after is not None:
            body["retry_after"] = retry_after_seconds(self.retry_after)
        return body


def retry_after_seconds(seconds: float) -> int:
    """``Retry-After`` is whole seconds; round up so a client that obeys it is not refused again."""
    return max(1, math.ceil(seconds))


def problem_response(problem: Problem, request_id: str | None = None, *, instance: str | None = None) -> Response:
    """Serialise ``problem`` as ``application/problem+json`` (with ``request_id`` when known).

    ``instance`` (typically the request path) is used only if the problem has none of its own.
    """
    body = problem.to_dict(instance)
    headers = dict(problem.headers)
    if request_id is not None:
        body["request_id"] = request_id
        headers["X-Request-ID"] = request_id
    return Response(
        content=orjson.dumps(body),
        status_code=problem.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def request_id_of(request: Request) -> str | None:
    """``request.state.request_id`` (set by the app's middleware), else a well-formed ``X-Request-ID``."""
    given = getattr(request.state, "request_id", None)
    if given is not None:
        return str(given)
    header = request.headers.get("x-request-id")
    # Echoed back into headers and logs: only accept something that cannot inject anything.
    return header if header is not None and REQUEST_ID_PATTERN.match(header) else None


def validation_problem(exc: RequestValidationError, instance: str | None = None) -> Problem:
    """A 422 naming each invalid field (``customers[2].id``) and where it was (``body``, ``query``...)."""
    raw = exc.errors()
    errors = [_field_error(error) for error in raw[:MAX_LISTED_ERRORS]]
    extra: dict[str, Any] = {"errors": errors}
    if len(raw) > MAX_LISTED_ERRORS:
        extra["errors_truncated"] = len(raw) - MAX_LISTED_ERRORS
    noun = "field is" if len(raw) == 1 else "fields are"
    return Problem(
        422,
        "Invalid request",
        f"{len(raw)} {noun} invalid.",
        type=VALIDATION,
        instance=instance,
        **extra,
    )


def _field_error(error: Mapping[str, Any]) -> dict[str, str]:
    loc = tuple(error.get("loc", ()))
    location, path = (str(loc[0]), loc[1:]) if loc else ("body", ())
    field = ""
    for part in path:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    # The offending input is deliberately not echoed: it may be large or sensitive.
    return {"field": field or location, "location": location, "message": str(error.get("msg", "invalid"))}


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error ``app`` returns a problem document: raised Problems, 422s, 404/405s and 500s."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request_id_of(request), instance=request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc, request.url.path), request_id_of(request))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code < 400 or exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=headers)  # no body allowed / not an error
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _phrase(exc.status_code) else None
        if detail is None and exc.status_code == 404:
            detail = "No resource at this path."
        elif detail is None and exc.status_code == 405 and "Allow" in headers:
            detail = f"Allowed methods: {headers['Allow']}."
        problem = Problem(exc.status_code, detail=detail, instance=request.url.path, headers=headers)
        return problem_response(problem, request_id_of(request))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        request_id = request_id_of(request)
        log.error(
            "unhandled %s on %s %s (request_id=%s)",
            type(exc).__name__,
            request.method,
            request.url.path,
            request_id,
            exc_info=exc,
        )
        problem = Problem(
            500,
            "Internal error",
            "The request could not be completed; it has been logged.",
            type=INTERNAL,
            instance=request.url.path,
        )
        return problem_response(problem, request_id)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
