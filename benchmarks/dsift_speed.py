"""Dense SIFT speed: bovw against VLFeat (through cyvlfeat) and OpenCV, side by side.

Single-threaded, on images of 15-Scene resized to a longest side of 256 pixels, in two
settings (issue 3):

- S1, single scale: bin size 4, step 8;
- S2, PHOW: bin sizes 4, 6, 8, 10, step 3.

Every method computes the same keypoints:

- ``bovw``: :func:`bovw.features.dsift.dense_sift` (``fast=True``, uint8 descriptors);
- ``vlfeat``: VLFeat's C dense SIFT through ``cyvlfeat.sift.dsift`` with ``vl_phow``'s
  recipe (each size smoothed with a Gaussian of sigma ``size / magnif`` using OpenCV,
  bounds offset as in ``vl_phow``, window size 1.5, ``fast``, low-contrast descriptors
  set to zero); skipped when cyvlfeat is not installed (see benchmarks/README.md);
- ``opencv``: ``cv2.SIFT_create().compute`` on bovw's keypoints (same centres, angle 0,
  ``KeyPoint.size = bin / 1.5`` because OpenCV's spatial bin is 1.5 x the keypoint size
  wide, so that its 4 x 4 bins have the bin size).

The methods are interleaved image by image (their order rotating), each setting is
repeated, and the best repeat of each method is reported. Times are per-thread CPU time
(``time.thread_time``), which other processes on a shared machine disturb much less than
wall-clock time; wall-clock times are printed beside them. The table is printed and
written to the "Dense SIFT speed" section of benchmarks/RESULTS.md.

Usage::

    python benchmarks/dsift_speed.py                # 100 images, 3 repeats
    python benchmarks/dsift_speed.py --n 20 --repeats 1 --no-write   # quick look
    python benchmarks/dsift_speed.py --gauss        # also the Gaussian window (fast=False)
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import cpu_name  # noqa: E402

from bovw.features.dsift import dense_sift  # noqa: E402

SETTINGS = {
    "S1": {"sizes": (4,), "step": 8, "label": "S1 single scale (bin 4, step 8)"},
    "S2": {"sizes": (4, 6, 8, 10), "step": 3, "label": "S2 PHOW (sizes 4,6,8,10, step 3)"},
}
TARGETS = {("S1", "vlfeat"): 1.25, ("S2", "vlfeat"): 1.5, ("S2", "opencv"): 10.0}
MAGNIF = 6.0  # vl_phow's (bovw's default is 8): both sides run the same recipe
WINDOW_SIZE = 1.5
CONTRAST_THRESHOLD = 0.005
SECTION = "## Dense SIFT speed"


def limit_threads() -> None:
    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # the environment variables above already hold BLAS to one
        pass


def default_data() -> Path:
    for cand in (
        ROOT.parent / "shared" / "datasets" / "scene15",
        Path("/work/shared/datasets/scene15"),
    ):
        if cand.is_dir():
            return cand
    return ROOT.parent / "shared" / "datasets" / "scene15"


def load_images(root: Path, n: int, longest: int = 256) -> list[np.ndarray]:
    """``n`` images spread evenly over the sorted file list, gray uint8, longest side 256."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise SystemExit(f"no images under {root}; pass --data DIR")
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(n, len(paths))).round().astype(int))
    images = []
    for i in picks:
        img = cv2.imdecode(np.fromfile(paths[i], dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        h, w = img.shape
        s = longest / max(h, w)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        images.append(cv2.resize(img, (round(w * s), round(h * s)), interpolation=interp))
    return images


# ------------------------------------------------------------------------ methods


def run_bovw(img_f32, img_u8, sizes, step, _kps, fast=True):
    return dense_sift(img_f32, sizes=sizes, step=step, fast=fast, magnif=MAGNIF, root=False)


def vl_smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """vl_imsmooth with OpenCV: sampled Gaussian of radius ceil(4 sigma), replicated border."""
    if sigma < 0.01:
        return img
    k = 2 * math.ceil(4 * sigma) + 1
    return cv2.GaussianBlur(img, (k, k), sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def run_vlfeat(img_f32, img_u8, sizes, step, _kps, fast=True, float_descriptors=False):
    """vl_phow's recipe on cyvlfeat.sift.dsift (VLFeat's C code)."""
    from cyvlfeat.sift import dsift

    frames, descrs = [], []
    for s in sizes:
        off = math.floor(1 + 1.5 * (max(sizes) - s)) - 1  # vl_phow's offset, 0-based
        ims = vl_smooth(img_f32, s / MAGNIF)
        h, w = ims.shape
        f, d = dsift(
            ims,
            step=step,
            size=s,
            bounds=[off, off, h - 1, w - 1],
            window_size=WINDOW_SIZE,
            norm=True,
            fast=fast,
            float_descriptors=float_descriptors,
        )
        d[f[:, 2] < CONTRAST_THRESHOLD] = 0
        frames.append(f)
        descrs.append(d)
    return np.concatenate(frames), np.concatenate(descrs)


_SIFT = None


def run_opencv(img_f32, img_u8, sizes, step, kps):
    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create()
    return _SIFT.compute(img_u8, kps)


def opencv_keypoints(frames: np.ndarray) -> list:
    """bovw frames as OpenCV keypoints: same centre, angle 0, bin = 1.5 x KeyPoint.size."""
    return [cv2.KeyPoint(float(x), float(y), float(s) / 1.5, 0.0) for x, y, s, _ in frames]


# ---------------------------------------------------------------------- measuring


def measure(images, setting, methods, repeats, fast=True):
    sizes, step = SETTINGS[setting]["sizes"], SETTINGS[setting]["step"]
    prepared = []
    for img in images:
        f32 = img.astype(np.float32) / np.float32(255)
        frames, _ = dense_sift(f32, sizes=sizes, step=step, root=False)
        kps = opencv_keypoints(frames) if "opencv" in methods else None
        prepared.append((f32, img, kps, len(frames)))
    n_descr = {m: 0 for m in methods}
    best_cpu = {m: math.inf for m in methods}
    best_wall = {m: math.inf for m in methods}
    for rep in range(repeats):
        cpu = dict.fromkeys(methods, 0.0)
        wall = dict.fromkeys(methods, 0.0)
        for i, (f32, u8, kps, _) in enumerate(prepared):
            k = (i + rep) % len(methods)
            for m in methods[k:] + methods[:k]:  # rotate the order
                fn = METHODS[m]
                t0, c0 = time.perf_counter(), time.thread_time()
                if m == "opencv":
                    out = fn(f32, u8, sizes, step, kps)
                else:
                    out = fn(f32, u8, sizes, step, kps, fast=fast)
                c1, t1 = time.thread_time(), time.perf_counter()
                cpu[m] += c1 - c0
                wall[m] += t1 - t0
                if rep == 0:
                    n_descr[m] += len(out[1])
        for m in methods:
            best_cpu[m] = min(best_cpu[m], cpu[m])
            best_wall[m] = min(best_wall[m], wall[m])
    n = len(prepared)
    rows = []
    for m in methods:
        ms = 1e3 * best_cpu[m] / n
        rows.append(
            {
                "setting": setting if fast else f"{setting} gauss",
                "method": m,
                "ms": ms,
                "wall_ms": 1e3 * best_wall[m] / n,
                "descr": n_descr[m] / n,
                "dps": n_descr[m] / best_cpu[m],
                "ratio": best_cpu[m] / best_cpu["bovw"],
            }
        )
    return rows


def fidelity(images, setting, fast=True, n=10):
    """Mean cosine similarity between bovw's and VLFeat's float descriptors."""
    sizes, step = SETTINGS[setting]["sizes"], SETTINGS[setting]["step"]
    cos = []
    for img in images[:n]:
        f32 = img.astype(np.float32) / np.float32(255)
        _, dv = run_vlfeat(f32, img, sizes, step, None, fast=fast, float_descriptors=True)
        _, db = dense_sift(
            f32,
            sizes=sizes,
            step=step,
            fast=fast,
            magnif=MAGNIF,
            float_descriptors=True,
            root=False,
        )
        db = np.minimum(512 * db, 255)  # cyvlfeat scales its float output the same way
        nv, nb = np.linalg.norm(dv, axis=1), np.linalg.norm(db, axis=1)
        ok = (nv > 0) & (nb > 0)
        cos.append(float(np.mean((dv[ok] * db[ok]).sum(1) / nv[ok] / nb[ok])))
    return float(np.mean(cos))


METHODS = {"bovw": run_bovw, "vlfeat": run_vlfeat, "opencv": run_opencv}


# ------------------------------------------------------------------------ output


def table(rows) -> str:
    lines = [
        "| setting | method | ms / image (CPU) | ms / image (wall) | descriptors / image "
        "| descriptors / s (CPU) | time / bovw time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['ms']:.2f} | {r['wall_ms']:.2f} "
            f"| {r['descr']:.0f} | {r['dps']:,.0f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def target_lines(rows) -> list[str]:
    out = []
    by = {(r["setting"], r["method"]): r for r in rows}
    for (setting, method), need in TARGETS.items():
        r = by.get((setting, method))
        if r is None:
            out.append(f"- {setting}: bovw >= {need}x faster than {method}: not measured")
            continue
        verdict = "met" if r["ratio"] >= need else "NOT met"
        out.append(
            f"- {setting}: bovw >= {need}x faster than {method}: {r['ratio']:.2f}x, {verdict}"
        )
    return out


def machine() -> str:
    cpu = cpu_name()
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    versions.append(f"OpenCV {cv2.__version__}")
    try:
        import cyvlfeat

        versions.append(f"cyvlfeat {getattr(cyvlfeat, '__version__', '?')}")
    except ImportError:
        versions.append("cyvlfeat not installed")
    return f"{cpu}, {os.cpu_count()} logical CPUs; {', '.join(versions)}"


def write_results(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{SECTION}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
        text = text.rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_name(path.name + ".dsift.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: other benchmarks write their own sections


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="15-Scene root")
    ap.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the best is kept")
    ap.add_argument("--settings", default="S1,S2", help="comma-separated: S1,S2")
    ap.add_argument("--no-opencv", action="store_true", help="skip OpenCV's SIFT")
    ap.add_argument(
        "--gauss",
        action="store_true",
        help="also time the Gaussian window (fast=False) of bovw and VLFeat (no target)",
    )
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)

    limit_threads()
    images = load_images(args.data, args.n)
    methods = ["bovw"]
    try:
        import cyvlfeat.sift  # noqa: F401

        methods.append("vlfeat")
        vl_note = "VLFeat through cyvlfeat"
    except ImportError as exc:
        vl_note = f"cyvlfeat not importable ({exc}); VLFeat not measured"
    if not args.no_opencv:
        methods.append("opencv")
    load0 = os.getloadavg()
    print(f"{len(images)} images from {args.data}, longest side 256; methods: {methods}")
    print(vl_note)
    rows, fid = [], {}
    for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
        t = time.perf_counter()
        rows += measure(images, setting, methods, args.repeats)
        print(f"{SETTINGS[setting]['label']}: measured in {time.perf_counter() - t:.0f} s")
        if args.gauss:
            t = time.perf_counter()
            gm = [m for m in methods if m != "opencv"]
            rows += measure(images, setting, gm, args.repeats, fast=False)
            print(f"{SETTINGS[setting]['label']}, Gaussian window: {time.perf_counter() - t:.0f} s")
        if "vlfeat" in methods:
            fid[setting] = fidelity(images, setting)
            if args.gauss:
                fid[f"{setting} gauss"] = fidelity(images, setting, fast=False)
    load1 = os.getloadavg()
    tab = table(rows)
    targets = target_lines(rows)
    print()
    print(tab)
    print()
    print("\n".join(targets))
    for s, c in fid.items():
        print(f"- fidelity {s}: mean cosine bovw vs VLFeat = {c:.5f}")

    cmd = "python benchmarks/dsift_speed.py" + (
        " " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            f"Command: `{cmd}` ({now}).",
            "",
            f"Machine: {machine()}. Single-threaded (OpenCV, BLAS and OpenMP held to one "
            f"thread). Load average {load0[0]:.1f} at the start and {load1[0]:.1f} at the "
            "end (the machine is shared: ratios, measured interleaved, are what count).",
            "",
            f"{len(images)} images of 15-Scene resized to a longest side of 256; "
            f"{SETTINGS['S1']['label']}, {SETTINGS['S2']['label']}; VLFeat with vl_phow's "
            "recipe (OpenCV smoothing, sigma = size / 6, window size 1.5, fast, contrast "
            "threshold 0.005), OpenCV `SIFT.compute` on the same keypoints (bin = 1.5 x "
            f"KeyPoint.size). {vl_note}. Best of {args.repeats} interleaved repeats; "
            "CPU time per thread (wall time beside it). Each scale's smoothing is included "
            "for bovw and VLFeat. Rows without a suffix use the flat window (`fast=True`); "
            "rows marked `gauss` (with `--gauss`) the exact Gaussian window (`fast=False`), "
            "which has no target.",
            "",
            tab,
            "",
            "Targets (issue 3):",
            "",
            *targets,
            *[
                f"- fidelity {s}: mean cosine of bovw's and VLFeat's float descriptors "
                f"{c:.5f} (first 10 images; issue 3 asks for >= 0.999)"
                for s, c in fid.items()
            ],
        ]
    )
    if not args.no_write:
        write_results(args.results, body)
        print(f"\nwrote the '{SECTION[3:]}' section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
