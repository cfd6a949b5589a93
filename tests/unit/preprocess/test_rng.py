import numpy as np

from preprocess import rng


def test_mix_is_deterministic_and_sensitive_to_every_part():
    a = rng.mix(1, 2, 3)
    assert np.array_equal(a, rng.mix(1, 2, 3))
    assert a[0] != rng.mix(1, 2, 4)[0]
    assert a[0] != rng.mix(2, 1, 3)[0]


def test_mix_broadcasts_over_arrays_like_scalars():
    keys = np.arange(100, dtype=np.uint64)
    vec = rng.mix(keys, 7)
    assert [int(v) for v in vec] == [rng.mix_int(int(k), 7) for k in keys]


def test_uniform_is_in_unit_interval_and_flat():
    u = rng.uniform(rng.mix(np.arange(200_000, dtype=np.uint64), 11))
    assert u.min() >= 0.0 and u.max() < 1.0
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(hist - 20_000) < 5 * np.sqrt(200_000 * 0.1 * 0.9))


def test_python_rng_is_seeded_by_its_parts_alone():
    assert rng.python_rng(1, 2).random() == rng.python_rng(1, 2).random()
    assert rng.python_rng(1, 2).random() != rng.python_rng(2, 1).random()
