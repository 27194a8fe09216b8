"""Mirror-symmetric vocabularies: what a left-right mirror does in a GMM's space.

Mirror augmentation encodes every image twice: as it is and mirrored. The
mirrored image's SIFT descriptors are a fixed permutation ``P`` of the original's
(:func:`bovw.features.sift_mirror_permutation`). If the vocabulary is built
to be symmetric under that permutation, the mirrored image's Fisher vector is a
fixed signed permutation of the original's, and the second encoding is free:

- **PCA** (:func:`symmetric_pca`) is fitted on the descriptors and their mirrors.
  Its mean is then fixed by ``P``, and its covariance commutes with ``P``, so
  every principal axis can be taken either symmetric (``P v = v``) or
  antisymmetric (``P v = -v``). Mirroring a descriptor then flips the sign of its
  antisymmetric coordinates: the :class:`MirrorMap` ``z -> s * z``.
- **The Gaussians come in mirror pairs** (``fit_diagonal_gmm(mirror=...)``): the
  mirror of Gaussian ``k`` is Gaussian ``k + K/2 mod K``, with the mirrored mean,
  the same variances (permuted) and the same weight. EM keeps them so by pooling
  each Gaussian's statistics with its partner's mirrored ones, which is EM on
  the descriptors and their mirrors at the cost of the descriptors alone.

Without PCA the map is ``P`` itself, a permutation with no sign changes.
Everything here is exact in floating point (permutations and sign flips), so a
fitted vocabulary's symmetry can be checked bit for bit
(:func:`mirror_pairs`), for instance after loading a saved model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "MirrorMap",
    "apply_signed_permutation",
    "mirror_pairs",
    "pca_mirror_map",
    "symmetric_pca",
]


class MirrorMap(NamedTuple):
    """A left-right mirror in a vocabulary's space: ``mirror(z)[j] = signs[j] * z[perm[j]]``.

    ``perm`` is an involution and ``signs`` is fixed by it, so the map is its own inverse.
    """

    perm: np.ndarray  # (D,) intp
    signs: np.ndarray  # (D,) float64, +1 or -1

    def apply(self, Z: np.ndarray) -> np.ndarray:
        """The mirrors of the rows of ``Z`` (n, D), same dtype."""
        out = Z[..., self.perm]
        return out * self.signs.astype(out.dtype)

    @classmethod
    def permutation(cls, perm: np.ndarray) -> MirrorMap:
        """The map of a plain permutation (descriptors without PCA)."""
        perm = np.asarray(perm, dtype=np.intp)
        return cls(perm, np.ones(perm.size))


def _symmetry_bases(perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal bases ``(d, ds)`` and ``(d, da)`` of the vectors ``P v = v`` and ``P v = -v``.

    ``perm`` must be an involution: its 2-cycles ``(i, j)`` give ``(e_i + e_j) / sqrt 2``
    and ``(e_i - e_j) / sqrt 2``, its fixed points ``e_i`` (symmetric only).
    """
    d = perm.size
    sym, anti = [], []
    for i in range(d):
        j = int(perm[i])
        if j == i:
            v = np.zeros(d)
            v[i] = 1.0
            sym.append(v)
        elif i < j:
            v = np.zeros(d)
            v[i] = v[j] = np.sqrt(0.5)
            sym.append(v)
            w = np.zeros(d)
            w[i], w[j] = np.sqrt(0.5), -np.sqrt(0.5)
            anti.append(w)
    return np.array(sym).T.reshape(d, -1), np.array(anti).T.reshape(d, -1)


def _check_involution(perm: np.ndarray) -> np.ndarray:
    perm = np.asarray(perm, dtype=np.intp)
    if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(perm.size)):
        raise ValueError(
            "The mirror permutation must be a permutation of the descriptor dimensions."
        )
    if not np.array_equal(perm[perm], np.arange(perm.size)):
        raise ValueError("The mirror permutation must be its own inverse.")
    return perm


