"""``python -m bovw.cli``: the ``bovw`` command line."""

from . import main

main(prog_name="bovw")
