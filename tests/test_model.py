"""Saved models: exact reproduction of the pipeline, refusal of anything else, `bovw predict`."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, textured_image, write_image

import bovw
from bovw.cli import main
from bovw.config import Config
from bovw.data import BadInputError, read_image
from bovw.model import BoVWModel, load_model, save_model

CLASSES = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 classes, 8 train and 4 test 64x64 images each (the tests' tiny dataset)."""
    root = tmp_path_factory.mktemp("tiny") / "tiny"
    for k, name in enumerate(CLASSES):
        for i in range(8):
            write_image(root / "train" / name / f"{i}.png", textured_image(k, 100 * k + i))
        for i in range(4):
            write_image(root / "test" / name / f"{i}.png", textured_image(k, 1000 + 100 * k + i))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run_dir(data, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    r = CliRunner().invoke(
        main,
        ["run", str(data), *FAST, "--out", str(out), "--cache-dir", str(cache)],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    return out


def small_config(data: Path, **overrides) -> Config:
    base = {
        "data.path": str(data),
        "sift.sizes": (6, 8),
        "sift.step": 6,
        "codebook.words": 24,
        "codebook.samples": 20000,
        "encoding.encoding": "soft",
        "encoding.mirror": False,  # one row per image; the fisher-mirror case sets it
        "codebook.gmm_components": 4,
        "codebook.pca_dims": 16,
        "encoding.pyramid": "1,2",
    }
    return Config().with_overrides({**base, **overrides})


# --------------------------------------------------------------------------- reproduction


def test_predict_cli_reproduces_the_run_accuracy(run_dir, data):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    r = CliRunner().invoke(
        main, ["predict", str(run_dir / "model.npz"), str(data / "test"), "--json", "-q"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == metrics["n_test"] == 12
    correct = [Path(row["path"]).parent.name == row["label"] for row in rows]
    assert sum(correct) / len(rows) == metrics["accuracy"]
    # And image by image, the same labels as the evaluate stage.
    import csv

    with (run_dir / "predictions.csv").open() as f:
        expected = {Path(row["path"]).resolve(): row["predicted"] for row in csv.DictReader(f)}
    assert {Path(row["path"]).resolve(): row["label"] for row in rows} == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"encoding.encoding": "hist"},
        {"encoding.encoding": "hist", "classifier.kernel_map": "chi2"},
        {"encoding.encoding": "soft", "classifier.kernel_map": "hellinger"},
        {"encoding.encoding": "vlad", "codebook.words": 8},
        {"encoding.encoding": "fisher"},
        {"sift.max_side": 48, "sift.color": "opponent", "sift.root": True},
        {"encoding.encoding": "fisher", "encoding.mirror": True},
    ],
    ids=[
        "hist",
        "hist-chi2",
        "soft-hellinger",
        "vlad",
        "fisher",
        "resized-colour-rootsift",
        "fisher-mirror",
    ],
)
def test_loaded_model_reproduces_pipeline_exactly(overrides, data, cache, tmp_path):
    result = bovw.run(small_config(data, **overrides), cache_dir=cache, progress=False)
    save_model(result, tmp_path / "model.npz")
    model = load_model(tmp_path)
    X = result.features["test"]
    estimator = getattr(result.model, "best_estimator_", result.model)
    if result.config.encoding.mirror:
        # The test rows, then the rows of their mirrors; each image scored by both.
        n = len(result.dataset.test)
        assert X.shape[0] == 2 * n
        np.testing.assert_array_equal(
            model.predict_indices(X[:n], X[n:]), result.metrics["predictions"]
        )
        X = X[:n]
    else:
        np.testing.assert_array_equal(model.predict_indices(X), result.metrics["predictions"])
    scores = model.decision_from_vectors(X)
    np.testing.assert_array_equal(scores, estimator.decision_function(X))
    # From the image files: the same vectors as the encode stage, bit for bit.
    paths = [s.path for s in result.dataset.test]
    np.testing.assert_array_equal(model.transform(paths), X)
    names = np.asarray(result.dataset.classes)[result.metrics["predictions"]]
    np.testing.assert_array_equal(model.predict(paths), names)


def test_model_json_records_settings_versions_and_manifest(run_dir):
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["format"] == "bovw-model" and meta["format_version"] == 1
    assert meta["classes"] == CLASSES
    assert {"bovw", "numpy", "scikit-learn", "opencv", "python"} <= set(meta["versions"])
    assert (
        meta["dataset_manifest"]
        == json.loads((run_dir / "metrics.json").read_text())["dataset_manifest"]
    )
    assert meta["config"]["codebook"]["words"] == 24
    assert meta["arrays"]["centers"]["shape"] == [24, 128]


def test_api_arrays_paths_and_top_k(run_dir, data):
    model = load_model(run_dir / "model.json")
    paths = sorted((data / "test").rglob("*.png"))
    images = [read_image(p) for p in paths]
    np.testing.assert_array_equal(model.predict(images), model.predict(paths))
    bgr = [np.dstack([im] * 3) for im in images]  # colour input is converted like read_image
    np.testing.assert_array_equal(model.predict(bgr), model.predict(paths))
    top = model.predict_top_k(paths[:2], k=3)
    assert [len(t) for t in top] == [3, 3]
    assert all(t[0][1] >= t[1][1] >= t[2][1] for t in top)
    assert [t[0][0] for t in top] == list(model.predict(paths[:2]))


def test_two_class_model(tmp_path, cache):
    root = tmp_path / "two"
    for k, name in enumerate(["one", "two"]):
        for i in range(6):
            write_image(root / "train" / name / f"{i}.png", textured_image(k, 50 * k + i))
        for i in range(3):
            write_image(root / "test" / name / f"{i}.png", textured_image(k, 500 + 50 * k + i))
    result = bovw.run(small_config(root), cache_dir=cache, progress=False)
    model = load_model(save_model(result, tmp_path / "m.npz")[0])
    np.testing.assert_array_equal(
        model.predict_indices(result.features["test"]), result.metrics["predictions"]
    )
    assert model.decision_from_vectors(result.features["test"]).shape == (6, 2)


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def model_copy(run_dir, tmp_path) -> Path:
    for name in ("model.npz", "model.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    return tmp_path / "model.npz"


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_refuses_a_pickle_without_running_it(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    model_copy.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(BadInputError, match="not an .npz archive"):
        load_model(model_copy)
    lone = tmp_path / "elsewhere" / "model.pkl"  # no model.json beside it
    lone.parent.mkdir()
    lone.write_bytes(model_copy.read_bytes())
    with pytest.raises(BadInputError, match="not an .npz archive"):
        load_model(lone)
    assert not marker.exists()


def test_refuses_pickled_objects_inside_an_npz(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    arrays = dict(np.load(model_copy))
    arrays["centers"] = np.array([_Exploit(marker)], dtype=object)
    with open(model_copy, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(BadInputError, match="pickled objects"):
        load_model(model_copy)
    assert not marker.exists()


def test_refuses_a_truncated_npz(model_copy):
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="corrupt or truncated"):
        load_model(model_copy)


def test_refuses_a_wrong_format_version(model_copy):
    json_path = model_copy.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    meta["format_version"] = 99
    json_path.write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="format version 99"):
        load_model(model_copy)


def test_refuses_an_npz_with_missing_arrays(model_copy):
    arrays = dict(np.load(model_copy))
    del arrays["coef"], arrays["centers"]
    with open(model_copy, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(BadInputError, match="lacks the arrays centers, coef"):
        load_model(model_copy)


def test_refuses_an_oversize_file(model_copy):
    with pytest.raises(BadInputError, match="over the .* limit"):
        load_model(model_copy, max_bytes=1000)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(format="something-else"), "not a bovw model description"),
        (lambda m: m["config"]["encoding"].update(encoding="sparse"), "encoding"),
        (lambda m: m["config"].update(colour=1), "Unknown setting"),
        (lambda m: m["kernel_map"].update(name="rbf"), "cannot honour"),
        (lambda m: m["encoder"]["params"].update(bogus=3), "cannot honour"),
        (lambda m: m.update(npz_sha256="0" * 64), "does not match"),
    ],
)
def test_refuses_settings_it_cannot_honour(model_copy, edit, match):
    json_path = model_copy.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    edit(meta)
    json_path.write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match=match):
        load_model(model_copy)


