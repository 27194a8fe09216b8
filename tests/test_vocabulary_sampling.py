"""Tests for bovw.vocabulary.sampling: the even descriptor sample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from bovw.features import ImageFeatures
from bovw.vocabulary import sample_descriptors


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one BLAS/OpenMP thread avoids thread start-up and spinning costs."""
    with threadpool_limits(1):
        yield


def _tagged_sets(sizes, d=4):
    """Descriptor i of image j is (j+1, i+1, ...): the origin of each sampled row is readable."""
    out = []
    for j, n in enumerate(sizes):
        a = np.zeros((n, d), dtype=np.float32)
        a[:, 0] = j + 1
        a[:, 1] = np.arange(n) + 1
        out.append(a)
    return out


def _per_image_counts(sample, n_images):
    return np.bincount(sample[:, 0].astype(int) - 1, minlength=n_images)


def test_sample_is_even_across_images():
    sizes = [100, 5, 40, 100, 0, 100]
    s = sample_descriptors(_tagged_sets(sizes), 150, random_state=0)
    assert s.shape == (150, 4) and s.dtype == np.float32
    counts = _per_image_counts(s, len(sizes))
    # Water filling: small images give all they have, the rest share evenly.
    assert counts[1] == 5 and counts[4] == 0
    big = counts[[0, 2, 3, 5]]
    assert big.max() - big.min() <= 1
    assert counts.sum() == 150


def test_sample_takes_all_when_fewer():
    sizes = [3, 7, 2]
    s = sample_descriptors(_tagged_sets(sizes), 1000, random_state=0)
    assert s.shape == (12, 4)
    assert list(_per_image_counts(s, 3)) == sizes
    # No duplicates.
    assert len({tuple(r) for r in s}) == 12


def test_sample_deterministic_and_seed_dependent():
    sets = _tagged_sets([50] * 6)
    a = sample_descriptors(sets, 60, random_state=3)
    b = sample_descriptors(iter(sets), 60, random_state=3)  # a stream gives the same
    c = sample_descriptors(sets, 60, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert list(_per_image_counts(a, 6)) == [10] * 6


def test_sample_stream_with_many_compactions():
    # n_samples small relative to the total: the reservoir compacts many times.
    sizes = list(np.random.default_rng(1).integers(0, 30, 200))
    sets = _tagged_sets(sizes)
    s_list = sample_descriptors(sets, 37, random_state=0)
    s_gen = sample_descriptors((a for a in sets), 37, random_state=0)
    np.testing.assert_array_equal(s_list, s_gen)
    counts = _per_image_counts(s_list, len(sizes))
    assert counts.sum() == 37 and counts.max() <= 1


def test_sample_excludes_zero_descriptors():
    a = np.zeros((20, 4), dtype=np.uint8)
    a[:5] = 7
    s = sample_descriptors([a], 100, random_state=0)
    assert s.shape == (5, 4) and np.all(s == 7)
    assert sample_descriptors([a], 100, exclude_zero=False).shape == (20, 4)


def test_sample_accepts_image_features_and_empty():
    f = ImageFeatures(np.zeros((3, 4), np.float32), np.ones((3, 8), np.uint8), 10, 10)
    assert sample_descriptors([f], 10).shape == (3, 8)
    assert sample_descriptors([], 10).shape == (0, 0)
    assert sample_descriptors([np.zeros((0, 8))], 10).shape == (0, 0)


def test_sample_dimension_mismatch():
    with pytest.raises(ValueError, match="dimensional"):
        sample_descriptors([np.ones((2, 4)), np.ones((2, 5))], 10)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=0, max_size=12),
    n=st.integers(0, 120),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_fuzz_water_filling(sizes, n, seed):
    s = sample_descriptors(_tagged_sets(sizes), n, random_state=seed)
    total = sum(sizes)
    if total == 0:
        assert s.shape[0] == 0
        return
    assert s.shape == (min(n, total), 4)
    counts = _per_image_counts(s, len(sizes))
    assert np.all(counts <= np.array(sizes))
    # Evenness: an image that did not give all it had got at least max - 1.
    short = counts < np.array(sizes)
    if short.any() and counts.sum():
        assert counts[short].min() >= counts.max() - 1
    # No row drawn twice.
    assert len({tuple(r) for r in s}) == s.shape[0]


def test_sampler_memory_does_not_grow_with_the_number_of_images():
    """The reservoir is bounded by n_samples: 8x the images, the same peak memory."""
    import tracemalloc

    block = np.random.default_rng(0).integers(1, 255, (2000, 32), dtype=np.uint8)

    def peak(n_images):
        tracemalloc.start()
        sample_descriptors((block for _ in range(n_images)), 20_000, random_state=0)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    small, large = peak(100), peak(800)
    assert large < 1.15 * small, (small, large)


def test_docstring_examples():
    import doctest

    import bovw.vocabulary.sampling

    assert doctest.testmod(bovw.vocabulary.sampling).failed == 0
