"""The routes' dependencies as typed aliases: the app's parts and the credentials each route requires.

``create_app`` puts the parts on ``app.state``; a route names what it needs by type
(``ScorerDep``, ``HolderDep``...) and the scope it requires (``ScoresReader``, ``ModelReader``,
``Admin``). Every dependency is ``async``: each is a few attribute reads, and a sync dependency
would cost a thread-pool hop per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from activity_settings import Settings
from serving.auth import ALL_SCOPES, Authenticator, Principal, requires
from serving.batching import MicroBatcher
from serving.ratelimit import RateLimiter
from serving.scorer import Scorer
from serving.scoring import ModelHolder


def guards(authenticator: Authenticator, limiter: RateLimiter) -> dict[str, Callable[[Request], Awaitable[Principal]]]:
    """One credential check per scope, bound to the app's authenticator and rate limiter."""
    return {scope: requires(authenticator, scope, limiter) for scope in ALL_SCOPES}


def _requires(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        return await request.app.state.guards[scope](request)

    return dependency


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _scorer(request: Request) -> Scorer:
    return request.app.state.scorer


async def _batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


async def _holder(request: Request) -> ModelHolder:
    return request.app.state.scorer.holder


async def _online(request: Request) -> Any:
    return request.app.state.scorer.online


SettingsDep = Annotated[Settings, Depends(_settings)]
ScorerDep = Annotated[Scorer, Depends(_scorer)]
BatcherDep = Annotated[MicroBatcher, Depends(_batcher)]
HolderDep = Annotated[ModelHolder, Depends(_holder)]
OnlineDep = Annotated[Any, Depends(_online)]  # serving.online.OnlineFeatures, or any reader with its ``features``

ScoresReader = Annotated[Principal, Depends(_requires("scores:read"))]
ModelReader = Annotated[Principal, Depends(_requires("model:read"))]
Admin = Annotated[Principal, Depends(_requires("admin"))]
