"""The on-disk cache: one ``joblib.Memory`` and the rules for finding it.

Every pipeline stage is a memoized function of small, hashable inputs (content
hashes, settings dataclasses), never of big arrays: hashing those would cost as
much as the work. joblib writes each result to a temporary name and renames it
into place, so a killed run never leaves a half-written entry behind.

The cache lives in ``$BOVW_CACHE_DIR``, else ``$XDG_CACHE_HOME/bovw``, else
``~/.cache/bovw``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import joblib

#: joblib stores each memoized function under <location>/joblib/<module path>/<function>.
_STAGE_PREFIX = "bovw"


def default_cache_dir() -> Path:
    """``$BOVW_CACHE_DIR``, else the XDG cache folder ``bovw``."""
    env = os.environ.get("BOVW_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bovw"


def get_memory(location: str | os.PathLike | None = None) -> joblib.Memory:
    """The joblib.Memory of the cache folder (created if missing)."""
    path = Path(location) if location is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from .data import BadInputError

        raise BadInputError(
            f"Cannot use cache folder {path}: {exc.strerror or exc}; "
            "pass --cache-dir or set BOVW_CACHE_DIR to a writable folder."
        ) from None
    return joblib.Memory(str(path), verbose=0)


def _folder_size(path: Path) -> tuple[int, int]:
    total, entries = 0, 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except OSError:
                pass
        if "output.pkl" in filenames:
            entries += 1
    return total, entries


def cache_info(location: str | os.PathLike | None = None) -> list[tuple[str, int, int]]:
    """Per cached stage function: (name, bytes on disk, number of entries)."""
    root = Path(location) if location is not None else default_cache_dir()
    rows = []
    base = root / "joblib"
    if not base.is_dir():
        return rows
    for dirpath, dirnames, _ in os.walk(base):
        here = Path(dirpath)
        # A memoized function's folder holds one folder per call, each with output.pkl.
        if (
            any((here / d / "output.pkl").exists() for d in dirnames[:50])
            or (here / "func_code.py").exists()
        ):
            size, entries = _folder_size(here)
            name = here.name
            rows.append((name, size, entries))
            dirnames[:] = []
    return sorted(rows)


def clear_cache(location: str | os.PathLike | None = None) -> int:
    """Delete the whole cache folder's contents; return the bytes freed."""
    root = Path(location) if location is not None else default_cache_dir()
    if not root.exists():
        return 0
    size, _ = _folder_size(root)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    return size
