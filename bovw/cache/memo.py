"""Memoized stages: a key that names everything that shapes a result, a verified read, a store.

A stage's key is the SHA-256 of a canonical JSON document of its *inputs*:
the keys of the stages before it, content hashes of the images, the
``get_params()`` of the estimators built for it (:func:`estimator_params`),
plus, added here for every stage, the stage's code revision and the
major.minor versions of NumPy, OpenCV and scikit-learn (:func:`library_versions`).
Two bovw versions that share a cache therefore share the entries whose inputs
and revisions agree and keep both where they differ; nothing is ever wiped
because code changed (unlike ``joblib.Memory``, which clears a function's
whole cache when its source changes, and which stores pickles).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .store import CacheStore, CorruptEntry

#: Parameters that change how fast a result is computed, never the result: left out of keys.
RESULT_NEUTRAL_PARAMS = frozenset({"n_jobs", "verbose", "pre_dispatch"})

#: What a stage reports: a verified hit, a miss, or a miss caused by a bad entry.
HIT, MISS, RECOMPUTED = "hit", "miss", "miss (recomputed: corrupt entry)"


def library_versions() -> dict[str, str]:
    """major.minor of the libraries whose numerics shape every stage's results."""
    import cv2
    import sklearn

    def major_minor(version: str) -> str:
        return ".".join(version.split(".")[:2])

    return {
        "numpy": major_minor(np.__version__),
        "opencv": major_minor(cv2.__version__),
        "scikit-learn": major_minor(sklearn.__version__),
    }


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data, for keys: estimators become their class and parameters."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else repr(f)
    if isinstance(value, list | tuple | np.ndarray):
        return [canonical(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if hasattr(value, "get_params"):
        return estimator_params(value)
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    if hasattr(value, "__dataclass_fields__"):
        return {k: canonical(getattr(value, k)) for k in value.__dataclass_fields__}
    # A cross-validation splitter or similar: its class and its public settings.
    cls = type(value)
    state = {k: canonical(v) for k, v in sorted(vars(value).items()) if not k.startswith("_")}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "state": state}


def estimator_params(estimator: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The class and ``get_params(deep=False)`` of an estimator, nested estimators expanded.

    ``exclude`` names parameters that another part of the key already covers
    (an encoder's fitted ``vocabulary``: the vocabulary stage's key names it).
    """
    cls = type(estimator)
    params = estimator.get_params(deep=False)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": {
            k: canonical(v)
            for k, v in sorted(params.items())
            if k not in RESULT_NEUTRAL_PARAMS and k not in exclude
        },
    }


def make_key(stage: str, revision: int, inputs: dict[str, Any]) -> str:
    """The entry key of a stage call: a hash of its inputs, revision and library versions."""
    document = {
        "stage": stage,
        "revision": revision,
        "versions": library_versions(),
        "inputs": canonical(inputs),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass
class Outcome:
    """What a memoized call did: its value, its status, and what went wrong, if anything."""

    value: Any
    status: str
    problem: str | None = None


class Memo:
    """One stage's cache: look up a key, or compute and store.

    Parameters
    ----------
    store : CacheStore
    stage : str
        The stage's name (a folder of the cache).
    revision : int
        The stage's code revision: raise it with any change to the code that
        computes the stage, so entries of the old code are not reused
        (``tests/test_cache_keys.py`` checks this against the source).
    """

    def __init__(self, store: CacheStore, stage: str, revision: int):
        self.store = store
        self.stage = stage
        self.revision = revision

    def key(self, inputs: dict[str, Any]) -> str:
        return make_key(self.stage, self.revision, inputs)

    def contains(self, key: str) -> bool:
        """Whether an entry exists for ``key`` (it may still fail verification)."""
        return self.store.contains(self.stage, self.revision, key)

    def get(
        self, key: str, compute: Callable[[], Any], inputs: Any = None, *, mmap: bool = False
    ) -> Outcome:
        """The value of ``key``: read and verified, or computed (and stored) on a miss.

        ``mmap``: arrays read from the cache come back memory-mapped (see
        :meth:`CacheStore.read`); a computed value is returned as computed.
        """
        problem = None
        try:
            return Outcome(self.store.read(self.stage, self.revision, key, mmap=mmap), HIT)
        except KeyError:
            pass
        except CorruptEntry as exc:
            problem = str(exc)
        except OSError as exc:  # unreadable: permissions, I/O error
            problem = f"unreadable ({exc.strerror or exc})"
        value = compute()
        self.store.write(self.stage, self.revision, key, value, inputs=canonical(inputs))
        return Outcome(value, RECOMPUTED if problem else MISS, problem)

    def entry_path(self, key: str):
        return self.store.entry_path(self.stage, self.revision, key)


def report_problems(stage: str, problems: list[tuple[str, str]]) -> None:
    """One warning line for the corrupt entries a stage met: how many, and the first one."""
    if not problems:
        return
    path, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    warnings.warn(
        f"Cache entry {path} of stage {stage} is corrupt ({why}){more}; recomputed.",
        stacklevel=2,
    )
