from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO, textured_image, write_image

from bovw.data import BadInputError, decode_image, load_dataset, read_image


def test_demo_dataset_layout():
    ds = load_dataset(DEMO)
    assert ds.classes == ["Coast", "Forest", "Highway", "Kitchen", "Office"]
    assert len(ds.train) == 150 and len(ds.test) == 100
    assert np.bincount(ds.labels("train")).tolist() == [30] * 5
    img = read_image(ds.train[0].path)
    assert img.dtype == np.uint8 and img.ndim == 2 and max(img.shape) <= 200


def test_manifest_hash_ignores_folder_names(tiny_dataset, tmp_path):
    a = load_dataset(tiny_dataset)
    moved = tmp_path / "renamed"
    tiny_dataset.rename(moved)
    b = load_dataset(moved)
    assert a.manifest_hash == b.manifest_hash
    # Changing one image changes the hash of its split only.
    write_image(moved / "test" / "beta" / "0.png", textured_image(2, 99))
    c = load_dataset(moved)
    assert c.manifest_hash != b.manifest_hash
    assert c.split_hash("train") == b.split_hash("train")
    assert c.split_hash("test") != b.split_hash("test")


def test_split_protocol_is_disjoint_and_seeded(flat_dataset):
    a = load_dataset(flat_dataset, train_per_class=6, test_per_class=3, split_seed=1)
    b = load_dataset(flat_dataset, train_per_class=6, test_per_class=3, split_seed=1)
    c = load_dataset(flat_dataset, train_per_class=6, test_per_class=3, split_seed=2)
    assert len(a.train) == 12 and len(a.test) == 6
    assert {s.path for s in a.train}.isdisjoint({s.path for s in a.test})
    assert [s.path for s in a.train] == [s.path for s in b.train]
    assert [s.path for s in a.train] != [s.path for s in c.train]


def test_too_few_images_warns_not_crashes(flat_dataset):
    with pytest.warns(UserWarning, match="has only 10 images"):
        ds = load_dataset(flat_dataset, train_per_class=20)
    assert len(ds.train) == 18 and len(ds.test) == 2


def test_csv_list(tmp_path, flat_dataset):
    lines = ["path,label"] + [
        f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(flat_dataset.rglob("*.jpg"))
    ]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path / "list.csv", train_per_class=5)
    assert ds.classes == ["one", "two"] and len(ds.train) == 10


def test_non_images_are_skipped_with_one_warning(tiny_dataset):
    (tiny_dataset / "train" / "alpha" / "notes.txt").write_text("hello")
    (tiny_dataset / "test" / ".DS_Store").write_bytes(b"\0\1")
    with pytest.warns(UserWarning, match="Skipped 2 files that are not images") as record:
        ds = load_dataset(tiny_dataset)
    assert len([w for w in record if "not images" in str(w.message)]) == 1
    assert len(ds.train) == 24


@pytest.mark.parametrize(
    "content",
    [b"", b"this is text, not a JPEG", "truncated"],
    ids=["zero-byte", "text-named-jpg", "truncated-jpeg"],
)
def test_corrupt_image_is_an_error_naming_the_file(tiny_dataset, content):
    bad = tiny_dataset / "train" / "alpha" / "bad.jpg"
    if content == "truncated":
        ok, buf = cv2.imencode(".jpg", textured_image(0, 5, 128))
        content = buf.tobytes()[: len(buf) // 2]
    bad.write_bytes(content)
    with pytest.raises(BadInputError, match="bad.jpg"):
        load_dataset(tiny_dataset)
    with pytest.warns(UserWarning, match="undecodable"):
        ds = load_dataset(tiny_dataset, skip_bad=True)
    assert bad in ds.skipped and len(ds.train) == 24


def test_missing_empty_and_single_class(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images"):
        load_dataset(tmp_path / "empty")
    for i in range(4):
        write_image(tmp_path / "one" / "cls" / f"{i}.png", textured_image(0, i))
    with pytest.raises(BadInputError, match="at least two class"):
        load_dataset(tmp_path / "one")


def test_class_folder_without_images_is_left_out(flat_dataset):
    (flat_dataset / "empty_class").mkdir()
    with pytest.warns(UserWarning, match="empty_class"):
        ds = load_dataset(flat_dataset)
    assert ds.classes == ["one", "two"]


def test_leakage_warning(tiny_dataset):
    src = tiny_dataset / "train" / "alpha" / "0.png"
    (tiny_dataset / "test" / "alpha" / "copy.png").write_bytes(src.read_bytes())
    with pytest.warns(UserWarning, match="both train and test"):
        load_dataset(tiny_dataset)


def test_image_kinds_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 255, (20, 30, 4), dtype=np.uint8)
    deep = rng.integers(0, 65535, (20, 30), dtype=np.uint16)
    paths = {
        "alpha.png": write_image(tmp_path / "alpha.png", bgra),
        "deep.png": write_image(tmp_path / "deep.png", deep),
        "one.bmp": write_image(tmp_path / "one.bmp", np.full((1, 1, 3), 7, np.uint8)),
        "uni ç 名.png": write_image(tmp_path / "uni ç 名.png", bgra[:, :, :3]),
    }
    for path in paths.values():
        gray = read_image(path)
        bgr = read_image(path, color="bgr")
        assert gray.dtype == np.uint8 and gray.ndim == 2
        assert bgr.shape == gray.shape + (3,)
    assert read_image(paths["deep.png"]).max() > 200  # 16-bit scaled, not clipped


def test_huge_header_is_refused_before_decoding(tmp_path):
    ok, buf = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:20] = (100_000).to_bytes(4, "big")
    data[20:24] = (100_000).to_bytes(4, "big")
    with pytest.raises(BadInputError, match="100000 x 100000"):
        decode_image(bytes(data), "bomb.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    p = write_image(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    p.chmod(0)
    with pytest.raises(BadInputError, match="x.png"):
        read_image(p)


def test_symlink_loop_does_not_hang(tiny_dataset):
    (tiny_dataset / "train" / "alpha" / "loop").symlink_to(tiny_dataset / "train" / "alpha")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(tiny_dataset)
    assert len(ds.train) == 24


def test_paths_are_paths(tiny_dataset):
    ds = load_dataset(str(tiny_dataset))
    assert all(isinstance(s.path, Path) for s in ds.train)
