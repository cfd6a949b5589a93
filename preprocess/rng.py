"""Counter-based randomness keyed by stable identifiers.

Every random choice in preprocessing is a pure function of (seed, document id, pass,
instance, purpose, position). Nothing depends on the process, the worker count, the
order in which elements arrive or Python's salted ``hash()``, so the same inputs and
seed give byte-identical output on any runner.

The mixer is SplitMix64 (Steele et al., 2014), vectorised over numpy ``uint64``
arrays: a few multiplies and shifts per value, so masking thousands of instances at
once costs microseconds.
"""

from __future__ import annotations

import random

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Purposes: distinct constants so that streams for different decisions never overlap.
PURPOSE_DOCUMENT = 1
PURPOSE_INSTANCE = 2
PURPOSE_MASK_ORDER = 3
PURPOSE_MASK_ACTION = 4
PURPOSE_TRUNCATE = 7
PURPOSE_DONOR = 8
PURPOSE_SPLIT = 10


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def mix(*parts: int | np.ndarray) -> np.ndarray:
    """Hash any number of integers (or broadcastable uint64 arrays) into uint64 values."""
    arrays = [np.asarray(p, dtype=np.uint64) if not isinstance(p, int) else np.uint64(p & _MASK64) for p in parts]
    h = _splitmix(np.atleast_1d(arrays[0]).astype(np.uint64))
    for a in arrays[1:]:
        h = _splitmix(h ^ a)
    return h


def _splitmix_int(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_int(*parts: int) -> int:
    """:func:`mix` for Python ints, in plain integer arithmetic (numpy scalars cost ~50x more)."""
    h = _splitmix_int(parts[0] & _MASK64)
    for p in parts[1:]:
        h = _splitmix_int(h ^ (p & _MASK64))
    return h


def position_hash(row_keys: np.ndarray, purpose: int, row_of: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Per-token hashes keyed by (row key, purpose, position): one mixing round per token."""
    base = mix(row_keys, purpose)
    with np.errstate(over="ignore"):
        return _splitmix(base[row_of] + pos.astype(np.uint64) * _M2)


def uniform(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to float64 uniforms in [0, 1) using their top 53 bits."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def python_rng(*parts: int) -> random.Random:
    """A ``random.Random`` seeded from stable parts, for sequential per-document logic."""
    return random.Random(mix_int(*parts))
