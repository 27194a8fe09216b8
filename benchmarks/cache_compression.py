"""Does compressing cached descriptors pay? Size, write and read time per compressor.

Extracts dense SIFT at the default settings for a sample of 15-Scene images
(every class, evenly), then stores the same features in a fresh cache once per
compressor ("none", "zlib", and "lz4" / "zstd" where installed) and reads them
all back, verified, as the codebook and encode stages do. Reported side by side
in one run: bytes on disk, write and read seconds per image, each against
extraction itself (the work a smaller cache would save when it is pruned).

    python benchmarks/cache_compression.py [--images 300] [--record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _results import machine_line, update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets" / "scene15"


def sample_paths(root: Path, n: int) -> list[Path]:
    classes = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    per_class = max(1, n // len(classes))
    out = []
    for c in classes:
        out += sorted(c.glob("*.jpg"))[:per_class]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"15-Scene not found at {args.data}; pass --data.")

    from bovw.assembly import image_features
    from bovw.cache import CacheStore
    from bovw.cache.store import available_compressors
    from bovw.config import Config
    from bovw.images import read_image

    sift = Config().sift
    paths = sample_paths(Path(args.data), args.images)
    t = time.perf_counter()
    features = [image_features(read_image(str(p), color="gray"), sift) for p in paths]
    extract_s = (time.perf_counter() - t) / len(paths)
    raw = sum(f.descriptors.nbytes + f.frames.nbytes for f in features) / len(paths)
    print(f"{len(paths)} images, extraction {extract_s * 1e3:.1f} ms/image, {raw / 1e6:.2f} MB raw")

    rows = []
    for name in available_compressors():
        with tempfile.TemporaryDirectory(prefix="bovw-compress-") as tmp:
            store = CacheStore(Path(tmp) / "c", compress=name).open()
            t = time.perf_counter()
            for i, f in enumerate(features):
                store.write("extract", 1, f"{i:040d}", f)
            write_s = (time.perf_counter() - t) / len(paths)
            size = sum(e.size for e in store.entries()) / len(paths)
            t = time.perf_counter()
            for i in range(len(features)):
                store.read("extract", 1, f"{i:040d}")
            read_s = (time.perf_counter() - t) / len(paths)
        rows.append((name, size, write_s, read_s))
        print(f"{name}: {size / 1e6:.3f} MB/image, write {write_s * 1e3:.2f} ms, "
              f"read {read_s * 1e3:.2f} ms", flush=True)  # fmt: skip

    base = rows[0][1]
    lines = [
        "| compressor | MB per image | size vs none | write ms | read ms | read vs extraction |",
        "|---|---|---|---|---|---|",
    ]
    for name, size, write_s, read_s in rows:
        lines.append(
            f"| {name} | {size / 1e6:.3f} | {size / base:.2f} | {write_s * 1e3:.2f} | "
            f"{read_s * 1e3:.2f} | {read_s / extract_s:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.record:
        command = "python benchmarks/cache_compression.py " + " ".join(sys.argv[1:])
        update_section(
            "Cache: compression of descriptor entries",
            f"Dense SIFT at the defaults for {len(paths)} 15-Scene training images (every class), "
            f"stored in a fresh cache once per compressor and read back verified "
            f"(SHA-256 of every file). Extraction itself: {extract_s * 1e3:.1f} ms per image; "
            f"raw features {raw / 1e6:.2f} MB per image.\n\n    {command}\n\n{text}\n\n"
            f"{machine_line()}",
        )


if __name__ == "__main__":
    main()
