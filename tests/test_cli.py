"""End-to-end: the command line on small datasets, cache behaviour, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import FAST, REPO, textured_image, write_image

from bovw.cli import main

# Small settings so that the whole pipeline takes seconds.


def invoke(*args, cache):
    return CliRunner().invoke(main, [*args, "--cache-dir", str(cache)], catch_exceptions=False)


def stages(out):
    return {
        k: v["cache"] for k, v in json.loads((out / "metrics.json").read_text())["stages"].items()
    }


def test_run_then_rerun_hits_every_stage(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    r1 = invoke("run", str(tiny_dataset), *FAST, "--out", str(tmp_path / "r1"), cache=cache)
    assert r1.exit_code == 0, r1.output
    m1 = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert set(m1["stages"]) == {"extract", "codebook", "encode", "train", "evaluate"}
    assert all(v["cache"] == "miss" for v in m1["stages"].values())
    assert (
        m1["n_train"] == 24 and m1["n_test"] == 12 and m1["classes"] == ["alpha", "beta", "gamma"]
    )
    assert m1["mean_class_accuracy"] > 0.8
    assert (tmp_path / "r1" / "config.toml").exists()

    r2 = invoke("run", str(tiny_dataset), *FAST, "--out", str(tmp_path / "r2"), cache=cache)
    assert r2.exit_code == 0, r2.output
    m2 = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert all(v["cache"] == "hit" for v in m2["stages"].values())
    assert m2["accuracy"] == m1["accuracy"]

    # The resolved config repeats the run exactly.
    r3 = invoke(
        "run",
        "--config",
        str(tmp_path / "r1" / "config.toml"),
        "-q",
        "--out",
        str(tmp_path / "r3"),
        cache=cache,
    )
    assert r3.exit_code == 0, r3.output
    assert all(v == "hit" for v in stages(tmp_path / "r3").values())


def test_changing_later_stages_reuses_earlier_ones(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    invoke("run", str(tiny_dataset), *FAST, "--out", str(tmp_path / "a"), cache=cache)
    invoke(
        "run",
        str(tiny_dataset),
        *FAST,
        "--alphas",
        "1e-4",
        "--out",
        str(tmp_path / "b"),
        cache=cache,
    )
    assert stages(tmp_path / "b") == {
        "extract": "hit",
        "codebook": "hit",
        "encode": "hit",
        "train": "miss",
        "evaluate": "miss",
    }
    fewer_words = [a if a != "24" else "16" for a in FAST]
    invoke("run", str(tiny_dataset), *fewer_words, "--out", str(tmp_path / "c"), cache=cache)
    s = stages(tmp_path / "c")
    assert s["extract"] == "hit" and s["codebook"] == "miss"


def test_stage_by_stage_equals_run(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    for stage in ("extract", "codebook", "encode", "train"):
        r = invoke(stage, str(tiny_dataset), *FAST, "--out", str(tmp_path / stage), cache=cache)
        assert r.exit_code == 0, r.output
        assert list(stages(tmp_path / stage))[-1] == stage
    invoke("evaluate", str(tiny_dataset), *FAST, "--out", str(tmp_path / "ev"), cache=cache)
    s = stages(tmp_path / "ev")
    assert s["train"] == "hit" and s["evaluate"] == "miss"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "does-not-exist", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
        (
            lambda p: (
                [write_image(p / "one" / "c" / f"{i}.png", textured_image(0, i)) for i in range(3)]
                and p / "one"
            ),
            "at least two class",
        ),
    ],
    ids=["missing", "empty", "one-class"],
)
def test_bad_datasets_exit_2(tmp_path, make, match):
    r = CliRunner().invoke(main, ["run", str(make(tmp_path)), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2
    assert match in r.output and "Traceback" not in r.output


def test_corrupt_jpeg_and_bad_settings_exit_2(tiny_dataset, tmp_path):
    (tiny_dataset / "train" / "alpha" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    r = CliRunner().invoke(main, ["run", str(tiny_dataset), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2 and "broken.jpg" in r.output
    r = CliRunner().invoke(main, ["run", str(tiny_dataset), "--words", "0"])
    assert r.exit_code == 2 and "--words" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["run", "--encoding", "nope"])
    assert r.exit_code == 2


def test_cache_info_and_clear(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    invoke("extract", str(tiny_dataset), *FAST, "--out", str(tmp_path / "r"), cache=cache)
    info = CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert info.exit_code == 0 and "extract" in info.output and "250" not in info.output
    assert "36" in info.output  # the 36 images of the tiny dataset: one entry each
    cleared = CliRunner().invoke(main, ["cache", "clear", "--yes", "--cache-dir", str(cache)])
    assert cleared.exit_code == 0
    assert "empty" in CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(cache)]).output


def test_interrupted_extraction_resumes(tmp_path):
    """Ctrl-C during extraction keeps the finished images: the rerun does not redo them."""
    root = tmp_path / "many"
    n_images = 120
    for k in range(2):
        for i in range(n_images // 2):
            write_image(root / f"c{k}" / f"{i}.png", textured_image(k, 100 * k + i, size=160))
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        str(REPO / "cli.py"),
        "extract",
        str(root),
        "--cache-dir",
        str(cache),
        "--sizes",
        "4,6,8,10",
        "--step",
        "2",
        "-q",
        "--out",
        str(tmp_path / "r"),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    entries = lambda: len(list(cache.glob("entries/extract/*/*/*/meta.json")))  # noqa: E731
    # A test run started in the background of a shell (`... &`, nohup) inherits SIGINT
    # ignored, and a Python started with SIGINT ignored never raises KeyboardInterrupt:
    # the child gets the default disposition back, as a terminal's Ctrl-C finds it.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Signal only once some images are cached and the process is still at work: each
        # image takes tens of milliseconds, so ~100 are still to do when the signal lands.
        deadline = time.time() + 120
        while entries() < 5 and proc.poll() is None:
            assert time.time() < deadline, "no image was cached within 120 s"
            time.sleep(0.02)
        assert proc.poll() is None, (
            "extraction ended before the signal could interrupt it; give it more work\n"
            + proc.communicate()[0].decode()
        )
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done_before = entries()
    # Interrupted mid-work: exit code 130 (128 + SIGINT), some images cached, not all.
    assert proc.returncode == 130, out
    assert "resume" in out
    assert 5 <= done_before < n_images, done_before
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["stages"]["extract"]["cache"] == "partial"
    assert f"{done_before} of {n_images} images cached" in r.stderr, r.stderr
    assert entries() == n_images


def test_version_and_usage_say_bovw_from_the_checkout_shim():
    shim = [sys.executable, str(REPO / "cli.py")]
    r = subprocess.run([*shim, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and re.fullmatch(r"bovw, version \S+\n", r.stdout), r.stdout
    r = subprocess.run([*shim, "extract", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("Usage: bovw extract "), r.stdout


def test_cnn_data_options_are_the_settings_and_validated(tmp_path):
    # bovw cnn train splits the data with the same generated options as bovw run.
    r = CliRunner().invoke(main, ["cnn", "train", str(tmp_path / "nowhere"), "--split-seed", "-1"])
    assert r.exit_code == 2 and "Setting data.split_seed (--split-seed) must be" in r.output
    assert "nowhere" not in r.output
