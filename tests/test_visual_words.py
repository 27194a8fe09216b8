"""Visual words: the patches nearest to each word, the grid PNG, `bovw words`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, textured_image, write_tiny_dataset

from bovw.cli import main
from bovw.codebook import GMMVocabulary, KMeansCodebook
from bovw.config import SiftSettings
from bovw.model import image_features, load_model
from bovw.visual_words import _crop, find_word_patches, plot_visual_words

SIFT = SiftSettings(sizes=(6, 8), step=6)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")
    out = tmp_path_factory.mktemp("run") / "r"
    args = [
        "run",
        str(root),
        *FAST,
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path_factory.mktemp("c")),
    ]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def images(n=6):
    return [textured_image(k % 3, 7 * k) for k in range(n)]


def test_crop_is_the_descriptor_support():
    gray = np.arange(60 * 50, dtype=np.uint32).reshape(60, 50).astype(np.uint8)
    # size 4: the descriptor covers 4 bins of 4 px, i.e. [x - 8, x + 8) x [y - 8, y + 8).
    np.testing.assert_array_equal(_crop(gray, 20, 30, 4, 16), gray[22:38, 12:28])
    # Near the border the image is replicated, and the patch keeps its size.
    assert _crop(gray, 0, 0, 4, 16).shape == (16, 16)


def test_patches_are_the_nearest_descriptors():
    imgs = images()
    feats = [image_features(im, SIFT) for im in imgs]
    codebook = KMeansCodebook(n_words=12, n_samples=5000).fit(feats)
    wp = find_word_patches(codebook, imgs, sift=SIFT, n_words=5, n_patches=4, max_per_image=99)
    assert wp.patches.shape == (5, 4, 48, 48) and wp.patches.dtype == np.uint8
    assert len(set(wp.words.tolist())) == 5
    # Brute force (float64; the codebook computes distances in float32, hence rtol): every non-zero descriptor's nearest word and squared distance.
    desc = np.concatenate([f.descriptors for f in feats]).astype(np.float64)
    desc = desc[np.any(desc != 0, axis=1)]
    d2 = ((desc[:, None, :] - codebook.centers_[None].astype(np.float64)) ** 2).sum(-1)
    nearest, best = d2.argmin(1), d2.min(1)
    for row, w in enumerate(wp.words):
        mine = np.sort(best[nearest == w])[:4]
        assert wp.counts[row] == np.sum(nearest == w)
        np.testing.assert_allclose(wp.scores[row, : wp.n_found[row]], mine, rtol=1e-3)
        assert np.all(np.diff(wp.scores[row, : wp.n_found[row]]) >= 0)  # nearest first
    # Rows are ordered from the most to the least frequent word.
    assert np.all(np.diff(wp.counts) <= 0)


def test_chosen_words_gmm_and_padding():
    imgs = images(3)
    feats = [image_features(im, SIFT) for im in imgs]
    gmm = GMMVocabulary(n_components=3, n_pca=8, n_samples=3000).fit(feats)
    wp = find_word_patches(gmm, imgs, sift=SIFT, words=[0, 2], n_patches=5, max_per_image=1)
    assert wp.words.tolist() == [0, 2]
    assert np.all(wp.n_found <= 3)  # at most one patch per image and word
    assert np.all(wp.patches[:, 3:] == 255) and np.all(np.isnan(wp.scores[:, 3:]))
    with pytest.raises(ValueError, match="between 0 and 2"):
        find_word_patches(gmm, imgs, sift=SIFT, words=[5])


def test_model_and_grid_png(run_dir, tmp_path):
    model = load_model(run_dir)
    paths = sorted((Path(model.config.data.path) / "train").rglob("*.png"))[::4]
    wp = find_word_patches(model, paths, n_words=6, n_patches=5)
    assert all(Path(src[0]).exists() for row in wp.sources for src in row)
    fig = plot_visual_words(wp, tmp_path / "grid.png")
    image = cv2.imread(str(tmp_path / "grid.png"))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 400
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0].startswith(f"word {wp.words[0]}")


def test_words_command(run_dir, tmp_path):
    r = CliRunner().invoke(
        main, ["words", str(run_dir), "--words", "5", "--patches", "4", "--images", "9", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert (run_dir / "visual_words.png").is_file()
    out = tmp_path / "w.png"
    r = CliRunner().invoke(main, ["words", str(run_dir / "model.npz"), "--out", str(out), "-q"])
    assert r.exit_code == 0 and out.is_file()
    r = CliRunner().invoke(main, ["words", str(run_dir), "--words", "0"])
    assert r.exit_code == 2 and "--words" in r.output
    r = CliRunner().invoke(main, ["words", str(run_dir), "--data", str(tmp_path / "gone")])
    assert r.exit_code == 2 and "--data" in r.output
    r = CliRunner().invoke(main, ["words", str(tmp_path)])
    assert r.exit_code == 2 and "does not exist" in r.output
