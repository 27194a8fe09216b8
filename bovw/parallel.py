"""Parallel maps: local worker processes, or a Dask cluster.

Parallelism in bovw is over images, with processes. Inside each worker, BLAS
and OpenCV are held to one thread, so ``--jobs N`` uses N cores and not N
squared threads. :func:`parallel_map` is the one ordered map the stages use:
over joblib's loky processes, or, with a Dask scheduler address
(``--scheduler`` or ``$BOVW_SCHEDULER``), submitted to a ``dask.distributed``
cluster; the cache folder must then be on a filesystem that every worker sees.

A cluster fails in ways local processes do not, and each is turned into
something a user can act on: a malformed address or a scheduler that refuses
the connection is one sentence within seconds (:func:`check_scheduler_address`,
:func:`cluster_session`); a worker lost mid-run has its tasks run again by the
scheduler (a nanny restarts it); a cluster left without any worker for
``--scheduler-timeout`` seconds while work is pending stops the run with one
sentence instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cv2

from .errors import BadInputError

#: Seconds a run waits, by default, while its cluster has no worker and work is pending.
DEFAULT_SCHEDULER_TIMEOUT = 60.0

#: Seconds to wait for a scheduler's port to accept a TCP connection. A refused
#: connection is reported at once; this bounds a host that does not answer at all.
CONNECT_TIMEOUT = 5.0

#: Arguments larger than this (bytes, by ``dask.sizeof``) are sent to the cluster once
#: and shared by every task that names them, instead of once per task.
SCATTER_BYTES = 1_000_000

#: The protocols of ``dask.distributed`` addresses of the form ``protocol://host:port``.
_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")
_ADDRESS = re.compile(
    r"(?:(?P<protocol>[a-z]+)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})"
)

#: The connected cluster of the innermost :func:`cluster_session`: (address, client).
_SESSION: contextvars.ContextVar[tuple[str, Any] | None] = contextvars.ContextVar(
    "bovw_cluster_session", default=None
)


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


def check_scheduler_address(address: str) -> str:
    """``address`` (stripped) when it has the form of a Dask scheduler address, else an error.

    Checked before any work starts: a typo in ``--scheduler`` would otherwise
    surface only after the dataset was read, as a connection error of
    ``dask.distributed`` that does not say what form is expected. The form is
    ``[protocol://]host:port`` (protocol tcp, the default, tls, ws, wss or ucx;
    an IPv6 host in brackets), or ``inproc://...`` for a cluster in this process.

    Raises
    ------
    BadInputError
        Naming ``--scheduler`` and the expected form.
    """
    address = address.strip()
    if address.startswith("inproc://") and len(address) > len("inproc://"):
        return address
    match = _ADDRESS.fullmatch(address)
    if (
        match is None
        or (match["protocol"] or "tcp") not in _PROTOCOLS
        or not 1 <= int(match["port"]) <= 65535
    ):
        raise BadInputError(
            "--scheduler (or $BOVW_SCHEDULER) must be a Dask scheduler address of the form "
            f"tcp://host:8786, not {address!r}."
        )
    return address


def scheduler_address(explicit: str | None = None) -> str | None:
    """The Dask scheduler to use: the explicit one, else ``$BOVW_SCHEDULER``, else None.

    Raises
    ------
    BadInputError
        When the address is malformed (see :func:`check_scheduler_address`).
    """
    address = explicit or os.environ.get("BOVW_SCHEDULER") or None
    return check_scheduler_address(address) if address else None


def check_scheduler_timeout(seconds: float, flag: str = "--scheduler-timeout") -> float:
    """``seconds`` as a float when it is a usable timeout (finite and above 0), else an error."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BadInputError(f"{flag} must be a number of seconds above 0, not {seconds!r}.")
    return value


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at a TCP-based scheduler address.

    ``dask.distributed`` retries a refused connection until its connect timeout
    (30 s here), so a scheduler that is not running, or a wrong port, looked like
    a hang. One plain TCP connection, with a short timeout, tells these apart
    first. Addresses not over TCP (``inproc``, ``ucx``) are left to the client.
    """
    match = _ADDRESS.fullmatch(address)
    if match is None or (match["protocol"] or "tcp") == "ucx":
        return
    host = match["host"].strip("[]")
    try:
        with socket.create_connection((host, int(match["port"])), timeout=CONNECT_TIMEOUT):
            return
    except socket.gaierror:
        reason = f"the host {host} is unknown"
    except ConnectionRefusedError:
        reason = "the connection was refused (no scheduler listens on that port)"
    except TimeoutError:
        reason = f"no answer within {CONNECT_TIMEOUT:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise BadInputError(
        f"Cannot reach the Dask scheduler at {address}: {reason}; start the scheduler "
        "(dask scheduler) or check --scheduler."
    )


@contextlib.contextmanager
def cluster_session(address: str | None) -> Iterator[object | None]:
    """Connect a ``dask.distributed.Client`` to ``address`` for the block (nothing if None).

    :func:`parallel_map` calls with the same address inside the block run on
    that client. The client is closed on the way out, so a finished run leaves
    no connection behind.

    Raises
    ------
    BadInputError
        When dask.distributed is missing, the address is malformed, or the
        scheduler cannot be reached (a refused connection within a second or so,
        an unanswered one within :data:`CONNECT_TIMEOUT`).
    """
    if not address:
        yield None
        return
    address = check_scheduler_address(address)
    try:
        from dask.distributed import Client
    except ImportError:
        raise BadInputError(
            "A Dask scheduler was given but dask.distributed is not installed; "
            "install it with: pip install 'bovw[dask]'."
        ) from None
    _check_reachable(address)
    try:
        client = Client(address, timeout=30)
    except OSError as exc:
        raise BadInputError(
            f"Cannot reach the Dask scheduler at {address}: {exc}; check --scheduler."
        ) from None
    # Set back, not reset by token: a map's generator may be finished in another thread.
    outer = _SESSION.get()
    _SESSION.set((address, client))
    try:
        yield client
    finally:
        _SESSION.set(outer)
        client.close()


def cluster_threads(scheduler: str) -> int:
    """Worker threads of the cluster at ``scheduler`` (inside its :func:`cluster_session`; 1
    when none is open or no worker has joined yet): how many tasks run at once there."""
    session = _SESSION.get()
    if session is None or session[0] != scheduler.strip():
        return 1
    workers = session[1].scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def parallel_map(
    func: Callable,
    arg_tuples: Iterable[tuple],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    scheduler_timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
) -> Iterator:
    """``func(*args)`` for each tuple of ``arg_tuples``, yielded in their order.

    Parameters
    ----------
    func : callable
        A module-level function (it is pickled by name to reach the workers).
    arg_tuples : iterable of tuple
        The arguments of each call.
    jobs : int
        Local worker processes (loky) when there is no scheduler; 1 runs the
        calls in this process, one after the other.
    scheduler : str, optional
        A Dask scheduler address: every call is then submitted to that cluster,
        whatever its size (joblib's ``dask`` backend ran everything in this
        process on a cluster of one single-threaded worker). Inside a
        :func:`cluster_session` of the same address its client is used, else one
        is connected for the map.
    scheduler_timeout : float
        Seconds the cluster may have no worker at all while calls are pending
        before the map stops with :class:`BadInputError`. A worker lost while
        others remain (or while its nanny restarts it) is no error: the scheduler
        runs its calls again (up to ``distributed.scheduler.allowed-failures``
        times per call).

    Yields
    ------
    object
        Each call's result, in the order of ``arg_tuples``, as soon as it and
        every one before it are done. An exception raised by a call is raised
        here; the calls not yet done are then cancelled.
    """
    arg_tuples = list(arg_tuples)
    if not arg_tuples:
        return
    if not scheduler:
        yield from _local_map(func, arg_tuples, jobs)
        return
    scheduler_timeout = check_scheduler_timeout(scheduler_timeout)
    session = _SESSION.get()
    if session is not None and session[0] == scheduler.strip():
        yield from _cluster_map(session[1], session[0], func, arg_tuples, scheduler_timeout)
        return
    with cluster_session(scheduler) as client:
        address = _SESSION.get()[0]
        yield from _cluster_map(client, address, func, arg_tuples, scheduler_timeout)


def _local_map(func: Callable, arg_tuples: list[tuple], jobs: int) -> Iterator:
    from joblib import Parallel, delayed

    with parallel_backend(jobs):
        yield from Parallel(n_jobs=jobs, return_as="generator")(
            delayed(func)(*args) for args in arg_tuples
        )


class _WorkerWatch:
    """Stops a wait once the cluster has had no worker for ``timeout`` seconds.

    The clock starts when no worker is seen and is reset by any worker, so a
    nanny restarting the only worker, or workers replaced one by one, does not
    count against it.
    """

    def __init__(self, client, address: str, timeout: float):
        self.client, self.address, self.timeout = client, address, timeout
        self.none_since: float | None = None

    def check(self) -> None:
        if self.client.nthreads():
            self.none_since = None
            return
        now = time.monotonic()
        if self.none_since is None:
            self.none_since = now
        elif now - self.none_since >= self.timeout:
            raise self.error()

    def error(self) -> BadInputError:
        return BadInputError(
            f"The Dask scheduler at {self.address} has had no workers for "
            f"{self.timeout:g} s while work was pending; start workers "
            f"(dask worker {self.address}) or check the cluster "
            "(--scheduler-timeout sets how long to wait)."
        )


def _cluster_map(client, address: str, func: Callable, arg_tuples: list[tuple], timeout: float):
    from dask.distributed import wait

    watch = _WorkerWatch(client, address, timeout)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise watch.error() from None
    futures = [
        client.submit(func, *args, pure=False) for args in _scatter_large(client, arg_tuples, watch)
    ]
    # Short polls, so that a cluster emptied mid-run is noticed within the timeout.
    poll = min(1.0, timeout / 5)
    try:
        for i, future in enumerate(futures):
            while True:
                # wait, not result(timeout=): a call that raises TimeoutError itself is
                # an error of that call, not a poll that timed out.
                try:
                    wait(future, timeout=poll)
                    break
                except TimeoutError:
                    watch.check()
            result = future.result()
            futures[i] = None  # the cluster may forget a result once it is here
            yield result
    finally:
        # An error, a lost cluster or a consumer that stopped early: run nothing more.
        pending = [f for f in futures if f is not None and not f.done()]
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(pending)


def _scatter_large(client, arg_tuples: list[tuple], watch: _WorkerWatch) -> list[tuple]:
    """The tuples, with each argument above :data:`SCATTER_BYTES` sent to the cluster once.

    A submitted task carries its arguments; an array that every call shares
    (the features, when training one class per call) would otherwise travel
    once per call. Arguments are told apart by identity.
    """
    from dask.sizeof import sizeof

    sent: dict[int, Any] = {}
    out = []
    for args in arg_tuples:
        row = []
        for arg in args:
            if id(arg) not in sent:
                sent[id(arg)] = None
                if sizeof(arg) > SCATTER_BYTES:
                    try:
                        # In a list: scatter would send a list's or dict's items one by one.
                        sent[id(arg)] = client.scatter([arg], hash=False, timeout=watch.timeout)[0]
                    except TimeoutError:
                        raise watch.error() from None
            row.append(arg if sent[id(arg)] is None else sent[id(arg)])
        out.append(tuple(row))
    return out


@contextlib.contextmanager
def parallel_backend(jobs: int, scheduler: str | None = None) -> Iterator[None]:
    """joblib's backend for the calls inside: loky processes, or Dask when a scheduler is set.

    With a scheduler, a client must be connected (see :func:`cluster_session`).
    The stages' maps go through :func:`parallel_map`, which submits to a cluster
    itself; this is for joblib calls made elsewhere (model selection).
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
