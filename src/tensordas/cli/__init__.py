"""The ``tensordas`` command line: a thin typer layer over :mod:`tensordas.tasks`.

Each command lives in its own module and is registered below. :func:`main` runs the app
without click's standalone mode so that every error ends as one line on standard error:
usage errors (unknown option, bad value, invalid setting) exit 2, other errors
(``ValueError``, ``OSError``) exit 1, Ctrl-C exits 130.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Sequence
from typing import Annotated

import typer

from .. import __version__
from ._common import ClickException, UsageError, print_error, print_warning
from .complete import complete_command
from .compress import compress_command
from .dynamics import dynamics_command
from .finetune import finetune_command
from .reproduce import reproduce_command
from .train import train_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="tensordas",
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        print(f"tensordas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Deviation-Aware Scaling (DAS): SAM's first-order norm drift for tensorized models in one pass, and
    tuned, paired comparisons that decide whether it delivers SAM's gain."""


# Commands, one module each; the command list shows each docstring's first paragraph whole (click
# would cut it at the terminal's width with "...").
for _name, _command in (
    ("dynamics", dynamics_command),
    ("complete", complete_command),
    ("finetune", finetune_command),
    ("reproduce", reproduce_command),
    ("train", train_command),
    ("compress", compress_command),
):
    app.command(_name, short_help=" ".join(inspect.getdoc(_command).split("\n\n")[0].split()))(_command)

_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings():  # a library warning is one line too, without a source line
            warnings.showwarning = lambda message, *_args, **_kw: print_warning(str(message))
            status = command.main(args=args, prog_name="tensordas", standalone_mode=False)
    except UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "tensordas"
        print_error(f"{e.format_message()} (see '{where} --help')")
        return e.exit_code
    except ClickException as e:
        print_error(e.format_message())
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted")
        return _INTERRUPTED
    except (ValueError, OSError) as e:  # FileNotFoundError, PermissionError, ... are OSErrors
        print_error(str(e))
        return 1
    if status == _INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130)
        print_error("interrupted")
    return status if isinstance(status, int) else 0
