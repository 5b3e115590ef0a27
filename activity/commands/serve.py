"""`activity serve`: the REST scorer, its tokens and its API keys.

Each command imports its part when it runs, so `activity --help` starts without loading the scorer.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from activity.commands.common import (
    configure_logging,
    console,
    fail,
    settings,
)
from activity_settings import settings_environment

app = typer.Typer(help="The scorer: REST API over Feast online features and the MLflow champion.",
                  no_args_is_help=True)
key_app = typer.Typer(help="API keys for the scorer (stored hashed under the data directory).", no_args_is_help=True)
app.add_typer(key_app, name="key")


SCOPES_HELP = "Scopes: scores:read, model:read, admin (admin implies all)."


@app.command("run")
def serve_run(
    host: Annotated[str | None, typer.Option(help="Listen address (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: serving.workers).")] = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs) until Ctrl-C; the champion is hot-reloaded from the registry."""
    import uvicorn

    from infra.reachability import ServiceUnavailable, require_all
    from serving.main import serving_requirements

    cfg = settings()
    configure_logging(cfg)
    try:
        require_all(*serving_requirements(cfg))
    except ServiceUnavailable as exc:
        raise fail(exc) from None
    bind_host, bind_port = host or cfg.serving.host, port or cfg.serving.port
    os.environ.update(settings_environment(cfg))  # the factory in the worker reads the same settings
    console.print(f"scorer on http://{bind_host}:{bind_port}  (OpenAPI: /docs; a token: `activity serve token`)")
    uvicorn.run("serving.main:app_from_environment", factory=True, host=bind_host, port=bind_port,
                workers=workers or cfg.serving.workers, log_level="warning", access_log=False)


@app.command("token")
def serve_token(
    subject: Annotated[str, typer.Option(help="Who the token is for (its client id).")] = "analyst",
    scope: Annotated[list[str] | None, typer.Option(help=f"Repeat for several. {SCOPES_HELP}")] = None,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds (default: serving.token_ttl_s).")] = None,
) -> None:
    """Print a signed bearer token (JWT) for the scorer."""
    from serving.auth import issue_token

    print(issue_token(settings(), subject, scope or ["scores:read", "model:read"], ttl))


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Argument(help="A name for the key's holder.")],
    scope: Annotated[list[str] | None, typer.Option(help=f"Repeat for several. {SCOPES_HELP}")] = None,
) -> None:
    """Create an API key; it is printed once and stored only hashed."""
    from serving.auth import create_api_key

    try:
        print(create_api_key(settings(), name, scope or ["scores:read", "model:read"]))
    except ValueError as exc:
        raise fail(exc) from None


@key_app.command("list")
def key_list() -> None:
    """The API keys (ids, names, scopes; never the secrets)."""
    from serving.auth import list_api_keys

    table = Table("id", "name", "scopes", "created")
    for key in list_api_keys(settings()):
        table.add_row(str(key["id"]), str(key["name"]), " ".join(key["scopes"]), str(key.get("created", "")))
    console.print(table)


@key_app.command("revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `activity serve key list`).")]) -> None:
    """Revoke an API key."""
    from serving.auth import revoke_api_key

    try:
        revoke_api_key(settings(), key_id)
    except (KeyError, ValueError) as exc:
        raise fail(exc) from None
    console.print(f"revoked {key_id}")
