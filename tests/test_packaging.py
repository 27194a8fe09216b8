"""A non-editable install works: the wheel carries the demo data and `bovw run` finds it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_ships_the_demo_data_and_runs_from_it(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-w", str(wheels), "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("bovw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    demo = [n for n in names if n.startswith("bovw/_demo/")]
    assert len([n for n in demo if n.endswith(".jpg")]) == 250
    assert wheel.stat().st_size < 3 * 2**20
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel),
         "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    # python -S: no .pth files, so the editable install of this checkout stays out of the
    # way; the libraries bovw needs come from this interpreter's site-packages.
    paths = [str(target), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    run = subprocess.run(
        [sys.executable, "-S", "-m", "bovw.cli", "run", "--sizes", "6,8", "--step", "6",
         "--gmm-components", "8", "--pca-dims", "32", "-q", "--out", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"bovw run: {target / 'bovw' / '_demo'}" in run.stderr
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert not Path(REPO / "bovw" / "_demo").exists()  # the checkout keeps data/ on top
