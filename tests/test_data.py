from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO, REPO, textured_image, write_image

from bovw.data import BadInputError, load_dataset
from bovw.images import decode_image, read_image


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


# --------------------------------------------------------------------------- hostile images


def _webp_vp8x(width: int, height: int) -> bytes:
    """A WebP extended-format header whose canvas is ``width x height``, and nothing else."""
    body = b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + len(body).to_bytes(4, "little") + body
    return b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk


def _webp_bitstream(size: int, lossless: bool) -> bytes:
    """A real 16 x 16 WebP whose bitstream header is rewritten to claim ``size x size``."""
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101 if lossless else 80])
    data = bytearray(buf.tobytes())
    if lossless:  # VP8L: 14-bit width - 1 and height - 1 after the 0x2f signature
        assert data[12:16] == b"VP8L" and data[20] == 0x2F
        bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
        data[21:25] = (bits | (size - 1) | ((size - 1) << 14)).to_bytes(4, "little")
    else:  # VP8: 14-bit width and height after the key frame's start code
        assert data[12:16] == b"VP8 " and data[23:26] == b"\x9d\x01\x2a"
        data[26:28] = size.to_bytes(2, "little")
        data[28:30] = size.to_bytes(2, "little")
    return bytes(data)


def _tiff(width: int, height: int, order: str = "II") -> bytes:
    """A TIFF header with one IFD naming ``width x height`` (LONG entries), and no pixels."""
    end = "little" if order == "II" else "big"

    def entry(tag: int, value: int) -> bytes:
        return (
            tag.to_bytes(2, end)
            + (4).to_bytes(2, end)
            + (1).to_bytes(4, end)
            + value.to_bytes(4, end)
        )

    magic = b"II*\0" if order == "II" else b"MM\0*"
    ifd = (2).to_bytes(2, end) + entry(256, width) + entry(257, height) + bytes(4)
    return magic + (8).to_bytes(4, end) + ifd


BOMBS = {
    "webp-vp8x": _webp_vp8x(12_000, 12_000),
    "webp-vp8": _webp_bitstream(12_000, lossless=False),
    "webp-vp8l": _webp_bitstream(12_000, lossless=True),
    "tiff-le": _tiff(12_000, 12_000),
    "tiff-be": _tiff(12_000, 12_000, "MM"),
    "pgm": b"P5\n# a comment\n12000 12000\n255\n" + bytes(64),
    "pfm": b"PF\n12000 12000\n-1.0\n" + bytes(64),
    "sunras": b"\x59\xa6\x6a\x95" + (12_000).to_bytes(4, "big") * 2 + bytes(20),
    "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12000 +X 12000\n" + bytes(64),
    "j2k": b"\xff\x4f\xff\x51\x00\x29\x00\x00"
    + (12_000).to_bytes(4, "big") * 2
    + bytes(8)
    + bytes(40),
}


