"""What a new user meets first: the bare command, --jobs, progress in logs, a killed run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import REPO, textured_image, write_image

from bovw.cli import main
from bovw.errors import BadInputError
from bovw.parallel import resolve_jobs
from bovw.progress import LineProgress, plural


def test_bare_bovw_shows_the_help_and_succeeds():
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 0 and "Commands:" in r.output and "run" in r.output


def test_jobs_follow_joblibs_convention():
    cores = os.cpu_count() or 1
    assert resolve_jobs(3) == 3
    assert resolve_jobs(-1) == cores
    with pytest.raises(BadInputError, match="-1 for one per core"):
        resolve_jobs(0)
    with pytest.raises(BadInputError):
        resolve_jobs(-cores - 1)
    r = CliRunner().invoke(main, ["extract", "--jobs", "0"])
    assert r.exit_code == 2 and "--jobs" in r.output


def test_line_progress_prints_a_line_per_tenth():
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="encode", unit="img", file=out)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("encode: 10% (100/1000 img") and lines[-1].startswith("encode: 100%")
    assert plural(1, "file") == "1 file" and plural(2, "image") == "2 images"


def many_images(root, n: int = 120, size: int = 160):
    for k in range(2):
        for i in range(n // 2):
            write_image(root / f"c{k}" / f"{i}.png", textured_image(k, 100 * k + i, size=size))
    return root


def test_progress_in_a_log_is_lines_not_redraws(tmp_path):
    data = many_images(tmp_path / "d", n=60, size=64)
    r = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "extract", str(data), "--cache-dir",
         str(tmp_path / "c"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("extract: ")]
    assert 2 <= len(progress) <= 11 and progress[-1].startswith("extract: 100%")


def test_kill_9_of_a_parallel_run_leaves_no_workers(tmp_path):
    data = many_images(tmp_path / "d", n=200, size=200)
    cmd = [sys.executable, str(REPO / "cli.py"), "extract", str(data), "--jobs", "2",
           "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--step", "2", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2 and any((tmp_path / "c" / "entries").glob("extract/*/*/*")):
            break
        time.sleep(0.2)
    assert proc.poll() is None and len(workers) >= 2, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_images_without_descriptors_are_counted_once(tiny_dataset, tmp_path):
    import warnings

    import numpy as np

    import bovw
    from bovw.config import Config

    for i, shape in enumerate([(1, 1), (3, 3), (1, 500)]):
        write_image(tiny_dataset / "test" / "alpha" / f"tiny{i}.png", np.full(shape, 90, np.uint8))
    config = Config().with_overrides(
        {"data.path": str(tiny_dataset), "sift.sizes": (6, 8), "sift.step": 6,
         "codebook.words": 24, "codebook.samples": 20000, "encoding.encoding": "soft",
         # Kept at their size: the default min_side enlarges the 1 x 1 and 3 x 3 images to
         # 64 px, where they have descriptors (the 1 x 500 strip stays without any).
         "sift.min_side": 0}
    )  # fmt: skip
    for _ in range(2):  # a miss, then a hit: warned both times
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bovw.run(config, cache_dir=tmp_path / "c", progress=False)
        empty = [str(w.message) for w in caught if "no dense SIFT descriptors" in str(w.message)]
        assert len(empty) == 1 and empty[0].startswith("3 images of the test split")


def test_cnn_evaluate_takes_a_compare_run_folder(tiny_dataset, tmp_path):
    pytest.importorskip("torch")
    from conftest import FAST

    out = tmp_path / "run"
    tiny_cnn = ["--cnn-epochs", "1", "--cnn-widths", "8,16", "--cnn-image-size", "32"]
    r = CliRunner().invoke(
        main,
        ["compare", str(tiny_dataset), *FAST, *tiny_cnn, "--out", str(out),
         "--cache-dir", str(tmp_path / "c")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["cnn", "evaluate", str(out), str(tiny_dataset)])
    assert r.exit_code == 0, r.output
    assert "mean class accuracy" in r.output


def test_compare_says_cached_draws_honest_bars_and_writes_markdown(tmp_path):
    from bovw.compare import comparison_markdown, comparison_rows, plot_comparison
    from bovw.data import Dataset

    figures = {
        "BoVW": {"mean_class_accuracy": 0.9, "train_seconds": 0.8, "train_cached": True,
                 "parameters": 344_000, "flops_per_image": 1e6,
                 "inference_images_per_second": 50.0},
        "CNN": {"mean_class_accuracy": 0.8, "train_seconds": 300.0, "parameters": 394_000,
                "flops_per_image": 2e8, "inference_images_per_second": 400.0},
    }  # fmt: skip
    rows = {row[0]: row[1:] for row in comparison_rows(figures)}
    assert rows["training seconds"] == ["0.8 (cached)", "300.0"]
    fig = plot_comparison(figures, tmp_path / "compare.png")
    for ax in fig.axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    md = comparison_markdown(figures, Dataset(classes=["a"], train=[], test=[], root=tmp_path))
    assert "``" not in md and ":mod:" not in md and "`bovw.cnn.summary`" in md
