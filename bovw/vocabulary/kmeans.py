"""Visual words by k-means: :class:`KMeansCodebook`.

Distances are computed by chunked BLAS in float32,
``|x - c|^2 = |x|^2 + |c|^2 - 2 x.c`` with ``|c|^2`` precomputed, so memory is
bounded by ``chunk_size x n_words`` floats whatever the number of descriptors.
The sample conventions (descriptor sets, all-zero descriptors left out) are
those of :mod:`bovw.vocabulary.sampling`.
"""

from __future__ import annotations

import numbers
import time
from contextlib import nullcontext

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.cluster import MiniBatchKMeans
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..progress import progress_bar, watch_calls
from .sampling import as_descriptors, as_sample, chunk_rows

__all__ = ["KMeansCodebook"]

#: The MiniBatchKMeans method that its fit loop calls once per mini-batch step (with
#: ``verbose=0`` too): watched for the progress bar, as scikit-learn has no callback.
_STEP = "_mini_batch_convergence"


def _split_tail(sample: np.ndarray, n_held: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Move a random ``n_held`` rows to the end, in place; return (train, held) views."""
    m = sample.shape[0]
    held = np.zeros(m, dtype=bool)
    held[rng.choice(m, n_held, replace=False)] = True
    front = np.flatnonzero(held[: m - n_held])
    back = m - n_held + np.flatnonzero(~held[m - n_held :])
    sample[front], sample[back] = sample[back], sample[front]
    return sample[: m - n_held], sample[m - n_held :]


class KMeansCodebook(BaseEstimator):
    """A visual vocabulary of ``n_words`` k-means centres (mini-batch k-means).

    Fitting follows the classic recipe (Sivic & Zisserman 2003; Csurka et al.
    2004; the VLFeat PHOW pipeline): an even random sample of training
    descriptors (:func:`sample_descriptors`, all-zero descriptors left out) is
    clustered with scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans`
    (Sculley 2010). A small held-out part of the sample measures the mean
    quantization error. Dead words (centres that no sample descriptor is
    nearest to, duplicates included) are re-seeded at the descriptors that are
    worst represented, and refined with Lloyd iterations.

    Parameters
    ----------
    n_words : int, default=1000
        Number of visual words ``k``.
    n_samples : int, default=1_000_000
        Maximum number of descriptors to fit on (all there are if fewer).
    batch_size : int, default=4096
        Mini-batch size of MiniBatchKMeans.
    max_iter : int or None, default=None
        Maximum passes (epochs) of MiniBatchKMeans over the sample; it stops
        earlier when its smoothed inertia stops improving. ``None``:
        ``ceil(min_visits / m)`` epochs, at most 20, so a sample of
        ``m >= min_visits`` descriptors gets one epoch (the fit time grows
        linearly with ``m``) and a small sample more epochs.
        The Lloyd iterations (``refine_iter``) then polish the words on the
        whole sample.
    min_visits : int, default=250_000
        Used when ``max_iter`` is None.
    n_init : int, default=1
        Number of k-means++ initialisations tried by MiniBatchKMeans.
    held_out : float, default=0.02
        Fraction of the sample (at most ``max_held_out`` rows) kept out of the
        fit to measure ``quantization_error_``. When the sample is too small to
        spare it (fewer than ``2 * n_words`` rows) nothing is held out and the
        error is measured on the training sample.
    max_held_out : int, default=20_000
    refine_iter : int, default=2
        Full-batch Lloyd iterations after MiniBatchKMeans, on the whole
        sample (chunked BLAS assignment); dead words are re-seeded before each.
        At least one is run when a word is dead.
    init_size : int or None, default=None
        Descriptors used by the k-means++ initialisation; ``None``:
        ``max(3 * n_words, batch_size)``.
    random_state : int or None, default=0
        Seed of the sample, the held-out split and the k-means.
    chunk_size : int or None, default=None
        Descriptors per assignment chunk; ``None`` sizes chunks so that one
        distance block takes about 16 MiB.
    n_threads : int or None, default=1
        BLAS / OpenMP threads during :meth:`fit` (threadpoolctl); ``None``
        leaves the libraries' setting (all cores). One thread is the default
        because it is robust: on a machine shared with other busy processes
        the OpenMP threads of MiniBatchKMeans spin while they wait for a
        descheduled sibling. Measured with ``benchmarks/encode_speed.py``'s
        data (1,000,000 descriptors, 1000 words, 2 cores at load ~7): 29.8 s
        wall and 19.4 s CPU with one thread, 81 s wall and 51 s CPU with two.
        On an idle machine ``None`` may be faster.

    Attributes
    ----------
    centers_ : ndarray of shape (n_words, d), float32
        The visual words.
    n_words_used_ : int
        Words that at least one training descriptor is nearest to, after
        re-seeding.
    n_dead_reseeded_ : int
        Dead words found after MiniBatchKMeans and re-seeded.
    quantization_error_ : float
        Mean squared Euclidean distance of held-out descriptors to their
        nearest word.
    n_samples_used_ : int
        Descriptors the centres were fitted on (held-out part excluded).
    n_features_in_ : int
        Descriptor dimension ``d``.
    fit_time_ : float
        Seconds spent in :meth:`fit`.

    Notes
    -----
    Cost, measured on 1,000,000 dense SIFT descriptors of 15-Scene with
    ``n_words=1000`` on one core (AMD EPYC): MiniBatchKMeans one epoch 8.5 s,
    one assignment pass 3.1 s, one Lloyd pass 3.1 s, so the default fit takes
    about 18 s of one core. Held-out mean squared error: 63,011 after the
    epoch, 62,759 after the two Lloyd passes, against 62,744 for
    MiniBatchKMeans run to its own early stop (2.6 epochs, k-means++ on
    12,288 descriptors), which costs about twice as much.

    ``fit`` accepts either per-image descriptor sets (then it samples them
    evenly itself) or a single 2-D ``(m, d)`` array, which means "already
    sampled": it is used as it is, except that all-zero rows are dropped and a
    random subset is taken if ``m > n_samples``.

    References
    ----------
    .. [1] J. Sivic and A. Zisserman. Video Google: a text retrieval approach
       to object matching in videos. ICCV 2003.
    .. [2] D. Sculley. Web-scale k-means clustering. WWW 2010.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sets = [rng.integers(0, 256, (200, 16), dtype=np.uint8) for _ in range(5)]
    >>> cb = KMeansCodebook(n_words=8).fit(sets)
    >>> cb.centers_.shape, cb.assign(sets[0]).shape
    ((8, 16), (200,))
    """

    def __init__(
        self,
        n_words: int = 1000,
        n_samples: int = 1_000_000,
        batch_size: int = 4096,
        max_iter: int | None = None,
        min_visits: int = 250_000,
        n_init: int = 1,
        held_out: float = 0.02,
        max_held_out: int = 20_000,
        refine_iter: int = 2,
        init_size: int | None = None,
        random_state: int | None = 0,
        chunk_size: int | None = None,
        n_threads: int | None = 1,
    ):
        self.n_words = n_words
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.min_visits = min_visits
        self.n_init = n_init
        self.held_out = held_out
        self.max_held_out = max_held_out
        self.refine_iter = refine_iter
        self.init_size = init_size
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.n_threads = n_threads

    # -- fitting -------------------------------------------------------------

    def fit(self, descriptor_sets, y=None, *, progress: bool = False) -> KMeansCodebook:
        """Fit the vocabulary.

        Parameters
        ----------
        descriptor_sets : iterable of (array (n_i, d) or ImageFeatures), or ndarray (m, d)
            Per-image descriptor sets (sampled evenly, see
            :func:`sample_descriptors`), or one 2-D array of descriptors that
            are already a sample.
        y : ignored
        progress : bool, default=False
            Show a progress bar on stderr (:func:`bovw.progress.progress_bar`)
            over the mini-batch steps and the assignment passes, measured in
            descriptors visited. It only watches: the words are the same, bit
            for bit, with or without it.

        Returns
        -------
        self
        """
        if self.n_threads is not None:
            with threadpool_limits(int(self.n_threads)):
                return self._fit(descriptor_sets, progress)
        return self._fit(descriptor_sets, progress)

    def _fit(self, descriptor_sets, progress: bool = False) -> KMeansCodebook:
        t0 = time.perf_counter()
        if not isinstance(self.n_words, numbers.Integral) or self.n_words < 1:
            raise ValueError(f"n_words must be a positive integer, got {self.n_words!r}.")
        k = int(self.n_words)
        sample = as_sample(descriptor_sets, int(self.n_samples), self.random_state)
        m = sample.shape[0]
        if m < k:
            raise ValueError(
                f"Cannot fit {k} visual words on {m} non-zero descriptors: "
                "use fewer words or more images."
            )
        rng = np.random.default_rng(self.random_state)
        n_held = 0
        if m >= 2 * k:
            n_held = min(int(self.max_held_out), int(round(self.held_out * m)))
        if n_held > 0:
            train, held = _split_tail(sample, n_held, rng)
        else:
            held, train = sample, sample

        max_iter = self.max_iter
        if max_iter is None:
            max_iter = min(20, max(1, -(-int(self.min_visits) // train.shape[0])))
        km = MiniBatchKMeans(
            n_clusters=k,
            batch_size=int(self.batch_size),
            max_iter=max_iter,
            n_init=int(self.n_init),
            init_size=min(
                train.shape[0],
                int(self.init_size)
                if self.init_size is not None
                else max(3 * k, int(self.batch_size)),
            ),
            compute_labels=False,
            random_state=rng.integers(2**31 - 1),
        )
        # The work in descriptors visited: MiniBatchKMeans's steps (as its own n_steps),
        # then whole-sample passes: the assignment, the Lloyd iterations (at least one
        # is planned, as dead words force one) and the held-out error.
        n_train = train.shape[0]
        step_size = min(int(self.batch_size), n_train)
        n_steps = (max_iter * n_train) // step_size
        n_passes = 1 + max(int(self.refine_iter), 1)
        bar = progress_bar(
            total=n_steps * step_size + n_passes * n_train + held.shape[0],
            desc="codebook: k-means",
            unit="desc",
            disable=not progress,
        )
        try:
            with (
                watch_calls(km, _STEP, lambda: bar.update(step_size)) if progress else nullcontext()
            ):
                km.fit(train)
            # MiniBatchKMeans stops early when its inertia stops improving: the
            # steps it did not take are skipped, not left at the end of the bar.
            if progress:
                bar.update(n_steps * step_size - bar.n)
            self.n_features_in_ = train.shape[1]
            centers = np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)
            self._set_centers(centers)

            # Dead words (no training descriptor nearest to them) are re-seeded, then
            # Lloyd iterations refine all words on the whole sample.
            labels, dist2 = self._assign_with_dist(train)
            bar.update(n_train)
            counts = np.bincount(labels, minlength=k)
            self.n_dead_reseeded_ = int(np.count_nonzero(counts == 0))
            n_refine = int(self.refine_iter)
            if self.n_dead_reseeded_:
                n_refine = max(n_refine, 1)
            for _ in range(n_refine):
                centers, labels, dist2 = self._reseed_and_refine(train, centers, labels, dist2, rng)
                bar.update(n_train)
            counts = np.bincount(labels, minlength=k)
            self.n_words_used_ = int(np.count_nonzero(counts))
            self.n_samples_used_ = int(n_train)
            _, held_dist2 = self._assign_with_dist(held)
            if progress:
                bar.update(bar.total - bar.n)  # a planned Lloyd pass that was not needed
        finally:
            bar.close()
        self.quantization_error_ = float(np.mean(held_dist2, dtype=np.float64))
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _set_centers(self, centers: np.ndarray) -> None:
        self.centers_ = np.ascontiguousarray(centers, dtype=np.float32)
        # Precomputed for assignment: [-2 C^T; |c|^2] of shape (d + 1, k).
        c2 = np.einsum("ij,ij->i", self.centers_, self.centers_, dtype=np.float64)
        self._aug = np.ascontiguousarray(
            np.vstack([-2.0 * self.centers_.T, c2[None, :]]), dtype=np.float32
        )
        self._aug_of = self.centers_

    @classmethod
    def from_centers(cls, centers, **params) -> KMeansCodebook:
        """A codebook with the given words, for loading a saved model.

        Parameters
        ----------
        centers : array-like of shape (n_words, d)
        **params
            Constructor parameters (``chunk_size`` ...).

        Returns
        -------
        KMeansCodebook
            Ready to :meth:`assign`; the fit statistics (``n_words_used_``,
            ``quantization_error_`` ...) are not set.
        """
        centers = np.asarray(centers, dtype=np.float32)
        if centers.ndim != 2 or centers.shape[0] < 1:
            raise ValueError(f"centers must be a non-empty 2-D array, got shape {centers.shape}.")
        params.setdefault("n_words", centers.shape[0])
        cb = cls(**params)
        cb._set_centers(centers)
        cb.n_features_in_ = centers.shape[1]
        return cb

    def _reseed_and_refine(self, X, centers, labels, dist2, rng):
        """Move dead words onto the worst-represented descriptors, then one Lloyd step."""
        k = centers.shape[0]
        counts = np.bincount(labels, minlength=k)
        dead = np.flatnonzero(counts == 0)
        if dead.size:
            # Candidates: the descriptors farthest from their word, distinct rows.
            n_cand = min(X.shape[0], 4 * dead.size)
            cand = np.argpartition(-dist2, n_cand - 1)[:n_cand]
            cand = cand[np.argsort(-dist2[cand], kind="stable")]
            _, first = np.unique(X[cand], axis=0, return_index=True)
            cand = cand[np.sort(first)]
            n = min(dead.size, cand.size)
            centers = centers.copy()
            centers[dead[:n]] = X[cand[:n]]
            self._set_centers(centers)
            labels, dist2 = self._assign_with_dist(X)
        # Lloyd update: each used word moves to the mean of its descriptors.
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers, dtype=np.float64)
        _sum_by_label(sums, labels, X)
        used = counts > 0
        centers = centers.copy()
        centers[used] = (sums[used] / counts[used, None]).astype(np.float32)
        self._set_centers(centers)
        labels, dist2 = self._assign_with_dist(X)
        return centers, labels, dist2

    # -- assignment ----------------------------------------------------------

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "centers_")
        if getattr(self, "_aug_of", None) is not self.centers_:
            self._set_centers(self.centers_)  # centres set or loaded from outside
        X = as_descriptors(X)
        if X.shape[0] and X.shape[1] != self.centers_.shape[1]:
            raise ValueError(
                f"Descriptors have {X.shape[1]} dimensions, the codebook {self.centers_.shape[1]}."
            )
        return X

    def chunks(self, X):
        """Yield ``(start, stop, x_chunk_float32, scores)`` over row chunks of ``X``.

        ``scores = |c|^2 - 2 x.c`` is a ``(rows, n_words)`` float32 block (the
        squared distance minus ``|x|^2``), computed by one sgemm of the
        augmented chunk ``[x, 1]`` with ``[-2 C, |c|^2]^T``, so ``|c|^2`` costs
        no extra pass. The input is cast (uint8 -> float32) one chunk at a
        time into a reused buffer; the score block is reused too: copy what
        must outlive an iteration.
        """
        X = self._check_X(X)
        n, k = X.shape[0], self.centers_.shape[0]
        d = self.centers_.shape[1]
        step = min(chunk_rows(k, self.chunk_size), max(n, 1))
        xbuf = np.ones((step, d + 1), dtype=np.float32)
        sbuf = np.empty((step, k), dtype=np.float32)
        for start in range(0, n, step):
            stop = min(start + step, n)
            m = stop - start
            xbuf[:m, :d] = X[start:stop]
            scores = sbuf[:m]
            np.matmul(xbuf[:m], self._aug, out=scores)
            xc = xbuf[:m, :d]
            yield start, stop, xc, scores

    def assign(self, X) -> np.ndarray:
        """Index of the nearest word of each descriptor.

        Parameters
        ----------
        X : array-like of shape (n, d) or ImageFeatures
            uint8 or float descriptors; converted to float32 one chunk at a time.

        Returns
        -------
        ndarray of shape (n,), int32
            ``argmin_j |x - c_j|^2``, computed as ``argmin_j (|c_j|^2 - 2 x.c_j)``
            by a float32 matrix product per chunk. Ties go to the lowest index.
        """
        X = self._check_X(X)
        out = np.empty(X.shape[0], dtype=np.int32)
        for start, stop, _, scores in self.chunks(X):
            out[start:stop] = np.argmin(scores, axis=1)
        return out

    def _assign_with_dist(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Nearest word and squared distance to it (clipped at 0)."""
        X = self._check_X(X)
        labels = np.empty(X.shape[0], dtype=np.int32)
        dist2 = np.empty(X.shape[0], dtype=np.float32)
        for start, stop, xc, scores in self.chunks(X):
            lab = np.argmin(scores, axis=1)
            labels[start:stop] = lab
            best = np.take_along_axis(scores, lab[:, None], axis=1)[:, 0]
            dist2[start:stop] = np.maximum(best + np.einsum("ij,ij->i", xc, xc), 0)
        return labels, dist2

    def quantization_error(self, X) -> float:
        """Mean squared distance of descriptors ``X`` to their nearest word."""
        _, dist2 = self._assign_with_dist(X)
        return float(np.mean(dist2, dtype=np.float64)) if dist2.size else 0.0

    def knn(self, X, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n_neighbors`` nearest words of each descriptor.

        Returns
        -------
        indices : ndarray of shape (n, n_neighbors), int32
            Sorted by increasing distance.
        dist2 : ndarray of shape (n, n_neighbors), float32
            Squared Euclidean distances, clipped at 0.
        """
        X = self._check_X(X)
        k = self.centers_.shape[0]
        r = int(min(n_neighbors, k))
        idx = np.empty((X.shape[0], r), dtype=np.int32)
        dist2 = np.empty((X.shape[0], r), dtype=np.float32)
        for start, stop, xc, scores in self.chunks(X):
            if r <= 16:
                # r argmin passes (each masks its winner): far cheaper than a
                # per-row argpartition for the few neighbours soft assignment uses.
                rows = np.arange(stop - start)
                s = np.empty((stop - start, r), dtype=np.float32)
                for j in range(r):
                    a = np.argmin(scores, axis=1)
                    idx[start:stop, j] = a
                    s[:, j] = scores[rows, a]
                    scores[rows, a] = np.inf
            else:
                part = np.argpartition(scores, r - 1, axis=1)[:, :r] if r < k else None
                if part is None:
                    part = np.broadcast_to(np.arange(k), scores.shape)
                s = np.take_along_axis(scores, part, axis=1)
                order = np.argsort(s, axis=1, kind="stable")
                idx[start:stop] = np.take_along_axis(part, order, axis=1)
                s = np.take_along_axis(s, order, axis=1)
            dist2[start:stop] = np.maximum(s + np.einsum("ij,ij->i", xc, xc)[:, None], 0)
        return idx, dist2

    def predict(self, X) -> np.ndarray:
        """Alias of :meth:`assign` (scikit-learn's clusterer naming)."""
        return self.assign(X)


def _sum_by_label(sums: np.ndarray, labels: np.ndarray, X: np.ndarray, block: int = 65536) -> None:
    """``sums[j] += sum of the X rows labelled j``: sparse one-hot products by row block."""
    k = sums.shape[0]
    for start in range(0, X.shape[0], block):
        lab = labels[start : start + block]
        xb = np.asarray(X[start : start + block], dtype=np.float32)
        onehot = sparse.csr_matrix(
            (np.ones(lab.size, dtype=np.float32), (lab, np.arange(lab.size))), shape=(k, lab.size)
        )
        sums += onehot @ xb
