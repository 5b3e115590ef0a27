"""Who may call the scorer: OAuth2 bearer JWTs (HS256) and hashed API keys, checked in microseconds.

Every route but health needs a credential carrying a scope: ``scores:read`` for scoring,
``model:read`` for ``GET /v1/model`` and ``admin`` for admin routes (``admin`` implies all).

* JWTs are for people and short-lived jobs (``activity serve token``); nothing is stored, so
  they are revoked only by expiry or by rotating the secret.
* API keys (``ca_<id>_<secret>``) are for services. Only an HMAC-SHA256 of the secret under a
  per-key salt is stored: the secret is 32 random bytes, so a slow KDF would add latency to
  every request without making a guess any less hopeless. The id makes lookup O(1).

Failures are ``Problem(401)`` (no / unusable credential; the ``reason`` member says which
without saying more) or ``Problem(403)`` (a valid credential lacking the scope).
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import jwt
from starlette.requests import Request

from activity_settings import Settings
from serving.problems import FORBIDDEN, REALM, UNAUTHENTICATED, Problem

if TYPE_CHECKING:
    from serving.ratelimit import RateLimiter

log = logging.getLogger(__name__)

SCOPE_SCORES = "scores:read"
SCOPE_MODEL = "model:read"
SCOPE_ADMIN = "admin"
ALL_SCOPES = frozenset({SCOPE_SCORES, SCOPE_MODEL, SCOPE_ADMIN})

ISSUER = "customer-activity"
ALGORITHM = "HS256"
LEEWAY_S = 5  # clock skew tolerated between the issuing and the verifying host
API_KEY_HEADER = "X-API-Key"
API_KEY_PREFIX = "ca_"
MAX_CREDENTIAL_CHARS = 4096  # refuse before parsing: nothing legitimate is this long

_API_KEY = re.compile(r"^ca_([0-9a-f]{16})_([A-Za-z0-9_\-]{32,128})$")
_SECRET_FILE = "jwt_secret"
_KEYS_FILE = "api_keys.json"
_KEYS_LOCK = "api_keys.lock"

Kind = Literal["jwt", "api_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``client_id`` is the JWT ``sub`` or the API key id."""

    client_id: str
    scopes: frozenset[str]
    kind: Kind

    def has(self, scope: str) -> bool:
        return scope in self.scopes or SCOPE_ADMIN in self.scopes


class ApiKeyInfo(TypedDict):
    """What ``list_api_keys`` shows: never the secret, its hash or its salt."""

    id: str
    name: str
    scopes: list[str]
    created: str


@dataclass(frozen=True, slots=True)
class _StoredKey:
    id: str
    scopes: frozenset[str]
    salt: bytes
    digest: bytes


def require(principal: Principal, scope: str) -> None:
    """Raise a 403 problem unless ``principal`` holds ``scope`` (or ``admin``)."""
    if not principal.has(scope):
        raise Problem(
            403,
            "Insufficient scope",
            f"This route needs the {scope!r} scope.",
            type=FORBIDDEN,
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'},
            required_scope=scope,
        )


# --- the JWT secret -------------------------------------------------------------------------


def serving_dir(settings: Settings) -> Path:
    """``<home>/serving``, private to the user (holds the JWT secret and the API key hashes)."""
    path = settings.home / "serving"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def jwt_secret(settings: Settings) -> str:
    """``serving.jwt_secret`` if set, else the secret generated once under the data dir.

    Created with mode 0600 and published with a hard link, so concurrent first starts (several
    workers) agree on one secret and none ever reads a half-written file.
    """
    if settings.serving.jwt_secret is not None:
        return settings.serving.jwt_secret
    path = serving_dir(settings) / _SECRET_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jwt_secret.")  # mkstemp files are 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race: use its secret
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} holds no usable secret (< 32 chars); delete it to generate a new one")
    return secret


