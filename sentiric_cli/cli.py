"""Entry point: dispatches commands and holds the one error boundary.

A SentiricError (a user mistake) becomes one line on stderr and exit code 2;
SENTIRIC_DEBUG=1 shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from sentiric_cli import __version__
from sentiric_cli.errors import SentiricError
from sentiric_cli.plan.command import plan
from sentiric_cli.run import run
from sentiric_cli.serve.command import serve

app = typer.Typer(
    name="sentiric",
    help="Run llama.cpp models on the hardware you have: plan memory, answer over long documents, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(no_args_is_help=False)(plan)
app.command()(run)
app.command()(serve)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sentiric {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """sentiric: exact memory plans, shifting-window answers, parallel serving (llama.cpp)."""


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, prog_name="sentiric", standalone_mode=False)
    except SentiricError as e:
        if os.environ.get("SENTIRIC_DEBUG"):
            raise
        hint = f" (hint: {e.hint})" if e.hint else ""
        print(f"sentiric: error: {e.message}{hint}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        # typer's usage errors (bad option values, unknown options): one line like ours, same exit code 2.
        # Matched by shape, since typer keeps its click exceptions private.
        if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
            raise
        if os.environ.get("SENTIRIC_DEBUG"):
            raise
        message = e.format_message()
        if message:  # empty when no arguments were given: the help has been printed already
            print(f"sentiric: error: {message} (hint: see `sentiric --help`)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
