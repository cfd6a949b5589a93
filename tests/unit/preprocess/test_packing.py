import numpy as np
import pytest

from preprocess.packing import efficiency, estimate, pack


def test_packing_fills_rows_best_fit_decreasing():
    rows = pack(np.array([5, 9, 3, 7, 2, 1]), capacity=10, max_per_row=3)
    assert rows == [[1, 5], [3, 2], [0, 4]]  # 9+1, 7+3, 5+2
    assert pack(np.array([4, 4, 4, 4]), 12, 2) == [[0, 1], [2, 3]]  # at most max_per_row
    with pytest.raises(ValueError, match="sequence 1 has 11 tokens"):
        pack(np.array([3, 11]), 10, 3)


def test_packing_is_complete_within_bounds_and_efficient():
    rng = np.random.default_rng(0)
    lengths = np.where(rng.random(2000) < 0.4, 128, rng.integers(8, 128, 2000))
    rows = pack(lengths, 128, 3)
    assert sorted(i for r in rows for i in r) == list(range(2000))
    assert all(len(r) <= 3 and lengths[r].sum() <= 128 for r in rows)
    assert lengths.sum() / (len(rows) * 128) > 0.97


def test_efficiency_counts_real_tokens_over_row_capacity():
    assert efficiency(np.array([10, 6, 8]), rows=2, capacity=16) == 0.75


def test_estimate_reports_padding_before_and_after_packing():
    lengths = np.array([64] * 50 + [20] * 150)  # short sequences pack three to a row of 64
    est = estimate(lengths, 64, global_batch=200, max_per_row=3)
    assert est["padding_share"] == pytest.approx(1 - (50 * 64 + 150 * 20) / (200 * 64))
    assert est["sequences_per_row"] == pytest.approx(200 / 100)  # 50 full rows + 50 rows of three
    assert est["packed_padding_share"] == pytest.approx(1 - (50 * 64 + 150 * 20) / (100 * 64))


def test_a_row_holds_no_more_masked_positions_than_its_slots():
    lengths, predictions = np.array([30, 20, 10]), np.array([4, 4, 3])
    assert pack(lengths, 64, 3) == [[0, 1, 2]]
    assert pack(lengths, 64, 3, predictions, prediction_capacity=8) == [[0, 1], [2]]  # 4 + 4, then 3 opens a row
    with pytest.raises(ValueError, match="sequence 2 has 3 masked positions: rows hold 2"):
        pack(lengths, 64, 3, np.array([1, 1, 3]), prediction_capacity=2)
