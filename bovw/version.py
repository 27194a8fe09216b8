"""The installed version of bovw, for saved models and reports.

A module of its own, at the bottom of the package, so that the modules that
record the version (:mod:`bovw.report`, :mod:`bovw.persistence`) need not import
the package's ``__init__``, which imports them.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("bovw")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0+unknown"
