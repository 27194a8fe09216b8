"""The ``bovw`` command line: one command per pipeline stage, plus the cache, the CNN,
prediction and visual words.

The commands live in the modules of this package, by what they do; this module
only gathers them into the ``bovw`` group (the entry point ``bovw.cli:main``).
The options of the pipeline commands are generated from the settings' metadata
(:mod:`bovw.cli.options`). Bad input gets one sentence and exit code 2;
``bovw --debug ...`` shows the traceback instead (:mod:`bovw.cli.errors`).
"""

from __future__ import annotations

import click

from .cache_commands import cache
from .cnn_commands import cnn
from .errors import EXIT_BAD_INPUT
from .pipeline_commands import COMMANDS
from .predict import predict_command
from .tune_commands import tune_command
from .words import words_command

__all__ = ["EXIT_BAD_INPUT", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    invoke_without_command=True,
)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
# prog_name: "bovw" however it is started (python cli.py, python -m bovw.cli).
@click.version_option(package_name="bovw", prog_name="bovw")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Bag of visual words image classification: dense SIFT, codebooks, encodings, linear SVMs.

    With no DATA, commands use the demo dataset shipped in data/.
    """
    if ctx.invoked_subcommand is None:  # plain `bovw`: the help, not a usage error
        click.echo(ctx.get_help())


for _command in [*COMMANDS, tune_command, predict_command, words_command, cache, cnn]:
    main.add_command(_command)
