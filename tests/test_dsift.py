"""Dense SIFT: the fast path against a slow reference written from the definition,
property tests, and fidelity to VLFeat's C code: always against the reference
descriptors committed in tests/data (made once with VLFeat, see
tests/data/make_vlfeat_reference.py), and live when cyvlfeat is installed."""

from __future__ import annotations

import doctest
import functools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

import bovw.features.dsift as dsift_module
from bovw.features import ImageFeatures
from bovw.features.dsift import DenseSIFT

# The references here (the slow definition, VLFeat's vl_dsift) are plain SIFT, so these
# tests call it plainly unless they ask for RootSIFT (root=True); the library's default,
# root=True as on the command line, is checked in tests/test_defaults.py.
dense_sift = functools.partial(dsift_module.dense_sift, root=False)
extract_features = functools.partial(dsift_module.extract_features, root=False)

SCENE15 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "scene15"
SCENE15_ALT = Path("/work/shared/datasets/scene15")

# ----------------------------------------------------------------------------------
# The slow reference: plain NumPy in float64, loops over keypoints and bins, written
# from the definition of VLFeat's dense SIFT (vl/dsift.c) and vl_phow.m.
# ----------------------------------------------------------------------------------

EPS32 = float(np.finfo(np.float32).eps)


def ref_smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """vl_imsmooth: sampled Gaussian of radius ceil(4 sigma), normalized, border replicated."""
    if sigma < 0.01:
        return img.astype(np.float64)
    r = int(math.ceil(4 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    h, w = img.shape
    out = img.astype(np.float64)
    rows = np.clip(np.arange(h)[:, None] + x[None, :], 0, h - 1)  # (h, 2r+1)
    out = np.einsum("ik,ikj->ij", np.broadcast_to(k, rows.shape), out[rows])
    cols = np.clip(np.arange(w)[:, None] + x[None, :], 0, w - 1)
    out = np.einsum("jk,ijk->ij", np.broadcast_to(k, cols.shape), out[:, cols])
    return out


def ref_orientation_maps(img: np.ndarray) -> np.ndarray:
    """(8, H, W): gradient magnitude split linearly between the two nearest orientations."""
    img = img.astype(np.float64)
    gy, gx = np.gradient(img)  # central differences inside, one-sided on the border
    mag = np.hypot(gx, gy)
    nt = np.mod(np.arctan2(gy, gx), 2 * np.pi) * 8 / (2 * np.pi)
    b = np.floor(nt).astype(int)
    r = nt - b
    maps = np.zeros((8,) + img.shape)
    for t in range(8):
        maps[t] += np.where(b % 8 == t, (1 - r) * mag, 0)
        maps[t] += np.where((b + 1) % 8 == t, r * mag, 0)
    return maps


def ref_dense_sift_scale(img, size, step, off, fast, window_size=1.5):
    """Unnormalized descriptors (N, 128), centres (N, 2) and contrast (N,), keypoint by keypoint."""
    h, w = img.shape
    maps = ref_orientation_maps(img)
    sigma = window_size * size
    offsets = np.arange(-size + 1, size)
    tri = 1 - np.abs(offsets) / size

    def window_mean(i):  # flat window: mean of the Gaussian window over bin i
        delta = size * (i - 1.5)
        return np.mean(np.exp(-0.5 * ((offsets - delta) / sigma) ** 2))

    descrs, centres, contrasts = [], [], []
    for fy in range(off, h - 3 * size - 1 + 1, step):  # VLFeat: framey <= maxY - frameSize + 1
        for fx in range(off, w - 3 * size - 1 + 1, step):
            cx, cy = fx + 1.5 * size, fy + 1.5 * size
            d = np.zeros((4, 4, 8))
            for by in range(4):
                for bx in range(4):
                    ys = fy + by * size + offsets
                    xs = fx + bx * size + offsets
                    wgt = np.outer(tri, tri)
                    if fast:
                        wgt = wgt * window_mean(by) * window_mean(bx)
                    else:
                        gwin = np.exp(
                            -0.5 * ((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2) / sigma**2
                        )
                        wgt = wgt * gwin
                    yc = np.clip(ys, 0, h - 1)  # padding by continuity
                    xc = np.clip(xs, 0, w - 1)
                    for t in range(8):
                        d[by, bx, t] = np.sum(wgt * maps[t][np.ix_(yc, xc)])
            d = d.reshape(-1)  # t fastest, then bx, then by
            descrs.append(d)
            centres.append((cx, cy))
            contrasts.append(d.sum() / (3 * size + 1) ** 2)
    return np.array(descrs).reshape(-1, 128), np.array(centres), np.array(contrasts)


def ref_normalize(d: np.ndarray) -> np.ndarray:
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + EPS32)
    d = np.minimum(d, 0.2)
    return d / (np.linalg.norm(d, axis=1, keepdims=True) + EPS32)


def ref_dense_sift(img, sizes, step, fast, magnif=8.0, window_size=1.5, thr=0.0):
    """vl_phow's recipe on one gray float image: frames (N, 4), float descriptors (N, 128)."""
    frames, descrs = [], []
    for s in sizes:
        off = int(math.floor(1 + 1.5 * (max(sizes) - s))) - 1  # vl_phow, made 0-based
        d, c, con = ref_dense_sift_scale(
            ref_smooth(img, s / magnif), s, step, off, fast, window_size
        )
        if len(d) == 0:
            continue
        d = ref_normalize(d)
        d[con < thr] = 0
        frames.append(np.column_stack([c, np.full(len(c), s), con]))
        descrs.append(d)
    if not frames:
        return np.zeros((0, 4)), np.zeros((0, 128))
    return np.concatenate(frames), np.concatenate(descrs)


# ----------------------------------------------------------------------------------
# Test images
# ----------------------------------------------------------------------------------


def smooth_noise(h, w, seed=0, blur=1.5):
    """A textured gray float image in [0, 1] (blurred noise plus a ramp and an edge)."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), blur)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.6 * (img - img.min()) / (np.ptp(img) + 1e-6) + 0.2 * xx / max(w, 1)
    img[:, w // 2 :] += 0.15
    return img.astype(np.float32)


def scene15_images(n=4):
    root = SCENE15 if SCENE15.is_dir() else SCENE15_ALT
    paths = sorted(root.glob("test/*/*.jpg"))[::97][:n] if root.is_dir() else []
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


# ----------------------------------------------------------------------------------
# Fast path == reference
# ----------------------------------------------------------------------------------

REF_CASES = [
    # (height, width, sizes, step)
    (31, 37, (4,), 3),  # odd sizes, single scale
    (40, 33, (3,), 2),  # odd bin size
    (45, 52, (4, 6, 8), 4),  # multi-scale, all even (aligned centres)
    (43, 47, (3, 4, 5), 5),  # mixed parity (vl_phow's floor on the offset)
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "gauss"])
@pytest.mark.parametrize("h,w,sizes,step", REF_CASES)
def test_matches_reference(h, w, sizes, step, fast):
    img = smooth_noise(h, w, seed=h * w)
    f_ref, d_ref = ref_dense_sift(img, sizes, step, fast)
    frames, descr = dense_sift(
        img, sizes=sizes, step=step, fast=fast, contrast_threshold=0, float_descriptors=True
    )
    assert frames.dtype == np.float32 and descr.dtype == np.float32
    assert frames.shape == f_ref.shape and descr.shape == d_ref.shape
    np.testing.assert_allclose(frames[:, :3], f_ref[:, :3], atol=1e-5)
    np.testing.assert_allclose(frames[:, 3], f_ref[:, 3], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(descr, d_ref, atol=1e-4)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "gauss"])
def test_matches_reference_window_and_magnif(fast):
    img = smooth_noise(36, 41, seed=3)
    f_ref, d_ref = ref_dense_sift(img, (4, 5), 3, fast, magnif=3.0, window_size=2.0)
    frames, descr = dense_sift(
        img,
        sizes=(4, 5),
        step=3,
        fast=fast,
        magnif=3.0,
        window_size=2.0,
        contrast_threshold=0,
        float_descriptors=True,
    )
    np.testing.assert_allclose(frames[:, :3], f_ref[:, :3], atol=1e-5)
    np.testing.assert_allclose(descr, d_ref, atol=1e-4)


def test_matches_reference_on_real_image():
    images = scene15_images(1)
    if not images:
        pytest.skip("15-Scene dataset not available")
    img = images[0][:60, :70]
    f_ref, d_ref = ref_dense_sift(img.astype(np.float64) / 255, (4, 6), 5, True, thr=0.005)
    frames, descr = dense_sift(img, sizes=(4, 6), step=5, float_descriptors=True)
    assert frames.shape == f_ref.shape
    clear = np.abs(f_ref[:, 3] - 0.005) > 1e-5  # away from the threshold itself
    np.testing.assert_allclose(descr[clear], d_ref[clear], atol=1e-4)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "gauss"])
def test_one_pixel_border(fast):
    """A bright 1-pixel frame around the image: borders handled as VLFeat does."""
    img = np.full((29, 30), 0.3, np.float32)
    img[0, :] = img[-1, :] = img[:, 0] = img[:, -1] = 1.0
    img[10:18, 12:20] = 0.6
    f_ref, d_ref = ref_dense_sift(img, (4,), 2, fast)
    frames, descr = dense_sift(
        img, sizes=4, step=2, fast=fast, contrast_threshold=0, float_descriptors=True
    )
    np.testing.assert_allclose(frames[:, :2], f_ref[:, :2])
    np.testing.assert_allclose(descr, d_ref, atol=1e-4)


@pytest.mark.parametrize("size", [3, 4])
def test_image_exactly_one_patch(size):
    n = 3 * size + 1
    img = smooth_noise(n, n, seed=size)
    f_ref, d_ref = ref_dense_sift(img, (size,), 1, True)
    frames, descr = dense_sift(
        img, sizes=size, step=1, contrast_threshold=0, float_descriptors=True
    )
    assert frames.shape == (1, 4)
    np.testing.assert_allclose(frames[0, :3], [1.5 * size, 1.5 * size, size])
    np.testing.assert_allclose(descr, d_ref, atol=1e-4)


# ----------------------------------------------------------------------------------
# Conventions and properties
# ----------------------------------------------------------------------------------


def test_frame_grid_ordering_and_phow_alignment():
    img = smooth_noise(60, 70)
    sizes, step = (4, 6, 8, 10), 3
    frames, descr = dense_sift(img, sizes=sizes, step=step)
    start = 0
    for s in sizes:
        off = math.floor(1.5 * (max(sizes) - s))
        nx = (70 - 1 - off - 3 * s) // step + 1
        ny = (60 - 1 - off - 3 * s) // step + 1
        block = frames[start : start + nx * ny]
        assert np.all(block[:, 2] == s)
        xs = off + 1.5 * s + step * np.arange(nx)
        ys = off + 1.5 * s + step * np.arange(ny)
        np.testing.assert_allclose(block[:, 0], np.tile(xs, ny))  # row-major: x fastest
        np.testing.assert_allclose(block[:, 1], np.repeat(ys, nx))
        # all even sizes: the first centre is the same for every size (vl_phow)
        np.testing.assert_allclose(block[0, :2], [1.5 * max(sizes), 1.5 * max(sizes)])
        start += nx * ny
    assert start == len(frames) == len(descr)


def test_descriptor_layout_orientation_and_bins():
    """A vertical step edge (gradient along +x) only fills orientation 0 of the columns
    of spatial bins that touch it; a horizontal one only orientation 2 (+y, downwards)."""
    img = np.zeros((13, 13), np.float32)
    img[:, 7:] = 1.0  # edge between x = 6 and x = 7: gradient points to +x
    _, d = dense_sift(img, sizes=4, step=1, float_descriptors=True, contrast_threshold=0)
    d = d.reshape(4, 4, 8)  # [by, bx, t]
    assert np.all(d[:, :, 1:] < 1e-6) and d[:, :, 0].sum() > 0
    # the edge (x = 6.5, the descriptor centre) lies in bin columns 1 and 2 only
    assert np.all(d[:, 1:3, 0] > 100 * d[:, [0, 3], 0].max())
    img_t = np.ascontiguousarray(img.T)  # edge between y = 6 and y = 7: gradient to +y
    _, d = dense_sift(img_t, sizes=4, step=1, float_descriptors=True, contrast_threshold=0)
    d = d.reshape(4, 4, 8)
    keep = np.zeros(8, bool)
    keep[2] = True
    assert np.all(d[:, :, ~keep] < 1e-6) and d[:, :, 2].sum() > 0
    assert np.all(d[1:3, :, 2] > 100 * d[[0, 3], :, 2].max())  # bin rows 1 and 2 only


@pytest.mark.parametrize("sizes", [(4,), (4, 6, 8)])
@pytest.mark.parametrize("axis", [0, 1])
def test_translation_by_one_step_shifts_grid(sizes, axis):
    step = 4
    img = smooth_noise(64, 72, seed=7)
    f1, d1 = dense_sift(img, sizes=sizes, step=step, float_descriptors=True)
    shifted = img[step:, :] if axis == 0 else img[:, step:]
    f2, d2 = dense_sift(
        np.ascontiguousarray(shifted), sizes=sizes, step=step, float_descriptors=True
    )
    start1 = start2 = 0
    for s in sizes:
        off = math.floor(1.5 * (max(sizes) - s))
        nx1, ny1 = (72 - 1 - off - 3 * s) // step + 1, (64 - 1 - off - 3 * s) // step + 1
        nx2, ny2 = (nx1, ny1 - 1) if axis == 0 else (nx1 - 1, ny1)
        g1 = d1[start1 : start1 + nx1 * ny1].reshape(ny1, nx1, -1)
        g2 = d2[start2 : start2 + nx2 * ny2].reshape(ny2, nx2, -1)
        h1 = f1[start1 : start1 + nx1 * ny1].reshape(ny1, nx1, 4)
        h2 = f2[start2 : start2 + nx2 * ny2].reshape(ny2, nx2, 4)
        # cell (i, j) of the shifted image is cell (i, j + 1) (or (i + 1, j)) of the original;
        # skip the first cells, whose support (bins, smoothing, gradient) meets the new border.
        reach = (s - 1) + math.ceil(4 * s / 6) + 1
        k = next(j for j in range(100) if off + j * step - reach >= 0)
        if axis == 0:
            a, b = g2[k:], g1[k + 1 :]
            np.testing.assert_allclose(h2[:, :, 1] + step, h1[1:, :, 1])
        else:
            a, b = g2[:, k:], g1[:, k + 1 :]
            np.testing.assert_allclose(h2[:, :, 0] + step, h1[:, 1:, 0])
        assert a.size > 0
        np.testing.assert_allclose(a, b, atol=1e-5)
        start1 += nx1 * ny1
        start2 += nx2 * ny2


@pytest.mark.parametrize("value", [0, 128, 255])
@pytest.mark.parametrize("fast", [True, False])
def test_constant_image_gives_zero_descriptors(value, fast):
    img = np.full((50, 45), value, np.uint8)
    frames, descr = dense_sift(img, fast=fast)
    assert len(frames) > 0
    assert descr.dtype == np.uint8 and not descr.any()
    # Smoothing in float32 may leave rounding noise (about 1e-8), never a gradient.
    assert np.all(frames[:, 3] < dsift_module.CONTRAST_FLOOR)
    # Even with no threshold, that noise must not be normalized into descriptors.
    _, fdescr = dense_sift(img, fast=fast, float_descriptors=True, contrast_threshold=0)
    assert not fdescr.any() and np.isfinite(fdescr).all()


def test_empty_image_gives_zero_descriptors():
    frames, descr = dense_sift(np.zeros((40, 40), np.float32), contrast_threshold=0)
    assert len(descr) > 0 and not descr.any()


@pytest.mark.parametrize(
    "shape", [(0, 0), (1, 1), (5, 50), (12, 12), (50, 12), (12, 12, 3), (0, 7, 3), (1, 30)]
)
@pytest.mark.parametrize("color", ["gray", "rgb"])
@pytest.mark.parametrize("float_descriptors", [False, True])
def test_smaller_than_patch(shape, color, float_descriptors):
    img = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    frames, descr = dense_sift(
        img, sizes=4, step=2, color=color, float_descriptors=float_descriptors
    )
    dim = 128 if color == "gray" else 384
    assert frames.shape == (0, 4) and frames.dtype == np.float32
    assert descr.shape == (0, dim)
    assert descr.dtype == (np.float32 if float_descriptors else np.uint8)


def test_small_image_keeps_only_the_sizes_that_fit():
    img = smooth_noise(20, 20)
    frames, descr = dense_sift(img, sizes=(4, 8), step=2)  # 8 * 3 + 1 = 25 > 20
    assert len(frames) > 0 and set(np.unique(frames[:, 2])) == {4.0}


def test_uint8_quantization():
    img = smooth_noise(48, 40, seed=5)
    f8, d8 = dense_sift(img, sizes=(4, 6), step=3)
    ff, df = dense_sift(img, sizes=(4, 6), step=3, float_descriptors=True)
    np.testing.assert_array_equal(f8, ff)
    assert d8.dtype == np.uint8
    np.testing.assert_array_equal(d8, np.minimum(512 * df, 255).astype(np.uint8))
    assert d8.max() > 100  # it is not all zeros


def test_uint8_quantization_saturates_at_255():
    """Four equal entries become 0.5 after clamping and renormalization: 512 * 0.5 > 255."""
    img = np.zeros((4, 4), np.float32)
    img[1, 1] = 1.0  # one bright pixel: four gradients, one per spatial bin (size 1)
    kwargs = dict(sizes=1, step=1, magnif=1000.0, contrast_threshold=0)
    _, d8 = dense_sift(img, **kwargs)
    _, df = dense_sift(img, float_descriptors=True, **kwargs)
    assert np.count_nonzero(df) == 4 and np.allclose(df.max(), 0.5, atol=1e-5)
    assert (d8 == 255).sum() == 4
    np.testing.assert_array_equal(d8, np.minimum(512 * df, 255).astype(np.uint8))


def test_uint8_input_is_scaled_like_im2single():
    img8 = (smooth_noise(40, 40) * 255).astype(np.uint8)
    f1, d1 = dense_sift(img8, sizes=4, float_descriptors=True)
    f2, d2 = dense_sift(img8.astype(np.float32) / 255, sizes=4, float_descriptors=True)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d1, d2, atol=1e-5)


def test_contrast_threshold_zeroes_descriptors_and_keeps_frames():
    img = smooth_noise(50, 50, seed=2)
    img[:, :25] = 0.5  # a flat half: low contrast there
    thr = 0.01
    f0, d0 = dense_sift(img, sizes=(4, 6), step=2, float_descriptors=True, contrast_threshold=0)
    f1, d1 = dense_sift(img, sizes=(4, 6), step=2, float_descriptors=True, contrast_threshold=thr)
    np.testing.assert_allclose(f0, f1, rtol=1e-5)
    low = f1[:, 3] < thr
    assert low.any() and (~low).any()
    assert not d1[low].any()
    np.testing.assert_allclose(d1[~low], d0[~low], atol=1e-6)


def test_rootsift():
    img = smooth_noise(40, 44, seed=9)
    _, d = dense_sift(img, sizes=(4, 6), step=3, float_descriptors=True, contrast_threshold=0)
    _, r = dense_sift(
        img, sizes=(4, 6), step=3, float_descriptors=True, contrast_threshold=0, root=True
    )
    expected = np.sqrt(d / d.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(r, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1, atol=1e-5)
    _, r8 = dense_sift(img, sizes=(4, 6), step=3, contrast_threshold=0, root=True)
    np.testing.assert_array_equal(r8, np.minimum(512 * r, 255).astype(np.uint8))
    _, z = dense_sift(np.zeros((30, 30), np.uint8), root=True, float_descriptors=True)
    assert np.isfinite(z).all() and not z.any()


# ----------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------


def color_image(h=41, w=47):
    chans = [smooth_noise(h, w, seed=s) for s in (11, 12, 13)]
    return (np.stack(chans, axis=2) * 255).astype(np.uint8)  # B, G, R


@pytest.mark.parametrize("color", ["rgb", "hsv", "opponent"])
def test_color_shapes(color):
    img = color_image()
    frames, descr = dense_sift(img, sizes=(4, 6), step=3, color=color)
    gray_frames, gray_descr = dense_sift(img, sizes=(4, 6), step=3)
    assert descr.shape == (len(gray_frames), 384) and descr.dtype == np.uint8
    np.testing.assert_array_equal(frames[:, :3], gray_frames[:, :3])


def test_gray_replicated_for_color_modes():
    img = (smooth_noise(40, 40) * 255).astype(np.uint8)
    _, g = dense_sift(img, sizes=(4, 6), step=3, float_descriptors=True)
    for color in ("rgb", "opponent"):
        _, c = dense_sift(img, sizes=(4, 6), step=3, color=color, float_descriptors=True)
        for k in range(3):
            np.testing.assert_allclose(c[:, 128 * k : 128 * (k + 1)], g, atol=1e-4)
    _, h = dense_sift(img, sizes=(4, 6), step=3, color="hsv", float_descriptors=True)
    assert not h[:, :256].any()  # hue and saturation are 0 for a gray image
    np.testing.assert_allclose(h[:, 256:], g, atol=1e-4)


def test_bgr_to_gray_and_channel_order():
    img = color_image()
    _, d = dense_sift(img, sizes=4, step=3, float_descriptors=True)
    gray = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_BGR2GRAY)
    _, dg = dense_sift(gray, sizes=4, step=3, float_descriptors=True)
    np.testing.assert_allclose(d, dg, atol=1e-6)
    _, rgb = dense_sift(img, sizes=4, step=3, color="rgb", float_descriptors=True)
    for k, ch in enumerate((2, 1, 0)):  # R, G, B blocks from a BGR image
        _, dc = dense_sift(img[:, :, ch].copy(), sizes=4, step=3, float_descriptors=True)
        np.testing.assert_allclose(rgb[:, 128 * k : 128 * (k + 1)], dc, atol=1e-6)


def test_bgra_and_single_channel_inputs():
    img = color_image()
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    for color in ("gray", "rgb"):
        _, a = dense_sift(img, sizes=4, step=4, color=color)
        _, b = dense_sift(bgra, sizes=4, step=4, color=color)
        np.testing.assert_array_equal(a, b)  # alpha is dropped
    gray = img[:, :, 1]
    _, a = dense_sift(gray, sizes=4, step=4)
    _, b = dense_sift(gray[:, :, None], sizes=4, step=4)
    np.testing.assert_array_equal(a, b)


def test_opponent_matches_reference_channels():
    img = color_image(36, 39)
    f = img.astype(np.float64) / 255
    b, g, r = f[:, :, 0], f[:, :, 1], f[:, :, 2]
    mu = 0.3 * r + 0.59 * g + 0.11 * b
    chans = [mu, (r - g) / np.sqrt(2) + 0.01 * mu, (r + g - 2 * b) / np.sqrt(6) + 0.01 * mu]
    fr, _ = ref_dense_sift(chans[0], (4,), 4, True)
    expected = np.concatenate([ref_dense_sift(c, (4,), 4, True)[1] for c in chans], axis=1)
    frames, descr = dense_sift(
        img, sizes=4, step=4, color="opponent", float_descriptors=True, contrast_threshold=0
    )
    np.testing.assert_allclose(frames[:, 3], fr[:, 3], rtol=1e-4)  # contrast of mu
    np.testing.assert_allclose(descr, expected, atol=1e-4)


# ----------------------------------------------------------------------------------
# Fuzz
# ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None)
@given(
    h=st.integers(0, 48),
    w=st.integers(0, 48),
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=3, unique=True),
    step=st.integers(1, 6),
    fast=st.booleans(),
    color=st.sampled_from(["gray", "rgb", "hsv", "opponent"]),
    channels=st.sampled_from([0, 3]),
    float_descriptors=st.booleans(),
    root=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fuzz_shapes_and_finiteness(
    h, w, sizes, step, fast, color, channels, float_descriptors, root, seed
):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, 3)
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    frames, descr = dense_sift(
        img,
        sizes=sizes,
        step=step,
        fast=fast,
        color=color,
        float_descriptors=float_descriptors,
        root=root,
    )
    n = 0
    for s in sizes:
        off = math.floor(1.5 * (max(sizes) - s))
        nx = (w - 1 - off - 3 * s) // step + 1 if w - 1 - off - 3 * s >= 0 else 0
        ny = (h - 1 - off - 3 * s) // step + 1 if h - 1 - off - 3 * s >= 0 else 0
        n += nx * ny
    dim = 128 if color == "gray" else 384
    assert frames.shape == (n, 4) and frames.dtype == np.float32
    assert descr.shape == (n, dim)
    assert descr.dtype == (np.float32 if float_descriptors else np.uint8)
    assert np.isfinite(frames).all()
    if n:
        assert (frames[:, 0] >= 0).all() and (frames[:, 0] <= w - 1).all()
        assert (frames[:, 1] >= 0).all() and (frames[:, 1] <= h - 1).all()
    if float_descriptors:
        assert np.isfinite(descr).all() and (descr >= 0).all()
        norms = np.linalg.norm(descr.reshape(n, dim // 128, 128), axis=2)
        assert np.all((norms < 1e-6) | (np.abs(norms - 1) < 1e-3))


# ----------------------------------------------------------------------------------
# API
# ----------------------------------------------------------------------------------


def test_input_not_modified_and_outputs_independent():
    img = smooth_noise(40, 44)
    before = img.copy()
    f1, d1 = dense_sift(img, sizes=(4, 6), step=3, magnif=1000.0, float_descriptors=True)
    np.testing.assert_array_equal(img, before)
    keep = d1.copy()
    dense_sift(smooth_noise(40, 44, seed=5), sizes=(4, 6), step=3, float_descriptors=True)
    np.testing.assert_array_equal(d1, keep)  # not a view of reused scratch memory


def test_thread_safety():
    from concurrent.futures import ThreadPoolExecutor

    images = [smooth_noise(48 + 4 * i, 52, seed=i) for i in range(6)]
    serial = [dense_sift(im, sizes=(4, 6), step=3) for im in images]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(lambda im: dense_sift(im, sizes=(4, 6), step=3), images))
    for (fa, da), (fb, db) in zip(serial, parallel, strict=True):
        np.testing.assert_allclose(fa, fb, rtol=1e-5)
        assert np.abs(da.astype(int) - db.astype(int)).max() <= 1


def test_large_image_uses_temporary_buffers():
    img = smooth_noise(530, 520)  # above the size kept in the per-thread scratch space
    frames, descr = dense_sift(img, sizes=8, step=24)
    assert len(frames) == ((520 - 1 - 24) // 24 + 1) * ((530 - 1 - 24) // 24 + 1)
    assert descr.any()


def test_transformer_api():
    images = [(smooth_noise(40, 50, seed=i) * 255).astype(np.uint8) for i in range(3)]
    est = DenseSIFT(sizes=(4, 6), step=5, root=False)
    assert est.fit(images) is est
    assert clone(est).get_params() == est.get_params()
    feats = est.transform(images)
    assert len(feats) == 3 and all(isinstance(f, ImageFeatures) for f in feats)
    frames, descr = dense_sift(images[1], sizes=(4, 6), step=5)
    np.testing.assert_array_equal(feats[1].frames, frames)
    np.testing.assert_array_equal(feats[1].descriptors, descr)
    assert (feats[1].width, feats[1].height) == (50, 40)
    assert len(est.fit_transform(images)) == 3
    # The defaults are the function's: a RootSIFT, like dense_sift(image) itself.
    _, rooted = dsift_module.dense_sift(images[1], sizes=(4, 6), step=5)
    np.testing.assert_array_equal(
        DenseSIFT(sizes=(4, 6), step=5).transform(images)[1].descriptors, rooted
    )
    assert not np.array_equal(rooted, descr)


def test_extract_features():
    feats = extract_features(np.zeros((30, 45, 3), np.uint8), sizes=4, color="rgb")
    assert (feats.width, feats.height) == (45, 30)
    assert feats.descriptors.shape[1] == 384 and len(feats) == len(feats.frames)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sizes": ()},
        {"sizes": (0, 4)},
        {"step": 0},
        {"magnif": 0},
        {"window_size": -1},
        {"color": "lab"},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        dense_sift(np.zeros((40, 40), np.uint8), **kwargs)


def test_bad_image_shape():
    with pytest.raises(ValueError):
        dense_sift(np.zeros((40, 40, 2), np.uint8))


def test_docstring_examples():
    result = doctest.testmod(dsift_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------------
# Fidelity to VLFeat: committed reference descriptors (in CI), and live with cyvlfeat
# (see benchmarks/README.md)
# ----------------------------------------------------------------------------------


def vlfeat_phow(img, sizes, step, fast, magnif=6.0, window_size=1.5, thr=0.005):
    """vl_phow's recipe on cyvlfeat.sift.dsift (VLFeat's C dense SIFT).

    Each size: smoothing with sigma = size / magnif (vl_imsmooth, here through the same
    OpenCV Gaussian the product uses), bounds [off, off, H-1, W-1] with vl_phow's offset,
    window size, norm (contrast) and the contrast threshold."""
    from cyvlfeat.sift import dsift

    frames, descrs = [], []
    for s in sizes:
        off = int(math.floor(1 + 1.5 * (max(sizes) - s))) - 1
        ims = dsift_module._smooth(img, s / magnif)
        h, w = ims.shape
        f, d = dsift(
            ims,
            step=step,
            size=s,
            bounds=[off, off, h - 1, w - 1],
            window_size=window_size,
            norm=True,
            fast=fast,
            float_descriptors=True,
        )
        d = np.array(d, dtype=np.float32)  # cyvlfeat returns min(512 d, 255) even as float
        d[f[:, 2] < thr] = 0
        frames.append(np.column_stack([f[:, 1], f[:, 0], np.full(len(f), s), f[:, 2]]))
        descrs.append(d)
    return np.concatenate(frames), np.concatenate(descrs)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "gauss"])
@pytest.mark.parametrize("setting", ["S1", "S2"])
def test_fidelity_to_vlfeat(setting, fast):
    pytest.importorskip("cyvlfeat")
    images = scene15_images(4)
    if not images:  # fall back to synthetic texture
        images = [
            (smooth_noise(120, 160, seed=s, blur=1.0) * 255).astype(np.uint8) for s in range(3)
        ]
    sizes, step = ((4,), 8) if setting == "S1" else ((4, 6, 8, 10), 3)
    cosines = []
    for img8 in images:
        img = img8.astype(np.float32) / 255
        fv, dv = vlfeat_phow(img, sizes, step, fast)
        # vl_phow's magnif of 6 (bovw's default is 8): the same recipe on both sides.
        fb, db = dense_sift(
            img, sizes=sizes, step=step, fast=fast, magnif=6.0, float_descriptors=True
        )
        cosines.append(compare_to_vlfeat(fb, db, fv, dv))
    assert np.mean(cosines) >= 0.999, cosines


def compare_to_vlfeat(fb, db, fv, dv) -> float:
    """Check bovw's frames and descriptors against VLFeat's; the mean cosine of descriptors.

    ``fb``, ``db``: bovw's frames and float (unit-norm) descriptors; ``fv``, ``dv``:
    VLFeat's frames (bovw's column order) and ``min(512 d, 255)`` descriptors.
    """
    assert fb.shape == fv.shape
    np.testing.assert_allclose(fb[:, :3], fv[:, :3])
    np.testing.assert_allclose(fb[:, 3], fv[:, 3], rtol=1e-2, atol=2e-5)  # fast sqrt/atan2
    db = np.minimum(512 * db, 255)
    both = (np.linalg.norm(dv, axis=1) > 0) & (np.linalg.norm(db, axis=1) > 0)
    either = (np.linalg.norm(dv, axis=1) > 0) | (np.linalg.norm(db, axis=1) > 0)
    assert both.sum() >= 0.99 * either.sum()  # the same descriptors pass the threshold
    num = (dv[both] * db[both]).sum(axis=1)
    cos = num / np.linalg.norm(dv[both], axis=1) / np.linalg.norm(db[both], axis=1)
    return float(cos.mean())


VLFEAT_REFERENCE = Path(__file__).resolve().parent / "data" / "vlfeat_dsift_reference.npz"
SETTINGS = {"S1": ((4,), 8), "S2": ((4, 6, 8, 10), 3)}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "gauss"])
@pytest.mark.parametrize("setting", ["S1", "S2"])
def test_fidelity_to_committed_vlfeat_reference(setting, fast):
    """VLFeat 0.9.21's vl_phow recipe (vl_imsmooth + vl_dsift) on three demo crops.

    Runs without VLFeat: the descriptors were computed once by
    tests/data/make_vlfeat_reference.py and committed. Same tolerance as the live test.
    """
    ref = np.load(VLFEAT_REFERENCE, allow_pickle=False)
    sizes, step = SETTINGS[setting]
    key = f"{setting}-{'fast' if fast else 'gauss'}"
    cosines = []
    for i in range(3):
        img = ref[f"image_{i}"].astype(np.float32) / 255
        fv = ref[f"frames_{i}_{key}"]
        dv = ref[f"descriptors_{i}_{key}"].astype(np.float32)
        assert len(fv) > 0 and (dv > 0).any()  # a reference that describes something
        # vl_phow's magnif of 6 (bovw's default is 8): the same recipe on both sides.
        fb, db = dense_sift(
            img, sizes=sizes, step=step, fast=fast, magnif=6.0, float_descriptors=True
        )
        cosines.append(compare_to_vlfeat(fb, db, fv, dv))
    assert np.mean(cosines) >= 0.999, cosines


# -- mirror_features: the features of the mirrored image, from the original's -----------------


@pytest.mark.parametrize("color, root", [("gray", False), ("gray", True), ("opponent", False)])
def test_mirror_features_equal_extraction_on_the_mirrored_image(color, root):
    from bovw.features import mirror_features

    rng = np.random.default_rng(7)
    # Width 87: the grid (first centre 9, step 4, bin 6 -> last centre 77 = 86 - 9)
    # is symmetric, so the mirrored grid is the grid of the mirrored image.
    img = cv2.GaussianBlur(rng.integers(0, 256, (70, 87, 3), dtype=np.uint8), (5, 5), 1.5)
    if color == "gray":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    params = dict(sizes=(6,), step=4, color=color, root=root)
    original = extract_features(img, **params)
    flipped = extract_features(np.ascontiguousarray(img[:, ::-1]), **params)
    mirrored = mirror_features(original)
    # Same keypoints (in another order) ...
    key = lambda f: np.lexsort((f.frames[:, 0], f.frames[:, 1]))  # noqa: E731
    a, b = key(mirrored), key(flipped)
    np.testing.assert_array_equal(mirrored.frames[a, :3], flipped.frames[b, :3])
    # ... and the same descriptors, to uint8 rounding.
    diff = np.abs(mirrored.descriptors[a].astype(int) - flipped.descriptors[b].astype(int))
    assert diff.max() <= 1, diff.max()
    assert (mirrored.width, mirrored.height) == (original.width, original.height)


def test_mirror_features_is_an_involution_and_refuses_non_sift():
    from bovw.features import mirror_features

    rng = np.random.default_rng(0)
    f = ImageFeatures(
        rng.uniform(0, 50, (20, 4)).astype(np.float32),
        rng.integers(0, 256, (20, 256), dtype=np.uint8),
        51,
        40,
    )
    twice = mirror_features(mirror_features(f))
    np.testing.assert_array_equal(twice.descriptors, f.descriptors)
    np.testing.assert_allclose(twice.frames, f.frames, atol=1e-4)
    assert not np.array_equal(mirror_features(f).descriptors, f.descriptors)
    with pytest.raises(ValueError, match="128"):
        mirror_features(ImageFeatures(f.frames, f.descriptors[:, :100], 51, 40))


# -- crop_features: the features of a crop, from the image's ------------------------------------


def test_crop_features_are_those_of_an_extraction_on_the_crop_away_from_its_border():
    from bovw.features import crop_features

    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (80, 96), dtype=np.uint8), (5, 5), 1.5)
    params = dict(sizes=(6,), step=4)
    whole = extract_features(img, **params)
    left, top, width, height = 8, 12, 64, 48
    cropped = crop_features(whole, left, top, width, height)
    assert (cropped.width, cropped.height) == (width, height)
    x, y = cropped.frames[:, 0], cropped.frames[:, 1]
    assert len(cropped) > 0 and x.min() >= 0 and x.max() < width and y.min() >= 0
    # Every keypoint kept lies in the window, every one dropped outside it.
    inside = (
        (whole.frames[:, 0] >= left)
        & (whole.frames[:, 0] < left + width)
        & (whole.frames[:, 1] >= top)
        & (whole.frames[:, 1] < top + height)
    )
    assert len(cropped) == int(inside.sum()) < len(whole)
    # Away from the crop's border the patch is the same pixels: the same descriptor as an
    # extraction on the cropped image at the same place.
    fresh = extract_features(
        np.ascontiguousarray(img[top : top + height, left : left + width]), **params
    )
    at = {
        (float(a), float(b)): d
        for (a, b), d in zip(fresh.frames[:, :2], fresh.descriptors, strict=True)
    }
    margin = 1.5 * 6 * 2 + 1  # the descriptor's 4 bins of 6 px around the centre, and the smoothing
    compared = 0
    for (a, b), d in zip(cropped.frames[:, :2], cropped.descriptors, strict=True):
        if (
            margin <= a < width - margin
            and margin <= b < height - margin
            and (float(a), float(b)) in at
        ):
            assert np.abs(at[(float(a), float(b))].astype(int) - d.astype(int)).max() <= 1
            compared += 1
    assert compared > 10, "no keypoint compared: the test tests nothing"
    for bad in ((0, 0, 0, 10), (-1, 0, 10, 10), (40, 40, 64, 48)):
        with pytest.raises(ValueError, match="crop"):
            crop_features(whole, *bad)
