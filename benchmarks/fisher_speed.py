"""Fisher vector encoding time against the vocabulary size, exact and with sparse posteriors.

On real descriptors (dense SIFT at the defaults of a sample of 15-Scene training
images, each encoded with its mirror as a run does), one BLAS thread, side by side
in one run: the exact encoder (every posterior, dense products) and the sparse one
(``posterior_threshold``, posteriors below it dropped), for K = 64, 128 and 256
Gaussians fitted on the same descriptors. Prints milliseconds per encoded image
(thread CPU time, less disturbed by other processes than wall time), the speed-up,
and the smallest cosine between the sparse and the exact vectors.

    python benchmarks/fisher_speed.py [--data ../shared/datasets/scene15] [--images 40] [--record]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine_line, update_section  # noqa: E402

THRESHOLDS = (1e-4, 1e-3)


def encode_ms(encoder, features) -> tuple[float, np.ndarray]:
    """Thread-CPU milliseconds per encoded image (each image and its mirror), and the rows."""
    from bovw.assembly import encode_with_mirrors

    t = time.thread_time()
    X = encode_with_mirrors(encoder, features, True)
    return (time.thread_time() - t) / (2 * len(features)) * 1000, X


def main() -> None:
    from bovw import assembly
    from bovw.config import Config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parents[1] / "shared/datasets/scene15"))
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    paths = sorted(glob.glob(f"{args.data}/train/*/*.jpg"))
    if not paths:
        sys.exit(f"No images under {args.data}/train/; give --data.")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    config = Config().validate()
    features = assembly.features_of(paths, config.sift)
    n_desc = np.mean([f.descriptors.shape[0] for f in features])
    rows = []
    with threadpool_limits(1):
        for K in (64, 128, 256):
            c = config.with_overrides({"codebook.gmm_components": K}).validate()
            vocabulary = assembly.build_vocabulary(c).fit(iter(features))
            exact_ms, exact = encode_ms(assembly.build_encoder(c, vocabulary), features)
            for threshold in THRESHOLDS:
                encoder = assembly.build_encoder(c, vocabulary, posterior_threshold=threshold)
                ms, X = encode_ms(encoder, features)
                cos = np.sum(X * exact, axis=1) / (
                    np.linalg.norm(X, axis=1) * np.linalg.norm(exact, axis=1)
                )
                rows.append((K, threshold, exact_ms, ms, exact_ms / ms, float(cos.min())))
                print(
                    f"K={K:<4} threshold {threshold:g}: exact {exact_ms:6.1f} ms, sparse "
                    f"{ms:6.1f} ms per image ({exact_ms / ms:.2f}x), min cosine {cos.min():.6f}",
                    flush=True,
                )
    table = [
        "| Gaussians | threshold | exact, ms/image | sparse, ms/image | speed-up | min cosine |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {K} | {t:g} | {e:.1f} | {s:.1f} | {r:.2f}x | {c:.6f} |" for K, t, e, s, r, c in rows
    ]
    body = (
        f"{len(features)} 15-Scene training images at the default dense SIFT "
        f"({n_desc:,.0f} descriptors each on average), each encoded with its mirror, PCA 64, "
        "pyramid 1,2x2,3x1, one BLAS thread, thread CPU time per encoded image:\n\n"
        + "\n".join(table)
        + "\n\n`python benchmarks/fisher_speed.py --record`\n\n"
        + machine_line()
    )
    print("\n" + "\n".join(table))
    if args.record:
        update_section("Fisher encoding: sparse posteriors", body)


if __name__ == "__main__":
    main()
