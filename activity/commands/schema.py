"""`activity schema`: the `transactions` contract.

The command imports the schema module when it runs, so `activity --help` starts without loading it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from activity.commands.common import (
    console,
)

app = typer.Typer(help="The `transactions` contract.", no_args_is_help=True)


@app.command("docs")
def schema_docs(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the contract's reference (fields, rules, rejection codes) as Markdown."""
    from streaming.schema import render_docs

    text = render_docs()
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        print(text)
