"""The on-disk cache: verified entries of plain data, versioned keys, bounded size.

- :mod:`bovw.cache.store`: the folder, its marker, atomic and verified entries.
- :mod:`bovw.cache.codec`: stage results as JSON plus arrays (never pickles).
- :mod:`bovw.cache.memo`: stage keys (inputs, code revision, library versions), memoized calls.
- :mod:`bovw.cache.maintenance`: where the cache is, what it holds, prune and clear.
"""

from .maintenance import (
    CacheSummary,
    cache_info,
    clear_cache,
    default_cache_dir,
    default_max_size,
    open_store,
    parse_size,
    prune,
    require_bovw_cache,
)
from .memo import HIT, MISS, RECOMPUTED, Memo, Outcome, estimator_params, make_key
from .store import CacheError, CacheStore, CorruptEntry, human_size, is_bovw_cache

__all__ = [
    "HIT",
    "MISS",
    "RECOMPUTED",
    "CacheError",
    "CacheStore",
    "CacheSummary",
    "CorruptEntry",
    "Memo",
    "Outcome",
    "cache_info",
    "clear_cache",
    "default_cache_dir",
    "default_max_size",
    "estimator_params",
    "human_size",
    "is_bovw_cache",
    "make_key",
    "open_store",
    "parse_size",
    "prune",
    "require_bovw_cache",
]
