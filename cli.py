"""Run the bovw command line from a checkout: ``python cli.py run``."""

from bovw.cli import main

if __name__ == "__main__":
    # prog_name: usage lines say "bovw", as for the installed command.
    main(prog_name="bovw")
