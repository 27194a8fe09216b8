"""Shared fixtures: tiny synthetic datasets written to temporary folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data"
SCENE15 = REPO.parent / "shared" / "datasets" / "scene15"

#: Settings of a run on the tiny datasets that takes well under a second (soft
#: assignment over 16 words, two scales): for tests of how a run goes, not what it learns.
TINY_RUN = {
    "sift.sizes": (6, 8),
    "sift.step": 6,
    "codebook.words": 16,
    "codebook.samples": 5000,
    "encoding.encoding": "soft",
}


def tiny_run_config(path, **overrides):
    """:data:`TINY_RUN` on the dataset at ``path``, with ``{"section.name": value}`` overrides."""
    from bovw.config import Config

    return Config().with_overrides({"data.path": str(path), **TINY_RUN, **overrides})


#: CLI options of a small, fast run on the tiny datasets: two scales, 24 words, soft
#: assignment (the Fisher default fits 64 Gaussians, more than these tests need).
FAST = ["--sizes", "6,8", "--step", "6", "--words", "24", "--samples", "20000"]
FAST += ["--encoding", "soft", "-q"]


def textured_image(kind: int, seed: int, size: int = 64) -> np.ndarray:
    """A gray image whose texture depends on ``kind``: stripes at class-specific angles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.pi * kind / 3 + rng.normal(0, 0.05)
    freq = 0.35 + 0.1 * kind
    img = 127 + 80 * np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 6))
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_tiny_dataset(root: Path) -> Path:
    """A train/test dataset of 3 classes, 8 train and 4 test 64x64 images each, at ``root``."""
    for k, name in enumerate(["alpha", "beta", "gamma"]):
        for i in range(8):
            write_image(root / "train" / name / f"{i}.png", textured_image(k, 100 * k + i))
        for i in range(4):
            write_image(root / "test" / name / f"{i}.png", textured_image(k, 1000 + 100 * k + i))
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """:func:`write_tiny_dataset` in a fresh temporary folder."""
    return write_tiny_dataset(tmp_path / "tiny")


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    """A single-folder dataset of 2 classes with 10 images each."""
    root = tmp_path / "flat"
    for k, name in enumerate(["one", "two"]):
        for i in range(10):
            write_image(root / name / f"img {i}.jpg", textured_image(k, 10 * k + i))
    return root
