"""Fisher vector encoding time against the vocabulary size: exact, sparse, mirror-symmetric.

On real descriptors (dense SIFT at the defaults of a sample of 15-Scene training
images, each encoded with its mirror as a run does), one BLAS thread, side by side
in one run: the exact encoder (every posterior, dense products) and the sparse one
(``posterior_threshold``, posteriors below it dropped), for K = 64, 128 and 256
Gaussians fitted on the same descriptors. Prints milliseconds per encoded image
(thread CPU time, less disturbed by other processes than wall time), the speed-up,
and the smallest cosine between the sparse and the exact vectors.

Then, for the same K, a mirror-symmetric vocabulary (``codebook.mirror_symmetric``)
fitted on the same descriptors: each mirror's vector is a signed permutation of its
image's instead of an encoding. Prints its milliseconds per image (image and mirror,
as above), the speed-up over the exact encoder with the ordinary vocabulary, and the
smallest cosine between the permuted mirror vectors and the mirrored features encoded
with the symmetric vocabulary.

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
    from bovw.features import mirror_features

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parents[1] / "shared/datasets/scene15"))
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    paths = sorted(glob.glob(f"{args.data}/train/*/*.jpg"))
    if not paths:
        sys.exit(f"No images under {args.data}/train/; give --data.")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    # The exact and sparse encoders with an ordinary vocabulary: each mirror encoded.
    config = Config().with_overrides({"codebook.mirror_symmetric": False}).validate()
    features = assembly.features_of(paths, config.sift)
    n_desc = np.mean([f.descriptors.shape[0] for f in features])
    rows, mirror_rows = [], []
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
            symmetric = assembly.build_vocabulary(
                c.with_overrides({"codebook.mirror_symmetric": True})
            ).fit(iter(features))
            encoder = assembly.build_encoder(c, symmetric)
            ms, X = encode_ms(encoder, features)
            own = X[: len(features)]
            t = time.thread_time()
            assembly.encode_mirrors(encoder, features, own)
            gather_ms = (time.thread_time() - t) / len(features) * 1000
            index, signs = encoder.mirror_permutation()
            t = time.thread_time()
            _ = own[:, index] * signs  # the same permutation, element by element
            element_ms = (time.thread_time() - t) / len(features) * 1000
            encoded = encoder.transform([mirror_features(f) for f in features])
            n = len(features)
            cos = np.sum(X[n:] * encoded, axis=1) / (
                np.linalg.norm(X[n:], axis=1) * np.linalg.norm(encoded, axis=1)
            )
            mirror_rows.append(
                (K, exact_ms, ms, exact_ms / ms, gather_ms, element_ms, float(cos.min()))
            )
            print(
                f"K={K:<4} mirror-symmetric: {ms:6.1f} ms per image ({exact_ms / ms:.2f}x; "
                f"a mirror's permutation {gather_ms:.2f} ms), "
                f"min cosine of the permuted mirrors to encoded ones {cos.min():.6f}",
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
    mirror_table = [
        "| Gaussians | exact, ms/image | mirror-symmetric, ms/image | speed-up "
        "| of which a mirror's permutation, ms | the same gathered element by element, ms "
        "| min cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    mirror_table += [
        f"| {K} | {e:.1f} | {m:.1f} | {r:.2f}x | {g:.3f} | {el:.3f} | {c:.6f} |"
        for K, e, m, r, g, el, c in mirror_rows
    ]
    mirror_body = (
        f"The same {len(features)} images and settings: the exact encoder with an ordinary "
        "vocabulary (each image and its mirror encoded), and with a mirror-symmetric one "
        "(`--mirror-symmetric`: the mirror's vector is a signed permutation of its image's), "
        "thread CPU time per image; min cosine: between the permuted mirror vectors and the "
        "mirrored features encoded with the same symmetric vocabulary (they differ where a "
        "keypoint lies within a pixel of a vertical pyramid cut; the unit tests check that "
        "they agree elsewhere):\n\n"
        + "\n".join(mirror_table)
        + "\n\n`python benchmarks/fisher_speed.py --record`\n\n"
        + machine_line()
    )
    print("\n" + "\n".join(table) + "\n\n" + "\n".join(mirror_table))
    if args.record:
        update_section("Fisher encoding: sparse posteriors", body)
        update_section("Fisher encoding: mirror-symmetric vocabulary", mirror_body)


if __name__ == "__main__":
    main()
