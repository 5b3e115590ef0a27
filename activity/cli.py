"""`activity`: the platform's command line and composition root.

Each command parses its arguments and calls one function of a part; errors a user can fix are
printed as one clear message with a non-zero exit code, never as a traceback. The command groups
live in ``activity.commands``, one module each; this module only assembles them.
"""

from __future__ import annotations

import typer

from activity.commands import backtest, monitor, platform, produce, schema, serve, stack, stream, topic, train

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(stack.app, name="stack")
app.add_typer(produce.app, name="produce")
app.add_typer(topic.app, name="topic")
app.add_typer(schema.app, name="schema")
app.add_typer(stream.app, name="stream")
app.add_typer(train.app, name="train")
app.add_typer(serve.app, name="serve")
app.add_typer(monitor.app, name="monitor")
app.command("settings")(platform.show_settings)
app.command("up")(platform.up)
app.command("demo")(platform.demo)
app.command("bench")(platform.bench)
app.command("backtest")(backtest.backtest)

if __name__ == "__main__":
    app()