def symmetric_pca(
    X: np.ndarray, perm: np.ndarray, n_components: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of the rows of ``X`` and their mirrors ``X[:, perm]``, with mirror-exact axes.

    The same as a PCA of the augmented set ``[X; X[:, perm]]`` (its mean, its
    covariance's leading eigenvectors and eigenvalues), computed without building
    it: the covariance is split into its symmetric and antisymmetric blocks, each
    diagonalized, and the axes of both merged by decreasing variance.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    perm : ndarray of shape (d,)
        The mirror of the descriptor dimensions, an involution.
    n_components : int
        Axes kept, at most ``d``.

    Returns
    -------
    mean : ndarray of shape (d,), float64
        ``mean[perm] == mean`` exactly.
    components : ndarray of shape (n_components, d), float64
        Orthonormal rows, each exactly symmetric or antisymmetric:
        ``components[:, perm] == ±components``.
    explained_variance : ndarray of shape (n_components,), float64
        The variance of the augmented set along each axis (denominator ``2n - 1``,
        as scikit-learn's PCA).
    """
    perm = _check_involution(perm)
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if perm.size != d:
        raise ValueError(
            f"A mirror permutation of {perm.size} dimensions for {d}-dimensional rows."
        )
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components must be in [1, {d}], got {n_components}.")
    m = X.mean(axis=0)
    mean = 0.5 * (m + m[perm])  # the same sums in either order: mean[perm] == mean
    Xc = X - mean
    scatter = Xc.T @ Xc
    # The augmented set's scatter is S + P S P; the block bases make it block-diagonal.
    scatter = scatter + scatter[np.ix_(perm, perm)]
    sym, anti = _symmetry_bases(perm)
    axes, variances = [], []
    for basis in (sym, anti):
        if basis.shape[1] == 0:
            continue
        block = basis.T @ scatter @ basis
        values, vectors = np.linalg.eigh(0.5 * (block + block.T))
        variances.append(values / max(2 * n - 1, 1))
        # basis @ vectors keeps each axis exactly (anti)symmetric: the two entries of a
        # 2-cycle are the same products, of the same (or negated) basis entries.
        axes.append(basis @ vectors)
    variance = np.concatenate(variances)
    components = np.concatenate(axes, axis=1).T
    order = np.argsort(-variance, kind="stable")[:n_components]
    components = components[order]
    # A deterministic sign per axis (scikit-learn's convention: largest entry positive).
    flip = np.sign(components[np.arange(len(order)), np.argmax(np.abs(components), axis=1)])
    components *= np.where(flip == 0, 1.0, flip)[:, None]
    return mean, components, np.maximum(variance[order], 0.0)


def pca_mirror_map(components: np.ndarray, perm: np.ndarray) -> MirrorMap:
    """The mirror in the PCA space of ``components`` (D, d): a sign per axis.

    Raises
    ------
    ValueError
        If an axis is neither exactly symmetric nor exactly antisymmetric under ``perm``.
    """
    components = np.asarray(components)
    mirrored = components[:, perm]
    signs = np.empty(components.shape[0])
    for j, (axis, image) in enumerate(zip(components, mirrored, strict=True)):
        if np.array_equal(image, axis):
            signs[j] = 1.0
        elif np.array_equal(image, -axis):
            signs[j] = -1.0
        else:
            raise ValueError(
                f"PCA axis {j} is not mirror-symmetric: the vocabulary was not fitted with "
                "mirror_symmetric=True."
            )
    return MirrorMap(np.arange(components.shape[0]), signs)


def mirror_pairs(
    weights: np.ndarray, means: np.ndarray, variances: np.ndarray, mirror: MirrorMap
) -> np.ndarray:
    """The mirror partner of each Gaussian, checked exactly.

    Returns
    -------
    ndarray of shape (K,), intp
        ``pairs[k]`` is the Gaussian whose mean is the mirror of ``k``'s, with
        ``k``'s (permuted) variances and weight: ``(k + K/2) mod K`` for a mixture
        that :func:`bovw.vocabulary.em.fit_diagonal_gmm` fitted with ``mirror``.

    Raises
    ------
    ValueError
        If some Gaussian has no exact mirror partner.
    """
    K = means.shape[0]
    pairs = (np.arange(K) + K // 2) % K
    ok = (
        K % 2 == 0
        and np.array_equal(mirror.apply(means), means[pairs])
        and np.array_equal(variances[:, mirror.perm], variances[pairs])
        and np.array_equal(weights, weights[pairs])
    )
    if not ok:
        raise ValueError(
            "The Gaussians are not in mirror pairs: the vocabulary was not fitted with "
            "mirror_symmetric=True."
        )
    return pairs


def apply_signed_permutation(rows: np.ndarray, index: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``rows[:, index] * signs``, a new array of ``rows``' dtype, computed block by block.

    A Fisher vector's mirror permutation moves whole blocks of ``D`` consecutive
    values (one Gaussian's gradient in one cell, with PCA). Those are gathered
    with ``np.take`` on a ``(n, blocks, D)`` view, many times faster than gathering
    element by element (``benchmarks/fisher_speed.py`` times both): it runs on
    every shard of every epoch of streamed training. Any other permutation is
    gathered element by element.
    """
    rows = np.asarray(rows)
    n = rows.shape[0]
    block = _block_length(index)
    if block > 1:
        sources = index[::block] // block
        out = np.take(rows.reshape(n, -1, block), sources, axis=1).reshape(n, -1)
    else:
        out = np.take(rows, index, axis=1)
    out *= signs.astype(out.dtype, copy=False)
    return out


def _block_length(index: np.ndarray) -> int:
    """The length of the aligned runs of consecutive values ``index`` is made of (1: none)."""
    if index.size < 2:
        return 1
    # Runs of consecutive values end at the breaks; two source blocks that follow each
    # other make one longer run, so the block is the greatest common divisor of the runs.
    ends = np.r_[np.flatnonzero(np.diff(index) != 1) + 1, index.size]
    block = int(np.gcd.reduce(ends))
    if block < 2:
        return 1
    runs = index.reshape(-1, block)
    aligned = np.all(runs[:, 0] % block == 0)
    consecutive = np.array_equal(runs, runs[:, :1] + np.arange(block))
    return block if aligned and consecutive else 1
