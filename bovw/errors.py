"""The error every part of bovw raises for bad input: one sentence, exit code 2 on the CLI."""


class BadInputError(ValueError):
    """Bad input named in one sentence: which file or setting, and what to do."""