@pytest.mark.parametrize("data", list(BOMBS.values()), ids=list(BOMBS))
def test_bombs_of_every_format_are_refused_before_decoding(data, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("cv2.imdecode was called on a decompression bomb")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(BadInputError, match=r"bomb\.img claims 12000 x 12000 pixels"):
        decode_image(data, "bomb.img")


def test_a_bomb_in_a_dataset_is_named_or_skipped(tiny_dataset):
    bomb = tiny_dataset / "train" / "alpha" / "bomb.webp"
    bomb.write_bytes(BOMBS["webp-vp8x"])
    with pytest.raises(BadInputError, match="bomb.webp claims 12000 x 12000"):
        load_dataset(tiny_dataset)
    with pytest.warns(UserWarning, match="bomb.webp claims"):
        ds = load_dataset(tiny_dataset, skip_bad=True)
    assert bomb in ds.skipped and len(ds.train) == 24


def test_opencv_pixel_limit_is_set_before_cv2_is_imported():
    # OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, at import: only a fresh process shows
    # whether importing bovw sets it in time. The PGM header claims 8001 x 8001 pixels,
    # just over MAX_PIXELS; with the limit in force OpenCV refuses it before allocating.
    code = (
        "import bovw, cv2, numpy as np\n"
        "data = np.frombuffer(b'P5\\n8001 8001\\n255\\n' + bytes(100), np.uint8)\n"
        "try:\n"
        "    cv2.imdecode(data, cv2.IMREAD_UNCHANGED)\n"
        "    print('decoded')\n"
        "except cv2.error as exc:\n"
        "    print('refused' if 'CV_IO_MAX_IMAGE_PIXELS' in str(exc) else 'other error')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.stdout.strip() == "refused", out.stderr


def _jpeg(progressive: bool = False, restart: int = 0, color: bool = True) -> bytes:
    gray = textured_image(1, 7, 96)
    image = np.dstack([gray, np.roll(gray, 9, axis=0), 255 - gray]) if color else gray
    params = [
        cv2.IMWRITE_JPEG_PROGRESSIVE,
        int(progressive),
        cv2.IMWRITE_JPEG_RST_INTERVAL,
        restart,
    ]
    ok, buf = cv2.imencode(".jpg", image, params)
    return buf.tobytes()


JPEG_KINDS = {
    "baseline": {},
    "gray": {"color": False},
    "progressive": {"progressive": True},
    "restarts": {"restart": 1},
    "progressive-restarts": {"progressive": True, "restart": 2},
}


@pytest.mark.parametrize("kind", list(JPEG_KINDS.values()), ids=list(JPEG_KINDS))
def test_truncated_jpeg_with_an_end_marker_is_refused(kind, tmp_path):
    full = _jpeg(**kind)
    # Cuts early, in the middle and just before the end of the image data; each followed
    # by the end-of-image marker, so the file looks whole from its last two bytes.
    for fraction in (0.3, 0.6, 0.97):
        cut = tmp_path / f"cut {fraction}.jpg"
        cut.write_bytes(full[: int(len(full) * fraction)] + b"\xff\xd9")
        with pytest.raises(BadInputError, match=f"cut {fraction}.jpg is a truncated"):
            read_image(cut)
    # Complete files stay accepted, also with bytes after the end marker (camera trailers).
    for name, data in (("whole.jpg", full), ("trailer.jpg", full + b"maker notes\xff\xd8\0")):
        (tmp_path / name).write_bytes(data)
        assert read_image(tmp_path / name).shape == (96, 96)


def test_truncated_jpeg_with_an_end_marker_in_a_dataset(tiny_dataset):
    bad = tiny_dataset / "train" / "alpha" / "cut.jpg"
    full = _jpeg()
    bad.write_bytes(full[: len(full) // 2] + b"\xff\xd9")
    with pytest.raises(BadInputError, match="cut.jpg is a truncated"):
        load_dataset(tiny_dataset)
    with pytest.warns(UserWarning, match="cut.jpg is a truncated"):
        ds = load_dataset(tiny_dataset, skip_bad=True)
    assert bad in ds.skipped and len(ds.train) == 24


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int16])
def test_one_rule_for_sample_types_in_datasets_and_reads(tiny_dataset, dtype):
    odd = tiny_dataset / "train" / "alpha" / "odd.tiff"
    write_image(odd, (textured_image(0, 3) / 255).astype(dtype))
    # load_dataset (bovw run) and read_image (extraction, bovw predict) give one answer.
    with pytest.raises(BadInputError, match=f"odd.tiff has {np.dtype(dtype).name} samples"):
        load_dataset(tiny_dataset)
    with pytest.raises(BadInputError, match=f"odd.tiff has {np.dtype(dtype).name} samples"):
        read_image(odd)


def test_max_side_shrinks_right_after_decoding(tmp_path):
    from bovw.images import fit_max_side

    deep = np.random.default_rng(1).integers(0, 65535, (300, 120, 4), dtype=np.uint16)
    path = write_image(tmp_path / "deep.png", deep)
    small = read_image(path, max_side=100)
    assert small.shape == (100, 40)
    assert read_image(path, max_side=300).shape == (300, 120)
    assert fit_max_side(np.zeros((7, 3000), np.uint8), 1024).shape == (2, 1024)


def test_folder_links_in_a_class_folder_are_not_followed(flat_dataset):
    (flat_dataset / "one" / "loop").symlink_to("..")
    with pytest.warns(UserWarning, match="Did not follow 1 link to a folder"):
        ds = load_dataset(flat_dataset)
    labels = np.concatenate([ds.labels("train"), ds.labels("test")])
    assert np.bincount(labels).tolist() == [10, 10]


@pytest.mark.filterwarnings("ignore:.*both train and test")
def test_same_content_under_two_labels_warns(flat_dataset):
    (flat_dataset / "two" / "copy.jpg").symlink_to(flat_dataset / "one" / "img 0.jpg")
    with pytest.warns(UserWarning, match="1 image appears under more than one class"):
        load_dataset(flat_dataset)
