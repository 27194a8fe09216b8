"""Keeping the cache in bounds: where it is, what it holds, least-recently-used eviction, clearing.

``prune`` and ``clear`` act only on a folder that holds bovw's marker, and
only on what bovw wrote there (entries, ``tmp/``, the legacy ``joblib/``
folder of older versions, the marker): any other file in the folder is left
as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .store import (
    ENTRIES,
    LEGACY,
    MARKER,
    TMP,
    CacheError,
    CacheStore,
    _tree_size,
    available_compressors,
    is_bovw_cache,
)

#: The default cap is this fraction of the disk that holds the cache ...
DEFAULT_CAP_FRACTION = 0.2
#: ... but never more than this (the 15-Scene cache at the defaults is about 11 GB).
DEFAULT_CAP_MAX = 50 * 10**9
#: Entries used less than this long ago are never evicted by a size cap: a run
#: that is still going may come back to them (``--older-than`` is the user's own).
GRACE_SECONDS = 600.0

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12})
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def default_cache_dir() -> Path:
    """``$BOVW_CACHE_DIR``, else ``$XDG_CACHE_HOME/bovw``, else ``~/.cache/bovw``."""
    env = os.environ.get("BOVW_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bovw"


def parse_size(text: str | int) -> int:
    """Bytes from ``"20GB"``, ``"500 MiB"``, ``"1e9"`` or an integer; ``ValueError`` otherwise."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a size such as 20GB, 500MiB or 1000000")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def default_max_size(root: str | os.PathLike | None = None) -> int:
    """The cache cap: ``$BOVW_CACHE_MAX_SIZE``, else 20 % of the disk, at most 50 GB."""
    env = os.environ.get("BOVW_CACHE_MAX_SIZE")
    if env:
        return parse_size(env)
    path = Path(root) if root is not None else default_cache_dir()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        total = shutil.disk_usage(path).total
    except OSError:
        return DEFAULT_CAP_MAX
    return int(min(DEFAULT_CAP_MAX, DEFAULT_CAP_FRACTION * total))


def open_store(location: str | os.PathLike | None = None, *, compress: str | None = None):
    """The :class:`CacheStore` of a folder (default :func:`default_cache_dir`), opened.

    ``compress`` (default ``$BOVW_CACHE_COMPRESS``, else "none") compresses new entries.
    """
    root = Path(location) if location is not None else default_cache_dir()
    compress = compress or os.environ.get("BOVW_CACHE_COMPRESS") or "none"
    if compress not in available_compressors():
        raise CacheError(
            f"Cache compressor {compress!r} (BOVW_CACHE_COMPRESS) is not available here; "
            f"use one of {', '.join(available_compressors())}."
        )
    return CacheStore(root, compress=compress).open()


@dataclass
class CacheSummary:
    """What a cache holds: bytes and entries per (stage, revision), and the legacy pickles."""

    root: Path
    rows: list[tuple[str, str, int, int]]  # stage, revision, entries, bytes
    legacy_bytes: int
    tmp_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(r[3] for r in self.rows) + self.legacy_bytes + self.tmp_bytes


def cache_info(location: str | os.PathLike | None = None) -> CacheSummary:
    """Size and entries per stage and code revision (an empty summary for a missing folder)."""
    root = Path(location) if location is not None else default_cache_dir()
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for entry in CacheStore(root).entries():
        row = counts[(entry.stage, entry.revision)]
        row[0] += 1
        row[1] += entry.size
    rows = [(stage, rev, n, size) for (stage, rev), (n, size) in sorted(counts.items())]
    legacy = sum(_tree_size(root / name) for name in LEGACY if (root / name).exists())
    tmp = _tree_size(root / TMP) if (root / TMP).exists() else 0
    return CacheSummary(root, rows, legacy, tmp)


def require_bovw_cache(root: Path, action: str) -> None:
    """Raise :class:`CacheError` (one sentence) unless ``root`` holds bovw's marker."""
    if not is_bovw_cache(root):
        raise CacheError(
            f"Refusing to {action} {root}: it is not a bovw cache (no {MARKER} marker file); "
            "check --cache-dir or BOVW_CACHE_DIR."
        )


def prune(
    location: str | os.PathLike | None = None,
    *,
    max_size: int | None = None,
    older_than_days: float | None = None,
    grace_seconds: float = GRACE_SECONDS,
) -> tuple[int, int]:
    """Evict least-recently-used entries; return ``(entries deleted, bytes freed)``.

    Parameters
    ----------
    max_size : int, optional
        Delete the least recently used entries until the cache is at most this
        many bytes. Entries used within ``grace_seconds`` are kept even if the
        cache stays over the cap (a running job may still need them).
    older_than_days : float, optional
        Delete entries not used for this many days.

    Entries being read (held under a shared lock) are never deleted.
    """
    root = Path(location) if location is not None else default_cache_dir()
    if not root.exists():
        return 0, 0
    require_bovw_cache(root, "prune")
    store = CacheStore(root)
    freed = store.clean_tmp()
    deleted = 0
    now = time.time()
    entries = sorted(store.entries(), key=lambda e: e.last_used)
    total = sum(e.size for e in entries) + _tree_size(root / TMP)
    for entry in entries:
        too_old = older_than_days is not None and now - entry.last_used > older_than_days * 86400
        over = max_size is not None and total > max_size and now - entry.last_used > grace_seconds
        if not (too_old or over):
            continue
        if store.evict(entry):
            deleted += 1
            freed += entry.size
            total -= entry.size
    return deleted, freed


def clear_cache(location: str | os.PathLike | None = None) -> int:
    """Delete everything bovw wrote in the cache folder; return the bytes freed.

    Refuses (:class:`CacheError`) a folder without bovw's marker; files that
    bovw did not write are left in place.
    """
    root = Path(location) if location is not None else default_cache_dir()
    if not root.exists():
        return 0
    require_bovw_cache(root, "clear")
    freed = 0
    for name in (ENTRIES, TMP, *LEGACY):
        path = root / name
        if path.is_dir() and not path.is_symlink():
            freed += _tree_size(path)
            # Renamed first, so that a concurrent reader sees whole entries or none.
            trash = root / f".{name}-deleting-{os.getpid()}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
    freed += _tree_size(root / MARKER)
    (root / MARKER).unlink(missing_ok=True)
    return freed
