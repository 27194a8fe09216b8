"""Shared by the benchmarks: record a section of ``benchmarks/RESULTS.md``.

Each benchmark owns one ``## Title`` section and replaces only that one, so
benchmarks can be rerun in any order without clobbering each other's figures.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """The checkout's commit (short hash, "+changes" when the tree differs from it)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def machine_line() -> str:
    """One line naming the machine, the date and the commit, under each recorded table."""
    cpu = cpu_name()
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    return (
        f"Measured {when} on {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"commit {commit()}."
    )


def update_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace the ``## title`` section of RESULTS.md with ``body`` (append if missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, path)


def print_and_record(title: str | None, intro: str, table: list[str], script: str) -> None:
    """Print a benchmark's table; with ``title``, also record it in RESULTS.md.

    The section holds ``intro``, the table, the command that made it (``script``
    with this process's arguments) and :func:`machine_line`.
    """
    print("\n" + "\n".join(table))
    if title:
        command = f"python benchmarks/{script} " + shlex.join(sys.argv[1:])
        body = f"{intro}\n\n" + "\n".join(table) + f"\n\n    {command}\n\n" + machine_line()
        update_section(title, body)


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_watched(cmd: list[str], samples: list | None = None) -> tuple[str, int]:
    """Run ``cmd``, polling the RSS of its process tree; return (stdout, peak bytes).

    ``samples``, when given, receives every ``(time.time(), rss bytes)`` polled.
    """
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def poll():
        nonlocal peak
        while not stop.is_set():
            rss = tree_rss(proc.pid)
            peak = max(peak, rss)
            if samples is not None:
                samples.append((time.time(), rss))
            stop.wait(0.25)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with exit code {proc.returncode}")
    return out, peak


def peak_per_stage(samples: list, stage_ends: dict[str, float]) -> dict[str, int]:
    """Peak RSS between consecutive stage ends (the first stage from the start)."""
    out: dict[str, int] = {}
    start = float("-inf")
    for name, end in sorted(stage_ends.items(), key=lambda item: item[1]):
        inside = [rss for t, rss in samples if start < t <= end]
        out[name] = max(inside, default=0)
        start = end
    return out
