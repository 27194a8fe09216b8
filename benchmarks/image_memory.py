"""Peak memory of one large image: dense SIFT by image side, and ``bovw run`` with an 8,000 px JPEG.

Each figure is the peak resident memory (``VmHWM``) of a fresh process, so
nothing measured before it counts. Part 1 runs dense SIFT at the default
settings (bin sizes 4, 6, 8, 10, step 4) on a square gray image of each side,
without resizing: the cost that ``sift.max_side`` bounds. Part 2 runs the CLI
(``bovw run``, one process, small codebook) on a tiny dataset of 64 px images
plus one 8,000 x 8,000 JPEG, at the default ``max_side`` (with ``--max-side 0``
it would need 11+ GB, so that case is not run).

    python benchmarks/image_memory.py            # print
    python benchmarks/image_memory.py --record   # and write RESULTS.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
from _results import machine_line, update_section  # noqa: E402

PEAK = "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024)"

SIFT = """
import numpy as np
from bovw.config import SiftSettings
from bovw.assembly import image_features
side = {side}
image = np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)
features = image_features(image, SiftSettings(max_side=0))
print(len(features.descriptors))
"""


def _python(code: str, *args: str) -> list[str]:
    env_code = code + "\n" + PEAK
    out = subprocess.run(
        [sys.executable, "-c", env_code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return out.stdout.split()


def sift_peaks(sides: list[int]) -> list[tuple[int, int, int]]:
    """(side, descriptors, peak MB) of dense SIFT on a ``side`` x ``side`` image."""
    base = int(_python("import bovw.pipeline")[-1])
    rows = []
    for side in sides:
        n, peak = _python(SIFT.format(side=side))
        rows.append((side, int(n), int(peak), int(peak) - base))
    return rows


def run_peak(huge_side: int = 8000) -> int:
    """Peak MB of ``bovw run`` on the tiny dataset plus one ``huge_side`` px JPEG."""
    import numpy as np
    from conftest import write_image, write_tiny_dataset

    with tempfile.TemporaryDirectory(prefix="bovw-image-memory-") as tmp:
        data = write_tiny_dataset(Path(tmp) / "data")
        rows = (np.arange(huge_side) // 89 % 2).astype(np.uint8)
        cols = (np.arange(huge_side) // 97 % 2).astype(np.uint8)
        write_image(data / "train" / "alpha" / "huge.jpg", (rows[:, None] ^ cols) * 160 + 40)
        code = (
            "import runpy, sys\n"
            "sys.argv = ['bovw', 'run', sys.argv[1], '--out', sys.argv[2], '--cache-dir',"
            " sys.argv[3], '--words', '64', '--samples', '50000', '--encoding', 'soft', '-q']\n"
            "try:\n"
            f"    runpy.run_path({str(REPO / 'cli.py')!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    assert not exc.code, exc.code\n"
        )
        out = _python(code, str(data), f"{tmp}/run", f"{tmp}/cache")
        return int(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write RESULTS.md")
    args = parser.parse_args()
    rows = sift_peaks([300, 552, 1024, 2048])
    run = run_peak()
    lines = [
        "Peak resident memory (`VmHWM`) of a fresh process. Dense SIFT at the default settings"
        " (sizes 4,6,8,10, step 4), gray image, no resizing; `bovw run` (one process, 64-word"
        " soft assignment) on the tiny test dataset plus one 8,000 x 8,000 JPEG at the"
        " default `--max-side 1024`.",
        "",
        "    python benchmarks/image_memory.py --record",
        "",
        "| image side px | descriptors | peak MB | above import MB |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {n:,} | {p} | {d} |" for s, n, p, d in rows]
    lines += [
        "",
        f"`bovw run` with one 8,000 x 8,000 JPEG: peak {run} MB.",
        "",
        machine_line(),
    ]
    body = "\n".join(lines)
    print(body)
    if args.record:
        update_section("Memory of one large image", body)


if __name__ == "__main__":
    main()
