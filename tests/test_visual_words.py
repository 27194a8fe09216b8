"""Visual words: the patches nearest to each word, the grid PNG, `bovw words`."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, textured_image, write_image, write_tiny_dataset

from bovw.assembly import image_features
from bovw.cli import main
from bovw.config import SiftSettings
from bovw.data import BadInputError
from bovw.persistence import load_model
from bovw.visual_words import (
    _crop,
    find_word_patches,
    plot_visual_words,
    run_images,
    spread_over_classes,
)
from bovw.vocabulary import GMMVocabulary, KMeansCodebook

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


# --------------------------------------------------------------------------- which images


def _copy_run(run_dir: Path, dest: Path, names=("model.npz", "model.json", "predictions.csv")):
    dest.mkdir()
    for name in names:
        (dest / name).write_bytes((run_dir / name).read_bytes())
    return dest


class _Walks(list):
    """The folders os.walk was asked for; walking outside ``allowed`` stops the test at once."""

    allowed: tuple[Path, ...] = ()


@pytest.fixture
def walks(monkeypatch) -> _Walks:
    calls = _Walks()
    real = os.walk

    def spy(top, *args, **kwargs):
        where = Path(top).resolve()
        calls.append(where)
        if not any(root in [where, *where.parents] for root in calls.allowed):
            raise AssertionError(f"asked to walk {where}")
        return real(top, *args, **kwargs)

    monkeypatch.setattr(os, "walk", spy)
    return calls


def test_words_ignores_the_data_path_written_in_the_model(run_dir, tmp_path, walks):
    run = _copy_run(run_dir, tmp_path / "run")
    meta = json.loads((run / "model.json").read_text())
    meta["config"]["data"]["path"] = "/"  # a model from elsewhere
    (run / "model.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(main, ["words", str(run), "--words", "3", "--images", "6", "-q"])
    assert r.exit_code == 0, r.output
    assert walks == [] and (run / "visual_words.png").is_file()
    assert "from 6 images" in r.output


def test_words_with_data_walks_only_that_folder(run_dir, tmp_path, walks):
    run = _copy_run(run_dir, tmp_path / "run")
    data = write_tiny_dataset(tmp_path / "other")
    walks.allowed = (data.resolve(),)
    r = CliRunner().invoke(main, ["words", str(run), "--data", str(data), "--words", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert walks  # the class folders of --data, and nothing else (the spy checks)


def test_words_without_recorded_images_asks_for_data(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run", names=("model.npz", "model.json"))
    r = CliRunner().invoke(main, ["words", str(run), "-q"])
    assert r.exit_code == 2
    assert "no predictions.csv" in r.output and "--data" in r.output
    (run / "predictions.csv").write_text("path,true,predicted,correct\ngone.png,alpha,alpha,1\n")
    r = CliRunner().invoke(main, ["words", str(run), "-q"])
    assert r.exit_code == 2 and "None of the test images recorded in" in r.output


def test_words_missing_data_names_the_data_folder(run_dir, tmp_path):
    gone = tmp_path / "gone"
    r = CliRunner().invoke(main, ["words", str(run_dir), "--data", str(gone)])
    assert r.exit_code == 2
    assert f"The --data folder {gone} does not exist" in r.output and "run's" not in r.output


def test_run_images_reads_the_predictions_file(tmp_path):
    (tmp_path / "predictions.csv").write_text(
        "path,true,predicted,correct\na/1.png,a,a,1\nb/1.png,b,a,0\na/2.png,a,a,1\n"
    )
    assert run_images(tmp_path) == {
        "a": [Path("a/1.png"), Path("a/2.png")],
        "b": [Path("b/1.png")],
    }
    (tmp_path / "predictions.csv").write_text("file,label\nx.png,a\n")
    with pytest.raises(BadInputError, match="does not start with the columns path,true"):
        run_images(tmp_path)


def test_spread_over_classes_takes_turns_and_passes_over_unusable_paths():
    by_class = [[Path(f"a{i}") for i in range(5)], [Path("b0")], [Path(f"c{i}") for i in range(3)]]
    picked = spread_over_classes(by_class, 5, usable=lambda p: p.name not in ("a0", "c1"))
    names = [p.name for p in picked]
    assert len(names) == 5 and "a0" not in names and "c1" not in names
    # One of each class first, then the classes that still have images.
    assert [n[0] for n in names] == ["a", "b", "c", "a", "c"]
    assert spread_over_classes(by_class, 100, usable=lambda p: True) != []
    assert len(spread_over_classes(by_class, 100, usable=lambda p: True)) == 9


def test_find_word_patches_can_skip_unreadable_images(tmp_path):
    paths = [write_image(tmp_path / f"{k}.png", im) for k, im in enumerate(images(3))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    codebook = KMeansCodebook(n_words=6, n_samples=3000).fit(
        [image_features(im, SIFT) for im in images(3)]
    )
    with pytest.raises(BadInputError, match="broken.png"):
        find_word_patches(codebook, [*paths, broken], sift=SIFT, n_words=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wp = find_word_patches(
            codebook, [paths[0], broken, *paths[1:]], sift=SIFT, n_words=2, skip_bad=True
        )
    assert any("broken.png" in str(w.message) for w in caught)
    names = {Path(src[0]).name for row in wp.sources for src in row}
    assert "broken.png" not in names and names <= {p.name for p in paths}
