"""The notebooks run from top to bottom on the demo data (executed with nbclient)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: Seconds a notebook may take (each is written to run in well under a minute).
BUDGET = 180


def _kernel_name() -> str:
    """The kernel to run: ``python3``, which ipykernel provides for this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if "python3" not in specs:  # pragma: no cover - ipykernel's native spec is always there
        pytest.skip("no python3 Jupyter kernel; run: python -m ipykernel install --user")
    return "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path, monkeypatch):
    if "cnn" in path.stem:
        pytest.importorskip("torch")
    # The kernel inherits the environment: a fresh cache, the quick settings (the CNN
    # notebook trains for 2 epochs instead of 30), and a temporary folder of the test's own
    # for the caches and run folders the notebooks make with tempfile (not left in /tmp).
    monkeypatch.setenv("BOVW_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("BOVW_NOTEBOOK_QUICK", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=BUDGET,
        kernel_name=_kernel_name(),
        resources={"metadata": {"path": str(path.parent)}},
    )
    t = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t
    assert seconds < BUDGET, f"{path.name} took {seconds:.0f} s"
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, "the notebook should draw its figures"


def test_notebooks_are_stored_without_outputs():
    """Outputs (timings, temporary paths, images) are not committed; the tests run them."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
