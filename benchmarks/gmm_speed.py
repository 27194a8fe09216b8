"""GMM vocabulary fit time: bovw's chunked float32 EM against scikit-learn's GaussianMixture.

On real descriptors (dense SIFT at the defaults of a sample of 15-Scene training
images, RootSIFT, PCA 64 as a run fits them), one BLAS thread, side by side in one
run: ``sklearn.mixture.GaussianMixture(covariance_type="diag",
init_params="k-means++")`` and :func:`bovw.vocabulary.em.fit_diagonal_gmm`,
the same seeding, variance floor and a fixed number of EM iterations (``tol=0``),
for K = 64, 128 and 256 Gaussians. Prints seconds per EM iteration and of the
seeding (thread CPU time), the speed-up, and how far apart the two mixtures end
(largest difference of mean log-likelihood per descriptor, and of means in units of
the descriptor spread).

    python benchmarks/gmm_speed.py [--data ../shared/datasets/scene15] [--images 150]
        [--descriptors 256000] [--iterations 10] [--record]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine_line, update_section  # noqa: E402


def timed(fn, *args, **kwargs):
    """Thread CPU seconds of ``fn(*args, **kwargs)``, and its result."""
    t = time.thread_time()
    out = fn(*args, **kwargs)
    return time.thread_time() - t, out


def main() -> None:
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from bovw import assembly
    from bovw.config import Config
    from bovw.vocabulary.em import fit_diagonal_gmm
    from bovw.vocabulary.sampling import as_sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parents[1] / "shared/datasets/scene15"))
    p.add_argument("--images", type=int, default=150)
    p.add_argument("--descriptors", type=int, default=256_000)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    paths = sorted(glob.glob(f"{args.data}/train/*/*.jpg"))
    if not paths:
        sys.exit(f"No images under {args.data}/train/; give --data.")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    config = Config().validate()
    sample = as_sample(assembly.features_of(paths, config.sift), args.descriptors, 0)
    Z = PCA(n_components=64, random_state=0).fit_transform(sample).astype(np.float32)
    reg = 1e-3 * float(np.mean(np.var(Z, axis=0))) + 1e-10
    spread = float(np.sqrt(np.mean(np.var(Z, axis=0))))
    n_it = args.iterations
    rows = []
    warnings.simplefilter("ignore", ConvergenceWarning)
    with threadpool_limits(1):
        for K in (64, 128, 256):
            kw = dict(covariance_type="diag", reg_covar=reg, init_params="k-means++")
            # Each implementation's seeding (and set-up), timed alone, is taken off its total.
            seed_s, _ = timed(GaussianMixture(K, max_iter=0, random_state=0, **kw).fit, Z)
            our_seed_s, _ = timed(fit_diagonal_gmm, Z, K, reg_covar=reg, max_iter=0)
            sk_s, gm = timed(GaussianMixture(K, max_iter=n_it, tol=0, random_state=0, **kw).fit, Z)
            ours_s, f = timed(
                fit_diagonal_gmm, Z, K, reg_covar=reg, max_iter=n_it, tol=0, random_state=0
            )
            sk_it, ours_it = (sk_s - seed_s) / n_it, (ours_s - our_seed_s) / n_it
            d_ll = abs(float(gm.lower_bound_) - f.lower_bound)
            d_mu = float(np.abs(gm.means_ - f.means).max()) / spread
            rows.append((K, seed_s, sk_it, ours_it, sk_it / ours_it, d_ll, d_mu))
            print(
                f"K={K:<4} seeding {seed_s:5.1f} s; per EM iteration: scikit-learn {sk_it:.3f} s, "
                f"bovw {ours_it:.3f} s ({sk_it / ours_it:.2f}x); |d log-lik| {d_ll:.2e}, "
                f"max |d mean| {d_mu:.2e} spreads",
                flush=True,
            )
    table = [
        "| Gaussians | k-means++ seeding, s | scikit-learn, s / iteration | bovw, s / iteration "
        "| speed-up | mean log-likelihood apart | means apart (spreads) |",
        "|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {K} | {s:.1f} | {a:.3f} | {b:.3f} | {r:.2f}x | {ll:.1e} | {mu:.1e} |"
        for K, s, a, b, r, ll, mu in rows
    ]
    body = (
        f"{Z.shape[0]:,} dense SIFT descriptors (defaults, RootSIFT) of {len(paths)} 15-Scene "
        f"training images, PCA 64, {n_it} EM iterations from the same k-means++ seeds, one BLAS "
        "thread, thread CPU time. The seeding is shared (bovw calls scikit-learn's "
        "`kmeans_plusplus`); EM runs 20-100 iterations in a fit (it stops when the "
        "mean log-likelihood changes by less than 1e-3).\n\n"
        + "\n".join(table)
        + "\n\n`python benchmarks/gmm_speed.py "
        + " ".join(sys.argv[1:])
        + "`\n\n"
        + machine_line()
    )
    print("\n" + "\n".join(table))
    if args.record:
        update_section("GMM vocabulary: EM speed", body)


if __name__ == "__main__":
    main()
