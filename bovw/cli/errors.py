"""How the command line fails: one sentence and exit code 2 for bad input.

``--debug`` (before the command) shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
import warnings

import click

from ..config import ConfigError
from ..errors import BadInputError

#: The exit code of bad input or usage, as click's own usage errors.
EXIT_BAD_INPUT = 2


def _format_warning(message, category, filename, lineno, file=None, line=None):
    return f"warning: {message}\n"


def handle_errors(func):
    """Bad input: one sentence, exit 2. Ctrl-C: say what is kept. --debug: full traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        warnings.formatwarning = _format_warning
        try:
            return func(*args, **kwargs)
        except (BadInputError, ConfigError) as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo(
                "\nInterrupted. Finished work is cached; run the same command to resume.", err=True
            )
            sys.exit(130)
        except click.ClickException:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if debug:
                raise
            click.echo(
                f"Error: {type(exc).__name__}: {exc} (run with --debug for the traceback).",
                err=True,
            )
            sys.exit(1)

    return wrapper