def issue_token(
    settings: Settings,
    subject: str,
    scopes: Iterable[str],
    ttl_s: int | None = None,
    *,
    now: float | None = None,
) -> str:
    """A signed bearer token for ``subject`` holding ``scopes``, valid ``ttl_s`` (default: settings)."""
    if not subject:
        raise ValueError("subject must not be empty")
    granted = _checked_scopes(scopes)
    ttl = settings.serving.token_ttl_s if ttl_s is None else ttl_s
    if ttl <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl}")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "scope": " ".join(sorted(granted)),
        "iat": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, jwt_secret(settings), algorithm=ALGORITHM)


# --- API keys -------------------------------------------------------------------------------


def create_api_key(settings: Settings, name: str, scopes: Iterable[str]) -> str:
    """Store a new key and return its plaintext ``ca_<id>_<secret>``: shown this once, never again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("name must be 1-100 characters")
    granted = _checked_scopes(scopes)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    entry = {
        "id": key_id,
        "name": name,
        "scopes": sorted(granted),
        "salt": salt.hex(),
        "hash": _digest(salt, secret).hex(),
        "algorithm": "hmac-sha256",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with _locked_store(settings) as entries:
        entries.append(entry)
    return f"{API_KEY_PREFIX}{key_id}_{secret}"


def revoke_api_key(settings: Settings, key_id: str) -> None:
    """Delete key ``key_id`` (``KeyError`` if there is none). Running scorers refuse it from their next request."""
    with _locked_store(settings) as entries:
        kept = [entry for entry in entries if entry["id"] != key_id]
        if len(kept) == len(entries):
            raise KeyError(f"no API key with id {key_id!r}")  # the store is left untouched
        entries[:] = kept


def list_api_keys(settings: Settings) -> list[ApiKeyInfo]:
    """Every stored key, oldest first, without secrets."""
    return [
        ApiKeyInfo(id=entry["id"], name=entry["name"], scopes=list(entry["scopes"]), created=entry["created"])
        for entry in _read_entries(serving_dir(settings) / _KEYS_FILE)
    ]


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.digest(salt, secret.encode(), "sha256")


def _checked_scopes(scopes: Iterable[str]) -> frozenset[str]:
    granted = frozenset(scopes)
    if not granted:
        raise ValueError("at least one scope is needed")
    unknown = granted - ALL_SCOPES
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}; known: {sorted(ALL_SCOPES)}")
    return granted


def _read_entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise RuntimeError(f"API key store {path} is not valid JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise RuntimeError(f"API key store {path} is not a {{'keys': [...]}} document")
    return data["keys"]


@contextlib.contextmanager
def _locked_store(settings: Settings) -> Iterator[list[dict[str, Any]]]:
    """Read-modify-write of the key file under an exclusive lock, published atomically (0600)."""
    directory = serving_dir(settings)
    path = directory / _KEYS_FILE
    with open(directory / _KEYS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = _read_entries(path)
        yield entries
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".api_keys.")  # 0600
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": 1, "keys": entries}, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- verification ---------------------------------------------------------------------------


class Authenticator:
    """Verifies credentials; one per process, safe to share between threads.

    The API key file is cached and re-read only when its (mtime, size, inode) changes, so a key
    check is one ``stat`` plus one HMAC, and a revocation applies from the next request.
    A verified token's principal is kept (``VERIFIED_TOKENS`` at most) until the token expires, so
    a client's next requests skip the signature check; tokens are immutable, so this changes no answer.
    """

    VERIFIED_TOKENS = 10_000

    def __init__(self, settings: Settings) -> None:
        self._secret = jwt_secret(settings)
        self._jwt = jwt.PyJWT()
        self._keys_path = serving_dir(settings) / _KEYS_FILE
        self._keys: dict[str, _StoredKey] = {}
        self._keys_signature: tuple[int, int, int] | None = None
        self._reload_lock = threading.Lock()
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, exp + leeway)
        # Unknown ids still cost one HMAC, so timing does not tell which ids exist.
        self._decoy = _StoredKey("", frozenset(), secrets.token_bytes(16), secrets.token_bytes(32))

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller of a request from its ``Authorization`` and ``X-API-Key`` headers.

        ``Authorization: Bearer <jwt>`` or ``X-API-Key: ca_...``; an API key is also accepted as
        a bearer token (for clients that can only send bearer tokens). Sending both is refused.
        """
        if authorization and api_key:
            raise _unauthenticated("ambiguous_credentials", "Send a bearer token or an API key, not both.")
        if api_key:
            return self._check_api_key(api_key.strip())
        if not authorization:
            raise _unauthenticated(
                "missing_credentials",
                f"Send 'Authorization: Bearer <token>' or '{API_KEY_HEADER}: <key>'.",
                challenge=False,
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthenticated("unsupported_scheme", "Only 'Authorization: Bearer <token>' is supported.")
        if credential.startswith(API_KEY_PREFIX):
            return self._check_api_key(credential)
        return self._check_jwt(credential)

    def _check_jwt(self, token: str) -> Principal:
        if len(token) > MAX_CREDENTIAL_CHARS:
            raise _unauthenticated("invalid_token", "The bearer token is invalid.")
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            self._verified.pop(token, None)
        try:
            claims = self._jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # pinned: 'none' and algorithm confusion are refused
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("expired_token", "The bearer token has expired.") from None
        except jwt.InvalidTokenError:
            raise _unauthenticated("invalid_token", "The bearer token is invalid.") from None
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) & ALL_SCOPES if isinstance(scope, str) else frozenset()
        principal = Principal(str(claims["sub"]), scopes, "jwt")
        if len(self._verified) >= self.VERIFIED_TOKENS:
            self._verified.clear()  # rare: simplest bound, the next requests verify again
        self._verified[token] = (principal, float(claims["exp"]) + LEEWAY_S)
        return principal

    def _check_api_key(self, key: str) -> Principal:
        match = _API_KEY.match(key) if len(key) <= MAX_CREDENTIAL_CHARS else None
        if match is None:
            raise _unauthenticated("malformed_api_key", "The API key is not of the form 'ca_<id>_<secret>'.")
        key_id, secret = match.groups()
        stored = self._current_keys().get(key_id)
        expected = stored or self._decoy
        ok = hmac.compare_digest(_digest(expected.salt, secret), expected.digest)
        if stored is None or not ok:
            # Unknown, revoked and wrong-secret keys look the same from outside.
            raise _unauthenticated("invalid_api_key", "The API key is not valid.")
        return Principal(key_id, stored.scopes, "api_key")

    def _current_keys(self) -> dict[str, _StoredKey]:
        try:
            stat = os.stat(self._keys_path)
            signature: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            signature = None
        if signature != self._keys_signature:
            with self._reload_lock:
                if signature != self._keys_signature:
                    self._keys = {
                        entry["id"]: _StoredKey(
                            entry["id"],
                            frozenset(entry["scopes"]) & ALL_SCOPES,
                            bytes.fromhex(entry["salt"]),
                            bytes.fromhex(entry["hash"]),
                        )
                        for entry in _read_entries(self._keys_path)
                    }
                    self._keys_signature = signature
                    log.info("loaded %d API keys from %s", len(self._keys), self._keys_path)
        return self._keys


def _unauthenticated(reason: str, detail: str, *, challenge: bool = True) -> Problem:
    # RFC 6750: a request without credentials gets a bare challenge; a bad one says invalid_token.
    header = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if challenge else "")
    return Problem(
        401,
        "Unauthenticated",
        detail,
        type=UNAUTHENTICATED,
        headers={"WWW-Authenticate": header},
        reason=reason,
    )


def requires(
    authenticator: Authenticator, scope: str, limiter: RateLimiter | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: authenticate, check ``scope``, then rate-limit per client.

    ``async`` on purpose: the check is CPU-only microseconds, and a sync dependency would cost a
    thread-pool hop per request. The principal is also left on ``request.state.principal``.
    """
    if scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        headers = request.headers
        principal = authenticator.authenticate(headers.get("authorization"), headers.get("x-api-key"))
        require(principal, scope)
        if limiter is not None:
            limiter.check(principal.client_id)
        request.state.principal = principal
        return principal

    return dependency
