"""Faults of a Dask cluster: each one either survived or reported in one sentence, in time.

Every test makes the fault really happen and checks that it did (a worker's pid
that is not this process's, a marker left by the killed worker, the scheduler's
count of workers) before it checks what bovw made of it, so that none passes by
the fault not happening. The functions that run on the workers are at module
level: the workers import this module to run them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, tiny_run_config

import bovw
from bovw.cli import main
from bovw.errors import BadInputError
from bovw.parallel import check_scheduler_address, parallel_map

distributed = pytest.importorskip("dask.distributed")


def small_config(path):
    return tiny_run_config(path)


def local_cluster(n_workers: int = 1) -> distributed.LocalCluster:
    """Worker processes, each with a nanny (which restarts it if it dies) and one thread."""
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )


@pytest.fixture(scope="module")
def one_worker():
    """A cluster of one worker process with one thread: the smallest cluster there is."""
    with local_cluster(1) as cluster:
        yield cluster


def worker_pids(address: str) -> set[int]:
    with distributed.Client(address, timeout=10) as client:
        return set(client.run(os.getpid).values())


def free_port() -> int:
    """A local port that nothing listens on (bound, then released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def within(seconds: float, func):
    """``func()``'s exception (or None) and its duration; a failure, not a hang, past ``seconds``."""
    box: dict = {"error": None}

    def target():
        t = time.perf_counter()
        try:
            func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
        box["seconds"] = time.perf_counter() - t

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return box["error"], box["seconds"]


# ------------------------------------------------------------------ run on the workers


def pid_and(i: int) -> tuple[int, int]:
    return i, os.getpid()


def kill_once(marker: str, i: int) -> tuple[int, int]:
    """The first call of all (the marker does not exist yet) SIGKILLs its worker process."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return i, os.getpid()
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the worker was killed")


def slow(i: int) -> int:
    time.sleep(0.2)
    return i


def total(array: np.ndarray, i: int) -> float:
    return float(array.sum()) + i


def times_out(i: int) -> int:
    if i == 2:
        raise TimeoutError(f"call {i} gave up")
    return i


class KillOnFirstEncode(distributed.WorkerPlugin):
    """SIGKILL the worker as the run's first encoding task starts on it (once: a marker).

    Extraction is finished by then, so the worker dies in the middle of the run,
    in a later stage than the one that wrote the cache entries it leaves behind.
    """

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith("_encode_shard"):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------ 1. a lost worker


def test_a_killed_worker_is_restarted_and_its_call_runs_again(tmp_path):
    marker = tmp_path / "killed"
    with local_cluster(1) as cluster:
        address = cluster.scheduler_address
        first = worker_pids(address)
        results = list(
            parallel_map(
                kill_once,
                [(str(marker), i) for i in range(6)],
                scheduler=address,
                scheduler_timeout=30,
            )
        )
        after = worker_pids(address)
    killed = int(marker.read_text())
    assert killed in first and killed != os.getpid()  # the worker really died ...
    assert killed not in after  # ... and its nanny started another one
    assert [i for i, _ in results] == list(range(6))  # every call, in order
    assert {pid for _, pid in results} == after  # all on the new worker: the killed one ran none


def test_a_run_whose_worker_is_killed_mid_run_gives_the_same_result(tiny_dataset, tmp_path):
    local = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "local", progress=False)
    marker = tmp_path / "killed"
    with local_cluster(1) as cluster:
        address = cluster.scheduler_address
        first = worker_pids(address)
        with distributed.Client(address) as client:
            client.register_plugin(KillOnFirstEncode(str(marker)))
        remote = bovw.run(
            small_config(tiny_dataset),
            cache_dir=tmp_path / "shared",
            progress=False,
            scheduler=address,
            scheduler_timeout=30,
        )
        after = worker_pids(address)
    assert int(marker.read_text()) in first and not first & after  # killed, and restarted
    for split in ("train", "test"):
        assert np.array_equal(local.features[split], remote.features[split])
    assert local.metrics["predictions"] == remote.metrics["predictions"]


# ------------------------------------------------------------------ 2. no worker left


def test_a_cluster_without_workers_stops_the_run_within_the_timeout(tiny_dataset, tmp_path):
    with local_cluster(0) as cluster:
        address = cluster.scheduler_address
        assert not worker_pids(address)
        error, elapsed = within(
            30,
            lambda: bovw.run(
                small_config(tiny_dataset),
                cache_dir=tmp_path / "c",
                progress=False,
                scheduler=address,
                scheduler_timeout=2,
            ),
        )
    assert isinstance(error, BadInputError), error
    assert 2 <= elapsed < 2 + 4, elapsed  # it waited for workers, then no longer
    message = str(error)
    assert "no workers for 2 s" in message and address in message and "start workers" in message
    assert "\n" not in message


def test_workers_lost_mid_run_stop_the_map_within_the_timeout():
    with local_cluster(1) as cluster:
        address = cluster.scheduler_address
        stream = parallel_map(
            slow, [(i,) for i in range(40)], scheduler=address, scheduler_timeout=2
        )
        assert next(stream) == 0  # the work is under way on the worker
        cluster.scale(0)
        deadline = time.monotonic() + 20
        while cluster.scheduler.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cluster.scheduler.workers  # every worker is gone, work still pending
        error, elapsed = within(30, lambda: list(stream))
        assert isinstance(error, BadInputError), error
        assert f"at {address} has had no workers" in str(error)
        # What was pending was cancelled, not left for the next worker to run.
        assert not any(ts.state == "no-worker" for ts in cluster.scheduler.tasks.values())
    assert 2 <= elapsed < 2 + 3, elapsed


# ------------------------------------------------------------------ 3. one worker, one thread


def test_a_one_thread_cluster_runs_every_call_on_its_worker(one_worker):
    address = one_worker.scheduler_address
    results = list(parallel_map(pid_and, [(i,) for i in range(5)], scheduler=address))
    assert [i for i, _ in results] == list(range(5))
    assert {pid for _, pid in results} == worker_pids(address) != {os.getpid()}


def test_a_full_run_on_a_one_thread_cluster(one_worker, tiny_dataset, tmp_path):
    scheduler = one_worker.scheduler
    result = bovw.run(
        small_config(tiny_dataset),
        cache_dir=tmp_path / "c",
        progress=False,
        scheduler=one_worker.scheduler_address,
    )
    assert result.metrics["accuracy"] > 0.5
    # The stages' batches were tasks of the cluster, not calls in this process.
    assert {"extract_batch", "encode_shard"} <= set(scheduler.task_prefixes)  # key_split drops "_"


def test_an_error_of_a_call_is_raised_in_order(one_worker):
    # Even a TimeoutError, the exception that a poll for a result raises when it times out.
    got = []

    def consume():
        calls = [(i,) for i in range(5)]
        got.extend(parallel_map(times_out, calls, scheduler=one_worker.scheduler_address))

    error, _ = within(30, consume)
    assert got == [0, 1]
    assert isinstance(error, TimeoutError) and str(error) == "call 2 gave up"


def test_a_large_argument_shared_by_every_call_is_sent_once(one_worker, monkeypatch):
    sent = []
    scatter = distributed.Client.scatter

    def counting(self, data, *args, **kwargs):
        sent.append(data)
        return scatter(self, data, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "scatter", counting)
    array = np.ones(500_000)  # 4 MB, above bovw.parallel.SCATTER_BYTES
    calls = [(array, i) for i in range(4)]
    results = list(parallel_map(total, calls, scheduler=one_worker.scheduler_address))
    assert results == [500_000.0 + i for i in range(4)]
    assert len(sent) == 1


# ------------------------------------------------------------------ 4. a refused connection


def test_a_refused_connection_is_reported_within_5_s(tiny_dataset, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    t = time.perf_counter()
    with pytest.raises(BadInputError, match="refused") as err:
        bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", scheduler=address)
    assert time.perf_counter() - t < 5
    assert address in str(err.value)


# ------------------------------------------------------------------ 5. a malformed address


@pytest.mark.parametrize(
    "address", ["not a url::", "tcp://host:notaport", "tcp://host:99999", "http://host:8786"]
)
def test_a_malformed_address_exits_2_before_any_work(address, tiny_dataset, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["run", str(tiny_dataset), *FAST, "--cache-dir", str(cache), "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--scheduler", address])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [
        "Error: --scheduler (or $BOVW_SCHEDULER) must be a Dask scheduler address of the form "
        f"tcp://host:8786, not {address!r}."
    ]
    assert not cache.exists() and not out.exists()  # nothing ran


def test_a_malformed_address_from_the_environment_and_a_bad_timeout_exit_2(tiny_dataset):
    r = CliRunner().invoke(main, ["run", str(tiny_dataset)], env={"BOVW_SCHEDULER": "host"})
    assert r.exit_code == 2 and "$BOVW_SCHEDULER" in r.stderr and "tcp://host:8786" in r.stderr
    r = CliRunner().invoke(main, ["run", str(tiny_dataset), "--scheduler-timeout", "0"])
    assert r.exit_code == 2
    assert r.stderr == "Error: --scheduler-timeout must be a number of seconds above 0, not 0.0.\n"


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:8786", "localhost:8786", "tls://scheduler.example.org:8786"]
    + ["tcp://[::1]:8786", "inproc://10.0.0.1/1234/1"],
)
def test_well_formed_addresses_are_accepted(address):
    assert check_scheduler_address(f" {address} ") == address


def test_the_map_without_a_scheduler_is_the_local_one():
    # The same function, ordered, on loky processes: what the stages get without --scheduler.
    results = list(parallel_map(pid_and, [(i,) for i in range(4)], jobs=2))
    assert [i for i, _ in results] == list(range(4))
    assert os.getpid() not in {pid for _, pid in results}
    assert [pid for _, pid in parallel_map(pid_and, [(0,)], jobs=1)] == [os.getpid()]
