"""Entry point: dispatches commands and holds the one error boundary.

A SentiricError (a user mistake) becomes one line on stderr and exit code 2;
SENTIRIC_DEBUG=1 shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from sentiric_cli import __version__
from sentiric_cli.errors import SentiricError

# each command's module, imported only when that command runs (or for --help): `run` and `serve` load
# llama.cpp's bindings and numpy, which `plan` never needs (it answers in a fraction of a second)
COMMANDS = {"plan": "sentiric_cli.plan.command", "run": "sentiric_cli.run", "serve": "sentiric_cli.serve.command"}


def build(names: tuple[str, ...] = tuple(COMMANDS)) -> typer.Typer:
    """The typer app with the commands named (all of them by default, in their order)."""
    app = typer.Typer(
        name="sentiric",
        help="Run llama.cpp models on the hardware you have: plan memory, answer over long documents, serve.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for name in names:
        app.command()(getattr(importlib.import_module(COMMANDS[name]), name))
    return app


def _wanted(argv: list[str]) -> tuple[str, ...]:
    """The one command the arguments name (its first word), else all of them (--help, --version, a typo)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return (first,) if first in COMMANDS else tuple(COMMANDS)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sentiric {__version__}")
        raise typer.Exit()


def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """sentiric: exact memory plans, shifting-window answers, parallel serving (llama.cpp)."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        code = build(_wanted(args))(args=args, prog_name="sentiric", standalone_mode=False)
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


def entry() -> None:
    """The console script (and `python -m sentiric_cli`): main(), then, for `plan`, an exit without the interpreter's
    teardown. Freeing every module and object it loaded takes a tenth of a plan's time (40 ms here) and `plan`
    leaves nothing to clean up: its files are written and closed before it returns. `run` and `serve` (threads,
    llama.cpp contexts, servers) exit the ordinary way. Tests call main() and keep their process."""
    try:
        main()
    except SystemExit as done:
        if _wanted(sys.argv[1:]) != ("plan",):
            raise
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe (`plan | head`): what was asked for has been read
            pass
        os._exit(code)
