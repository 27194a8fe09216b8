"""joblib backends: local worker processes, or a Dask cluster.

Parallelism in bovw is over images, with processes. Inside each worker, BLAS
and OpenCV are held to one thread, so ``--jobs N`` uses N cores and not N
squared threads. With a Dask scheduler address (``--scheduler`` or
``$BOVW_SCHEDULER``) the very same joblib calls run on a ``dask.distributed``
cluster through joblib's ``dask`` backend; the cache folder must then be on a
filesystem that every worker sees.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator

import cv2


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Hold OpenCV and BLAS to one thread inside the block, then restore what was there.

    Worker processes run many images side by side, one per core, so each must
    not start its own thread pools. The limit is scoped: the calling process
    gets its threads back afterwards, so whether an earlier stage was a cache
    hit (nothing ran) or a miss (work ran here, ``--jobs 1``) never changes how
    a later stage, such as training, computes.
    """
    from threadpoolctl import threadpool_limits

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(previous)


def resolve_jobs(jobs: int, flag: str = "--jobs") -> int:
    """Worker processes for a ``--jobs`` value, with joblib's convention for negatives.

    ``N >= 1``: N processes; ``-1``: one per core; ``-2``: all cores but one, and so on.
    """
    cores = os.cpu_count() or 1
    if jobs >= 1:
        return jobs
    if jobs < 0 and cores + 1 + jobs >= 1:
        return cores + 1 + jobs
    from .errors import BadInputError

    raise BadInputError(
        f"{flag} must be a number of processes (1, 2, ...) or -1 for one per core "
        f"(-2 for all but one, down to -{cores} here), not {jobs}."
    )


def die_with_parent(parent_pid: int) -> None:
    """Run as each local worker starts: have Linux kill it when its parent bovw process dies.

    loky keeps idle workers alive for minutes, so a ``kill -9`` of a ``--jobs N`` run
    used to leave N workers of a few hundred MB each behind. ``PR_SET_PDEATHSIG``
    ends them with their parent; a worker whose parent died while it was still
    starting (its parent is no longer ``parent_pid``) exits at once. Only
    :func:`parallel_backend` calls this, as loky's worker initializer: never in the
    parent itself (``--jobs 1`` runs in-process) nor in Dask workers. Off Linux, the
    request is skipped.
    """
    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # orphaned before the request took effect
        os._exit(1)


def scheduler_address(explicit: str | None = None) -> str | None:
    """The Dask scheduler to use: the explicit one, else ``$BOVW_SCHEDULER``, else None."""
    return explicit or os.environ.get("BOVW_SCHEDULER") or None


@contextlib.contextmanager
def cluster_session(address: str | None) -> Iterator[object | None]:
    """Connect a ``dask.distributed.Client`` to ``address`` for the block (nothing if None).

    joblib's ``dask`` backend uses the current client, so the parallel calls
    inside the block run on that cluster. The client is closed on the way out,
    so a finished run leaves no connection behind.
    """
    if not address:
        yield None
        return
    try:
        from dask.distributed import Client
    except ImportError:
        from .data import BadInputError

        raise BadInputError(
            "A Dask scheduler was given but dask.distributed is not installed; "
            "install it with: pip install 'bovw[dask]'."
        ) from None
    try:
        client = Client(address, timeout=30)
    except OSError as exc:
        from .data import BadInputError

        raise BadInputError(
            f"Cannot reach the Dask scheduler at {address}: {exc}; check --scheduler."
        ) from None
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def parallel_backend(jobs: int, scheduler: str | None = None) -> Iterator[None]:
    """joblib's backend for the calls inside: loky processes, or Dask when a scheduler is set.

    With a scheduler, a client must be connected (see :func:`cluster_session`).
    """
    import joblib

    if scheduler:
        with joblib.parallel_config(backend="dask"):
            yield
    else:
        # Each worker asks, as it starts, to die with this process (kill -9 included).
        with joblib.parallel_config(
            backend="loky",
            inner_max_num_threads=1,
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        ):
            yield