def test_refuses_other_files(model_copy, tmp_path):
    model_copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_model(model_copy)
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(BadInputError, match="missing"):
        load_model(model_copy)
    with pytest.raises(BadInputError, match="does not exist"):
        load_model(tmp_path / "nothing.npz")
    evil = tmp_path / "evil" / "model.npz"
    evil.parent.mkdir()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.txt", "x")
    (evil.parent / "model.json").write_text(
        json.dumps({"format": "bovw-model", "format_version": 1})
    )
    with pytest.raises(BadInputError, match="other than arrays"):
        load_model(evil)


def test_cli_refusal_is_one_sentence_and_exit_2(model_copy, data):
    model_copy.write_bytes(b"\x80\x04K\x01.")  # a pickle of 1
    r = CliRunner().invoke(main, ["predict", str(model_copy), str(data / "test")])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "not an .npz archive" in r.output


# --------------------------------------------------------------------------- bovw predict


def test_predict_reports_bad_images_and_predicts_the_rest(run_dir, data, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((data / "test" / "beta").glob("*.png"))[:2]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("not an image")  # not an image extension: not listed
    missing = tmp_path / "missing.jpg"
    r = CliRunner().invoke(
        main, ["predict", str(run_dir), str(folder), str(missing), "--json", "-q"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 4
    errors = {Path(row["path"]).name: row["error"] for row in rows if "error" in row}
    assert set(errors) == {"broken.png", "missing.jpg"}
    assert all(row["label"] == "beta" for row in rows if "error" not in row)

    # Plain output: label and score per line; the errors go to stderr.
    r = CliRunner().invoke(main, ["predict", str(run_dir), str(folder), "-q", "-k", "2"])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[1].startswith("beta ") for line in lines)
    assert "broken.png" in r.stderr


def test_predict_exits_2_when_nothing_is_predicted(run_dir, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(main, ["predict", str(run_dir), str(tmp_path / "bad.jpg"), "-q"])
    assert r.exit_code == 2
    assert "bad.jpg" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["predict", str(run_dir), str(empty), "-q"])
    assert r.exit_code == 2


def test_predict_stream_is_lazy_and_parallel_matches(run_dir, data):
    model = load_model(run_dir)
    paths = sorted((data / "test").rglob("*.png"))

    def gen():
        yield from paths

    one = [p.label for p in model.predict_stream(gen(), batch_size=5)]
    two = [p.label for p in model.predict_stream(paths, jobs=2, batch_size=5)]
    assert one == two == list(model.predict(paths))


def test_from_run_needs_a_trained_model(data, cache):
    result = bovw.run(small_config(data), until="encode", cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match="no trained model"):
        BoVWModel.from_run(result)


# --------------------------------------------------------------------------- scikit-learn Pipeline


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_make_bovw_pipeline_with_memory(data, tmp_path, monkeypatch):
    from bovw.features.dsift import DenseSIFT
    from bovw.model import make_bovw_pipeline

    def load(split):
        paths = sorted((data / split).rglob("*.png"))
        return [read_image(p) for p in paths], [p.parent.name for p in paths]

    X_train, y_train = load("train")
    X_test, y_test = load("test")
    calls = []
    original = DenseSIFT.transform
    monkeypatch.setattr(
        DenseSIFT, "transform", lambda self, X: calls.append(1) or original(self, X)
    )
    config = small_config(data)
    pipe = make_bovw_pipeline(config, memory=tmp_path / "memory").fit(X_train, y_train)
    assert np.mean(pipe.predict(X_test) == np.array(y_test)) > 0.8
    n_first = len(calls)
    # Another classifier setting: the SIFT and encoder steps come from the Pipeline's memory.
    pipe.set_params(classify__param_grid={"svm__alpha": [1e-3]}).fit(X_train, y_train)
    assert len(calls) == n_first
    assert pipe.named_steps["classify"].best_params_ == {"svm__alpha": 1e-3}
