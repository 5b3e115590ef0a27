"""The scorer's security plumbing: JWTs, hashed API keys, scopes, rate limits and problem+json errors."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import stat
import sys
import threading
import time
from pathlib import Path

import jwt
import orjson
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from activity_settings import Settings, load_settings
from serving.auth import (
    SCOPE_ADMIN,
    SCOPE_MODEL,
    SCOPE_SCORES,
    Authenticator,
    Principal,
    create_api_key,
    issue_token,
    jwt_secret,
    list_api_keys,
    require,
    requires,
    revoke_api_key,
)
from serving.problems import (
    RATE_LIMITED,
    UNAUTHENTICATED,
    VALIDATION,
    Problem,
    install_problem_handlers,
    problem_response,
)
from serving.ratelimit import RateLimiter

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def auth(settings: Settings) -> Authenticator:
    return Authenticator(settings)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(call, *args: object) -> Problem:
    with pytest.raises(Problem) as caught:
        call(*args)
    return caught.value


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- JWTs -----------------------------------------------------------------------------------


def test_token_round_trips_with_scopes(settings: Settings, auth: Authenticator) -> None:
    token = issue_token(settings, "alice", [SCOPE_SCORES, SCOPE_MODEL], ttl_s=600)
    principal = auth.authenticate(f"Bearer {token}", None)
    assert principal == Principal("alice", frozenset({SCOPE_SCORES, SCOPE_MODEL}), "jwt")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "customer-activity"
    assert claims["scope"] == "model:read scores:read"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"] != jwt.decode(issue_token(settings, "alice", [SCOPE_SCORES]),
                                       options={"verify_signature": False})["jti"]
    # The scheme is case-insensitive; the default lifetime comes from the settings.
    assert auth.authenticate(f"bearer {token}", None).client_id == "alice"
    default = jwt.decode(issue_token(settings, "bob", [SCOPE_ADMIN]), options={"verify_signature": False})
    assert default["exp"] - default["iat"] == settings.serving.token_ttl_s


def test_issue_token_refuses_unknown_or_no_scopes(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown scopes"):
        issue_token(settings, "alice", ["scores:write"])
    with pytest.raises(ValueError, match="at least one scope"):
        issue_token(settings, "alice", [])


def test_expired_token_is_rejected_saying_so(settings: Settings, auth: Authenticator) -> None:
    token = issue_token(settings, "alice", [SCOPE_SCORES], ttl_s=3600, now=time.time() - 7200)
    problem = refused(auth.authenticate, f"Bearer {token}", None)
    assert problem.status == 401
    assert problem.extra["reason"] == "expired_token"
    assert "expired" in (problem.detail or "")
    assert problem.headers["WWW-Authenticate"].startswith("Bearer ")


def test_tampered_token_is_rejected(settings: Settings, auth: Authenticator) -> None:
    token = issue_token(settings, "alice", [SCOPE_MODEL])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "admin"
    problem = refused(auth.authenticate, f"Bearer {header}.{b64(claims)}.{signature}", None)
    assert (problem.status, problem.extra["reason"]) == (401, "invalid_token")
    assert 'error="invalid_token"' in problem.headers["WWW-Authenticate"]


def test_token_signed_with_another_secret_is_rejected(settings: Settings, auth: Authenticator) -> None:
    claims = {"iss": "customer-activity", "sub": "mallory", "scope": "admin",
              "iat": int(time.time()), "exp": int(time.time()) + 600}
    forged = jwt.encode(claims, "not-the-secret-" * 4, algorithm="HS256")
    assert refused(auth.authenticate, f"Bearer {forged}", None).status == 401


def test_alg_none_token_is_rejected(settings: Settings, auth: Authenticator) -> None:
    claims = {"iss": "customer-activity", "sub": "mallory", "scope": "admin",
              "iat": int(time.time()), "exp": int(time.time()) + 600}
    for unsigned in (f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
                     f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}"):
        problem = refused(auth.authenticate, f"Bearer {unsigned}", None)
        assert (problem.status, problem.extra["reason"]) == (401, "invalid_token")


def test_token_from_another_issuer_or_without_expiry_is_rejected(settings: Settings, auth: Authenticator) -> None:
    secret = jwt_secret(settings)
    now = int(time.time())
    other_issuer = jwt.encode({"iss": "someone-else", "sub": "a", "scope": "admin", "iat": now, "exp": now + 60},
                              secret, algorithm="HS256")
    no_expiry = jwt.encode({"iss": "customer-activity", "sub": "a", "scope": "admin", "iat": now},
                           secret, algorithm="HS256")
    for token in (other_issuer, no_expiry, "not.a.jwt", "x" * 10_000):
        assert refused(auth.authenticate, f"Bearer {token}", None).status == 401


def test_missing_or_unsupported_credentials_are_401_with_a_challenge(auth: Authenticator) -> None:
    missing = refused(auth.authenticate, None, None)
    assert missing.status == 401 and missing.extra["reason"] == "missing_credentials"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="customer-activity"'
    assert refused(auth.authenticate, "", "").extra["reason"] == "missing_credentials"
    assert refused(auth.authenticate, "Basic YWxpY2U6cHc=", None).extra["reason"] == "unsupported_scheme"
    assert refused(auth.authenticate, "Bearer", None).extra["reason"] == "unsupported_scheme"
    assert refused(auth.authenticate, "Bearer x", "ca_x").extra["reason"] == "ambiguous_credentials"


def test_secret_file_is_created_once_private_and_reused(settings: Settings) -> None:
    path = settings.home / "serving" / "jwt_secret"
    assert not path.exists()
    token = issue_token(settings, "alice", [SCOPE_SCORES])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = path.read_text()
    assert len(first) >= 32
    assert jwt_secret(settings) == first
    # A second process (a new Authenticator) reuses it: tokens issued earlier still verify.
    assert Authenticator(settings).authenticate(f"Bearer {token}", None).client_id == "alice"
    assert path.read_text() == first
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".jwt_secret")] == []


def test_configured_secret_wins_and_writes_no_file(tmp_path: Path) -> None:
    configured = load_settings(data_dir=tmp_path / "d", serving={"jwt_secret": "s" * 40})
    token = issue_token(configured, "alice", [SCOPE_SCORES])
    jwt.decode(token, "s" * 40, algorithms=["HS256"])  # signed with the configured secret
    assert Authenticator(configured).authenticate(f"Bearer {token}", None).client_id == "alice"
    assert not (configured.home / "serving" / "jwt_secret").exists()
    generated = load_settings(data_dir=tmp_path / "d")
    assert refused(Authenticator(generated).authenticate, f"Bearer {token}", None).status == 401


# --- API keys -------------------------------------------------------------------------------


def test_created_api_key_authenticates(settings: Settings, auth: Authenticator) -> None:
    key = create_api_key(settings, "batch-scorer", [SCOPE_SCORES])
    assert key.startswith("ca_")
    key_id = key.split("_")[1]
    expected = Principal(key_id, frozenset({SCOPE_SCORES}), "api_key")
    assert auth.authenticate(None, key) == expected  # picked up by an Authenticator made before the key
    assert auth.authenticate(f"Bearer {key}", None) == expected  # also usable as a bearer token
    assert Authenticator(settings).authenticate(None, key) == expected


def test_wrong_unknown_revoked_and_malformed_keys_are_rejected(settings: Settings, auth: Authenticator) -> None:
    key = create_api_key(settings, "svc", [SCOPE_SCORES])
    other = create_api_key(settings, "other", [SCOPE_SCORES])
    _, key_id, secret = key.split("_", 2)
    wrong_secret = f"ca_{key_id}_{other.split('_', 2)[2]}"
    unknown_id = f"ca_{'0' * 16}_{secret}"
    for bad in (wrong_secret, unknown_id):
        problem = refused(auth.authenticate, None, bad)
        assert (problem.status, problem.extra["reason"]) == (401, "invalid_api_key")
    for malformed in ("ca_", "nope", f"ca_{key_id}", key + "\x00", f"ca_{key_id}_short"):
        assert refused(auth.authenticate, None, malformed).extra["reason"] == "malformed_api_key"
    assert auth.authenticate(None, key).client_id == key_id  # cached...
    revoke_api_key(settings, key_id)
    problem = refused(auth.authenticate, None, key)  # ...and the revocation is seen at once
    assert (problem.status, problem.extra["reason"]) == (401, "invalid_api_key")
    assert auth.authenticate(None, other).kind == "api_key"
    with pytest.raises(KeyError):
        revoke_api_key(settings, key_id)
    assert [k["name"] for k in list_api_keys(settings)] == ["other"]


def test_key_store_holds_no_plaintext_and_is_private(settings: Settings) -> None:
    key = create_api_key(settings, "svc", [SCOPE_MODEL, SCOPE_SCORES])
    _, key_id, secret = key.split("_", 2)
    path = settings.home / "serving" / "api_keys.json"
    text = path.read_text()
    assert secret not in text and key not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (entry,) = json.loads(text)["keys"]
    assert entry["id"] == key_id and entry["name"] == "svc" and entry["scopes"] == [SCOPE_MODEL, SCOPE_SCORES]
    assert hmac.digest(bytes.fromhex(entry["salt"]), secret.encode(), "sha256").hex() == entry["hash"]
    # Salted: the same secret under another key's salt gives another hash.
    second = create_api_key(settings, "svc2", [SCOPE_SCORES])
    entries = json.loads(path.read_text())["keys"]
    assert len({e["salt"] for e in entries}) == 2 and second.split("_", 2)[2] not in path.read_text()


def test_list_api_keys_shows_no_secrets(settings: Settings) -> None:
    assert list_api_keys(settings) == []
    key = create_api_key(settings, "svc", [SCOPE_ADMIN])
    (info,) = list_api_keys(settings)
    assert set(info) == {"id", "name", "scopes", "created"}
    assert (info["id"], info["name"], info["scopes"]) == (key.split("_")[1], "svc", [SCOPE_ADMIN])
    with pytest.raises(ValueError):
        create_api_key(settings, "svc", ["everything"])
    with pytest.raises(ValueError):
        create_api_key(settings, "  ", [SCOPE_SCORES])


def test_corrupt_key_store_fails_closed(settings: Settings, auth: Authenticator) -> None:
    key = create_api_key(settings, "svc", [SCOPE_SCORES])
    (settings.home / "serving" / "api_keys.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="not valid JSON"):
        auth.authenticate(None, key)


# --- scopes ---------------------------------------------------------------------------------


def test_missing_scope_is_403_and_admin_implies_all() -> None:
    reader = Principal("svc", frozenset({SCOPE_MODEL}), "api_key")
    require(reader, SCOPE_MODEL)
    problem = refused(require, reader, SCOPE_SCORES)
    assert problem.status == 403 and problem.extra["required_scope"] == SCOPE_SCORES
    assert 'error="insufficient_scope"' in problem.headers["WWW-Authenticate"]
    assert refused(require, reader, SCOPE_ADMIN).status == 403
    admin = Principal("root", frozenset({SCOPE_ADMIN}), "jwt")
    for scope in (SCOPE_SCORES, SCOPE_MODEL, SCOPE_ADMIN):
        require(admin, scope)


def test_unknown_scopes_in_a_token_grant_nothing(settings: Settings, auth: Authenticator) -> None:
    now = int(time.time())
    token = jwt.encode({"iss": "customer-activity", "sub": "a", "scope": "superuser scores:read",
                        "iat": now, "exp": now + 60}, jwt_secret(settings), algorithm="HS256")
    assert auth.authenticate(f"Bearer {token}", None).scopes == frozenset({SCOPE_SCORES})


# --- problem responses ----------------------------------------------------------------------


def test_problem_response_shape_and_headers() -> None:
    response = problem_response(Problem(409, detail="already there", type="https://x/y", tag="t"), "req-1")
    assert response.status_code == 409
    assert response.media_type == "application/problem+json"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-1"
    assert orjson.loads(response.body) == {"type": "https://x/y", "title": "Conflict", "status": 409,
                                           "detail": "already there", "tag": "t", "request_id": "req-1"}
    plain = orjson.loads(problem_response(Problem(404)).body)
    assert plain == {"type": "about:blank", "title": "Not Found", "status": 404}

    unauthorized = problem_response(Problem(401, detail="who?"))
    assert unauthorized.headers["www-authenticate"] == 'Bearer realm="customer-activity"'
    limited = problem_response(Problem(429, retry_after=0.2))
    assert limited.headers["retry-after"] == "1"  # whole seconds, rounded up
    assert orjson.loads(limited.body)["retry_after"] == 1
    assert problem_response(Problem(503, retry_after=2.5)).headers["retry-after"] == "3"
    assert "retry-after" not in problem_response(Problem(500)).headers


def test_problem_refuses_bad_members() -> None:
    with pytest.raises(ValueError):
        Problem(200)
    with pytest.raises(ValueError):
        Problem(400, request_id="spoofed")


class Item(BaseModel):
    n: int = Field(ge=1)


class Order(BaseModel):
    customer_id: str
    items: list[Item] = []


def make_app(auth: Authenticator | None = None, limiter: RateLimiter | None = None) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/orders")
    async def post_order(order: Order) -> dict:
        return {"ok": True}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("db password=hunter2 at /srv/secret.py")

    @app.get("/teapot")
    async def teapot() -> dict:
        raise Problem(418, detail="short and stout", instance="/teapots/1")

    if auth is not None:
        # A default, not a local Annotated alias: with postponed annotations FastAPI could not resolve it.
        model_reader = Depends(requires(auth, SCOPE_MODEL, limiter))

        @app.get("/v1/model")
        async def model(principal: Principal = model_reader) -> dict:
            return {"client": principal.client_id}

    return app


def test_validation_error_becomes_a_422_problem_naming_the_field() -> None:
    client = TestClient(make_app())
    response = client.post("/orders", json={"customer_id": "c1", "items": [{"n": 1}, {"n": 0}]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == VALIDATION and body["status"] == 422 and body["instance"] == "/orders"
    (error,) = body["errors"]
    assert error["field"] == "items[1].n" and error["location"] == "body" and error["message"]
    missing = client.post("/orders", json={"items": []}).json()
    assert [e["field"] for e in missing["errors"]] == ["customer_id"]
    broken = client.post("/orders", content=b"{nope", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.headers["content-type"] == "application/problem+json"


def test_unknown_route_and_wrong_method_become_problems() -> None:
    client = TestClient(make_app())
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["type"], body["title"], body["status"], body["instance"]) == ("about:blank", "Not Found", 404,
                                                                                "/nowhere")
    wrong = client.delete("/orders")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["title"] == "Method Not Allowed"


def test_raised_problem_is_answered_as_is() -> None:
    response = TestClient(make_app()).get("/teapot", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 418
    assert response.json() == {"type": "about:blank", "title": "I'm a Teapot", "status": 418,
                               "detail": "short and stout", "instance": "/teapots/1", "request_id": "abc-123"}


def test_unexpected_exception_is_a_500_problem_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(make_app(), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="serving.problems"):
        response = client.get("/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 500 and body["request_id"] == "req-42"
    for leak in ("Traceback", "hunter2", "RuntimeError", "/srv/secret.py"):
        assert leak not in response.text
    assert any(record.exc_info and "hunter2" in str(record.exc_info[1]) for record in caplog.records)
    # A request id that could inject anything is not echoed.
    assert "request_id" not in client.get("/boom", headers={"X-Request-ID": "a b\"<"}).json()


def test_dependency_authenticates_checks_scope_and_rate_limits(settings: Settings, auth: Authenticator) -> None:
    clock = FakeClock()
    client = TestClient(make_app(auth, RateLimiter(1, 2, clock=clock)))
    anonymous = client.get("/v1/model")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.json()["type"] == UNAUTHENTICATED
    scorer = issue_token(settings, "scorer", [SCOPE_SCORES])
    forbidden = client.get("/v1/model", headers={"Authorization": f"Bearer {scorer}"})
    assert forbidden.status_code == 403 and forbidden.json()["required_scope"] == SCOPE_MODEL
    key = create_api_key(settings, "dash", [SCOPE_MODEL])
    assert [client.get("/v1/model", headers={"X-API-Key": key}).status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/model", headers={"X-API-Key": key})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["type"] == RATE_LIMITED
    clock.now += 1.0
    assert client.get("/v1/model", headers={"X-API-Key": key}).status_code == 200


# --- rate limiting --------------------------------------------------------------------------


def test_rate_limiter_allows_a_burst_then_429s_and_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    problem = refused(limiter.check, "a")
    assert problem.status == 429 and problem.type == RATE_LIMITED
    assert problem.retry_after == pytest.approx(0.5)
    assert problem.headers["Retry-After"] == "1"
    limiter.check("b")  # clients are independent
    clock.now += 0.25
    assert refused(limiter.check, "a").retry_after == pytest.approx(0.25)  # half a token back, not enough
    clock.now += 0.25
    limiter.check("a")
    clock.now += 3600  # refill is capped at the burst
    for _ in range(3):
        limiter.check("a")
    assert refused(limiter.check, "a").status == 429


def test_rate_limiter_evicts_idle_clients_and_stays_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=10, burst=10, max_clients=3, clock=clock)  # full again after 1 s idle
    for client in ("a", "b", "c"):
        limiter.check(client)
    clock.now += 0.5
    limiter.check("c")
    clock.now += 0.6  # a and b are full again (idle 1.1 s), c is not (0.6 s)
    limiter.check("d")
    assert len(limiter) == 2  # a and b dropped, c and d kept
    clock.now += 5
    assert limiter.sweep() == 2 and len(limiter) == 0
    # When every bucket is busy the least recently used one goes, so memory never exceeds max_clients.
    for client in ("a", "b", "c", "d", "e"):
        for _ in range(10):
            limiter.check(client)
    assert len(limiter) == 3
    limiter.check("a")  # evicted earlier, so it starts afresh instead of being refused
    assert refused(limiter.check, "e").status == 429


def test_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(rate_per_s=1e-6, burst=500, clock=FakeClock())
    allowed = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        count = 0
        barrier.wait()
        for _ in range(1_000):
            try:
                limiter.check("shared")
                count += 1
            except Problem:
                pass
        allowed.append(count)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so an unguarded update would race
    try:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert sum(allowed) == 500


def test_rate_limiter_from_settings_and_bad_arguments(settings: Settings) -> None:
    limiter = RateLimiter.from_settings(settings)
    assert (limiter.rate, limiter.burst) == (settings.serving.rate_limit_per_s, settings.serving.rate_limit_burst)
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
    with pytest.raises(ValueError):
        limiter.check("a", cost=limiter.burst + 1)


def test_a_shared_problem_instance_is_not_mutated_by_answering_it() -> None:
    shared = Problem(503, detail="warming up", retry_after=5)
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/a")
    async def a() -> dict:
        raise shared

    @app.get("/b")
    async def b() -> dict:
        raise shared

    client = TestClient(app)
    assert client.get("/a").json()["instance"] == "/a"
    assert client.get("/b").json()["instance"] == "/b"
    assert shared.instance is None


def test_a_verified_token_is_remembered_until_it_expires(settings: Settings, auth: Authenticator,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_token(settings, "analyst", [SCOPE_SCORES], ttl_s=60)
    first = auth.authenticate(f"Bearer {token}", None)
    decoded: list[int] = []
    original = auth._jwt.decode
    monkeypatch.setattr(auth._jwt, "decode", lambda *a, **k: decoded.append(1) or original(*a, **k))
    assert auth.authenticate(f"Bearer {token}", None) == first and decoded == []  # no second signature check
    principal, _ = auth._verified[token]
    auth._verified[token] = (principal, time.time() - 1)  # as if its expiry had passed
    assert auth.authenticate(f"Bearer {token}", None) == first and decoded == [1]  # checked again, not trusted
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert refused(auth.authenticate, f"Bearer {tampered}", None).extra["reason"] == "invalid_token"
